"""Shard files on any Beam file system: atomic writes, validating reads, manifest and rejects."""

from __future__ import annotations

import hashlib
import io
import json
import os
import posixpath
import uuid
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from negminer.pipelines import schema as S

PARQUET_COMPRESSION = "zstd"


def join(base: str, *parts: str) -> str:
    """Join paths on local disk or on gs:// alike."""
    return FileSystems.join(base, *parts)


def shard_name(split: str, index: int, count: int) -> str:
    if not 0 <= index < count:
        raise ValueError(f"shard index {index} outside 0..{count - 1}")
    return S.SHARD_TEMPLATE.format(split=split, index=index, count=count)


def shard_of(row_id: str, count: int) -> int:
    """Deterministic shard for a row: by its content-hash id, so reruns put every row in the same file."""
    return int(row_id[:15], 16) % count


def write_bytes_atomic(path: str, data: bytes) -> None:
    """Write to a temp name beside `path`, then rename: readers never see half a file."""
    parent, name = posixpath.split(path) if "://" in path else os.path.split(path)
    if "://" not in path:
        os.makedirs(parent or ".", exist_ok=True)
    tmp = join(parent, f".{name}.tmp-{uuid.uuid4().hex}") if parent else f".{name}.tmp-{uuid.uuid4().hex}"
    with FileSystems.create(tmp, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        f.write(data)
    if "://" not in path:
        os.replace(tmp, path)  # atomic on POSIX, also over an existing file
        return
    if FileSystems.exists(path):
        FileSystems.delete([path])
    FileSystems.rename([tmp], [path])


def table_to_parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression=PARQUET_COMPRESSION, write_statistics=True)
    return buf.getvalue()


def sort_and_dedup(rows: Iterable[Mapping[str, Any]]) -> tuple[list[dict], int]:
    """Rows sorted by id; of rows sharing an id, the one with the smallest JSON form survives.

    Returns the rows and how many duplicates were dropped. The tie-break makes the survivor
    independent of arrival order, which is what byte-identical reruns need.
    """
    best: dict[str, dict] = {}
    dropped = 0
    for r in rows:
        rid = r[S.ID]
        if rid in best:  # the JSON tie-break key only when ids collide: computing it for every row was costly
            dropped += 1
            if _dedup_key(r) >= _dedup_key(best[rid]):
                continue
        best[rid] = dict(r)
    return [best[k] for k in sorted(best)], dropped


def _dedup_key(row: Mapping[str, Any]) -> str:
    return json.dumps(row, sort_keys=True, ensure_ascii=False)


def write_shard(rows: Iterable[Mapping[str, Any]], path: str) -> dict[str, Any]:
    """Write one shard file atomically; return its statistics (rows per source/pair_type, negatives, dups)."""
    ordered, dropped = sort_and_dedup(rows)
    write_bytes_atomic(path, table_to_parquet_bytes(S.rows_to_table(ordered)))
    return {"file": path, "duplicates": dropped, **row_stats(ordered)}


