"""Instructions are used: a row's instruction is encoded with its query (mining and training), and keys the cache."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from negminer.mining.config import MineConfig
from negminer.mining.groups import build_groups, check_template, instructed
from negminer.mining.mine import mine, query_keys
from negminer.pipelines import io
from negminer.pipelines import schema as S
from tests.mining.conftest import mine_config, write_rows
from tests.mining.test_mine import reference_embed

TASK = "Given a question, retrieve the passage that answers it"


def test_template_and_its_checks():
    assert instructed("q?", TASK) == f"Instruct: {TASK}\nQuery: q?" and instructed("q?", None) == "q?"
    assert instructed("q?", "t", "<{instruction}> {query}") == "<t> q?"
    for bad in ("{query} only", "{instruction} {query} {other}", "{instruction {query}"):
        with pytest.raises(ValueError, match="--instruction-template"):
            check_template(bad)
    with pytest.raises(ValueError, match="--instruction-template"):
        MineConfig(input="i", output="o", model="m", instruction_template="{query}")


def test_instruction_changes_the_encoded_query_its_cache_key_and_its_embedding(mine_data, tmp_path, tiny_bert_dir):
    rows = [dict(r, instruction=TASK) for r in mine_data["rows"][:6]]
    inp = write_rows(tmp_path / "in", rows)
    plain = write_rows(tmp_path / "plain", mine_data["rows"][:6])
    cfg = mine_config({**mine_data, "input": str(inp)}, tmp_path, tiny_bert_dir, range_max=30)
    from negminer.mining.corpus import CorpusBuilder
    from negminer.mining.sources import shard_documents

    builder = CorpusBuilder()
    for ids, texts in shard_documents(str(inp)):
        builder.add(ids, texts)
    corpus = builder.build()
    with_instr, without = build_groups(str(inp), corpus), build_groups(str(plain), corpus)
    assert with_instr.encoded.to_pylist() == [instructed(q, TASK) for q in with_instr.query.to_pylist()]
    assert without.encoded.to_pylist() == without.query.to_pylist()
    assert not set(query_keys(with_instr)[0]) & set(query_keys(without)[0])  # another cache key for every query
    manifest = mine(cfg)
    assert manifest["mining"]["encoded"]["queries"] == len(with_instr)
    out = list(io.iter_rows(cfg.output))
    q_instr = reference_embed(tiny_bert_dir, [instructed(r[S.QUERY], TASK) for r in out])
    q_plain = reference_embed(tiny_bert_dir, [r[S.QUERY] for r in out])
    p = reference_embed(tiny_bert_dir, [r[S.POSITIVE] for r in out])
    got = np.array([r[S.POSITIVE_SCORE] for r in out])
    np.testing.assert_allclose(got, (q_instr * p).sum(1), atol=3e-3)  # the instructed query was encoded
    assert np.abs(got - (q_plain * p).sum(1)).max() > 1e-2  # ... and it differs from the bare query's


def test_training_batches_encode_the_instruction(tmp_path):
    from negminer.training.data import batches

    rows = [
        S.TupleRow(source="t", pair_type="qa", query=f"q {i}", positive=f"p {i}", instruction=TASK if i % 2 else None)
        for i in range(8)
    ]
    io.write_shards([r.to_dict() for r in rows], str(tmp_path / "d"))
    batch = next(itertools.islice(batches([str(tmp_path / "d")], 8, 0, seed=0, shuffle_buffer=4), 1))
    by_pos = dict(zip(batch.positives, batch.queries, strict=True))
    assert by_pos["p 1"] == f"Instruct: {TASK}\nQuery: q 1" and by_pos["p 2"] == "q 2"
    other = next(batches([str(tmp_path / "d")], 8, 0, seed=0, shuffle_buffer=4, template="{instruction}: {query}"))
    assert dict(zip(other.positives, other.queries, strict=True))["p 1"] == f"{TASK}: q 1"
