"""`negminer build snli` (Beam, DirectRunner in-process) vs the same conversion in pyarrow alone, same run.

Usage: .venv/bin/python bench/bench_snli.py [--lines 500000] [--beam-args "--direct_num_workers=1"] [--keep DIR]

Writes a synthetic SNLI-format JSON-lines file (official layout with parse trees, premises with ~3 hypotheses
carrying all three labels, ~1% without a gold label), converts it once with the Beam pipeline and once with pyarrow
(read_json + label filter + contradictions grouped by premise and attached to each entailment + write Parquet). Each side runs in its own child process, so its
peak RSS (ru_maxrss of the child and of its own children) is its own. Prints input lines/s, rows/s, peak memory,
CPU seconds (robust when other jobs share the cores) and the Beam/pyarrow ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WORDS = (
    "a an the man woman child dog cat boy girl people group player crowd worker street park beach field road "
    "house car bike ball water snow grass table stage shop kitchen river mountain city market tree wall window "
    "red blue green white black small large young old happy tired busy wet dry "
    "is are sits stands runs walks plays holds looks rides jumps eats drinks reads sings smiles waits carries "
    "on in at near under over behind with without while and outside inside together alone quickly slowly"
).split()
LABELS = ("entailment", "neutral", "contradiction")


def _parse_fields(tokens: list[str]) -> dict[str, str]:
    return {
        "binary_parse": "( " + " ".join(f"( {t} )" for t in tokens) + " . )",
        "parse": "(ROOT (S " + " ".join(f"(NN {t})" for t in tokens) + " (. .)))",
    }


def synthetic_line(rng: random.Random, premise: list[str], pair: int, label: str, caption: str) -> str:
    """One official-layout SNLI line (sentence1/2, gold_label, annotator labels, ids and parse trees)."""
    hyp = rng.sample(WORDS, rng.randint(4, 9))
    p, h = _parse_fields(premise), _parse_fields(hyp)
    gold = "-" if rng.random() < 0.01 else label
    rec = {
        "annotator_labels": [label] * rng.choice((1, 5)),
        "captionID": caption,
        "gold_label": gold,
        "pairID": f"{caption}r{pair}{label[0]}",
        "sentence1": " ".join(premise).capitalize() + ".",
        "sentence1_binary_parse": p["binary_parse"],
        "sentence1_parse": p["parse"],
        "sentence2": " ".join(hyp).capitalize() + ".",
        "sentence2_binary_parse": h["binary_parse"],
        "sentence2_parse": h["parse"],
    }
    return json.dumps(rec)


def write_synthetic(path: str, lines: int, seed: int = 0) -> None:
    """`lines` lines: premise groups of 3 hypotheses (one per label), sometimes 2 or 4, like SNLI's train set."""
    rng = random.Random(seed)
    n = group = 0
    with open(path, "w", encoding="utf-8") as f:
        while n < lines:
            premise = rng.sample(WORDS, rng.randint(8, 15)) + [str(group)]  # the number keeps premises distinct
            labels = list(LABELS) + ([rng.choice(LABELS)] if rng.random() < 0.1 else [])
            if rng.random() < 0.05:
                labels.pop(rng.randrange(len(labels)))
            for i, label in enumerate(labels[: lines - n]):
                f.write(synthetic_line(rng, premise, i + 1, label, f"{group}.jpg#{group % 5}") + "\n")
                n += 1
            group += 1


def peak_rss_mb() -> float:
    """High-water RSS of this process plus that of its largest waited-for child, in MiB (Linux: ru_maxrss in KiB)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return (own + kids) / 1024


def cpu_seconds() -> float:
    """User + system CPU time of this process and its waited-for children (noise-robust on a shared machine)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def run_beam(src: str, out: str, beam_args: list[str]) -> dict:
    from negminer.pipelines import snli

    t = time.perf_counter()
    manifest = snli.build(snli.SnliConfig(inputs=(src,), output=out), beam_args)
    secs = time.perf_counter() - t
    return {"seconds": secs, "rows": manifest["rows"], "negatives": manifest["negatives"]}


