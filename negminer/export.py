"""`negminer export`: tuple shards -> sentence-transformers Parquet, FlagEmbedding, Tevatron or our own JSON lines.

Usage: negminer export --input out/snli-mined --format sentence-transformers --output out/snli-st [--num-negatives 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import posixpath
import sys
from collections.abc import Mapping
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from tqdm import tqdm

import negminer
from negminer.pipelines import io, runner
from negminer.pipelines import schema as S

ST, FLAG, TEVATRON, JSONL = "sentence-transformers", "flagembedding", "tevatron", "jsonl"
FORMATS = (ST, FLAG, TEVATRON, JSONL)
SHORT_ROWS = ("drop", "pad")
MANIFEST_NAME = "export_manifest.json"
ST_ANCHOR, ST_POSITIVE = "anchor", "positive"  # sentence-transformers' column names, not ours
DROP_SHORT, DROP_EMPTY = "fewer_negatives_than_wanted", "no_negatives_to_pad"


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    input: str
    output: str
    format: str
    num_negatives: int | None = None  # None: all (sentence-transformers: the most any row has)
    short_rows: str = "pad"
    prompt: str | None = None
    batch_size: int = 4096
    split: str = "train"
    no_manifest_check: bool = False

    def __post_init__(self) -> None:
        S.check_split_name(self.split)
        io.check_output_dir(self.output)
        if self.format not in FORMATS:
            raise ValueError(f"--format must be one of {FORMATS}, got {self.format!r}")
        if self.short_rows not in SHORT_ROWS:
            raise ValueError(f"--short-rows must be one of {SHORT_ROWS}, got {self.short_rows!r}")
        if self.num_negatives is not None and self.num_negatives < 0:
            raise ValueError(f"--num-negatives must be >= 0, got {self.num_negatives}")
        if self.prompt is not None and self.format != FLAG:
            raise ValueError(f"--prompt is only for --format {FLAG}, not {self.format!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {self.batch_size}")


# ---------------------------------------------------------------- pure row conversions


def st_columns(n: int) -> list[str]:
    """sentence-transformers column names for `n` negatives: anchor, positive, negative_1..negative_n."""
    return [ST_ANCHOR, ST_POSITIVE, *(f"negative_{i}" for i in range(1, n + 1))]


def fixed_negatives(negatives: list[str], n: int, short_rows: str) -> list[str] | str:
    """Exactly `n` negatives (hardest first), padded by repeating the hardest, or the reason the row is dropped."""
    if len(negatives) >= n:
        return list(negatives[:n])
    if short_rows == "drop":
        return DROP_SHORT
    if not negatives:
        return DROP_EMPTY
    return list(negatives) + [negatives[0]] * (n - len(negatives))


def text_id(text: str) -> str:
    """A stable id for a text that has none in its source (Tevatron needs one per query and passage)."""
    return "h" + hashlib.blake2b(text.encode("utf-8"), digest_size=8).hexdigest()


def _take(values: list | None, n: int | None) -> list:
    values = list(values or [])
    return values if n is None else values[:n]


def st_record(row: Mapping[str, Any], n: int, short_rows: str) -> dict[str, str] | str:
    """One row as a sentence-transformers record {anchor, positive, negative_1..n}, or the reason it is dropped."""
    negs = fixed_negatives(row[S.NEGATIVES] or [], n, short_rows)
    if isinstance(negs, str):
        return negs
    return dict(zip(st_columns(n), [row[S.QUERY], row[S.POSITIVE], *negs], strict=True))


def flagembedding_record(row: Mapping[str, Any], n: int | None = None, prompt: str | None = None) -> dict[str, Any]:
    """FlagEmbedding's fine-tuning line: query, pos, neg; pos_scores/neg_scores when mined; prompt when known."""
    rec: dict[str, Any] = {"query": row[S.QUERY], "pos": [row[S.POSITIVE]], "neg": _take(row[S.NEGATIVES], n)}
    if row.get(S.POSITIVE_SCORE) is not None and row.get(S.NEGATIVE_SCORES) is not None:
        rec["pos_scores"] = [row[S.POSITIVE_SCORE]]
        rec["neg_scores"] = _take(row[S.NEGATIVE_SCORES], n)
    prompt = prompt if prompt is not None else row.get(S.INSTRUCTION)
    if prompt is not None:
        rec["prompt"] = prompt
    return rec


def _passage(doc_id: str | None, text: str) -> dict[str, str]:
    return {"docid": doc_id if doc_id is not None else text_id(text), "title": "", "text": text}


