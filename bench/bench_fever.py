"""Benchmark `negminer build fever`: the Arrow-table path against the keyed-batch path and a bare pyarrow join.

Usage: .venv/bin/python bench/bench_fever.py [--pages 100000 --claims 10000 --files 4] [--positive page]

Writes a synthetic FEVER-shaped set (wiki-pages JSON lines with `lines` = `n<TAB>sentence<TAB>anchor...` and bracket
tokens in ids and text, ~5% non-ASCII ids, ~2% mojibake sentences, a few empty pages; claims with a third NOT ENOUGH
INFO and evidence sets naming pages and lines, ~3% of them absent), then runs in child processes: the build on the
keyed-batch path (`fever.COLUMNAR = False`), the build on Arrow tables (the default), and the same join in bare
pyarrow (pages by pyarrow's JSON reader, claims by `json.loads`, one join, the referenced `lines` split by
`pyarrow.compute`, one Parquet file; no clean-up, ids or rejects). It checks that both builds wrote the same shard
bytes, rejects and counts, and prints CPU seconds, wall seconds, peak RSS and the ratios, also above the fixed cost
(both on a 100-page set).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_msmarco import ROOT, measure, output_digest  # noqa: E402

WORDS = [f"w{i:04d}" for i in range(5000)] + ["-LRB-", "-RRB-", "-COLON-", "café", "donÃ¢Â€Â™t"]


def write_set(data: Path, pages: int, claims: int, files: int, seed: int = 0) -> None:
    """wiki/wiki-NNN.jsonl and claims.jsonl (see the module docstring)."""
    rng = np.random.default_rng(seed)
    wiki = data / "wiki"
    wiki.mkdir(parents=True, exist_ok=True)
    ids = [
        f"Page_{i}" + ("_-LRB-film-RRB-" if i % 17 == 0 else "") + ("_Beyoncé" if i % 20 == 3 else "")
        for i in range(pages)
    ]
    counts = rng.integers(1, 10, pages)  # sentences per page
    handles = [open(wiki / f"wiki-{k:03d}.jsonl", "w", encoding="utf-8") for k in range(files)]
    vocab = np.array(WORDS)
    for i, page_id in enumerate(ids):
        n = int(counts[i])
        words = rng.integers(0, 5000, (n, 12))
        words[rng.random(n) < 0.02, 5] = 5004  # mojibake
        words[rng.random(n) < 0.10, 2] = 5000  # a bracket pair
        words[rng.random(n) < 0.10, 6] = 5001
        sentences = [" ".join(vocab[row]) + " ." for row in words]
        if i % 500 == 7:
            page = {"id": page_id, "text": "", "lines": ""}
        else:
            lines = "\n".join(f"{k}\t{s}\tw{k}\tLink_{k}" for k, s in enumerate(sentences)) + f"\n{n}\t"
            page = {"id": page_id, "text": " ".join(sentences) + " ", "lines": lines}
        handles[i % files].write(json.dumps(page) + "\n")
    for h in handles:
        h.close()
    labels = np.array(["SUPPORTS", "REFUTES", "NOT ENOUGH INFO"])[rng.integers(0, 3, claims)]
    with open(data / "claims.jsonl", "w", encoding="utf-8") as f:
        for c in range(claims):
            sets = []
            for _ in range(int(rng.integers(1, 4))):
                entries = []
                for _ in range(int(rng.integers(1, 3))):
                    p = int(rng.integers(0, pages))
                    line = int(rng.integers(0, counts[p] + (1 if rng.random() < 0.03 else 0)))
                    name = ids[p] if rng.random() > 0.03 else f"Absent_{p}"
                    entries.append([c, c, name, line] if labels[c] != "NOT ENOUGH INFO" else [c, None, None, None])
                sets.append(entries)
            claim = " ".join(vocab[rng.integers(0, 5000, 8)]) + "."
            f.write(
                json.dumps({"id": c, "verifiable": "x", "label": labels[c], "claim": claim, "evidence": sets}) + "\n"
            )


def pyarrow_join(data: Path, out: Path, positive: str) -> int:
    """The baseline: pages by pyarrow's JSON reader, evidence by json.loads, joins and a split by pyarrow.compute."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.json as pj
    import pyarrow.parquet as pq

    schema = pa.schema([("id", pa.string()), ("text", pa.string()), ("lines", pa.string())])
    opts = pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
    pages = pa.concat_tables(pj.read_json(f, parse_options=opts) for f in sorted((data / "wiki").glob("*.jsonl")))
    rows = []
    with open(data / "claims.jsonl", encoding="utf-8") as f:
        for line in f:
            c = json.loads(line)
            if c["label"] != "NOT ENOUGH INFO":
                found = {(e[2], e[3] if positive == "sentence" else None) for s in c["evidence"] for e in s}
                rows += [(c["claim"], page, n) for page, n in found]
    claim, page, n = zip(*rows, strict=True)
    evidence = pa.table({"claim": claim, "id": page, "line": pa.array(n, pa.int64())})
    joined = evidence.join(pages, "id")
    if positive == "sentence":
        needed = pages.filter(pc.is_in(pages["id"], pc.unique(joined["id"])))
        pieces = pc.split_pattern(needed["lines"], "\n")
        fields = pc.split_pattern(pc.list_flatten(pieces), "\t", max_splits=2)
        ok = pc.greater_equal(pc.list_value_length(fields), 2)
        fields = fields.filter(ok)
        sentences = pa.table(
            {
                "id": needed["id"].take(pc.list_parent_indices(pieces).filter(ok)),
                "line": pc.cast(pc.list_element(fields, 0), pa.int64()),
                "positive": pc.list_element(fields, 1),
            }
        )
        joined = evidence.join(sentences, ["id", "line"])
    else:
        joined = joined.append_column("positive", joined["text"])
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(joined.select(["claim", "id", "positive"]), out / "joined.parquet", compression="zstd")
    return joined.num_rows


