"""Fixtures for mining tests: small shard dirs written to tmp_path, tiny random encoders and cross-encoders."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines import io
from pipelines import schema as S

WORDS = (
    "the a of and to in is was for on with as by at from river city music data model paris france capital "
    "ocean fish grow water light sound wave bank money loan rate tree leaf root king queen war peace law court "
    "heart blood cell gene virus test drug food bread milk cheese sun moon star space rocket car road train"
).split()


def write_rows(out_dir: Path, rows: list[dict], split: str = "train", num_shards: int = 1) -> Path:
    """Rows as dicts (TupleRow fields) -> a shard dir with a manifest."""
    full = [S.TupleRow(**r).to_dict() for r in rows]
    io.write_shards(full, str(out_dir), split, num_shards)
    io.write_manifest(str(out_dir), {"command": "test", "config": {"rows": len(full)}, "inputs": []})
    return out_dir


def make_vocab(path: Path) -> Path:
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    path.write_text("\n".join(specials + sorted(set(WORDS))) + "\n")
    return path


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A tiny random BERT (hidden 32, 2 layers) saved as safetensors with a WordPiece tokenizer."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    d = tmp_path_factory.mktemp("tiny-bert")
    tok = BertTokenizer(vocab=str(make_vocab(d / "vocab.txt")), do_lower_case=True)
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(cfg).save_pretrained(d, safe_serialization=True)
    tok.save_pretrained(d)
    return d


@pytest.fixture(scope="session")
def tiny_cross_encoder_dir(tmp_path_factory) -> Path:
    """A tiny random BertForSequenceClassification (1 label) built in-process."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    d = tmp_path_factory.mktemp("tiny-ce")
    tok = BertTokenizer(vocab=str(make_vocab(d / "vocab.txt")), do_lower_case=True)
    torch.manual_seed(1)
    cfg = BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        num_labels=1,
    )
    BertForSequenceClassification(cfg).save_pretrained(d, safe_serialization=True)
    tok.save_pretrained(d)
    return d