def tevatron_record(row: Mapping[str, Any], n: int | None = None) -> dict[str, Any]:
    """Tevatron's training line: query_id, query, positive_passages and negative_passages of {docid, title, text}."""
    negs, neg_ids = _take(row[S.NEGATIVES], n), _take(row[S.NEGATIVE_IDS], n)
    return {
        "query_id": row.get(S.QUERY_ID) or text_id(row[S.QUERY]),
        "query": row[S.QUERY],
        "positive_passages": [_passage(row.get(S.POSITIVE_ID), row[S.POSITIVE])],
        "negative_passages": [_passage(i, t) for i, t in zip(neg_ids, negs, strict=True)],
    }


def jsonl_record(row: Mapping[str, Any], n: int | None = None) -> dict[str, Any]:
    """Our row, every column, with at most `n` negatives (ids and scores cut alike)."""
    rec = {c: row.get(c) for c in S.COLUMNS}
    if n is not None:
        rec[S.NEGATIVES], rec[S.NEGATIVE_IDS] = _take(rec[S.NEGATIVES], n), _take(rec[S.NEGATIVE_IDS], n)
        if rec[S.NEGATIVE_SCORES] is not None:
            rec[S.NEGATIVE_SCORES] = _take(rec[S.NEGATIVE_SCORES], n)
    return rec


def row_from_jsonl(line: str) -> S.TupleRow:
    """One line of `--format jsonl` back to a validated row (the way back into the shard format)."""
    return S.TupleRow.from_dict(json.loads(line))


# ---------------------------------------------------------------- files


def output_name(shard_path: str, fmt: str) -> str:
    """`train-00000-of-00002.parquet` -> the same stem with the format's extension (the split survives)."""
    stem = posixpath.basename(shard_path).rsplit(".", 1)[0]
    return stem + (".parquet" if fmt == ST else ".jsonl")


def max_negatives(files: list[str]) -> int:
    """The most negatives any row of `files` has (one streamed pass over the negatives column)."""
    most = 0
    for f in files:
        for batch in io.read_shards(f, columns=[S.NEGATIVES]):
            lengths = pc.list_value_length(batch.column(0)).fill_null(0)
            most = max(most, pc.max(lengths).as_py() or 0)
    return most


def _local_dir(path: str) -> str:
    return path.rstrip("/") if "://" in path else os.path.realpath(path)


def check_paths(files: list[str], cfg: ExportConfig) -> None:
    """Refuse outputs that would overwrite the input shards or each other."""
    out = _local_dir(cfg.output)
    for f in files:
        if _local_dir(posixpath.dirname(f) if "://" in f else os.path.dirname(f)) == out:
            raise ValueError(f"--output {cfg.output!r} holds the input shard {f}: export into another directory")
    names = [output_name(f, cfg.format) for f in files]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"input shards from several directories share the file names {dup}: export them one by one")


def remove_previous_export(out_dir: str) -> None:
    """Delete the files a previous export listed in its manifest, so stale splits cannot mix in."""
    path = io.join(out_dir, MANIFEST_NAME)
    if not FileSystems.exists(path):
        return
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        old = json.loads(f.read().decode("utf-8"))
    stale = [io.join(out_dir, e["file"]) for e in old.get("files", [])]
    stale = [p for p in stale + [path] if FileSystems.exists(p)]
    if stale:
        FileSystems.delete(stale)


def _convert(row: dict, cfg: ExportConfig, n: int | None) -> dict | str:
    if cfg.format == ST:
        return st_record(row, n, cfg.short_rows)
    if cfg.format == FLAG:
        return flagembedding_record(row, n, cfg.prompt)
    if cfg.format == TEVATRON:
        return tevatron_record(row, n)
    return jsonl_record(row, n)


def export_file(src: str, dst: str, cfg: ExportConfig, n: int | None, bar: tqdm) -> dict[str, Any]:
    """Convert one shard file into one output file, batch by batch; return its counts."""
    counts: dict[str, Any] = {"file": posixpath.basename(dst), "rows_in": 0, "rows": 0, "dropped": {}}
    st_schema = pa.schema([pa.field(c, pa.string(), nullable=False) for c in st_columns(n or 0)])
    with io.atomic_create(dst) as f:
        writer = pq.ParquetWriter(f, st_schema, compression=io.PARQUET_COMPRESSION) if cfg.format == ST else None
        for batch in io.read_shards(src, batch_size=cfg.batch_size):
            records = []
            for row in batch.to_pylist():
                rec = _convert(row, cfg, n)
                if isinstance(rec, str):
                    counts["dropped"][rec] = counts["dropped"].get(rec, 0) + 1
                else:
                    records.append(rec)
            counts["rows_in"] += batch.num_rows
            counts["rows"] += len(records)
            bar.update(batch.num_rows)
            if writer is not None:
                writer.write_table(pa.Table.from_pylist(records, schema=st_schema))
            else:
                f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8"))
        if writer is not None:
            writer.close()
    return counts


