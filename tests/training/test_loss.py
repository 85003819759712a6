"""Losses against sentence-transformers as an oracle and against float64 hand computations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

from negminer.training.loss import distill_kl, infonce, infonce_bidirectional, row_scores


class _NoModel(torch.nn.Module):
    pass


def _st_layout(B=6, K=2, D=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    anchors = F.normalize(torch.randn(B, D, generator=g, dtype=torch.float64), dim=-1)
    pos = F.normalize(torch.randn(B, D, generator=g, dtype=torch.float64), dim=-1)
    negs = [F.normalize(torch.randn(B, D, generator=g, dtype=torch.float64), dim=-1) for _ in range(K)]
    return anchors, pos, negs


def _ours_layout(pos, negs):
    """sentence-transformers orders documents column by column; ours is positives then each row's negatives."""
    B, K = pos.shape[0], len(negs)
    flat = torch.stack(negs, dim=1).reshape(B * K, -1)  # row-major: row 0's negatives first
    owner = torch.cat([torch.arange(B), torch.arange(B).repeat_interleave(K)])
    return torch.cat([pos, flat]), owner


@pytest.mark.parametrize("temperature", [0.05, 0.5])
def test_infonce_equals_sentence_transformers_mnrl(temperature):
    anchors, pos, negs = _st_layout()
    st = MultipleNegativesRankingLoss(_NoModel(), scale=1 / temperature)
    want = st.compute_loss_from_embeddings([anchors, pos, *negs], None)
    d, _ = _ours_layout(pos, negs)
    assert infonce(anchors, d, temperature).item() == pytest.approx(want.item(), rel=1e-9)


def test_bidirectional_equals_sentence_transformers_gte_mode():
    anchors, pos, negs = _st_layout(B=5, K=3)
    directions = ("query_to_doc", "query_to_query", "doc_to_query", "doc_to_doc")
    st = MultipleNegativesRankingLoss(_NoModel(), scale=20.0, directions=directions, partition_mode="joint")
    want = st.compute_loss_from_embeddings([anchors, pos, *negs], None)
    d, owner = _ours_layout(pos, negs)
    assert infonce_bidirectional(anchors, d, 0.05, owner).item() == pytest.approx(want.item(), rel=1e-9)


def test_bidirectional_by_hand():
    anchors, pos, negs = _st_layout(B=3, K=1, D=4, seed=3)
    d, owner = _ours_layout(pos, negs)
    tau, B, N = 0.1, 3, d.shape[0]
    total = 0.0
    for i in range(B):
        s = lambda a, b: math.exp(float(a @ b) / tau)  # noqa: E731
        z = sum(s(anchors[i], d[n]) for n in range(N))
        z += sum(s(anchors[i], anchors[j]) for j in range(B) if j != i)
        z += sum(s(anchors[j], pos[i]) for j in range(B))
        z += sum(s(d[n], pos[i]) for n in range(N) if owner[n] != i)
        total += -math.log(s(anchors[i], pos[i]) / z)
    assert infonce_bidirectional(anchors, d, tau, owner).item() == pytest.approx(total / B, rel=1e-9)


def test_infonce_by_hand_and_errors():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    d = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, -1.0]], dtype=torch.float64)
    tau = 0.5
    l0 = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + math.exp(0.6 / tau) + math.exp(0)))
    l1 = -math.log(math.exp(0.8 / tau) / (math.exp(0) + math.exp(0.8 / tau) + math.exp(-1 / tau)))
    assert infonce(q, d, tau).item() == pytest.approx((l0 + l1) / 2, rel=1e-12)
    with pytest.raises(ValueError, match="positive per query"):
        infonce(q, d[:1], tau)


def test_distill_kl_by_hand_with_padding():
    student = torch.tensor([[0.9, 0.1, float("-inf")], [0.5, 0.4, 0.3]], dtype=torch.float64)
    teacher = torch.tensor([[2.0, 1.0, float("-inf")], [1.0, 1.0, 0.0]], dtype=torch.float64)
    ts, tt = 0.5, 1.0

    def softmax(xs, t):
        e = [math.exp(x / t) for x in xs]
        return [v / sum(e) for v in e]

    want = 0.0
    for s_row, t_row in (([0.9, 0.1], [2.0, 1.0]), ([0.5, 0.4, 0.3], [1.0, 1.0, 0.0])):
        p, r = softmax(t_row, tt), softmax(s_row, ts)
        want += sum(a * math.log(a / b) for a, b in zip(p, r, strict=True))
    assert distill_kl(student, teacher, ts, tt).item() == pytest.approx(want / 2, rel=1e-9)
    assert distill_kl(teacher, teacher, 1.0, 1.0).item() == pytest.approx(0.0, abs=1e-12)


def test_row_scores_indexes_own_candidates():
    q = torch.eye(2, dtype=torch.float64)
    d = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]], dtype=torch.float64)
    s = row_scores(q, d, torch.tensor([[0, 2], [1, -1]]))
    assert s[0].tolist() == [1.0, 0.5] and s[1, 0].item() == 1.0 and s[1, 1].item() == float("-inf")
