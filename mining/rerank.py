"""Cross-encoder rescoring: any Hugging Face `AutoModelForSequenceClassification` scores (query, document) pairs."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import torch
from tqdm.auto import tqdm

from negminer.mining.corpus import take

SCORE_KIND = "logit"  # what the reranker's scores are (manifest `mining.scores.kind`; the trainer reads it)


def scores_from_logits(logits: np.ndarray) -> np.ndarray:
    """The relevance logit of each pair: (n, 1) -> the logit; (n, 2) -> l1 - l0, the log-odds of label 1.

    Raw logits, not probabilities: sigmoid(logit) >= 0.5 is the reranker's "relevant" verdict (logit >= 0), a margin
    M between logits is the same odds ratio e^M for every query, and a distilling trainer gets the teacher's own
    scale (a probability near 1 flattens every difference).
    """
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2 or logits.shape[1] not in (1, 2):
        raise ValueError(f"a reranker must output 1 or 2 logits per pair, got shape {logits.shape}")
    if logits.shape[1] == 1:
        return logits[:, 0].astype(np.float32)
    return (logits[:, 1] - logits[:, 0]).astype(np.float32)  # log(softmax[:, 1] / softmax[:, 0])


class Reranker:
    """A cross-encoder on a device; `score(queries, docs)` batches pairs sorted by length."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        device: str,
        max_length: int = 512,
        batch_size: int = 32,
        probabilities: bool = False,
    ):
        self.probabilities = probabilities  # sigmoid of the logits (sentence-transformers' scale), not the logits
        self.model = model.to(device).eval()
        self.tokenizer, self.device = tokenizer, device
        self.max_length, self.batch_size = max_length, batch_size

    @classmethod
    def from_pretrained(cls, name_or_path: str, device: str, dtype: torch.dtype, **kw: Any) -> Reranker:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        model = AutoModelForSequenceClassification.from_pretrained(name_or_path, use_safetensors=True, dtype=dtype)
        return cls(model, AutoTokenizer.from_pretrained(name_or_path), device, **kw)

    def name(self) -> str:
        return str(getattr(self.model.config, "_name_or_path", "") or type(self.model).__name__)

    @torch.inference_mode()
    def score(self, queries: list[str], docs: list[str], desc: str = "rerank") -> np.ndarray:
        """Relevance logit of each (query, doc) pair, float32 (n,)."""
        if len(queries) != len(docs):
            raise ValueError(f"{len(queries)} queries for {len(docs)} documents")
        order = np.argsort([-(len(q) + len(d)) for q, d in zip(queries, docs, strict=True)], kind="stable")
        out = np.empty(len(docs), np.float32)
        for lo in tqdm(range(0, len(order), self.batch_size), desc=desc, leave=False, disable=len(order) < 1000):
            idx = order[lo : lo + self.batch_size]
            batch = self.tokenizer(
                [queries[i] for i in idx],
                [docs[i] for i in idx],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(self.device)
            out[idx] = scores_from_logits(self.model(**batch).logits.float().cpu().numpy())
        return (1.0 / (1.0 + np.exp(-out.astype(np.float64)))).astype(np.float32) if self.probabilities else out


def rescore(
    reranker: Reranker,
    queries: pa.Array,
    texts: pa.ChunkedArray,
    cand: np.ndarray,
    keep: np.ndarray,
    pos: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Reranker scores of the kept candidates (nan elsewhere) and of the positives (-1 padded) of each group."""
    q = queries.to_pylist()
    cand_scores = np.full(cand.shape, np.nan, np.float32)
    pos_scores = np.full(pos.shape, np.nan, np.float32)
    for target, docs, mask in ((cand_scores, cand, keep), (pos_scores, pos, pos >= 0)):
        rows, cols = np.nonzero(mask)
        if not len(rows):
            continue
        pair_docs = take(texts, docs[rows, cols]).to_pylist()
        target[rows, cols] = reranker.score([q[r] for r in rows], pair_docs)
    return cand_scores, pos_scores
