"""Token coverage (late interaction over the mining encoder's token states): how much of a candidate the query says.

`--coverage M` drops a candidate c when `coverage(c, q) >= M`: the mean, over c's tokens, of the best cosine to any
of the query's tokens (ColBERT's MaxSim, from c's side, on the encoder's last hidden states). An entailed or
restated candidate is covered by the query token by token; a hard negative brings words of its own ("sleeping",
"apple juice"). Only the candidates about to be picked are encoded (`coverage_rounds`), never the whole window.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import numpy as np

from negminer.mining.select import Selection

MAX_CACHED = 200_000  # token arrays kept per process (texts and pairs); cleared whole when full


def coverage(doc_tokens: np.ndarray, query_tokens: np.ndarray) -> float:
    """(Td, D), (Tq, D) L2-normalised token vectors -> mean over the document's tokens of the best cosine to a
    query token; nan when either side has no token."""
    if doc_tokens.ndim != 2 or query_tokens.ndim != 2 or doc_tokens.shape[1] != query_tokens.shape[1]:
        raise ValueError(f"need (Td, D) and (Tq, D) token vectors, got {doc_tokens.shape} and {query_tokens.shape}")
    if not len(doc_tokens) or not len(query_tokens):
        return float("nan")
    sim = doc_tokens.astype(np.float32) @ query_tokens.astype(np.float32).T  # (Td, Tq)
    return float(sim.max(axis=1).mean())


def coverage_rounds(
    measure: Callable[[np.ndarray, np.ndarray], np.ndarray],
    select: Callable[[np.ndarray], Selection],
    cand: np.ndarray,
    cov: np.ndarray | None = None,
) -> tuple[Selection, np.ndarray]:
    """Select with the coverage known so far (nan: not measured, the rule abstains), measure the picks not measured
    yet, select again, ... until every pick is measured: the same picks as measuring every candidate first, since
    the rule is a per-candidate test and a measured candidate keeps its value. `measure(g, k)` -> coverage of
    candidates `cand[g, k]`; `cov` carries values measured in earlier calls (updated in place)."""
    cov = np.full(cand.shape, np.nan) if cov is None else cov
    asked = ~np.isnan(cov)
    while True:
        sel = select(cov)
        picked = (cand[:, :, None] == sel.doc[:, None, :]).any(axis=2) & (cand >= 0)
        new = picked & ~asked
        if not new.any():
            return sel, cov
        g, k = np.nonzero(new)
        cov[g, k] = measure(g, k)
        asked[g, k] = True  # a nan answer (no tokens) stays asked: the rule abstains for it


class TokenCoverage:
    """Coverage of (query, document) texts by an `training.model.Encoder` (the mining model): token states without
    the added markers (CLS, SEP, BOS, EOS) and padding, L2-normalised; token arrays and pair values cached per
    process by text. Texts are batched in a fixed order, but a text's states still depend in their last float bits
    on the texts it is padded with, so a candidate within ~1e-6 of the threshold may go either way between runs."""

    def __init__(self, encoder, batch_size: int = 64):
        if not hasattr(encoder, "tokenize") or not hasattr(encoder, "model"):
            raise ValueError("--coverage needs a local encoder's token states (not an embedding endpoint)")
        self.encoder, self.batch_size = encoder, batch_size
        self._tokens: dict[str, np.ndarray] = {}
        self._pairs: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()  # one instance serves every thread of a Beam worker process (Shared)

    def tokens(self, texts: Sequence[str]) -> list[np.ndarray]:
        with self._lock:
            return self._tokens_locked(texts)

    def _tokens_locked(self, texts: Sequence[str]) -> list[np.ndarray]:
        import torch

        order = lambda t: (len(t), t)  # noqa: E731 — a fixed order: batches do not depend on hash seeds
        todo = sorted({t for t in texts if t not in self._tokens}, key=order)
        if len(self._tokens) + len(todo) > MAX_CACHED:
            self._tokens.clear()
            todo = sorted(set(texts), key=order)
        enc = self.encoder
        tok = enc.tokenizer  # the added markers, not [UNK]: an unknown word is still a word of the text
        marks = {tok.cls_token_id, tok.sep_token_id, tok.pad_token_id, tok.bos_token_id, tok.eos_token_id} - {None}
        special = torch.tensor(sorted(marks), dtype=torch.long)
        device = next(enc.model.parameters()).device
        with torch.inference_mode():
            for i in range(0, len(todo), self.batch_size):
                batch = todo[i : i + self.batch_size]
                b = enc.tokenize(batch).to(device)
                h = enc.model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).last_hidden_state
                h = torch.nn.functional.normalize(h.float(), dim=-1).cpu()  # (B, T, D)
                ids = b["input_ids"].cpu()
                real = b["attention_mask"].bool().cpu() & ~torch.isin(ids, special)
                for text, hr, mr in zip(batch, h, real, strict=True):
                    self._tokens[text] = hr[mr].numpy()
        return [self._tokens[t] for t in texts]

    def pairs(self, queries: Sequence[str], docs: Sequence[str]) -> np.ndarray:
        """(n,) coverage of each document by its query."""
        if len(queries) != len(docs):
            raise ValueError(f"{len(queries)} queries for {len(docs)} documents")
        with self._lock:
            return self._pairs_locked(queries, docs)

    def _pairs_locked(self, queries: Sequence[str], docs: Sequence[str]) -> np.ndarray:
        todo = sorted({(q, d) for q, d in zip(queries, docs, strict=True) if (q, d) not in self._pairs})
        if len(self._pairs) + len(todo) > MAX_CACHED:
            self._pairs.clear()
            todo = sorted(set(zip(queries, docs, strict=True)))
        if todo:
            tq = self._tokens_locked([q for q, _ in todo])
            td = self._tokens_locked([d for _, d in todo])
            for (q, d), a, b in zip(todo, td, tq, strict=True):
                self._pairs[(q, d)] = coverage(a, b)
        return np.array([self._pairs[(q, d)] for q, d in zip(queries, docs, strict=True)], dtype=np.float64)
