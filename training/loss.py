"""Contrastive losses as pure functions of embeddings: InfoNCE, GTE's bidirectional variant, score distillation.

Layout used throughout: `q` (B, D) queries; `d` (N, D) documents whose first B rows are the positives (row i is the
positive of query i) and the rest hard negatives of any row; every document is a negative for every other query.

>>> import torch
>>> q = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
>>> d = torch.nn.functional.normalize(torch.randn(12, 8), dim=-1)
>>> loss = infonce(q, d, temperature=0.05)

Reference: InfoNCE (van den Oord et al. 2018) as in sentence-transformers' MultipleNegativesRankingLoss with
scale = 1/τ; the bidirectional form is the "improved contrastive loss" of GTE (Li et al. 2023, eq. 2).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def infonce(q: torch.Tensor, d: torch.Tensor, temperature: float = 0.05) -> torch.Tensor:
    """-mean_i log( exp(s(q_i,d_i)/τ) / Σ_j exp(s(q_i,d_j)/τ) ) over all N documents. q: (B, D), d: (N, D), N >= B."""
    B = q.shape[0]
    if d.shape[0] < B:
        raise ValueError(f"need at least one positive per query: {B} queries, {d.shape[0]} documents")
    logits = q @ d.T / temperature  # (B, N)
    return F.cross_entropy(logits, torch.arange(B, device=q.device))


def infonce_bidirectional(
    q: torch.Tensor, d: torch.Tensor, temperature: float = 0.05, doc_owner: torch.Tensor | None = None
) -> torch.Tensor:
    """GTE's improved contrastive loss: one partition over four directions (as sentence-transformers' MNRL with
    all four `directions` and `partition_mode="joint"`).

    Z_i = Σ_n e^{s(q_i,d_n)} + Σ_{j≠i} e^{s(q_i,q_j)} + Σ_j e^{s(q_j,p_i)} + Σ_{n: owner(n)≠i} e^{s(d_n,p_i)}, all over τ;
    loss = -mean_i [ s(q_i,p_i)/τ - log Z_i ]. `doc_owner` (N,) is the row each document belongs to (its positive or
    one of its hard negatives); by default the first B documents are the positives and the rest belong to no row.
    """
    B = q.shape[0]
    if doc_owner is None:
        doc_owner = torch.full((d.shape[0],), -1, dtype=torch.long, device=q.device)
        doc_owner[:B] = torch.arange(B, device=q.device)
    p = d[:B]  # (B, D)
    rows = torch.arange(B, device=q.device)
    qd = q @ d.T / temperature  # (B, N)
    qq = (q @ q.T / temperature).masked_fill(rows[:, None] == rows[None, :], float("-inf"))  # (B, B)
    dq = p @ q.T / temperature  # (B, B): row i holds s(q_j, p_i)
    dd = (p @ d.T / temperature).masked_fill(doc_owner[None, :] == rows[:, None], float("-inf"))  # (B, N)
    log_z = torch.logsumexp(torch.cat([qd, qq, dq, dd], dim=1), dim=1)  # (B,)
    return (log_z - qd.diagonal()).mean()


def row_scores(q: torch.Tensor, d: torch.Tensor, doc_index: torch.Tensor) -> torch.Tensor:
    """Scores of each query against its own candidates: `doc_index` (B, K) indexes `d`, -1 = padding -> -inf."""
    safe = doc_index.clamp(min=0)
    s = torch.einsum("bd,bkd->bk", q, d[safe])  # (B, K)
    return s.masked_fill(doc_index < 0, float("-inf"))


def distill_kl(
    student: torch.Tensor, teacher: torch.Tensor, student_temperature: float = 0.05, teacher_temperature: float = 1.0
) -> torch.Tensor:
    """KL(softmax(teacher/τ_t) || softmax(student/τ_s)) per row, averaged. (B, K) each; -inf (padding) in both is ignored."""
    valid = torch.isfinite(teacher) & torch.isfinite(student)
    t_logp = F.log_softmax(teacher.masked_fill(~valid, float("-inf")) / teacher_temperature, dim=-1)
    s_logp = F.log_softmax(student.masked_fill(~valid, float("-inf")) / student_temperature, dim=-1)
    # zero the padded slots before subtracting: -inf - -inf would put NaN into the gradient
    t_logp, s_logp = t_logp.masked_fill(~valid, 0.0), s_logp.masked_fill(~valid, 0.0)
    kl = t_logp.exp().masked_fill(~valid, 0.0) * (t_logp - s_logp)
    return kl.sum(-1).mean()
