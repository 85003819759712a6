"""Fixtures for mining tests: small shard dirs written to tmp_path, tiny random encoders and cross-encoders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from negminer.mining.config import MineConfig
from negminer.pipelines import io
from negminer.pipelines import schema as S
from tests.tiny_models import tiny_bert

WORDS = (
    "the a of and to in is was for on with as by at from river city music data model paris france capital "
    "ocean fish grow water light sound wave bank money loan rate tree leaf root king queen war peace law court "
    "heart blood cell gene virus test drug food bread milk cheese sun moon star space rocket car road train"
).split()


def write_rows(out_dir: Path, rows: list[dict], split: str = "train", num_shards: int = 1) -> Path:
    """Rows as dicts (TupleRow fields) -> a shard dir with a manifest."""
    full = [S.TupleRow(**r).to_dict() for r in rows]
    record = {"command": "test", "config": {"rows": len(full)}, "inputs": []}
    io.write_shards(full, str(out_dir), split, num_shards, record=record)
    return out_dir


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A tiny random BERT (hidden 32, 2 layers) saved as safetensors with a WordPiece tokenizer."""
    return Path(tiny_bert(tmp_path_factory.mktemp("tiny-bert"), sorted(set(WORDS)), fast=False))


@pytest.fixture(scope="session")
def tiny_cross_encoder_dir(tmp_path_factory) -> Path:
    """A tiny random BertForSequenceClassification (1 label) built in-process."""
    d = tmp_path_factory.mktemp("tiny-ce")
    return Path(tiny_bert(d, sorted(set(WORDS)), num_hidden_layers=1, num_labels=1, seed=1, fast=False))


N_DOCS = 60


def sentence(rng, n=None):
    return " ".join(rng.choice(WORDS, size=n or rng.integers(3, 12)))


@pytest.fixture(scope="module")
def mine_data(tmp_path_factory):
    """Input shards (two splits, one query with two positives) and a TSV corpus of random sentences."""
    rng = np.random.default_rng(0)
    d = tmp_path_factory.mktemp("mine")
    docs = [sentence(rng) for _ in range(N_DOCS)]
    (d / "collection.tsv").write_text("".join(f"c{i}\t{t}\n" for i, t in enumerate(docs)) + "bad line\n")
    rows = [
        dict(
            source="t", pair_type="qa", query=sentence(rng, 4), positive=docs[i], positive_id=f"c{i}", query_id=f"q{i}"
        )
        for i in range(0, 16, 2)
    ]
    rows.append(dict(rows[0], positive=docs[1], positive_id="c1"))  # the same query, a second positive
    rows[2]["positive"] = rows[2]["positive"].upper()  # matched to c4 by normalised text and by id
    train = write_rows(d / "in", rows[:6])
    write_rows(d / "in", rows[6:], split="dev")
    return {"dir": d, "input": str(train), "corpus": str(d / "collection.tsv"), "docs": docs, "rows": rows}


def mine_config(data, tmp_path, tiny_bert_dir, **kw) -> MineConfig:
    base = dict(
        input=data["input"],
        output=str(tmp_path / "out"),
        model=str(tiny_bert_dir),
        corpus=(data["corpus"],),
        work_dir=str(tmp_path / "work"),
        num_negatives=5,
        range_max=30,
        positive_aware="none",
        near_dup=None,
        device="cpu",
        max_length=64,
        batch_size=8,
        chunk_size=16,
    )
    return MineConfig(**{**base, **kw})
