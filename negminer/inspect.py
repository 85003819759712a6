"""`negminer inspect DIR`: what a shard directory holds — counts, rejects, text lengths, negatives, sample rows.

Usage: negminer inspect out/snli [--samples 3] [--json] [--plot out/snli/scores.png]
"""

from __future__ import annotations

import argparse
import json
import posixpath
import sys
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from negminer.pipelines import io, runner
from negminer.pipelines import schema as S

TEXT_FIELDS = (S.QUERY, S.POSITIVE, S.NEGATIVES)
SAMPLE_CHARS = 200  # text mode cuts sample texts to this many characters


class IntHistogram:
    """Exact distribution of non-negative integers, streamed: a count per value, so quantiles need no full list."""

    def __init__(self) -> None:
        self.counts = np.zeros(0, dtype=np.int64)

    def add(self, values: np.ndarray) -> None:
        if len(values) == 0:
            return
        binned = np.bincount(np.asarray(values, dtype=np.int64))
        if len(binned) > len(self.counts):
            self.counts = np.pad(self.counts, (0, len(binned) - len(self.counts)))
        self.counts[: len(binned)] += binned

    def quantile(self, q: float) -> float:
        """Same as `numpy.percentile(values, 100 * q)` (linear interpolation) over every value added."""
        cum = np.cumsum(self.counts)
        h = (cum[-1] - 1) * q
        lo = int(np.searchsorted(cum, np.floor(h), side="right"))
        hi = int(np.searchsorted(cum, np.ceil(h), side="right"))
        return float(lo + (h - np.floor(h)) * (hi - lo))

    def summary(self) -> dict[str, float | int]:
        n = int(self.counts.sum())
        if n == 0:
            return {"count": 0}
        values = np.arange(len(self.counts))
        return {
            "count": n,
            "mean": float((values * self.counts).sum() / n),
            "p50": self.quantile(0.5),
            "p95": self.quantile(0.95),
            "max": int(np.flatnonzero(self.counts)[-1]),
        }