def build(data: Path, out: Path, positive: str, columnar: bool) -> dict:
    args = ["build", "fever", "--claims", str(data / "claims.jsonl"), "--wiki-pages", str(data / "wiki")]
    args += ["--output", str(out), "--positive", positive]
    code = (
        f"import sys; from negminer.pipelines import fever; fever.COLUMNAR = {columnar}; "
        f"from negminer import cli; sys.exit(cli.main({args!r}))"
    )
    return measure([sys.executable, "-c", code])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pages", type=int, default=100_000)
    ap.add_argument("--claims", type=int, default=10_000)
    ap.add_argument("--files", type=int, default=4, help="wiki-pages files (each is read by one worker)")
    ap.add_argument("--positive", choices=("sentence", "page"), default="sentence")
    ap.add_argument("--skip-old", action="store_true", help="do not run the keyed-batch path")
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / "fever"))
    ap.add_argument("--keep", action="store_true", help="keep the synthetic set and outputs")
    ap.add_argument("--_pyarrow", nargs=2, metavar=("DATA", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._pyarrow:
        print("rows", pyarrow_join(Path(args._pyarrow[0]), Path(args._pyarrow[1]), args.positive))
        return
    out = Path(args.out)
    data = out / "data"
    write_set(data, args.pages, args.claims, args.files)
    size = sum(f.stat().st_size for f in data.rglob("*.jsonl")) / 2**20
    print(
        f"synthetic set: {args.pages} pages in {args.files} files, {args.claims} claims ({size:.0f} MiB), --positive {args.positive}"
    )
    sys.path.insert(0, str(ROOT))
    got = {}
    for name, columnar in (("keyed batches", False), ("Arrow tables", True)):
        if columnar or not args.skip_old:
            got[name] = build(data, out / name.split()[0], args.positive, columnar)
            got[name]["digest"] = output_digest(out / name.split()[0])
            got[name]["rows"] = json.loads((out / name.split()[0] / "manifest.json").read_text())["rows"]
    base = measure(
        [sys.executable, __file__, "--positive", args.positive, "--_pyarrow", str(data), str(out / "pyarrow")]
    )
    base["rows"] = int(base["output"].split("rows")[-1].split()[0])
    got["bare pyarrow"] = base
    print(f"{'':16}{'rows':>9}{'wall s':>9}{'CPU s':>9}{'peak RSS GiB':>14}")
    for name, m in got.items():
        print(f"{name:16}{m['rows']:>9}{m['secs']:>9.1f}{m['cpu']:>9.1f}{m['peak_rss'] / 2**30:>14.2f}")
    new = got["Arrow tables"]
    if "keyed batches" in got:
        old = got["keyed batches"]
        same = "same shards, rejects and counts" if old["digest"] == new["digest"] else "OUTPUTS DIFFER"
        print(
            f"keyed/Arrow: CPU x{old['cpu'] / new['cpu']:.2f}, wall x{old['secs'] / new['secs']:.2f}, "
            f"peak RSS x{old['peak_rss'] / new['peak_rss']:.2f}; {same}"
        )
    print(
        f"Arrow/pyarrow: CPU x{new['cpu'] / base['cpu']:.2f}, wall x{new['secs'] / base['secs']:.2f}, "
        f"peak RSS x{new['peak_rss'] / base['peak_rss']:.2f}"
    )
    # both on a 100-page set: what each spends before the data matters (imports, pipeline construction, runner
    # start-up), so the CPU above it can be compared too
    write_set(out / "tiny", 100, 10, 1)
    fixed = build(out / "tiny", out / "tiny_arrow", args.positive, True)
    fixed_base = measure(
        [sys.executable, __file__, "--positive", args.positive, "--_pyarrow", str(out / "tiny"), str(out / "tiny_pa")]
    )
    above, above_base = new["cpu"] - fixed["cpu"], base["cpu"] - fixed_base["cpu"]
    print(
        f"fixed cost (100 pages): Arrow {fixed['cpu']:.1f} CPU-s, pyarrow {fixed_base['cpu']:.1f}; CPU above it: "
        f"Arrow {above:.1f}, pyarrow {above_base:.1f}, ratio x{above / max(above_base, 1e-9):.2f}"
    )
    if not args.keep:
        shutil.rmtree(out, ignore_errors=True)
    if "keyed batches" in got and got["keyed batches"]["digest"] != new["digest"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
