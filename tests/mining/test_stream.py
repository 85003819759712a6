"""The in-process miner streams: the row dicts it holds at once do not grow with the rows it writes."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq

from negminer.mining import output, spool
from negminer.mining.mine import mine
from negminer.pipelines import io
from tests.mining.conftest import mine_config, sentence, write_rows


def run(tmp_path, tiny_bert_dir, n_rows: int) -> dict:
    rng = np.random.default_rng(n_rows)
    rows = [
        dict(source="t", pair_type="qa", query=f"{sentence(rng, 4)} {i}", positive=f"{sentence(rng)} {i}")
        for i in range(n_rows)
    ]
    d = tmp_path / str(n_rows)
    write_rows(d / "in", rows, num_shards=2)
    data = {"input": str(d / "in"), "corpus": str(d / "in")}
    cfg = mine_config(data, d, tiny_bert_dir, num_negatives=2, range_max=4, chunk_size=512, batch_size=64)
    return mine(cfg)


def test_rows_held_do_not_grow_with_rows_written(tmp_path, tiny_bert_dir, monkeypatch):
    monkeypatch.setattr(spool, "SPILL_ROWS", 16)
    monkeypatch.setattr(output, "ROWS_AT_ONCE", 50)
    monkeypatch.setattr(spool, "BUCKET_ROWS", 16)
    small, big = run(tmp_path, tiny_bert_dir, 100), run(tmp_path, tiny_bert_dir, 800)
    assert (small["rows"], big["rows"]) == (100, 800)
    held_small, held_big = small["mining"]["rows_held_max"], big["mining"]["rows_held_max"]
    assert held_big <= 2 * held_small < 100  # 8x the rows, about the same rows held (a bucket varies in size)
    # and the shards are those the all-in-memory writer gives: sorted by id, one file per shard index
    out = tmp_path / "800" / "out"
    ids = [pq.read_table(f).column("id").to_pylist() for f in io.shard_files(str(out))]
    assert len(ids) == 2 and all(i == sorted(i) for i in ids)
    assert sum(map(len, ids)) == 800