def row_stats(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    stats: dict[str, Any] = {"rows": 0, "negatives": 0, "rows_without_negatives": 0, "source": {}, "pair_type": {}}
    for r in rows:
        stats["rows"] += 1
        n = len(r.get(S.NEGATIVES) or [])
        stats["negatives"] += n
        stats["rows_without_negatives"] += n == 0
        for col in (S.SOURCE, S.PAIR_TYPE):
            stats[col][r[col]] = stats[col].get(r[col], 0) + 1
    return stats


def merge_counts(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """Add two nested count dicts (numbers add, dicts merge recursively, lists concatenate)."""
    out = dict(a)
    for k, v in b.items():
        if k not in out:
            out[k] = v
        elif isinstance(v, Mapping):
            out[k] = merge_counts(out[k], v)
        elif isinstance(v, list):
            out[k] = list(out[k]) + list(v)
        elif isinstance(v, (int, float)):
            out[k] = out[k] + v
    return out


def write_shards(
    rows: Iterable[Mapping[str, Any]], out_dir: str, split: str = "train", num_shards: int = 1
) -> dict[str, Any]:
    """Write rows as `num_shards` shard files without Beam (mining, export, tests). Returns merged stats."""
    buckets: list[list[Mapping[str, Any]]] = [[] for _ in range(num_shards)]
    for r in rows:
        buckets[shard_of(r[S.ID], num_shards)].append(r)
    stats: dict[str, Any] = {}
    for i, bucket in enumerate(buckets):
        st = write_shard(bucket, join(out_dir, shard_name(split, i, num_shards)))
        st["files"] = [st.pop("file")]
        stats = merge_counts(stats, st)
    return stats


def rejects_table(rejects: Iterable[Mapping[str, Any]]) -> pa.Table:
    def key(r: Mapping[str, Any]) -> tuple:
        return (r[S.REJECT_SOURCE_FILE], r.get(S.REJECT_LINE) or -1, r.get(S.REJECT_OFFSET) or -1, r[S.REJECT_REASON])

    rows = sorted(rejects, key=key)
    cols = {f.name: [r.get(f.name) for r in rows] for f in S.REJECT_SCHEMA}
    return pa.Table.from_pydict(cols, schema=S.REJECT_SCHEMA)


def write_rejects(rejects: Iterable[Mapping[str, Any]], out_dir: str) -> dict[str, int]:
    """Write every reject to `rejects/rejects-00000-of-00001.parquet`; return counts per reason."""
    table = rejects_table(rejects)
    path = join(out_dir, S.REJECTS_DIR, shard_name("rejects", 0, 1))
    write_bytes_atomic(path, table_to_parquet_bytes(table))
    counts: dict[str, int] = {}
    for reason in table.column(S.REJECT_REASON).to_pylist():
        counts[reason] = counts.get(reason, 0) + 1
    return dict(sorted(counts.items()))


def make_reject(source_file: str, reason: str, raw: Any, line: int | None = None, offset: int | None = None) -> dict:
    """A reject record: where the bad input was, why, and its raw text (truncated)."""
    if not isinstance(raw, str):
        raw = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else json.dumps(raw, default=str)
    return {
        S.REJECT_SOURCE_FILE: source_file,
        S.REJECT_LINE: line,
        S.REJECT_OFFSET: offset,
        S.REJECT_REASON: reason,
        S.REJECT_RAW: raw[: S.MAX_REJECT_RAW_CHARS],
    }


# ---------------------------------------------------------------- manifest


def write_manifest(out_dir: str, manifest: Mapping[str, Any]) -> str:
    path = join(out_dir, S.MANIFEST_NAME)
    data = json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n"
    write_bytes_atomic(path, data.encode("utf-8"))
    return path


def read_manifest(out_dir: str) -> dict[str, Any]:
    path = join(out_dir, S.MANIFEST_NAME)
    if not FileSystems.exists(path):
        raise FileNotFoundError(f"no {S.MANIFEST_NAME} in {out_dir}: is it a negminer shard directory?")
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        return json.loads(f.read().decode("utf-8"))


def fingerprint(path: str, chunk: int = 1 << 22) -> dict[str, Any]:
    """Size and sha256 of a local input file; size and modification time of a remote one.

    Remote objects (gs://, s3://) are not downloaded to the launching machine just to hash them.
    """
    if "://" in path:
        meta = FileSystems.match([path])[0].metadata_list[0]
        return {"path": path, "size": meta.size_in_bytes, "last_updated": meta.last_updated_in_seconds}
    h = hashlib.sha256()
    size = 0
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        while block := f.read(chunk):
            h.update(block)
            size += len(block)
    return {"path": path, "size": size, "sha256": h.hexdigest()}


def expand_patterns(patterns: Iterable[str]) -> list[str]:
    """Every file matching any pattern (a path, a glob or a directory), sorted; error if one matches nothing."""
    files: list[str] = []
    for pat in patterns:
        if FileSystems.exists(pat) and _is_dir(pat):
            pat = join(pat, "*")
        matched = [m.path for m in FileSystems.match([pat])[0].metadata_list]
        matched = [m for m in matched if not posixpath.basename(m).startswith(".")]
        if not matched:
            raise FileNotFoundError(f"no input file matches {pat!r}")
        files.extend(matched)
    return sorted(set(files))


def _is_dir(path: str) -> bool:
    if "://" in path:
        return path.endswith("/")
    return os.path.isdir(path)


# ---------------------------------------------------------------- reading shards


def shard_files(path: str) -> list[str]:
    """The shard files of a directory (excluding rejects/), or the files a glob or file path names."""
    if _is_dir(path) or ("://" in path and not path.endswith(".parquet") and "*" not in path):
        pattern = join(path, "*.parquet")
    else:
        pattern = path
    files = [m.path for m in FileSystems.match([pattern])[0].metadata_list]
    files = sorted(f for f in files if not posixpath.basename(f).startswith(".") and f"/{S.REJECTS_DIR}/" not in f)
    if not files:
        raise FileNotFoundError(f"no shard files (*.parquet) at {path!r}")
    return files


def read_shards(path: str, columns: list[str] | None = None, batch_size: int = 8192) -> Iterator[pa.RecordBatch]:
    """Stream record batches of every shard at `path`, each checked against the format and cast to it."""
    for f in shard_files(path):
        with FileSystems.open(f, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
            pf = pq.ParquetFile(fh)
            S.check_schema(pf.schema_arrow, f)
            for batch in pf.iter_batches(batch_size=batch_size):
                table = S.conform(pa.Table.from_batches([batch]), f)
                if columns is not None:
                    table = table.select(columns)
                yield from table.to_batches()


def iter_rows(path: str, columns: list[str] | None = None) -> Iterator[dict[str, Any]]:
    """Rows of every shard at `path` as dicts, streamed."""
    for batch in read_shards(path, columns):
        yield from batch.to_pylist()


def read_rejects(out_dir: str) -> pa.Table:
    files = [m.path for m in FileSystems.match([join(out_dir, S.REJECTS_DIR, "*.parquet")])[0].metadata_list]
    tables = [pq.read_table(f) for f in sorted(files)]
    return pa.concat_tables(tables) if tables else S.REJECT_SCHEMA.empty_table()
