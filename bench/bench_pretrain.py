"""Pre-training pipelines (Beam, DirectRunner in-process) vs the raw reader + extractor libraries alone, same run.

Usage: .venv/bin/python bench/bench_pretrain.py [--wiki-repeat 3] [--warc-records 3000] [--repeat 1] [--beam-args "..."]
    [--keep DIR]

Wikipedia: the real dump excerpt is rewritten as a multistream dump (100 pages per bz2 stream) repeated
`--wiki-repeat` times with new page ids; the baseline streams it with bz2 + ElementTree.iterparse and runs
mwparserfromhell parse + strip_code on every main-namespace article. WARC: the HTML responses of the real WARC
files are repeated with new record ids into one gzipped WARC of `--warc-records` records; the baseline is
FastWARC (HTTP decoding) + Resiliparse charset detection + main-content extraction. The pipelines do all of that
plus sectioning, pairing, language id, quality filters, exact and MinHash dedup and shard writing. Prints
pages/s, candidate pairs/s (before filters and dedup), rows kept/s, wall and CPU seconds, and pipeline/baseline.
With `--repeat N` the baseline and the pipeline run alternately N times each and the least CPU (and least wall) of
each side is compared: on a shared machine other jobs only ever add time, so the minimum is the steadiest figure.
"""

from __future__ import annotations

import argparse
import bz2
import dataclasses
import gzip
import re
import shlex
import shutil
import sys
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from negminer.pipelines import webcrawl, wikipedia  # noqa: E402
from negminer.pipelines.transforms.quality import keep_rates  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
WIKI = DATA / "wikipedia" / "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
WARCS = [
    DATA / "commoncrawl" / n
    for n in ("dolma_wget_sample-0000.warc.gz", "resiliparse-warcfile.warc.gz", "warcio-example-iana.org-chunked.warc")
]


def make_wiki(src: Path, repeat: int, out: Path) -> None:
    """A multistream dump: the source pages `repeat` times, page ids shifted per copy, 100 pages per stream."""
    xml = bz2.decompress(src.read_bytes())
    starts = [m.start() for m in re.finditer(rb"  <page>", xml)]
    end = xml.rindex(b"</mediawiki>")
    pages = [xml[a:b] for a, b in zip(starts, [*starts[1:], end], strict=True)]
    copies = [
        re.sub(rb"<id>(\d+)</id>", lambda m, r=r: b"<id>%d</id>" % (int(m.group(1)) + r * 10**8), p, count=1)
        for r in range(repeat)
        for p in pages
    ]
    streams = [xml[: starts[0]]] + [b"".join(copies[i : i + 100]) for i in range(0, len(copies), 100)]
    out.write_bytes(b"".join(bz2.compress(s) for s in [*streams, b"</mediawiki>\n"]))


def make_warc(srcs: list[Path], n: int, out: Path) -> None:
    """`n` HTML response records cycled from `srcs`, each with a new WARC-Record-ID, one gzip member each."""
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    records = []
    for src in srcs:
        with open(src, "rb") as f:
            for rec in ArchiveIterator(f, record_types=WarcRecordType.response, parse_http=False):
                headers = [(k, v) for k, v in rec.headers.to_tuples() if k.lower() != "warc-record-id"]
                records.append((headers, rec.reader.read()))
    with open(out, "wb") as f:
        for i in range(n):
            headers, block = records[i % len(records)]
            rid = f"<urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'bench-{i}')}>"
            head = "WARC/1.0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in [*headers, ("WARC-Record-ID", rid)])
            f.write(gzip.compress(head.encode() + b"\r\n" + block + b"\r\n\r\n", compresslevel=1))


def baseline_wiki(path: Path) -> int:
    import mwparserfromhell

    pages = 0
    for _, elem in ET.iterparse(bz2.open(path)):
        if elem.tag.endswith("}page"):
            ns, text = elem.findtext("{*}ns"), elem.findtext("{*}revision/{*}text") or ""
            if ns == "0" and elem.find("{*}redirect") is None:
                mwparserfromhell.parse(text).strip_code()
                pages += 1
            elem.clear()
    return pages


def baseline_warc(path: Path) -> int:
    from fastwarc.warc import ArchiveIterator, WarcRecordType
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.encoding import bytes_to_str, detect_encoding

    pages = 0
    with open(path, "rb") as f:
        for rec in ArchiveIterator(f, record_types=WarcRecordType.response, auto_decode="all"):
            body = rec.reader.read()
            extract_plain_text(bytes_to_str(body, detect_encoding(body)), main_content=True)
            pages += 1
    return pages


