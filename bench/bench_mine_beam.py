"""The price of the engine on one machine: in-process miner vs the Beam miner (DirectRunner) on the same data.

Usage: .venv/bin/python bench/bench_mine_beam.py [--docs 20000] [--queries 2000] [--workers 2]

Synthetic corpus and queries (bench_mine_scale's generator), random 1-layer 32-wide BERT, flat search. Each side
runs in a fresh subprocess with a fresh work dir, so both encode everything: in-process, Beam in-memory DirectRunner,
Beam DirectRunner with --workers worker processes. Prints wall seconds, the ratio Beam / in-process (goal <= 1.5x),
whether the shards are byte-identical, and the measured encode throughput per process (texts/s) that an estimate for
more workers starts from.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_mine_scale import make_data, make_model  # noqa: E402


def digest(out: str) -> str:
    h = hashlib.sha256()
    for f in sorted(Path(out).glob("*.parquet")):
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def child(args) -> None:
    from negminer.mining.beam_mine import mine_beam
    from negminer.mining.config import MineConfig
    from negminer.mining.mine import mine

    cfg = MineConfig(
        input=args.input,
        output=args.output,
        model=args.model,
        corpus=(args.corpus,),
        work_dir=args.work_dir,
        device="cpu",
        max_length=32,
        batch_size=256,
        chunk_size=4096,
        num_negatives=7,
        range_max=50,
    )
    t = time.perf_counter()
    m = mine(cfg) if args.mode == "in-process" else mine_beam(cfg, json.loads(args.beam))
    wall = time.perf_counter() - t
    n = m["mining"]["encoded"]["documents"] + m["mining"]["encoded"]["queries"]
    print(json.dumps({"wall": wall, "encoded": n, "digest": digest(args.output), "timings": m["mining"]["timings_s"]}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=20_000)
    ap.add_argument("--queries", type=int, default=2_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    for name in ("input", "output", "model", "corpus", "work-dir", "mode", "beam"):
        ap.add_argument(f"--{name}", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    sides = {
        "in-process": [],
        "beam-direct": ["--runner=DirectRunner"],
        f"beam-{args.workers}-procs": [
            "--runner=DirectRunner",
            "--direct_running_mode=multi_processing",
            f"--direct_num_workers={args.workers}",
        ],
    }
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        make_model(Path(tmp) / "model")
        _, corpus, inp = make_data(Path(tmp) / "data", args.docs, args.queries)
        for name, beam_args in sides.items():
            cmd = [sys.executable, __file__, "--child", "--mode", name, "--beam", json.dumps(beam_args)]
            cmd += ["--input", str(inp), "--output", f"{tmp}/out-{name}", "--model", f"{tmp}/model"]
            cmd += ["--corpus", str(corpus), "--work-dir", f"{tmp}/work-{name}"]
            res = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if res.returncode:
                sys.exit(f"{name} failed:\n{res.stderr[-4000:]}")
            r = results[name] = json.loads(res.stdout.strip().splitlines()[-1])
            print(f"{name:>14}: {r['wall']:7.1f} s, {r['encoded']:,} texts encoded, shards {r['digest']}", flush=True)
    base = results["in-process"]
    for name, r in results.items():
        if name != "in-process":
            same = "identical" if r["digest"] == base["digest"] else "DIFFERENT"
            print(f"{name} / in-process wall: {r['wall'] / base['wall']:.2f}x (goal <= 1.5x); shards {same}")
    enc = base["timings"]["encode"]
    print(f"in-process encode throughput: {base['encoded'] / enc:.0f} texts/s (one process, {enc:.1f} s)")


if __name__ == "__main__":
    main()