def text_lengths(texts: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(characters, whitespace tokens) of each non-null string; tokens count like `len(str.split())`."""
    texts = texts.drop_null()
    chars = pc.utf8_length(texts)
    trimmed = pc.utf8_trim_whitespace(texts)
    tokens = pc.if_else(
        pc.equal(pc.utf8_length(trimmed), 0), 0, pc.list_value_length(pc.utf8_split_whitespace(trimmed))
    )
    return chars.to_numpy(zero_copy_only=False), tokens.to_numpy(zero_copy_only=False)


def split_of(path: str) -> str:
    parsed = S.parse_shard_name(path)
    return parsed[0] if parsed else posixpath.basename(path)


def _add_counts(counts: dict[str, int], column: pa.Array) -> None:
    for item in pc.value_counts(column).to_pylist():
        counts[item["values"]] = counts.get(item["values"], 0) + item["counts"]


def file_format_version(path: str) -> str | None:
    with io.open_parquet(path) as pf:
        meta = pf.schema_arrow.metadata or {}
    v = meta.get(b"negminer.format_version")
    return v.decode() if v else None


def scan_shards(shard_dir: str | list[str], samples: int = 3) -> dict[str, Any]:
    """Counts, length statistics and the first `samples` rows of every shard, streamed batch by batch."""
    files = io.shard_files(shard_dir) if isinstance(shard_dir, str) else shard_dir
    counts: dict[str, dict[str, int]] = {"split": {}, "source": {}, "pair_type": {}}
    hists = {f: (IntHistogram(), IntHistogram()) for f in TEXT_FIELDS}
    per_row = IntHistogram()
    rows: list[dict] = []
    for path in files:
        split = split_of(path)
        for batch in io.read_shards(path):
            counts["split"][split] = counts["split"].get(split, 0) + batch.num_rows
            for col in (S.SOURCE, S.PAIR_TYPE):
                _add_counts(counts[col], batch.column(col))
            negs = batch.column(S.NEGATIVES)
            per_row.add(pc.list_value_length(negs).fill_null(0).to_numpy(zero_copy_only=False))
            for field in TEXT_FIELDS:
                texts = pc.list_flatten(negs) if field == S.NEGATIVES else batch.column(field)
                for hist, values in zip(hists[field], text_lengths(texts), strict=True):
                    hist.add(values)
            if len(rows) < samples:
                rows.extend(batch.slice(0, samples - len(rows)).to_pylist())
    return {
        "files": len(files),
        "rows": sum(counts["split"].values()),
        "format_version": file_format_version(files[0]),
        "counts": {k: dict(sorted(v.items())) for k, v in counts.items()},
        "lengths": {f: {"chars": c.summary(), "tokens": t.summary()} for f, (c, t) in hists.items()},
        "negatives_per_row": {**per_row.summary(), "rows_without_negatives": int(per_row.counts[:1].sum())},
        "samples": rows,
    }


def reject_counts(shard_dir: str, split: str | None = None) -> dict[str, int]:
    """Rejects per reason, from the rejects/ files (for directories without a manifest)."""
    reasons = io.read_rejects(shard_dir, split).column(S.REJECT_REASON).to_pylist()
    return {r: reasons.count(r) for r in sorted(set(reasons))}


def mining_lines(shard_dir: str, manifest: dict[str, Any], plot_path: str | None) -> list[str]:
    try:
        from negminer.mining import report
    except ImportError as e:
        return [f"mining: the manifest has mining settings, but mining.report cannot be imported ({e})"]
    return list(report.describe(shard_dir, manifest, plot_path=plot_path))


def summarize(
    shard_dir: str, samples: int = 3, plot_path: str | None = None, split: str | None = None, check: bool = True
) -> dict[str, Any]:
    """Everything `inspect` reports (of one split, or of all), as one JSON-able dict."""
    files = io.shard_files(shard_dir, split, check=check)  # an incomplete directory is refused unless not `check`
    try:
        manifest = io.read_manifest(shard_dir)
    except (FileNotFoundError, io.DirectoryError):
        manifest = {}
    if split is not None and manifest:  # one split: its own entry's counts and build record
        manifest = {**manifest, **manifest.get("splits", {}).get(split, {})}
        manifest["rows"] = manifest.get("rows")
    scan = scan_shards(files, samples)
    summary: dict[str, Any] = {
        "dir": shard_dir,
        "manifest": bool(manifest),
        **scan,
        "format_version": manifest.get("format_version") or scan["format_version"],
        "command": manifest.get("command"),
        "split": split,
        "rejects": manifest["rejects"] if "rejects" in manifest else reject_counts(shard_dir, split),
        "skipped": manifest.get("skipped", {}),
        "warnings": [],
    }
    if manifest and manifest.get("rows") != scan["rows"]:
        summary["warnings"].append(f"manifest.json says {manifest.get('rows')} rows, the shards hold {scan['rows']}")
    if "mining" in manifest:
        summary["mining"] = mining_lines(shard_dir, manifest, plot_path)
    elif plot_path:
        summary["warnings"].append("--plot ignored: these shards were not mined (no 'mining' in manifest.json)")
    return summary


def _counts_line(counts: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in counts.items()) or "none"


def _stats(st: dict[str, Any]) -> str:
    if not st.get("count"):
        return "-"
    return f"{st['mean']:.1f}/{st['p50']:g}/{st['p95']:g}/{st['max']}"


def _cut(text: str | None) -> str:
    text = "" if text is None else text
    return text if len(text) <= SAMPLE_CHARS else text[: SAMPLE_CHARS - 1] + "…"


def render(summary: dict[str, Any]) -> str:
    """The summary as the human-readable report `inspect` prints."""
    s = summary
    out = [
        f"{s['dir']}: tuple-shard format {s['format_version'] or 'unknown'}"
        + (f", built by `{s['command']}`" if s.get("command") else "")
        + ("" if s["manifest"] else " (no manifest.json)"),
        f"rows: {s['rows']} in {s['files']} shard file(s)",
    ]
    out += [f"  {k:<10} {_counts_line(v)}" for k, v in s["counts"].items()]
    out.append(f"rejects: {sum(s['rejects'].values())} ({_counts_line(s['rejects'])})")
    out.append(f"skipped: {sum(s['skipped'].values())} ({_counts_line(s['skipped'])})")
    out.append(f"lengths (mean/p50/p95/max){'':4}{'characters':>24} {'whitespace tokens':>24}")
    for field, st in s["lengths"].items():
        out.append(
            f"  {field:<10} n={st['chars'].get('count', 0):<12} {_stats(st['chars']):>24} {_stats(st['tokens']):>24}"
        )
    npr = s["negatives_per_row"]
    out.append(
        f"negatives per row (mean/p50/p95/max): {_stats(npr)}; {npr['rows_without_negatives']} rows without any"
    )
    for line in s.get("mining", []):
        out.append(line)
    out.append(f"sample rows ({len(s['samples'])}):")
    for i, row in enumerate(s["samples"], 1):
        out.append(f"  [{i}] id={row[S.ID]} source={row[S.SOURCE]} pair_type={row[S.PAIR_TYPE]}")
        out.append(f"      query:    {_cut(row[S.QUERY])}")
        out.append(f"      positive: {_cut(row[S.POSITIVE])}")
        for neg in row[S.NEGATIVES]:
            out.append(f"      negative: {_cut(neg)}")
    out += [f"WARNING: {w}" for w in s["warnings"]]
    return "\n".join(out)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", help="shard directory (local or gs://), or a glob of shard files")
    parser.add_argument("--split", default=S.ALL_SPLITS, help="report one split only (default: all)")
    parser.add_argument(
        "--no-manifest-check",
        action="store_true",
        help="inspect a directory without a complete manifest (shards written by other tools, a killed build)",
    )
    parser.add_argument("--samples", type=runner.int_at_least(0), default=3, help="sample rows to show (default 3)")
    parser.add_argument("--json", action="store_true", help="print one machine-readable JSON object instead")
    parser.add_argument(
        "--plot", metavar="PATH", help="mined shards: where to write the score histogram PNG (default: in DIR)"
    )


def main(args: argparse.Namespace, extra: list[str]) -> int:
    try:
        summary = summarize(
            args.dir,
            samples=args.samples,
            plot_path=args.plot,
            split=None if args.split == S.ALL_SPLITS else args.split,
            check=not args.no_manifest_check,
        )
    except (FileNotFoundError, ValueError) as e:  # SchemaError and DirectoryError are ValueErrors
        print(f"negminer inspect: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2, ensure_ascii=False, default=str) if args.json else render(summary))
    return 0