def timed(fn, *args):
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn(*args)
    return out, time.perf_counter() - w0, time.process_time() - c0


def best_of(repeat: int, base_fn, pipe_fn) -> tuple[tuple, tuple]:
    """(baseline, pipeline) as `timed` gives them, run alternately `repeat` times: the least wall and CPU of each."""
    runs = []
    for i in range(repeat):
        runs.append((timed(base_fn), timed(pipe_fn, i)))
        if repeat > 1:
            (_, _, bc), (_, _, pc) = runs[-1]
            print(f"  round {i + 1}: baseline {bc:.1f} CPU-s, pipeline {pc:.1f} CPU-s, {bc / pc:.2f}", flush=True)

    def least(side: int) -> tuple:
        return runs[0][side][0], min(r[side][1] for r in runs), min(r[side][2] for r in runs)

    return least(0), least(1)


def report(name: str, pages: int, base: tuple, pipe: tuple, manifest: dict) -> None:
    rates = keep_rates(manifest)
    candidates = sum(r["candidates"] for r in rates.values())
    rows = manifest.get("rows", 0)
    (_, bw, bc), (_, pw, pc) = base, pipe
    print(f"\n== {name}: {pages} pages")
    print(f"  baseline (reader + extractor only): {bw:7.1f}s wall {bc:7.1f}s cpu  {pages / bw:8.1f} pages/s")
    print(
        f"  pipeline (negminer build):          {pw:7.1f}s wall {pc:7.1f}s cpu  {pages / pw:8.1f} pages/s  "
        f"{candidates / pw:8.1f} candidate pairs/s  {rows / pw:8.1f} rows kept/s ({rows} of {candidates})"
    )
    print(f"  pipeline/baseline pages/s: {bw / pw:.2f} (wall)  {bc / pc:.2f} (cpu)")
    for pt, r in rates.items():
        print(f"    {pt:20s} keep-rate {r['keep_rate']:.2f}  dropped {r['dropped']}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wiki-repeat", type=int, default=3, help="copies of the 206-page dump (default 3)")
    ap.add_argument("--warc-records", type=int, default=3000, help="HTML records in the generated WARC (default 3000)")
    ap.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run each side this many times, alternately; report the least (default 1)",
    )
    ap.add_argument("--beam-args", default="", help="extra Beam flags, e.g. '--direct_num_workers=2'")
    ap.add_argument("--skip", choices=("wiki", "warc"), help="run only the other half")
    ap.add_argument("--keep", help="work directory to keep (default: a temp dir, removed at the end)")
    args = ap.parse_args()
    if args.repeat < 1:
        ap.error(f"--repeat must be >= 1, got {args.repeat}")
    beam_args = shlex.split(args.beam_args)
    work = Path(args.keep or tempfile.mkdtemp(prefix="bench_pretrain_"))
    work.mkdir(parents=True, exist_ok=True)
    if args.skip != "wiki":
        dump = work / "wiki-multistream.xml.bz2"
        make_wiki(WIKI, args.wiki_repeat, dump)
        cfg = wikipedia.WikipediaConfig(inputs=(str(dump),), output=str(work / "wiki-out"), unit_mb=0.25)
        base, pipe = best_of(
            args.repeat,
            lambda: baseline_wiki(dump),
            lambda i: wikipedia.build(dataclasses.replace(cfg, output=str(work / f"wiki-out-{i}")), beam_args),
        )
        report(
            f"Wikipedia dump x{args.wiki_repeat} ({dump.stat().st_size / 2**20:.1f} MB bz2)",
            base[0],
            base,
            pipe,
            pipe[0],
        )
    if args.skip != "warc":
        warc = work / "big.warc.gz"
        make_warc(WARCS, args.warc_records, warc)
        cfg = webcrawl.WebcrawlConfig(inputs=(str(warc),), output=str(work / "warc-out"))
        base, pipe = best_of(
            args.repeat,
            lambda: baseline_warc(warc),
            lambda i: webcrawl.build(dataclasses.replace(cfg, output=str(work / f"warc-out-{i}")), beam_args),
        )
        report(f"WARC ({warc.stat().st_size / 2**20:.1f} MB gz)", base[0], base, pipe, pipe[0])
    if args.keep:
        print(f"\nwork dir: {work}")
    else:  # the generated inputs and every round's shards (~30 MB at the defaults, ~0.3 GB at 30,000 records)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
