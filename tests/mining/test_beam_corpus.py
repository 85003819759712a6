"""The corpus deduplicated on Beam by a combine equals the in-process `CorpusBuilder`'s, document for document."""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline

from negminer.mining.beam_corpus import FirstDoc, ReadAndDedup, load_corpus
from negminer.mining.config import MineConfig
from negminer.mining.mine import build_corpus
from tests.mining.conftest import write_rows


def test_first_doc_keeps_the_smallest_position_whatever_the_grouping():
    docs = [(7, "a", "x", 1), (3, None, "X", 2), (9, "c", "x ", 3), (5, "d", "x", 4)]
    fn = FirstDoc()
    one = fn.extract_output(fn.merge_accumulators([fn.add_input(fn.create_accumulator(), d) for d in docs]))
    split = [fn.add_input(fn.add_input(fn.create_accumulator(), docs[3]), docs[0])]
    split.append(fn.add_input(fn.add_input(fn.create_accumulator(), docs[2]), docs[1]))
    assert one == fn.extract_output(fn.merge_accumulators(split + [fn.create_accumulator()])) == docs[1]


@pytest.fixture
def sources(tmp_path):
    """Two input shard files and a TSV corpus: duplicates within and across sources (by normalised text), empty
    texts, a missing id, an id naming two texts, a bad TSV line."""
    rows = [
        dict(
            source="t", pair_type="qa", query="q1", positive="Alpha beta.", positive_id="p1", negatives=["  ", "gamma"]
        ),
        dict(source="t", pair_type="qa", query="q2", positive="ALPHA   beta.", positive_id="p2", negative_ids=[None]),
        dict(source="t", pair_type="qa", query="q3", positive="delta", positive_id=None, negatives=["gamma"]),
        dict(source="t", pair_type="qa", query="q4", positive="epsilon", positive_id="p1"),
    ]
    for r in rows:
        if "negatives" in r and "negative_ids" not in r:
            r["negative_ids"] = [f"n{i}" for i in range(len(r["negatives"]))]
        if "negative_ids" in r and "negatives" not in r:
            r["negatives"] = ["zeta"]
    write_rows(tmp_path / "in", rows, num_shards=2)
    tsv = tmp_path / "collection.tsv"
    tsv.write_text("c1\tgamma\nc2\tEta theta\nbroken line\nc3\talpha beta.\nc4\t   \nc5\teta   THETA\n")
    cfg = MineConfig(input=str(tmp_path / "in"), output=str(tmp_path / "out"), model="m", corpus=(str(tsv),))
    files = cfg.input_files()
    return cfg, files, [(i, f, i >= len(files)) for i, f in enumerate(files + [str(tsv)])]


def test_beam_corpus_equals_the_in_process_corpus(sources, tmp_path):
    cfg, files, numbered = sources
    assert len(files) == 2
    run_dir = str(tmp_path / "run")
    with TestPipeline() as p:
        _ = p | beam.Create(numbered) | ReadAndDedup(run_dir)
    rejects: list[dict] = []
    got = load_corpus(run_dir, len(numbered), rejects)
    want_rejects: list[dict] = []
    want = build_corpus(cfg, want_rejects, files, str(tmp_path / "local.arrow"))
    assert got.table.to_pylist() == want.table.to_pylist()  # same documents, ids (filled ones too), same order
    for field in ("norm_key", "text_key", "alias_key", "alias_doc"):
        np.testing.assert_array_equal(getattr(got, field), getattr(want, field), err_msg=field)
    assert (got.raw_count, got.empty_skipped) == (want.raw_count, want.empty_skipped)
    assert rejects == want_rejects and len(rejects) == 2  # the broken line and the empty text, in source order
    assert len(got) < got.raw_count  # duplicates were dropped
    texts = got.texts.to_pylist()
    assert "alpha beta." not in texts and "eta   THETA" not in texts  # the first occurrence wins
