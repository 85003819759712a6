"""The round-trip check of generated queries: the source passage must rank in the top k for its query.

The pool is the input passages, encoded once (a side input to every worker), by the miner's encoder code or an
embeddings endpoint (mining/remote.py). Rank = how many pool passages score strictly higher than the source.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import numpy as np

from negminer.pipelines.source import Record, reject

COUNTER_NS = "negminer.generate"


def passage_reject(p: tuple, reason: str, answer: str | None = None) -> beam.pvalue.TaggedOutput:
    raw = json.dumps({"passage_id": p[0], "passage": p[1][:500], "answer": answer}, ensure_ascii=False)
    return reject(Record(p[2], p[3], raw), reason, COUNTER_NS)


@dataclasses.dataclass(frozen=True)
class RoundTrip:
    """The round-trip encoder: a local model (the miner's encoder code) or an embeddings endpoint URL + model."""

    model: str
    api_model: str | None = None
    query_prompt: str | None = None
    doc_prompt: str | None = None
    device: str = "auto"
    k: int = 10


@functools.lru_cache(maxsize=2)
def _encoder(model: str, api_model: str | None, device: str) -> tuple[Any, str, Any]:
    """One encoder per process (the pool and the check share it; inference only): (encoder, device, dtype)."""
    from negminer.mining.encode import resolve_device, resolve_dtype
    from negminer.mining.remote import EndpointEncoder, is_endpoint

    if is_endpoint(model):
        return EndpointEncoder(model, api_model or ""), "cpu", None
    from negminer.training.model import Encoder

    dev = resolve_device(device)
    return Encoder.from_pretrained(model), dev, resolve_dtype("auto", dev)


def load_embedder(rt: RoundTrip, side: str):
    """texts -> (n, D) L2-normalised embeddings for `side` ("query" or "doc"), with the miner's `Embedder` (local
    model) or `EndpointEmbedder` (endpoint) and that side's prompt."""
    from negminer.mining.encode import Embedder
    from negminer.mining.remote import EndpointEncoder

    encoder, device, dtype = _encoder(rt.model, rt.api_model, rt.device)
    prompt = rt.query_prompt if side == "query" else rt.doc_prompt
    if isinstance(encoder, EndpointEncoder):
        return encoder.embedder(prompt)
    return Embedder(encoder, prompt, device, dtype, "round-trip")


class EncodePassagesFn(beam.DoFn):
    """Batches of passages -> (ids, (B, D) float32 embeddings) for the round-trip pool."""

    def __init__(self, rt: RoundTrip):
        self.rt = rt

    def setup(self):
        self.embed = load_embedder(self.rt, "doc")

    def process(self, batch: list[tuple]) -> Iterator[tuple[list[str], np.ndarray]]:
        yield [p[0] for p in batch], self.embed([p[1] for p in batch])


def source_ranks(q: np.ndarray, pool: np.ndarray, src: np.ndarray) -> np.ndarray:
    """0-based rank of each query's source passage: how many pool passages score strictly higher (dot product)."""
    scores = q @ pool.T  # (B, N)
    own = scores[np.arange(len(src)), src]  # (B,)
    return (scores > own[:, None]).sum(axis=1)


class RoundTripFn(beam.DoFn):
    """Batches of (passage, query, instruction) -> those whose passage ranks in the top k for the query."""

    def __init__(self, rt: RoundTrip):
        self.rt, self.k = rt, rt.k
        self._pool: tuple[int, dict[str, int], np.ndarray] | None = None

    def setup(self):
        self.embed = load_embedder(self.rt, "query")

    def _pool_of(self, parts: list[tuple[list[str], np.ndarray]]) -> tuple[dict[str, int], np.ndarray]:
        if self._pool is None or self._pool[0] != len(parts):  # one side input per run: build its matrix once
            ids = [i for p in parts for i in p[0]]
            mat = np.concatenate([p[1] for p in parts]) if parts else np.zeros((0, 1), np.float32)
            self._pool = (len(parts), {pid: n for n, pid in enumerate(ids)}, mat)
        return self._pool[1], self._pool[2]

    def process(self, batch: list[tuple], pool_parts: list) -> Iterator[Any]:
        index, pool = self._pool_of(pool_parts)
        ranks = source_ranks(self.embed([b[1] for b in batch]), pool, np.array([index[b[0][0]] for b in batch]))
        for (p, query, instruction), rank in zip(batch, ranks, strict=True):
            if rank < self.k:
                yield p, query, instruction, int(rank)
            else:
                yield passage_reject(p, "round_trip_failed", json.dumps({"query": query, "rank": int(rank)}))
