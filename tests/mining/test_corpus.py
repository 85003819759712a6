"""Corpus building: formats, dedup by normalised text, stable ids, aliases; query groups over several positives."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from negminer.mining.corpus import CorpusBuilder, hash64
from negminer.mining.groups import build_groups, padded
from negminer.mining.sources import corpus_documents, detect_format, parse_jsonl_doc, parse_tsv_doc, shard_documents
from negminer.pipelines.transforms.clean import normalize_for_match
from tests.conftest import shared_file
from tests.mining.conftest import write_rows


def build(*batches):
    b = CorpusBuilder()
    for ids, texts in batches:
        b.add(ids, texts)
    return b, b.build()


def test_dedup_by_normalised_text_keeps_first_and_all_ids():
    b, c = build((["a", "b", None], ["Paris is nice", "paris  IS nice", "Rome"]), ([None, "c"], ["rome", "   "]))
    assert len(c) == 2 and c.raw_count == 4 and b.skipped_empty == 1
    assert c.texts.to_pylist() == ["Paris is nice", "Rome"]
    rome_id = c.doc_ids.to_pylist()[1]
    assert c.doc_ids.to_pylist()[0] == "a"
    assert rome_id == f"h{hash64(normalize_for_match('Rome')):016x}"  # stable content id for id-less docs
    indptr, docs = c.find_ids(np.array([hash64("b"), hash64("a"), hash64("zzz"), 0], np.uint64))
    assert indptr.tolist() == [0, 1, 2, 2, 2] and docs.tolist() == [0, 0]
    assert c.find_texts(np.array([hash64("rome"), hash64("nope")], np.uint64)).tolist() == [1, -1]


def test_same_id_on_two_texts_maps_to_both():
    _, c = build((["x", "x"], ["first text", "second text"]))
    indptr, docs = c.find_ids(np.array([hash64("x")], np.uint64))
    assert sorted(docs.tolist()) == [0, 1]


def test_empty_corpus_is_an_error():
    with pytest.raises(ValueError, match="corpus is empty"):
        CorpusBuilder().build()


def test_formats(tmp_path):
    jl = tmp_path / "corpus.jsonl.gz"
    with gzip.open(jl, "wt") as f:
        f.write(json.dumps({"_id": "d1", "title": "Fish", "text": "goldfish grow"}) + "\n")
        f.write("not json\n")
        f.write(json.dumps({"_id": 7, "text": "no title"}) + "\n")
    tsv = tmp_path / "collection.tsv"
    tsv.write_text("1\tfirst passage\n2\tsecond\tpassage\n3\t\n4\tfourth passage\n")
    pqf = tmp_path / "docs.parquet"
    pq.write_table(pa.table({"doc_id": ["p1", "p2"], "text": ["parquet one", None], "title": [None, "T"]}), pqf)
    shards = write_rows(
        tmp_path / "shards", [dict(source="t", pair_type="qa", query="q", positive="pos", negatives=["n1"])]
    )
    assert [detect_format(str(p)) for p in (jl, tsv, pqf, shards)] == ["jsonl", "tsv", "parquet", "shards"]
    rejects: list[dict] = []
    got = []
    for p in (jl, tsv, pqf, shards):
        for ids, texts in corpus_documents(str(p), rejects):
            got += list(zip(ids.to_pylist(), texts.to_pylist(), strict=True))
    assert got == [
        ("d1", "Fish goldfish grow"),
        ("7", "no title"),
        ("1", "first passage"),
        ("4", "fourth passage"),
        ("p1", "parquet one"),
        ("p2", None),
        (None, "pos"),
        (None, "n1"),
    ]
    reasons = sorted(r["reason"] for r in rejects)
    assert reasons == sorted(
        [
            "jsonl: invalid JSON (Expecting value)",
            "tsv: expected 2 tab-separated fields (id, text), got 3",
            "tsv: empty text",
        ]
    )
    b, c = build(*corpus_documents(str(pqf), []))
    assert c.texts.to_pylist() == ["parquet one"] and b.skipped_empty == 1  # a null text is no document


def test_unknown_format_and_missing_fields(tmp_path):
    with pytest.raises(ValueError, match="unknown format"):
        detect_format(str(tmp_path / "x.csv"))
    assert parse_jsonl_doc('{"id": 1}')[1] == "jsonl: missing id or text field"
    assert parse_tsv_doc("\tx")[1] == "tsv: empty id"
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"name": ["a"]}), bad)
    with pytest.raises(ValueError, match="need an id field"):
        list(corpus_documents(str(bad), []))


def test_real_msmarco_collection_is_read_whole():
    path = shared_file("msmarco", "nos-irv3_dl19-judged_collection.tsv")
    lines = [ln.rstrip("\n").split("\t") for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    good = {p[0]: p[1] for p in lines if len(p) == 2 and p[1].strip()}
    rejects: list[dict] = []
    _, c = build(*corpus_documents(str(path), rejects))
    assert c.raw_count == len(good) and len(rejects) == len(lines) - len(good)
    assert len(c) == len({normalize_for_match(t) for t in good.values()})
    ids = c.doc_ids.to_pylist()
    assert all(good[i] == t for i, t in zip(ids, c.texts.to_pylist(), strict=True))


def test_groups_share_all_positives(tmp_path):
    rows = [
        dict(source="t", pair_type="qa", query="Q one", positive="alpha text", positive_id="A", negatives=["beta"]),
        dict(source="t", pair_type="qa", query="q  ONE", positive="gamma text", positive_id="G"),
        dict(source="t", pair_type="qa", query="Q one", positive="delta", instruction="other task"),
        dict(source="t", pair_type="qa", query="two", positive="ALPHA text"),
    ]
    d = write_rows(tmp_path / "in", rows)
    b = CorpusBuilder()
    for ids, texts in shard_documents(str(d)):
        b.add(ids, texts)
    b.add(["G", "Z"], ["gamma text, other version", "zeta"])  # a corpus doc sharing the positive's id
    corpus = b.build()
    g = build_groups(str(d), corpus)
    texts = corpus.texts.to_pylist()
    assert len(g) == 3
    by_query = {}
    for r, grp in enumerate(g.row_group.tolist()):
        by_query.setdefault(grp, set()).add(r)
    # find which input row is which (shards are sorted by id, not in the order written)
    from negminer.pipelines.io import iter_rows

    read = list(iter_rows(str(d)))
    key = {i: (normalize_for_match(r["query"]), r["instruction"]) for i, r in enumerate(read)}
    for grp, members in by_query.items():
        assert len({key[m] for m in members}) == 1
        excluded = {texts[x] for x in g.excl_docs[g.excl_indptr[grp] : g.excl_indptr[grp + 1]]}
        positives = {normalize_for_match(read[m]["positive"]) for m in members}
        assert {normalize_for_match(t) for t in excluded} >= positives
        if any(read[m]["positive_id"] == "G" for m in members):
            assert "gamma text, other version" in excluded  # excluded by id although the text differs
    assert padded(g.pos_indptr, g.pos_docs, np.arange(len(g))).shape == (3, 2)


def test_take_by_chunk_equals_arrow_take():
    """`corpus.take` (chunk by chunk, no copy of the whole column) gives what Arrow's take gives, in order."""
    import pyarrow as pa

    from negminer.mining.corpus import take

    col = pa.chunked_array([["a", "b"], ["c"], [], ["d", "e", "f"]])
    idx = np.array([5, 0, 2, 2, 4, 1])
    assert take(col, idx).to_pylist() == col.take(pa.array(idx)).to_pylist() == ["f", "a", "c", "c", "e", "b"]
    assert take(col, []).to_pylist() == [] and take(pa.array(["x", "y"]), [1]).to_pylist() == ["y"]
    assert take(pa.chunked_array([["p", "q"]]), [1, 0]).to_pylist() == ["q", "p"]