def export(cfg: ExportConfig) -> dict[str, Any]:
    """Export every shard at `cfg.input` into `cfg.output`; write and return the export manifest."""
    split = None if cfg.split == S.ALL_SPLITS else cfg.split
    files = io.shard_files(cfg.input, split, check=not cfg.no_manifest_check)
    check_paths(files, cfg)
    n = cfg.num_negatives
    if cfg.format == ST and n is None:
        n = max_negatives(files)
    remove_previous_export(cfg.output)
    manifest: dict[str, Any] = {
        "negminer_version": negminer.__version__,
        "command": "export",
        "argv": runner.command_line(),
        "config": dataclasses.asdict(cfg),
        "format": cfg.format,
        "num_negatives": n,
        "inputs": files,
        "files": [],
        "rows_in": 0,
        "rows": 0,
        "dropped": {},
    }
    total = sum(io.parquet_rows(f) for f in files)
    with tqdm(total=total, desc=f"export {cfg.format}", unit="row", disable=None, file=sys.stderr) as bar:
        for src in files:
            counts = export_file(src, io.join(cfg.output, output_name(src, cfg.format)), cfg, n, bar)
            manifest["files"].append(counts)
            manifest = io.merge_counts(manifest, {k: counts[k] for k in ("rows_in", "rows", "dropped")})
    manifest["dropped"] = dict(sorted(manifest["dropped"].items()))
    data = json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    io.write_bytes_atomic(io.join(cfg.output, MANIFEST_NAME), data.encode("utf-8"))
    return manifest


def summary_line(manifest: Mapping[str, Any], output: str) -> str:
    dropped = ", ".join(f"{k}={v}" for k, v in manifest["dropped"].items())
    negs = "" if manifest["num_negatives"] is None else f", {manifest['num_negatives']} negatives per row"
    return (
        f"exported {manifest['rows']} of {manifest['rows_in']} rows as {manifest['format']}{negs} "
        f"({sum(manifest['dropped'].values())} dropped{': ' + dropped if dropped else ''}) "
        f"into {len(manifest['files'])} file(s) in {output}"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    a = parser.add_argument
    a("--input", required=True, help="tuple shards: a shard directory, a glob or a .parquet file (local or gs://)")
    a("--format", required=True, choices=FORMATS, help="output layout")
    a("--output", required=True, help="output directory (local or gs://); one output file per input shard")
    a(
        "--split",
        default="train",
        help="the split of an --input directory to export; 'all' for every split (default train)",
    )
    a(
        "--no-manifest-check",
        action="store_true",
        help="read an --input directory without a manifest (shards written by other tools)",
    )
    a(
        "--num-negatives",
        type=runner.int_at_least(0),
        help="negatives per row, hardest first (default: all; sentence-transformers: the most any row has)",
    )
    a(
        "--short-rows",
        choices=SHORT_ROWS,
        help="sentence-transformers: rows with fewer negatives are dropped, or padded by repeating the hardest "
        "(default pad; rows without any negative are dropped either way)",
    )
    a("--prompt", help="flagembedding: the `prompt` of every line (default: the row's instruction, if any)")


def main(args: argparse.Namespace, extra: list[str]) -> int:
    if args.short_rows is not None and args.format != ST:
        print(f"negminer export: error: --short-rows is only for --format {ST}", file=sys.stderr)
        return 2
    try:
        cfg = ExportConfig(
            input=args.input,
            output=args.output,
            format=args.format,
            num_negatives=args.num_negatives,
            short_rows=args.short_rows or "pad",
            prompt=args.prompt,
            split=args.split,
            no_manifest_check=args.no_manifest_check,
        )
        manifest = export(cfg)
    except (ValueError, FileNotFoundError) as e:  # SchemaError is a ValueError
        print(f"negminer export: error: {e}", file=sys.stderr)
        return 2
    print(summary_line(manifest, cfg.output))
    return 0
