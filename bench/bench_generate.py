"""Plumbing cost of `negminer generate` on CPU: a tiny random causal LM writes queries for N MS MARCO passages,
then the same command runs again and is answered from the cache.

Usage: HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_generate.py [--passages 200] [--max-new-tokens 16] [--threads 1]
Prints passages/s of the first run, of the cached rerun (the ratio is the speed-up of a resumed job) and the
rerun's cache hit rate. The tiny LM's text is nonsense: this measures the pipeline, not a real model.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from negminer import cli  # noqa: E402
from negminer.pipelines import io  # noqa: E402
from tests.llm_servers import make_tiny_causal_lm  # noqa: E402

COLLECTION = (
    Path(__file__).resolve().parents[2] / "shared" / "data" / "msmarco" / "nos-irv3_dl19-judged_collection.tsv"
)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--passages", type=int, default=200)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: a tiny model gains nothing)")
    a = ap.parse_args()
    import torch

    torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory() as tmp:
        model = make_tiny_causal_lm(Path(tmp) / "lm")
        out = str(Path(tmp) / "out")
        argv = ["generate", "--input", str(COLLECTION), "--output", out, "--llm", str(model), "--device", "cpu"]
        argv += ["--limit", str(a.passages), "--max-new-tokens", str(a.max_new_tokens), "--language", "any"]
        argv += ["--batch-size", str(a.batch_size)]
        runs = []
        for _ in range(2):
            t0 = time.perf_counter()
            assert cli.main(argv) == 0
            secs = time.perf_counter() - t0
            runs.append((secs, io.read_manifest(out)))
    (s1, m1), (s2, m2) = runs
    n = m1["generate"]["passages"]
    print(f"passages: {n}, rows: {m1['rows']}, rejects: {m1['rejects']}, torch threads: {a.threads}")
    print(
        f"first run:  {s1:.1f} s wall, {n / s1:.1f} passages/s (pipeline-internal {m1['generate']['passages_per_s']}/s)"
    )
    print(f"cached rerun: {s2:.1f} s wall, {n / s2:.1f} passages/s, cache hit rate {m2['generate']['cache_hit_rate']}")
    print(f"rerun speed-up vs first run: {s1 / s2:.2f}x")


if __name__ == "__main__":
    main()
