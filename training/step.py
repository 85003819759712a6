"""One optimisation step's forward and backward: encode (directly or with GradCache), gather, loss, backward.

Global document layout (the same on one process or many): the B positives in row order, then every row's hard
negatives in row order. With torchrun each process encodes a contiguous slice of rows, so gathering its positives and
its negatives separately in rank order reproduces exactly that layout.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable

import torch

from negminer.training import distributed
from negminer.training.config import TrainConfig
from negminer.training.data import TEACHER_TEMPERATURE, Batch
from negminer.training.loss import distill_kl, infonce, infonce_bidirectional, row_scores
from negminer.training.model import Encoder

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclasses.dataclass(frozen=True)
class StepSettings:
    chunk: int | None = None  # GradCache chunk (texts per forward); None = one forward with grad
    autocast_dtype: torch.dtype | None = None  # bf16 / fp16 autocast, None = fp32
    query_prompt: str | None = None
    doc_prompt: str | None = None


def teacher_logits(scores: list[float], kind: str | None, temperature: float | None = None) -> list[float]:
    """Teacher scores as the logits of the target softmax: score / τ (probabilities first become log-odds).

    τ is `temperature` when given, else `TEACHER_TEMPERATURE[kind]` (scores of unknown kind count as cosines).
    """
    kind = kind or "cosine"
    if kind not in TEACHER_TEMPERATURE:
        raise ValueError(f"unknown teacher score kind {kind!r}; known: {tuple(TEACHER_TEMPERATURE)}")
    tau = temperature if temperature is not None else TEACHER_TEMPERATURE[kind]
    if kind == "probability":
        eps = 1e-6
        scores = [math.log(min(max(p, eps), 1 - eps) / (1 - min(max(p, eps), 1 - eps))) for p in scores]
    return [s / tau for s in scores]


def distill_targets(
    batch: Batch, teacher_temperature: float | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(rows, doc_index (R, K), teacher logits (R, K)) for rows that carry teacher scores; padding is -1 / -inf.

    Each row's scores become logits by its score kind (`teacher_logits`): the target is softmax(teacher) as is.
    """
    B = len(batch)
    offsets, total = [], B
    for negs in batch.negatives:
        offsets.append(total)
        total += len(negs)
    rows, index, teacher = [], [], []
    for i in range(B):
        pos, negs = batch.positive_scores[i], batch.negative_scores[i]
        if pos is None or negs is None or len(negs) != len(batch.negatives[i]):
            continue
        rows.append(i)
        index.append([i, *range(offsets[i], offsets[i] + len(negs))])
        kind = batch.score_kinds[i] if batch.score_kinds is not None else None
        teacher.append(teacher_logits([pos, *negs], kind, teacher_temperature))
    K = max((len(x) for x in index), default=1)
    idx = torch.full((len(rows), K), -1, dtype=torch.long)
    tea = torch.full((len(rows), K), float("-inf"), dtype=torch.float32)
    for r, (ix, t) in enumerate(zip(index, teacher, strict=True)):
        idx[r, : len(ix)] = torch.tensor(ix)
        tea[r, : len(t)] = torch.tensor(t, dtype=torch.float32)
    return torch.tensor(rows, dtype=torch.long), idx, tea


def doc_owner(batch: Batch) -> torch.Tensor:
    """(N,) the row each document of the global layout belongs to: positives 0..B-1, then each row's negatives."""
    owners = list(range(len(batch))) + [i for i, negs in enumerate(batch.negatives) for _ in negs]
    return torch.tensor(owners, dtype=torch.long)


def objective(q: torch.Tensor, d: torch.Tensor, batch: Batch, cfg: TrainConfig) -> torch.Tensor:
    """The training loss of a global batch from its embeddings q (B, D) and d (B + negatives, D)."""
    q, d = q.float(), d.float()
    if cfg.loss == "infonce-bidirectional":
        loss = infonce_bidirectional(q, d, cfg.temperature, doc_owner(batch).to(q.device))
    else:
        loss = infonce(q, d, cfg.temperature)
    if cfg.distill:
        rows, idx, teacher = distill_targets(batch, cfg.teacher_temperature)
        if len(rows):
            student = row_scores(q[rows.to(q.device)], d, idx.to(q.device))
            # teacher already in logits (its temperature applied per score kind): softmax(teacher) is the target
            loss = loss + cfg.distill_weight * distill_kl(student, teacher.to(q.device), cfg.temperature, 1.0)
    return loss


