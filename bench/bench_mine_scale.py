"""Peak memory of the in-process `negminer mine` on a synthetic corpus with a tiny encoder, and its growth with size.

Usage: .venv/bin/python bench/bench_mine_scale.py [--sizes 250000 2000000] [--query-ratio 0.1] [--index flat]
       [--threads 1] [--shard-rows 8192] [--out bench/results/mine_scale.json]

Each size runs in a fresh subprocess on a Parquet corpus of random sentences over a synthetic 2,000-word vocabulary
(queries = size x --query-ratio input rows), with a random 1-layer, 32-wide BERT. Memory is counted two ways:
peak RSS (ru_maxrss: every resident page, pages of memory-mapped files included) and peak anonymous RSS (RssAnon
of /proc/self/status sampled every 20 ms: the process's own heap, without file pages the OS can write back and
drop — the corpus Arrow file, the embedding chunks, the search results and the miner's scratch arrays
(`mining/extsort.py`) are memory-mapped files). Prints both per size and the anonymous peak of each phase, their
growth ratios (goal: at most 1.3x), and the raw size of the corpus text (what holding the texts in memory would
cost); `--out` also writes them as JSON, after each size.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VOCAB = [f"w{i}" for i in range(2000)]


def make_model(out: Path) -> None:
    from tests.tiny_models import tiny_bert

    tiny_bert(out, VOCAB, num_hidden_layers=1, max_position_embeddings=64, fast=False)


def make_data(out: Path, n_docs: int, n_queries: int, seed: int = 0) -> tuple[int, Path, Path]:
    """A Parquet corpus of n_docs sentences and input shards of n_queries (query, positive) rows."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from negminer.pipelines import io
    from negminer.pipelines import schema as S

    rng = np.random.default_rng(seed)
    words = np.array(VOCAB)
    out.mkdir(parents=True, exist_ok=True)
    corpus, text_bytes, writer = out / "corpus.parquet", 0, None
    for lo in range(0, n_docs, 100_000):
        n = min(100_000, n_docs - lo)
        lens = rng.integers(8, 25, n)
        idx = rng.integers(0, len(words), lens.sum())
        texts = [" ".join(part) for part in np.split(words[idx], np.cumsum(lens)[:-1])]
        text_bytes += sum(map(len, texts))
        table = pa.table({"id": [f"d{i}" for i in range(lo, lo + n)], "text": texts})
        writer = writer or pq.ParquetWriter(corpus, table.schema)
        writer.write_table(table)
        if lo == 0:
            first = texts
    writer.close()
    rows = [
        S.TupleRow(
            source="synthetic", pair_type="qa", query=" ".join(rng.choice(words, 6)), positive=first[i % len(first)]
        ).to_dict()
        for i in range(n_queries)
    ]
    io.write_shards(rows, str(out / "in"), num_shards=4)
    return text_bytes, corpus, out / "in"


