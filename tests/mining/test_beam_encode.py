"""Encoding on Beam (RunInference) fills the same store the in-process miner reads, and a rerun adds only the rest."""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest
import torch
from apache_beam.testing.test_pipeline import TestPipeline

from negminer.mining.beam_encode import EncodeMissing, EncodeSpec, wire_key
from negminer.mining.corpus import hash64
from negminer.mining.encode import Embedder, encode_missing
from negminer.mining.store import EmbeddingStore
from negminer.training.model import Encoder
from tests.mining.conftest import sentence


def spec_for(model_dir, work_dir) -> tuple[EncodeSpec, Embedder]:
    enc = Encoder.from_pretrained(str(model_dir), max_length=64)
    emb = Embedder(enc, None, "cpu", torch.float32, enc.fingerprint())
    spec = EncodeSpec(
        model=str(model_dir),
        work_dir=str(work_dir),
        fields=emb.cache_fields(),
        max_length=64,
        batch_size=8,
        chunk_size=16,
    )
    return spec, emb


def run(spec, texts):
    with TestPipeline() as p:
        _ = p | beam.Create([(wire_key(hash64(t)), t) for t in texts + texts[:5]]) | EncodeMissing(spec)


@pytest.mark.slow
@pytest.mark.parametrize("where", ["local", "mem"])
def test_beam_encoding_fills_the_store_and_resumes(where, tmp_path, tiny_bert_dir):
    """On local disk and on `mem://`, a non-local Beam file system (as `gs://` is), in the same way."""
    import tests.memfs  # noqa: F401 — registers mem://

    rng = np.random.default_rng(3)
    texts = list(dict.fromkeys(sentence(rng) for _ in range(50)))
    spec, emb = spec_for(tiny_bert_dir, tmp_path / "work" if where == "local" else f"mem://{tmp_path.name}/work")
    run(spec, texts[:30])
    store = EmbeddingStore(spec.work_dir, spec.fields)
    keys = np.array([hash64(t) for t in texts], np.uint64)
    assert sorted(store.cached_keys().tolist()) == sorted(keys[:30].tolist())  # each text once
    run(spec, texts)  # a rerun: the 30 cached texts are not encoded again
    names = store.chunk_names()
    assert sorted(store.cached_keys().tolist()) == sorted(keys.tolist())
    assert len(store.cached_keys()) == len(texts)
    chunk, row = store.locate(keys)
    np.testing.assert_allclose(store.gather(chunk, row), emb(texts), atol=2e-3)  # float16 store
    # the in-process encoder reading the same store finds nothing to do
    lengths = np.array([len(t) for t in texts])
    assert encode_missing(store, pa.array(texts), keys, lengths, emb, 8, 16) == 0
    assert store.chunk_names() == names