def run_pyarrow(src: str, out: str) -> dict:
    """The floor: columnar read, label filter, contradictions grouped by premise and looked up per entailment, write."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.json as pj
    import pyarrow.parquet as pq

    t = time.perf_counter()
    cols = ["sentence1", "sentence2", "gold_label", "pairID", "captionID"]
    table = pj.read_json(src).select(cols)
    ent = table.filter(pc.equal(table["gold_label"], "entailment")).select(
        ["sentence1", "sentence2", "pairID", "captionID"]
    )
    con = (
        table.filter(pc.equal(table["gold_label"], "contradiction"))
        .group_by("sentence1")
        .aggregate([("sentence2", "list"), ("pairID", "list")])
    )
    at = pc.index_in(ent["sentence1"], value_set=con["sentence1"])  # the premise's contradiction group, or null
    rows = pa.table(
        {
            "query": ent["sentence1"],
            "query_id": ent["captionID"],
            "positive": ent["sentence2"],
            "positive_id": ent["pairID"],
            "negatives": con["sentence2_list"].take(at),
            "negative_ids": con["pairID_list"].take(at),
        }
    )
    rows = rows.sort_by([("query", "ascending"), ("positive", "ascending")])
    os.makedirs(out, exist_ok=True)
    pq.write_table(rows, os.path.join(out, "train-00000-of-00001.parquet"), compression="zstd")
    secs = time.perf_counter() - t
    negs = pc.sum(pc.list_value_length(rows["negatives"]).fill_null(0)).as_py() or 0
    return {"seconds": secs, "rows": rows.num_rows, "negatives": negs}


def child(args: argparse.Namespace) -> None:
    """One side of the comparison, in its own process; prints its result as JSON on the last line."""
    import logging

    logging.basicConfig(level=logging.WARNING)
    if args.phase == "beam":
        res = run_beam(args.src, args.out, shlex.split(args.beam_args))
    else:
        res = run_pyarrow(args.src, args.out)
    res["peak_rss_mb"] = peak_rss_mb()
    res["cpu_s"] = cpu_seconds()
    print(json.dumps(res))


def spawn(phase: str, src: str, out: str, beam_args: str) -> dict:
    cmd = [sys.executable, __file__, "--phase", phase, "--src", src, "--out", out, "--beam-args", beam_args]
    proc = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=500_000, help="synthetic input lines (default 500000)")
    ap.add_argument("--beam-args", default="", help="extra Beam flags for the pipeline, as one string")
    ap.add_argument("--keep", help="work directory to keep (default: a temp dir, removed)")
    ap.add_argument("--phase", choices=("beam", "pyarrow"), help=argparse.SUPPRESS)
    ap.add_argument("--src", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.phase:
        child(args)
        return
    if args.lines < 1:
        ap.error(f"--lines must be >= 1, got {args.lines}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.keep or tmp)
        work.mkdir(parents=True, exist_ok=True)
        src = str(work / "snli_synthetic.jsonl")
        t = time.perf_counter()
        write_synthetic(src, args.lines)
        print(
            f"input: {args.lines} lines, {os.path.getsize(src) / 2**20:.0f} MiB ({time.perf_counter() - t:.1f}s to generate)"
        )
        base = spawn("pyarrow", src, str(work / "pyarrow"), "")
        beam = spawn("beam", src, str(work / "beam"), args.beam_args)
        tiny = str(work / "snli_tiny.jsonl")
        write_synthetic(tiny, 100)
        fixed = {k: spawn(k, tiny, str(work / f"tiny_{k}"), args.beam_args) for k in ("pyarrow", "beam")}
    report(args.lines, beam, base)
    report_fixed(beam, base, fixed)


def report(lines: int, beam: dict, base: dict) -> None:
    for name, r in (("beam build snli", beam), ("pyarrow alone", base)):
        print(
            f"{name:16s}: {r['seconds']:7.1f}s  {lines / r['seconds']:9.0f} lines/s  {r['rows'] / r['seconds']:9.0f} rows/s"
            f"  {r['rows']} rows  {r['negatives']} negatives  peak RSS {r['peak_rss_mb']:.0f} MiB"
            f"  CPU {r['cpu_s']:.1f}s (whole process)"
        )
    print(
        f"ratio beam/pyarrow: time x{beam['seconds'] / base['seconds']:.1f} (throughput {base['seconds'] / beam['seconds']:.3f}), "
        f"CPU x{beam['cpu_s'] / base['cpu_s']:.1f}, peak memory x{beam['peak_rss_mb'] / base['peak_rss_mb']:.2f}"
    )
    if beam["rows"] != base["rows"]:
        print(f"note: row counts differ (beam {beam['rows']}, pyarrow {base['rows']}): beam also drops duplicates")


def report_fixed(beam: dict, base: dict, fixed: dict) -> None:
    """CPU beyond what each side spends on a 100-line input (imports, pipeline construction, runner start-up)."""
    b, a = beam["cpu_s"] - fixed["beam"]["cpu_s"], base["cpu_s"] - fixed["pyarrow"]["cpu_s"]
    print(
        f"fixed cost (the same build of 100 lines): beam {fixed['beam']['cpu_s']:.1f} CPU-s, pyarrow "
        f"{fixed['pyarrow']['cpu_s']:.1f}; CPU above it: beam {b:.1f}s, pyarrow {a:.1f}s, ratio x{b / max(a, 1e-9):.1f}"
    )


if __name__ == "__main__":
    main()