def rss_anon() -> int:
    """Resident anonymous memory of this process in bytes (Linux)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    return 0


def child(args) -> None:
    from negminer.mining import mine as mine_mod
    from negminer.mining.config import MineConfig
    from negminer.mining.mine import mine

    t = time.perf_counter()
    cfg = MineConfig(
        input=args.input,
        output=args.output,
        model=args.model,
        corpus=(args.corpus,),
        work_dir=args.work_dir,
        device="cpu",
        max_length=32,
        batch_size=512,
        index=args.index,
        num_negatives=7,
        range_max=50,
        num_shards=args.num_shards,
    )
    peak_anon, phases = [0, 0], {}
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            now = rss_anon()
            peak_anon[0], peak_anon[1] = max(peak_anon[0], now), max(peak_anon[1], now)

    lap = mine_mod._Clock.lap

    def phase_lap(clock, name: str) -> None:  # the peak of each phase, to see which one sets the total
        phases[name] = max(peak_anon[1], rss_anon())
        peak_anon[1] = 0
        lap(clock, name)

    mine_mod._Clock.lap = phase_lap
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    m = mine(cfg)
    done.set()
    thread.join()
    phases["write"] = max(peak_anon[1], rss_anon())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(
        json.dumps(
            {
                "peak_rss": peak,
                "peak_anon": max(peak_anon[0], rss_anon()),
                "phase_anon": phases,
                "secs": time.perf_counter() - t,
                "timings": m["mining"]["timings_s"],
                "docs": m["mining"]["corpus"]["documents"],
                "rows": m["rows"],
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[250_000, 2_000_000])
    ap.add_argument("--query-ratio", type=float, default=0.1, help="input rows per corpus document (default 0.1)")
    ap.add_argument("--index", default="flat", choices=["flat", "ivf", "hnsw"])
    ap.add_argument(
        "--threads", type=int, default=1, help="torch/FAISS threads (OMP_NUM_THREADS) of each run (default 1)"
    )
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument(
        "--shard-rows",
        type=int,
        default=8192,
        help="output rows per shard (--num-shards = rows / this, default 8192): a shard's Parquet row group is built"
        " in memory (up to 65,536 rows), so shards of one size at every corpus size",
    )
    ap.add_argument("--out", help="also write the figures to this JSON file")
    for name in ("input", "output", "model", "corpus", "work-dir"):
        ap.add_argument(f"--{name}", help=argparse.SUPPRESS)
    ap.add_argument("--num-shards", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        make_model(Path(tmp) / "model")
        for n in args.sizes:
            text_bytes, corpus, inp = make_data(Path(tmp) / f"data{n}", n, int(n * args.query_ratio))
            cmd = [
                sys.executable,
                __file__,
                "--child",
                "--index",
                args.index,
                "--input",
                str(inp),
                "--output",
                f"{tmp}/out{n}",
                "--model",
                f"{tmp}/model",
                "--corpus",
                str(corpus),
                "--work-dir",
                f"{tmp}/work{n}",
                "--num-shards",
                str(max(1, -(-int(n * args.query_ratio) // args.shard_rows))),
            ]
            env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
            res = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
            if res.returncode:
                sys.exit(f"size {n} failed:\n{res.stderr[-4000:]}")
            results[n] = json.loads(res.stdout.strip().splitlines()[-1]) | {"text_bytes": text_bytes}
            r = results[n]
            save(args, results)
            print(
                f"{n:>9,} docs ({r['docs']:,} unique, {r['rows']:,} rows mined): peak RSS {r['peak_rss'] / 2**20:7.1f}"
                f" MiB, peak anonymous {r['peak_anon'] / 2**20:7.1f} MiB | corpus text {text_bytes / 2**20:6.1f} MiB"
                f" | {r['secs']:6.1f}s {r['timings']}\n    peak anonymous MiB by phase: "
                + " ".join(f"{k} {v / 2**20:.0f}" for k, v in r["phase_anon"].items()),
                flush=True,
            )
    lo, hi = min(results), max(results)
    if lo == hi:
        return
    for what in ("peak_rss", "peak_anon"):
        grow = results[hi][what] / results[lo][what]
        per_doc = (results[hi][what] - results[lo][what]) / (hi - lo)
        print(
            f"{what} growth {lo:,} -> {hi:,} docs ({hi / lo:.0f}x data): {grow:.2f}x; {per_doc:.0f} bytes per extra doc"
        )
    text_per_doc = (results[hi]["text_bytes"] - results[lo]["text_bytes"]) / (hi - lo)
    print(f"(each extra document's text alone: {text_per_doc:.0f} bytes)")
    save(args, results)


def save(args, results: dict) -> None:
    """The figures so far (each size as it finishes, then the growth ratios) into `--out`, atomically."""
    if not args.out:
        return
    lo, hi = min(results), max(results)
    doc = {
        "command": " ".join([os.path.relpath(sys.executable, ROOT), *sys.argv]),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "sizes": {str(n): r for n, r in results.items()},
        "growth": {w: results[hi][w] / results[lo][w] for w in ("peak_rss", "peak_anon")} if lo != hi else None,
    }
    tmp = args.out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=2)
    os.replace(tmp, args.out)


if __name__ == "__main__":
    main()