def local_texts(batch: Batch, ctx: distributed.Dist) -> tuple[list[str], list[str], list[int], list[int]]:
    """This process's queries, documents (its positives then its negatives), and every process's negative counts."""
    start, stop = ctx.share(len(batch))
    mine = batch.slice(start, stop)
    neg_sizes = []
    for r in range(ctx.world):
        s, e = distributed.Dist(r, ctx.world).share(len(batch))
        neg_sizes.append(sum(len(n) for n in batch.negatives[s:e]))
    docs = mine.positives + [t for negs in mine.negatives for t in negs]
    return mine.queries, docs, [stop - start] * ctx.world, neg_sizes


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _rng_state(device: torch.device) -> tuple:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def _set_rng_state(state: tuple, device: torch.device) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


def _encode(encoder: Encoder, texts: list[str], prompt: str | None, device: torch.device) -> torch.Tensor:
    enc = encoder.tokenize(texts, prompt=prompt).to(device)
    return encoder(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])  # (n, D)


def forward_backward(
    encoder: Encoder,
    batch: Batch,
    loss_fn: Callable[[torch.Tensor, torch.Tensor, Batch], torch.Tensor],
    ctx: distributed.Dist,
    settings: StepSettings,
    scale: Callable[[torch.Tensor], torch.Tensor] = lambda x: x,
) -> float:
    """Accumulate the gradient of loss_fn(q_global, d_global, batch) into encoder's parameters; return the loss.

    With settings.chunk, GradCache (Gao et al. 2021): embed every chunk without a graph, take the loss and its
    gradient with respect to the embeddings, then re-run each chunk with a graph (same RNG state, so dropout
    replays) and back-propagate the cached embedding gradient. Memory is that of one chunk; the result equals
    the full-batch gradient.
    """
    device = next(encoder.parameters()).device
    queries, docs, q_sizes, n_sizes = local_texts(batch, ctx)
    b = len(queries)
    groups = [(queries, settings.query_prompt), (docs, settings.doc_prompt)]

    def global_loss(q_local: torch.Tensor, d_local: torch.Tensor) -> torch.Tensor:
        q = distributed.gather(q_local, q_sizes, ctx)
        p = distributed.gather(d_local[:b], q_sizes, ctx)
        n = distributed.gather(d_local[b:], n_sizes, ctx)
        return loss_fn(q, torch.cat([p, n]), batch)

    if settings.chunk is None:
        with _autocast(device, settings.autocast_dtype):
            q_local, d_local = (_encode(encoder, texts, prompt, device) for texts, prompt in groups)
        loss = global_loss(q_local.float(), d_local.float())
        scale(loss).backward()
        return float(loss.detach())

    chunks = [
        (texts[i : i + settings.chunk], prompt)
        for texts, prompt in groups
        for i in range(0, len(texts), settings.chunk)
    ]
    states, embs = [], []
    with torch.no_grad(), _autocast(device, settings.autocast_dtype):
        for texts, prompt in chunks:
            states.append(_rng_state(device))
            embs.append(_encode(encoder, texts, prompt, device).float())
    n_q = -(-len(queries) // settings.chunk)
    q_local = torch.cat(embs[:n_q]).requires_grad_()
    d_local = torch.cat(embs[n_q:]).requires_grad_()
    loss = global_loss(q_local, d_local)
    scale(loss).backward()
    cached = list(torch.split(q_local.grad, settings.chunk)) + list(torch.split(d_local.grad, settings.chunk))
    after = _rng_state(device)
    for (texts, prompt), state, grad in zip(chunks, states, cached, strict=True):
        _set_rng_state(state, device)
        with _autocast(device, settings.autocast_dtype):
            emb = _encode(encoder, texts, prompt, device)
        emb.backward(grad.to(emb.dtype))
    _set_rng_state(after, device)
    return float(loss.detach())
