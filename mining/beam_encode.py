"""Encoding on Beam: RunInference with a model handler around the project's encoder, chunks into the same store.

Only texts the content-addressed `EmbeddingStore` lacks are encoded; each chunk is written atomically, so a worker
that dies loses at most its current chunk and a rerun encodes only what is missing. Batches group texts of similar
length (RunInference's `batch_length_fn` / `batch_bucket_boundaries`, Beam >= 2.77).

Usage (inside a pipeline):
    _ = keyed_texts | EncodeMissing(EncodeSpec(model=..., work_dir=..., fields=...))  # (wire_key(key), text) in
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import ModelHandler, RunInference

from negminer.mining.store import EmbeddingStore


def wire_key(key: int) -> int:
    """A uint64 content key as the signed int64 with the same bits (Beam's integer coder is signed 64-bit)."""
    return key - (1 << 64) if key >= 1 << 63 else key


LENGTH_BUCKETS = [32, 64, 128, 256, 512, 1024, 2048]  # characters: texts in one batch pad to similar lengths


@dataclasses.dataclass(frozen=True)
class EncodeSpec:
    """What a worker needs to rebuild the encoder and find the store (plain values: it is pickled to workers)."""

    model: str
    work_dir: str
    fields: dict  # the store's setting fields (`Embedder.cache_fields()` as computed by the driver)
    pooling: str = "auto"
    max_length: int = 512
    prompt: str | None = None
    device: str = "cpu"
    dtype: str = "float32"
    batch_size: int = 64
    chunk_size: int = 16384
    trust_remote_code: bool = False


class EmbedderModelHandler(ModelHandler):
    """(key, text) examples -> (key, float32 (D,) unit vector), with the project's `Embedder`."""

    def __init__(self, spec: EncodeSpec):
        super().__init__(
            max_batch_size=spec.batch_size,
            batch_length_fn=lambda kv: len(kv[1]),
            batch_bucket_boundaries=LENGTH_BUCKETS,
        )
        self.spec = spec

    def load_model(self):
        import torch

        from negminer.mining.encode import Embedder
        from negminer.training.model import Encoder

        s = self.spec
        enc = Encoder.from_pretrained(
            s.model, pooling=s.pooling, max_length=s.max_length, trust_remote_code=s.trust_remote_code
        )
        emb = Embedder(enc, s.prompt, s.device, getattr(torch, s.dtype), enc.fingerprint())
        if emb.cache_fields() != s.fields:
            raise ValueError(f"worker's encoder setting {emb.cache_fields()} differs from the driver's {s.fields}")
        return emb

    def run_inference(self, batch: Sequence[tuple[int, str]], model, inference_args=None) -> Iterable[Any]:
        vecs = model([t for _, t in batch])  # (B, D)
        return [(k, v) for (k, _), v in zip(batch, vecs, strict=True)]

    def get_num_bytes(self, batch: Sequence[tuple[int, str]]) -> int:
        return sum(len(t) for _, t in batch)


class DropCachedFn(beam.DoFn):
    """(key, text) -> itself when the store lacks the key (the store's keys are read once per worker)."""

    def __init__(self, spec: EncodeSpec):
        self.spec = spec

    def setup(self) -> None:
        self.cached = np.sort(EmbeddingStore(self.spec.work_dir, self.spec.fields).cached_keys())

    def process(self, kv: tuple[int, str]):
        key = np.int64(kv[0]).view(np.uint64)
        pos = np.searchsorted(self.cached, key)
        if pos < len(self.cached) and self.cached[pos] == key:
            beam.metrics.Metrics.counter("negminer.mine", "cached_texts").inc()
        else:
            yield kv


class WriteChunkFn(beam.DoFn):
    """A batch of (key, vector) -> one chunk written atomically into the store; yields how many it held."""

    def __init__(self, spec: EncodeSpec):
        self.spec = spec

    def setup(self) -> None:
        self.store = EmbeddingStore(self.spec.work_dir, self.spec.fields)

    def process(self, batch: list[tuple[int, np.ndarray]]):
        batch = sorted(batch, key=lambda kv: kv[0])  # the chunk's name and content do not depend on arrival
        keys = np.array([k for k, _ in batch], np.int64).view(np.uint64)
        self.store.write_chunk(keys, np.stack([v for _, v in batch]))
        beam.metrics.Metrics.counter("negminer.mine", "encoded_texts").inc(len(batch))
        yield len(batch)


class EncodeMissing(beam.PTransform):
    """PCollection[(content key as `wire_key`, text)] -> PCollection[int]: texts encoded per chunk written to the store."""

    def __init__(self, spec: EncodeSpec):
        super().__init__()
        self.spec = spec

    def expand(self, keyed_texts):
        s = self.spec
        return (
            keyed_texts
            | "Distinct" >> beam.Distinct()
            | "DropCached" >> beam.ParDo(DropCachedFn(s))
            | "Encode" >> RunInference(EmbedderModelHandler(s))
            | "Chunk" >> beam.BatchElements(min_batch_size=s.chunk_size, max_batch_size=s.chunk_size)
            | "WriteChunk" >> beam.ParDo(WriteChunkFn(s))
        )
