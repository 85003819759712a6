"""On a CUDA machine: mining on the GPU agrees with the CPU, and FAISS-GPU search equals the CPU search."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from negminer.mining import index as ix
from negminer.mining.mine import mine
from negminer.pipelines import io
from negminer.pipelines import schema as S
from tests.mining.conftest import mine_config

pytestmark = pytest.mark.gpu


def test_gpu_mining_agrees_with_cpu(mine_data, tmp_path, tiny_bert_dir):
    cpu_cfg = mine_config(mine_data, tmp_path, tiny_bert_dir, dtype="float32")
    gpu_cfg = dataclasses.replace(cpu_cfg, output=str(tmp_path / "gpu"), device="cuda", work_dir=str(tmp_path / "w2"))
    cpu, gpu = mine(cpu_cfg), mine(gpu_cfg)
    assert gpu["mining"]["device"] == "cuda" and cpu["mining"]["device"] == "cpu"
    pairs = lambda d: {(r[S.QUERY], n) for r in io.iter_rows(d) for n in r[S.NEGATIVES]}  # noqa: E731
    a, b = pairs(cpu_cfg.output), pairs(gpu_cfg.output)
    assert len(a & b) / len(a) >= 0.9


def test_faiss_gpu_search_equals_cpu():
    if not ix.gpu_available():
        pytest.skip("faiss has no GPU support here (install faiss-gpu)")
    rng = np.random.default_rng(0)
    docs = rng.standard_normal((5000, 32)).astype(np.float32)
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    shards = [(np.arange(a, a + 1000), docs[a : a + 1000]) for a in range(0, 5000, 1000)]
    s1, i1 = ix.search_sharded(docs[:50], iter(shards), 20, gpu=False)
    s2, i2 = ix.search_sharded(docs[:50], iter(shards), 20, gpu=True)
    assert (i1 == i2).mean() > 0.99 and np.abs(s1 - s2).max() < 1e-4
