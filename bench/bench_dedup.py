"""Near dedup inside one large LSH bucket: `dedup.bucket_duplicates` vs comparing every pair as one NumPy block.

Usage: .venv/bin/python bench/bench_dedup.py [--members 5000] [--unrelated 0.2] [--differ 0.1]

The bucket holds near copies of one signature (each value replaced with probability `--differ`, as templated pages
give) and a share `--unrelated` of random signatures. The baseline is the previous code: every row against every
smaller-keyed row, blocks of ~16 MB, no early exit. Both must return the same keys; prints CPU seconds and the ratio.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from negminer.pipelines.transforms import dedup  # noqa: E402


def full_block_compare(members: list[tuple[str, np.ndarray]], threshold: float) -> list[str]:
    """The rule with every pair compared (the code before the early exit)."""
    keys = [k for k, _ in sorted(members, key=lambda m: m[0])]
    sigs = np.stack([s for _, s in sorted(members, key=lambda m: m[0])])  # (m, P)
    m, perms = sigs.shape
    dup = np.zeros(m, dtype=bool)
    block = max(1, (1 << 24) // (m * perms))
    for a in range(1, m, block):
        b = min(m, a + block)
        equal = (sigs[a:b, None, :] == sigs[None, :b, :]).sum(axis=2)
        close = (equal / perms >= threshold) & (np.arange(b)[None, :] < np.arange(a, b)[:, None])
        dup[a:b] = close.any(axis=1)
    return [k for k, d in zip(keys, dup, strict=True) if d]


def planted_bucket(m: int, unrelated: float, differ: float, perms: int = 128, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    sigs = np.repeat(rng.integers(0, 2**32, size=perms, dtype=np.uint64).astype(np.uint32)[None, :], m, axis=0)
    changed = rng.random((m, perms)) < differ
    sigs[changed] = rng.integers(0, 2**32, size=int(changed.sum()), dtype=np.uint64).astype(np.uint32)
    other = rng.random(m) < unrelated
    sigs[other] = rng.integers(0, 2**32, size=(int(other.sum()), perms), dtype=np.uint64).astype(np.uint32)
    return [(f"k{i:09d}", s) for i, s in zip(rng.permutation(m), sigs, strict=True)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--members", type=int, default=5000, help="members of the bucket (default 5000)")
    ap.add_argument("--unrelated", type=float, default=0.2, help="share of random signatures (default 0.2)")
    ap.add_argument("--differ", type=float, default=0.1, help="chance a near copy's value differs (default 0.1)")
    ap.add_argument("--threshold", type=float, default=dedup.DedupConfig().threshold)
    args = ap.parse_args()
    members = planted_bucket(args.members, args.unrelated, args.differ)
    times, results = {}, {}
    for name, fn in (("full block compare", full_block_compare), ("bucket_duplicates", dedup.bucket_duplicates)):
        c0 = time.process_time()
        results[name] = fn(members, args.threshold)
        times[name] = time.process_time() - c0
        print(f"{name:20s} {times[name]:7.2f} CPU-s  {len(results[name])} of {args.members} marked")
    assert results["full block compare"] == results["bucket_duplicates"], "different answers"
    print(f"bucket_duplicates / full block compare: {times['bucket_duplicates'] / times['full block compare']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
