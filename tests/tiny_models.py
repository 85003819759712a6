"""The one place tests and benchmarks build tiny random models offline: encoders, cross-encoders, decoders.

Every builder writes safetensors weights and a WordPiece tokenizer over the given words to `path` and returns it as
a string. The seed fixes the weights, so a model (and everything computed with it) is the same from run to run.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def write_vocab(path: Path, words: Sequence[str], extra_specials: Sequence[str] = ()) -> Path:
    """`path` (a vocab.txt) with the BERT specials, `extra_specials`, then `words` (duplicates dropped, order kept)."""
    path.write_text("\n".join(dict.fromkeys([*SPECIALS, *extra_specials, *words])) + "\n")
    return path


def _tokenizer(path: Path, words: Sequence[str], fast: bool, lower_case: bool, eos: str | None = None):
    from transformers import BertTokenizer, BertTokenizerFast

    vocab = str(write_vocab(path / "vocab.txt", words, [eos] if eos else []))
    kwargs = {"do_lower_case": lower_case, **({"eos_token": eos} if eos else {})}
    return (BertTokenizerFast if fast else BertTokenizer)(vocab=vocab, **kwargs)


def tiny_bert(path: Path, words: Sequence[str], *, seed: int = 0, fast: bool = True, dtype=None, **config) -> str:
    """A random BERT (hidden 32, 2 layers, 2 heads, FFN 64, 128 positions): a `BertModel` encoder, or with
    `num_labels=N` a cross-encoder (`BertForSequenceClassification`). `config` overrides `BertConfig` fields
    (`num_hidden_layers=1`, `hidden_dropout_prob=0.0`, ...); `fast` picks the tokenizer class.
    """
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertModel

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tok = _tokenizer(path, words, fast, lower_case=True)
    torch.manual_seed(seed)
    base = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    cfg = BertConfig(vocab_size=tok.vocab_size, **{**base, "max_position_embeddings": 128, **config})
    model = BertForSequenceClassification(cfg) if "num_labels" in config else BertModel(cfg)
    if dtype is not None:
        model = model.to(dtype)
    model.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    return str(path)


def dropout(p: float) -> dict[str, float]:
    """`BertConfig` overrides setting both dropout probabilities to `p`."""
    return {"hidden_dropout_prob": p, "attention_probs_dropout_prob": p}


def tiny_decoder(path: Path, words: Sequence[str], *, seed: int = 0) -> str:
    """A random 2-layer Qwen2 decoder (last-token pooling) with a WordPiece tokenizer that has an `[EOS]` token."""
    import torch
    from transformers import Qwen2Config, Qwen2Model

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tok = _tokenizer(path, words, fast=True, lower_case=True, eos="[EOS]")
    torch.manual_seed(seed)
    cfg = Qwen2Config(
        vocab_size=tok.vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=128,
        architectures=["Qwen2ForCausalLM"],
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    Qwen2Model(cfg).save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    return str(path)


def tiny_modernbert(path: Path, words: Sequence[str], *, seed: int = 0) -> str:
    """A random 2-layer ModernBERT encoder (global attention in every layer) with a WordPiece tokenizer."""
    import torch
    from transformers import ModernBertConfig, ModernBertModel

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tok = _tokenizer(path, words, fast=True, lower_case=True)
    ids = dict(pad_token_id=tok.pad_token_id, cls_token_id=tok.cls_token_id, sep_token_id=tok.sep_token_id)
    cfg = ModernBertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        bos_token_id=tok.cls_token_id,
        eos_token_id=tok.sep_token_id,
        global_attn_every_n_layers=1,
        **ids,
    )
    torch.manual_seed(seed)
    ModernBertModel(cfg).save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    return str(path)
