"""GradCache equals the full-batch gradient; distillation targets line up with the document layout."""

from __future__ import annotations

import pytest
import torch

from negminer.training.config import TrainConfig
from negminer.training.data import Batch
from negminer.training.distributed import Dist
from negminer.training.model import Encoder
from negminer.training.step import StepSettings, distill_targets, doc_owner, forward_backward, objective
from tests.training.conftest import make_tiny_bert


def _batch() -> Batch:
    q = ["a man plays", "the dog runs", "two cats sit", "a child eats food", "red car on the street"]
    p = ["man with guitar", "dog in the park", "cats are inside", "child is happy", "blue car"]
    n = [["woman sleeps", "dog sits"], ["cat eats"], [], ["people run", "big house", "ball"], ["water"]]
    ps = [0.9, None, 0.8, 0.7, 0.6]
    ns = [[0.1, 0.2], None, [], [0.3, 0.2, 0.1], [0.5]]
    return Batch(q, p, n, ps, ns)


def _cfg(tmp_path, **kw) -> TrainConfig:
    return TrainConfig(data=("x",), model="m", output=str(tmp_path), max_steps=1, **kw)


def _grads(encoder: Encoder, batch: Batch, cfg: TrainConfig, chunk: int | None) -> tuple[float, dict]:
    encoder.zero_grad(set_to_none=True)
    loss = forward_backward(
        encoder, batch, lambda q, d, b: objective(q.double(), d.double(), b, cfg), Dist(), StepSettings(chunk=chunk)
    )
    return loss, {n: p.grad.clone() for n, p in encoder.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("loss_name", ["infonce", "infonce-bidirectional"])
def test_grad_cache_equals_full_batch_float64(tmp_path, loss_name):
    path = make_tiny_bert(tmp_path / "m", dtype=torch.float64)
    encoder = Encoder.from_pretrained(path, pooling="mean", max_length=16)
    assert next(encoder.parameters()).dtype == torch.float64
    cfg = _cfg(tmp_path, loss=loss_name, distill=True, temperature=0.1)
    full_loss, full = _grads(encoder, _batch(), cfg, None)
    assert len(full) > 10
    for chunk in (1, 3, 7):
        loss, grads = _grads(encoder, _batch(), cfg, chunk)
        assert loss == pytest.approx(full_loss, rel=1e-12)
        assert grads.keys() == full.keys()
        for name in full:
            torch.testing.assert_close(grads[name], full[name], rtol=1e-9, atol=1e-12, msg=name)
    assert any(g.abs().max() > 0 for g in full.values())


def test_grad_cache_replays_dropout(tmp_path):
    """With dropout on, GradCache equals back-propagating through chunk-wise forwards drawn in the same RNG order:
    only true if each replayed chunk sees the dropout masks of its no-graph pass."""
    path = make_tiny_bert(tmp_path / "m", dtype=torch.float64, dropout=0.3)
    encoder = Encoder.from_pretrained(path, pooling="mean", max_length=16).train()
    cfg = _cfg(tmp_path, temperature=0.1)
    batch, chunk = _batch(), 2
    docs = batch.positives + [t for negs in batch.negatives for t in negs]
    torch.manual_seed(1)
    embs = []
    for texts in (batch.queries, docs):
        for i in range(0, len(texts), chunk):
            enc = encoder.tokenize(texts[i : i + chunk])
            embs.append(encoder(enc["input_ids"], enc["attention_mask"]))
    n_q = -(-len(batch.queries) // chunk)
    encoder.zero_grad(set_to_none=True)
    want_loss = objective(torch.cat(embs[:n_q]), torch.cat(embs[n_q:]), batch, cfg)
    want_loss.backward()
    want = {n: p.grad.clone() for n, p in encoder.named_parameters() if p.grad is not None}
    torch.manual_seed(1)
    loss, got = _grads(encoder, batch, cfg, chunk)
    assert loss == pytest.approx(want_loss.item(), rel=1e-12)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-9, atol=1e-12, msg=name)


def test_distill_targets_and_owner_layout():
    batch = _batch()
    rows, idx, teacher = distill_targets(batch)
    assert rows.tolist() == [0, 2, 3, 4]  # row 1 has no teacher scores
    # documents: 5 positives, then row 0's 2 negatives (5, 6), row 1's (7), row 3's (8, 9, 10), row 4's (11)
    assert idx.tolist() == [[0, 5, 6, -1], [2, -1, -1, -1], [3, 8, 9, 10], [4, 11, -1, -1]]
    # no score kind: cosines, at their default teacher temperature 0.05
    assert teacher[0, :3].tolist() == pytest.approx([18.0, 2.0, 4.0]) and teacher[0, 3] == float("-inf")
    assert doc_owner(batch).tolist() == [0, 1, 2, 3, 4, 0, 0, 1, 3, 3, 3, 4]
