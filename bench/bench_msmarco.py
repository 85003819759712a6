"""Benchmark `negminer build msmarco` (Beam DirectRunner) against a pyarrow-only join of the same synthetic files.

Usage: .venv/bin/python bench/bench_msmarco.py [--passages 1000000 --queries 500000 --qrels 530000] [--out bench/out/msmarco]
       [--repeat N]
       .venv/bin/python bench/bench_msmarco.py --passages 8841823 --queries 500000 --qrels 530000 --beam-only \
           --text-pool 200000

Writes a synthetic MS MARCO-format set (collection.tsv, queries.tsv, qrels.tsv; ~2% of passages with real-style
mojibake), runs both in child processes, samples the resident memory of each process tree (children included) and
prints rows/s, peak RSS, the ratios, and a linear extrapolation to the full set (8.8M passages, 809k queries, 533k qrels).
With `--repeat N` both sides (and both fixed-cost runs) run alternately N times on the same set and the least CPU (and
least wall, highest peak RSS) of each side is compared: on a shared machine other jobs only ever add CPU time.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

FULL = {"passages": 8_841_823, "queries": 808_731, "qrels": 532_761}  # MS MARCO passage v1, train
ROOT = Path(__file__).resolve().parents[1]


def write_set(out: Path, passages: int, queries: int, qrels: int, seed: int = 0, text_pool: int = 0) -> None:
    """collection.tsv / queries.tsv / qrels.tsv with random words; every qrel points at a real query and passage.

    `text_pool` > 0: passage texts cycle through that many random texts (same lengths and mojibake rate; ~10x faster
    to write, for the full-size run); the ids stay distinct."""
    rng = np.random.default_rng(seed)
    vocab = np.array([f"w{i:05d}" for i in range(30_000)] + ["donât", "itâs", "cafÃ©"])
    out.mkdir(parents=True, exist_ok=True)
    if text_pool:
        words = rng.integers(0, 30_000, size=(text_pool, 50))
        moji = rng.random(text_pool) < 0.02
        words[moji, 3] = 30_000 + rng.integers(0, 3, size=int(moji.sum()))
        pool = [" ".join(vocab[row]) + "." for row in words]
        with open(out / "collection.tsv", "w", encoding="utf-8") as f:
            f.writelines(f"{i}\t{pool[(i * 7919) % text_pool]}\n" for i in range(passages))
    with open(out / "collection.tsv", "a" if text_pool else "w", encoding="utf-8") as f:
        for start in range(0, 0 if text_pool else passages, 100_000):
            n = min(100_000, passages - start)
            words = rng.integers(0, 30_000, size=(n, 50))
            moji = rng.random(n) < 0.02
            words[moji, 3] = 30_000 + rng.integers(0, 3, size=int(moji.sum()))
            f.writelines(f"{start + i}\t{' '.join(vocab[row])}.\n" for i, row in enumerate(words))
    with open(out / "queries.tsv", "w", encoding="utf-8") as f:
        words = rng.integers(0, 30_000, size=(queries, 6))
        f.writelines(f"{i}\twhat is {' '.join(vocab[row])}\n" for i, row in enumerate(words))
    qids = np.concatenate(
        [rng.permutation(queries)[: min(qrels, queries)], rng.integers(0, queries, max(0, qrels - queries))]
    )
    pids = rng.integers(0, passages, size=qrels)
    with open(out / "qrels.tsv", "w") as f:
        f.writelines(f"{q}\t0\t{p}\t1\n" for q, p in zip(qids, pids, strict=True))


def pyarrow_join(data: Path, out: Path) -> int:
    """The baseline: read the three TSVs with pyarrow.csv, two hash joins, one Parquet file. Returns rows."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pv
    import pyarrow.parquet as pq

    def read(name: str, names: list[str], types: dict) -> pa.Table:
        return pv.read_csv(
            data / name,
            read_options=pv.ReadOptions(column_names=names),
            parse_options=pv.ParseOptions(delimiter="\t", quote_char=False),
            convert_options=pv.ConvertOptions(column_types=types),
        )

    coll = read("collection.tsv", ["pid", "passage"], {"pid": pa.string(), "passage": pa.string()})
    queries = read("queries.tsv", ["qid", "query"], {"qid": pa.string(), "query": pa.string()})
    qrels = read(
        "qrels.tsv", ["qid", "iter", "pid", "rel"], {"qid": pa.string(), "pid": pa.string(), "rel": pa.int32()}
    )
    joined = qrels.filter(pc.greater_equal(qrels["rel"], 1)).join(queries, "qid").join(coll, "pid")
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(joined.select(["qid", "query", "pid", "passage"]), out / "joined.parquet", compression="zstd")
    return joined.num_rows


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants, from /proc."""
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    stack.extend(int(c) for c in f.read().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def measure(cmd: list[str]) -> dict:
    """Run `cmd`; wall seconds, CPU seconds (children included) and the peak RSS of its process tree."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = [0]

    def sample() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], tree_rss(proc.pid))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output = proc.communicate()[0]
    secs = time.perf_counter() - t0
    sampler.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{output[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"secs": secs, "cpu": cpu, "peak_rss": peak[0], "output": output}


def least(runs: list[dict]) -> dict:
    """Several `measure` results of one command as one: the least CPU and wall seconds, the highest peak RSS."""
    best = min(runs, key=lambda m: m["cpu"])
    return {**best, "secs": min(m["secs"] for m in runs), "peak_rss": max(m["peak_rss"] for m in runs)}


def alternate(repeat: int, commands: dict[str, list[str]], label: str) -> dict[str, dict]:
    """Each command `repeat` times, in turn; `least` of each. Prints each round's CPU when repeating."""
    runs: dict[str, list[dict]] = {k: [] for k in commands}
    for i in range(repeat):
        for name, cmd in commands.items():
            runs[name].append(measure(cmd))
        if repeat > 1:
            cpus = [runs[k][-1]["cpu"] for k in commands]
            ratio = f", x{cpus[0] / cpus[1]:.2f}" if len(cpus) == 2 else ""
            print(
                f"  {label} round {i + 1}: "
                + ", ".join(f"{k} {c:.1f} CPU-s" for k, c in zip(commands, cpus, strict=True))
                + ratio
            )
    return {k: least(v) for k, v in runs.items()}


def report(args: argparse.Namespace, out: Path, sides: dict[str, dict], fixed: dict[str, dict], idle: dict) -> None:
    """The table, the ratios (all, and above the fixed cost) and the extrapolation to the full set."""
    beam, base = sides["beam"], sides["pyarrow"]
    rows_base = int(base["output"].split("rows")[-1].split()[0])
    sys.path.insert(0, str(ROOT))
    from negminer.pipelines import io

    rows_beam = io.read_manifest(str(out / "beam"))["rows"]
    lines = args.passages + args.queries + args.qrels
    full_lines = sum(FULL.values())
    gib = 1 << 30
    print(f"{'':18}{'rows':>10}{'wall s':>9}{'cpu s':>9}{'rows/s':>10}{'lines/s':>10}{'peak RSS GiB':>14}")
    for name, m, rows in (("pyarrow join", base, rows_base), ("negminer (Beam)", beam, rows_beam)):
        print(
            f"{name:18}{rows:>10}{m['secs']:>9.1f}{m['cpu']:>9.1f}{rows / m['secs']:>10.0f}"
            f"{lines / m['secs']:>10.0f}{m['peak_rss'] / gib:>14.2f}"
        )
    print(
        f"ratio Beam/pyarrow: time x{beam['secs'] / base['secs']:.1f}, CPU x{beam['cpu'] / base['cpu']:.2f}, "
        f"peak memory x{beam['peak_rss'] / base['peak_rss']:.1f}"
    )
    above = {k: m["cpu"] - fixed[k]["cpu"] for k, m in (("beam", beam), ("pyarrow", base))}
    print(
        f"fixed cost (the same build of 100 passages): Beam {fixed['beam']['cpu']:.1f} CPU-s, pyarrow "
        f"{fixed['pyarrow']['cpu']:.1f}; CPU above it: Beam {above['beam']:.1f}s, pyarrow {above['pyarrow']:.1f}s, "
        f"ratio x{above['beam'] / max(above['pyarrow'], 1e-9):.2f}"
    )
    scale = full_lines / lines

    def full_rss(m: dict) -> float:
        return (idle["peak_rss"] + max(0, m["peak_rss"] - idle["peak_rss"]) * scale) / gib

    print(f"fixed cost of a process (imports only): {idle['peak_rss'] / gib:.2f} GiB RSS")
    print(
        f"full set ({FULL['passages']:,} passages, {full_lines:,} input lines), linear in input lines: "
        f"Beam DirectRunner ~{beam['secs'] * scale / 60:.0f} min wall (~{beam['cpu'] * scale / 60:.0f} CPU-min) and "
        f"~{full_rss(beam):.0f} GiB peak RSS; pyarrow ~{base['secs'] * scale / 60:.1f} min, ~{full_rss(base):.0f} GiB. "
        f"Beam CPU per input line: {beam['cpu'] / lines * 1e6:.0f} us -> ~{beam['cpu'] * scale / 3600:.3f} vCPU-hours "
        "of work to spread over Dataflow workers (plus worker start-up and shuffle)"
    )


def output_digest(out: Path) -> str:
    """sha256 over a build's shards, its rejects (order-free) and the manifest's counts: the same for two builds
    that wrote the same output (`bench_msmarco_paths`, `bench_fever` compare old and new paths by it)."""
    from negminer.pipelines import io

    h = hashlib.sha256()
    for f in sorted(out.glob("*.parquet")):
        h.update(f.read_bytes())
    rejects = sorted(json.dumps(r, sort_keys=True, default=str) for r in io.read_rejects(str(out)).to_pylist())
    h.update("\n".join(rejects).encode())
    m = io.read_manifest(str(out))
    h.update(json.dumps([m["rows"], m["rejects"], m["skipped"]], sort_keys=True).encode())
    return h.hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--passages", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=500_000)
    ap.add_argument("--qrels", type=int, default=530_000)
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / "msmarco"))
    ap.add_argument("--beam-arg", action="append", default=[], help="extra Beam flag for the build (repeatable)")
    ap.add_argument("--keep", action="store_true", help="keep the synthetic set and outputs")
    ap.add_argument("--beam-only", action="store_true", help="run only the Beam build (the full-size memory run)")
    ap.add_argument("--text-pool", type=int, default=0, help="passage texts cycle through this many (0: all distinct)")
    ap.add_argument("--repeat", type=int, default=1, help="run each side this many times, alternately; the least CPU")
    ap.add_argument("--_pyarrow", nargs=2, metavar=("DATA", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.repeat < 1:
        ap.error(f"--repeat must be >= 1, got {args.repeat}")
    if args._pyarrow:
        print("rows", pyarrow_join(Path(args._pyarrow[0]), Path(args._pyarrow[1])))
        return
    out = Path(args.out)
    data = out / "data"
    t0 = time.perf_counter()
    write_set(data, args.passages, args.queries, args.qrels, text_pool=args.text_pool)
    print(
        f"synthetic set: {args.passages} passages, {args.queries} queries, {args.qrels} qrels in {time.perf_counter() - t0:.0f}s"
    )
    py = sys.executable
    build = [py, "-m", "negminer", "build", "msmarco", "--output", str(out / "beam")]
    build += [
        "--collection",
        str(data / "collection.tsv"),
        "--queries",
        str(data / "queries.tsv"),
        "--qrels",
        str(data / "qrels.tsv"),
    ]
    pyarrow_cmd = [py, __file__, "--_pyarrow", str(data), str(out / "pyarrow")]
    sides = (
        {"Beam": build + args.beam_arg} if args.beam_only else {"Beam": build + args.beam_arg, "pyarrow": pyarrow_cmd}
    )
    measured = alternate(args.repeat, sides, "1M" if args.passages == 1_000_000 else f"{args.passages}-passage")
    beam = measured["Beam"]
    if args.beam_only:  # the full-size memory run: the Beam build alone
        print(
            f"negminer (Beam): {beam['secs']:.0f} s wall, {beam['cpu']:.1f} CPU-s, peak RSS {beam['peak_rss'] / 2**30:.2f} GiB"
        )
        if not args.keep:
            shutil.rmtree(out, ignore_errors=True)
        return
    base = measured["pyarrow"]
    # the same build on a 100-passage set: what each side spends before the data matters (imports, pipeline
    # construction, runner start-up), so the CPU above it can be compared too
    write_set(out / "tiny", 100, 50, 53)
    tiny = [a.replace(str(data), str(out / "tiny")).replace(str(out / "beam"), str(out / "tiny_beam")) for a in build]
    tiny_pyarrow = [py, __file__, "--_pyarrow", str(out / "tiny"), str(out / "tiny_pyarrow")]
    fixed = alternate(args.repeat, {"beam": tiny + args.beam_arg, "pyarrow": tiny_pyarrow}, "fixed-cost")
    # what a process costs before it reads any data: subtracted before scaling memory to the full set
    idle = measure([py, "-c", "import apache_beam, pyarrow, ftfy; from pipelines import msmarco, runner"])
    report(args, out, {"beam": beam, "pyarrow": base}, fixed, idle)
    if not args.keep:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
