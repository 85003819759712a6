"""Benchmark the per-row paths of `build msmarco` / `build beir` that moved to Arrow tables against the old ones.

Usage: .venv/bin/python bench/bench_msmarco_paths.py                   # every path, default sizes
       .venv/bin/python bench/bench_msmarco_paths.py --path triples [--passages 100000 --triples 200000]
       .venv/bin/python bench/bench_msmarco_paths.py --path hf [--hf-rows 50000]      # or --path hf-jsonl
       .venv/bin/python bench/bench_msmarco_paths.py --path beir [--passages 100000]
       .venv/bin/python bench/bench_msmarco_paths.py --path beir-stubs          # or --path beir-jsonl-stubs

Writes a synthetic set (`bench_msmarco.write_set` passages and queries, ~2% with mojibake), runs the same build with
the old path and the new one (each in a child process, the old one by its module switch), checks that both wrote
the same shard bytes, rejects and counts, and prints CPU seconds, wall seconds, peak RSS and the old/new ratios.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_msmarco import ROOT, measure, output_digest, write_set  # noqa: E402

# the switch of each path: module attribute -> the old path when False
SWITCH = {
    "triples": ("negminer.pipelines.msmarco", "COLUMNAR_TRIPLES"),
    "hf": ("negminer.pipelines.msmarco", "COLUMNAR_HF"),
    "hf-jsonl": ("negminer.pipelines.msmarco", "COLUMNAR_HF"),
    "beir": ("negminer.pipelines.qrel_columns", "COLUMNAR_PARQUET"),
    # unjudged corpus documents as id stubs (old: with their texts through the shuffle), Parquet or JSON lines
    "beir-stubs": ("negminer.pipelines.msmarco_columns", "FILTER_UNJUDGED"),
    "beir-jsonl-stubs": ("negminer.pipelines.msmarco_columns", "FILTER_UNJUDGED"),
}


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def write_triples(data: Path, n: int, seed: int = 1) -> None:
    """triples.tsv: `query<TAB>positive<TAB>negative` texts; ~90% of them name a qrel pair of the set."""
    rng = np.random.default_rng(seed)
    passages = [line.split("\t", 1)[1] for line in _lines(data / "collection.tsv")]
    queries = [line.split("\t", 1)[1] for line in _lines(data / "queries.tsv")]
    qrels = [line.split("\t") for line in _lines(data / "qrels.tsv")]
    picked = rng.integers(0, len(qrels), n)
    stray = rng.random(n) < 0.1
    negs = rng.integers(0, len(passages), n)
    with open(data / "triples.tsv", "w", encoding="utf-8") as f:
        for i in range(n):
            if stray[i]:
                q, p = queries[rng.integers(0, len(queries))], passages[rng.integers(0, len(passages))]
            else:
                q, p = queries[int(qrels[picked[i]][0])], passages[int(qrels[picked[i]][2])]
            f.write(f"{q}\t{p}\t{passages[negs[i]]}\n")


def write_hf(data: Path, n: int, seed: int = 2) -> None:
    """train.parquet in the `microsoft/ms_marco` v2.1 layout: ~10 passages a query, ~1 selected (some none)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    passages = [line.split("\t", 1)[1] for line in _lines(data / "collection.tsv")]
    queries = [line.split("\t", 1)[1] for line in _lines(data / "queries.tsv")]
    rows = []
    for i in range(n):
        k = int(rng.integers(6, 11))
        texts = [passages[j] for j in rng.integers(0, len(passages), k)]
        selected = [0] * k
        if rng.random() < 0.95:
            selected[int(rng.integers(0, k))] = 1
        rows.append(
            {
                "answers": ["an answer"],
                "passages": {
                    "is_selected": selected,
                    "passage_text": texts,
                    "url": [f"http://example.com/{i}/{j}" for j in range(k)],
                },
                "query": queries[i % len(queries)],
                "query_id": i,
                "query_type": "DESCRIPTION",
                "wellFormedAnswers": [],
            }
        )
    pq.write_table(pa.Table.from_pylist(rows), data / "train.parquet")
    with open(data / "train.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def write_beir(data: Path) -> None:
    """corpus.parquet / queries.parquet (`_id`, `title`, `text`) and a BEIR qrels TSV from the MS MARCO set."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    ids, texts = zip(*(line.split("\t", 1) for line in _lines(data / "collection.tsv")), strict=True)
    titles = [f"title {i}" if int(i) % 3 else "" for i in ids]
    pq.write_table(pa.table({"_id": list(ids), "title": titles, "text": list(texts)}), data / "corpus.parquet")
    with open(data / "corpus.jsonl", "w", encoding="utf-8") as f:
        f.writelines(
            json.dumps({"_id": i, "title": t, "text": x}, ensure_ascii=False) + "\n"
            for i, t, x in zip(ids, titles, texts, strict=True)
        )
    qids, qtexts = zip(*(line.split("\t", 1) for line in _lines(data / "queries.tsv")), strict=True)
    pq.write_table(pa.table({"_id": list(qids), "text": list(qtexts)}), data / "queries.parquet")
    with open(data / "qrels_beir.tsv", "w", encoding="utf-8") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        f.writelines(f"{q}\t{p}\t{r}\n" for q, _, p, r in (line.split("\t") for line in _lines(data / "qrels.tsv")))


def build_args(path: str, data: Path, out: Path) -> list[str]:
    if path == "triples":
        files = ["--collection", data / "collection.tsv", "--queries", data / "queries.tsv"]
        files += ["--qrels", data / "qrels.tsv", "--triples", data / "triples.tsv"]
        return ["build", "msmarco", *map(str, files), "--output", str(out)]
    if path in ("hf", "hf-jsonl"):
        name = "train.parquet" if path == "hf" else "train.jsonl"
        return ["build", "msmarco", "--hf", str(data / name), "--output", str(out)]
    corpus = data / ("corpus.jsonl" if path == "beir-jsonl-stubs" else "corpus.parquet")
    files = ["--corpus", corpus, "--queries", data / "queries.parquet", "--qrels"]
    return ["build", "beir", *map(str, files), str(data / "qrels_beir.tsv"), "--name", "bench", "--output", str(out)]


def run(path: str, args: list[str], columnar: bool) -> dict:
    module, flag = SWITCH[path]
    code = (
        f"import importlib, sys; importlib.import_module({module!r}).{flag} = {columnar}; "
        f"from negminer import cli; sys.exit(cli.main({args!r}))"
    )
    return measure([sys.executable, "-c", code])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--path", choices=sorted(SWITCH), action="append", help="the paths to measure (default all)")
    ap.add_argument("--passages", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=50_000)
    ap.add_argument("--qrels", type=int, default=53_000)
    ap.add_argument("--triples", type=int, default=200_000, help="triples lines (--path triples)")
    ap.add_argument("--hf-rows", type=int, default=50_000, help="query rows of the HF Parquet file (--path hf)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / "msmarco_paths"))
    ap.add_argument("--keep", action="store_true", help="keep the synthetic set and outputs")
    args = ap.parse_args()
    out = Path(args.out)
    data = out / "data"
    write_set(data, args.passages, args.queries, args.qrels)
    sys.path.insert(0, str(ROOT))
    differ = False
    for path in args.path or sorted(SWITCH):
        differ |= bench(path, args, data, out / path)
    if not args.keep:
        shutil.rmtree(out, ignore_errors=True)
    if differ:
        sys.exit(1)


def bench(path: str, args: argparse.Namespace, data: Path, out: Path) -> bool:
    """Old vs new build of one path, printed; True when their outputs differ."""
    hf = lambda: write_hf(data, args.hf_rows)  # noqa: E731
    {"triples": lambda: write_triples(data, args.triples), "hf": hf, "hf-jsonl": hf}.get(
        path, lambda: write_beir(data)
    )()
    got = {}
    for name, columnar in (("old", False), ("new", True)):
        got[name] = run(path, build_args(path, data, out / name), columnar)
        got[name]["digest"] = output_digest(out / name)
        got[name]["rows"] = json.loads((out / name / "manifest.json").read_text())["rows"]
    old, new = got["old"], got["new"]
    print(f"--path {path}: {args.passages} passages, {args.queries} queries, {args.qrels} qrels", end="")
    print({"triples": f", {args.triples} triples"}.get(path, f", {args.hf_rows} HF rows" if "hf" in path else ""))
    print(f"{'':8}{'rows':>9}{'wall s':>9}{'CPU s':>9}{'peak RSS GiB':>14}")
    for name, m in got.items():
        print(f"{name:8}{m['rows']:>9}{m['secs']:>9.1f}{m['cpu']:>9.1f}{m['peak_rss'] / 2**30:>14.2f}")
    same = "same shards, rejects and counts" if old["digest"] == new["digest"] else "OUTPUTS DIFFER"
    print(
        f"old/new: CPU x{old['cpu'] / new['cpu']:.2f}, wall x{old['secs'] / new['secs']:.2f}, "
        f"peak RSS x{old['peak_rss'] / new['peak_rss']:.2f}; {same}"
    )
    if path == "beir":  # the build is mostly fixed cost and the join at this size: the corpus reader alone too
        print(reader_cpu(data / "corpus.parquet"))
    if path.endswith("-stubs"):
        corpus = data / ("corpus.jsonl" if path == "beir-jsonl-stubs" else "corpus.parquet")
        print(stub_reader_cpu(corpus, data / "qrels_beir.tsv"))
    return old["digest"] != new["digest"]


def reader_cpu(corpus: Path, rounds: int = 2) -> str:
    """CPU seconds of the corpus reader alone (`ReadTextTablesFn`, in this process), old and new alternately."""
    import time

    from negminer.pipelines import qrel_columns

    best = {False: float("inf"), True: float("inf")}
    for _ in range(rounds):
        for columnar in (False, True):
            qrel_columns.COLUMNAR_PARQUET = columnar
            t0 = time.process_time()
            for _ in qrel_columns.ReadTextTablesFn(True, json_docs=True).process(str(corpus)):
                pass
            best[columnar] = min(best[columnar], time.process_time() - t0)
    return (
        f"corpus reader alone (least of {rounds}): old {best[False]:.2f} CPU-s, new {best[True]:.2f} "
        f"(x{best[False] / best[True]:.1f})"
    )


def stub_reader_cpu(corpus: Path, qrels: Path, rounds: int = 2) -> str:
    """CPU seconds of the corpus reader alone (in this process) without and with the judged ids (stubs), and the
    bytes of the tables it ships (what crosses the shuffle, or the spill files)."""
    import time

    import pyarrow as pa

    from negminer.pipelines import qrel_columns, tables

    judged_ids = sorted({line.split("\t")[1] for line in _lines(qrels)[1:]})
    judged = [tables.to_ipc(pa.table({"doc_id": judged_ids}))]
    best, shipped = {}, {}
    for _ in range(rounds):
        for name, side in (("texts", None), ("stubs", judged)):
            fn = qrel_columns.ReadTextTablesFn(True, json_docs=True)
            t0, size = time.process_time(), 0
            for item in fn.process(str(corpus), side):
                size += len(item[1]) if isinstance(item, tuple) else 0
            best[name] = min(best.get(name, float("inf")), time.process_time() - t0)
            shipped[name] = size
    return (
        f"corpus reader alone (least of {rounds}, {len(judged_ids)} judged ids): all texts {best['texts']:.2f} "
        f"CPU-s, stubs {best['stubs']:.2f} (x{best['texts'] / best['stubs']:.1f}); tables shipped "
        f"{shipped['texts'] / 2**20:.1f} vs {shipped['stubs'] / 2**20:.1f} MiB"
    )


if __name__ == "__main__":
    main()
