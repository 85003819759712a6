"""Shard files on any Beam file system: atomic writes, validating reads, manifest and rejects."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import posixpath
import socket
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, BinaryIO

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


class DirectoryError(ValueError):
    """A shard directory that cannot be trusted or written: incomplete, inconsistent, or locked by another command."""


def _split_path(path: str) -> tuple[str, str]:
    return posixpath.split(path) if "://" in path else os.path.split(path)


@contextlib.contextmanager
def atomic_create(path: str) -> Iterator[BinaryIO]:
    """A file handle whose content appears at `path` only when the block ends without error (temp, then rename).

    The one atomic-write helper of the project (shards, rejects, manifests, caches, exports, model files): readers
    never see half a file, and local files get the mode the umask gives (0644 under the usual 022).
    """
    parent, name = _split_path(path)
    if "://" not in path:
        os.makedirs(parent or ".", exist_ok=True)
    tmp_name = f".{name}.tmp-{uuid.uuid4().hex}"
    tmp = join(parent, tmp_name) if parent else tmp_name
    f = FileSystems.create(tmp, compression_type=CompressionTypes.UNCOMPRESSED)
    try:
        yield f
    except BaseException:
        f.close()
        FileSystems.delete([tmp])
        raise
    f.close()
    if "://" not in path:
        os.replace(tmp, path)  # atomic on POSIX, also over an existing file
        return
    if FileSystems.exists(path):
        FileSystems.delete([path])
    FileSystems.rename([tmp], [path])


def write_bytes_atomic(path: str, data: bytes) -> None:
    """Write `data` to `path` atomically (see `atomic_create`)."""
    with atomic_create(path) as f:
        f.write(data)


def umask_mode(executable: bool = False) -> int:
    """The mode a new file gets under the current umask (0644 / 0755 under the usual 022)."""
    mask = os.umask(0)
    os.umask(mask)
    return (0o777 if executable else 0o666) & ~mask


def follow_umask(path: str) -> None:
    """Give a local file written by a library that forces 0600 (safetensors) the mode the umask gives."""
    if "://" not in path:
        os.chmod(path, umask_mode())


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
    stats = row_stats(ordered)
    return {"file": path, "duplicates": dropped, **stats, "file_rows": {posixpath.basename(path): stats["rows"]}}


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


def write_shard_files(
    rows: Iterable[Mapping[str, Any]], out_dir: str, split: str = "train", num_shards: int = 1
) -> dict[str, Any]:
    """Write rows as `num_shards` shard files of `split` (no manifest). Returns the merged statistics."""
    S.check_split_name(split)
    buckets: list[list[Mapping[str, Any]]] = [[] for _ in range(num_shards)]
    for r in rows:
        buckets[shard_of(r[S.ID], num_shards)].append(r)
    stats: dict[str, Any] = {}
    for i, bucket in enumerate(buckets):
        st = write_shard(bucket, join(out_dir, shard_name(split, i, num_shards)))
        st["files"] = [st.pop("file")]
        stats = merge_counts(stats, st)
    return stats


def write_shards(
    rows: Iterable[Mapping[str, Any]],
    out_dir: str,
    split: str = "train",
    num_shards: int = 1,
    record: Mapping[str, Any] | None = None,
    rejects: Iterable[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """Write one complete split without Beam (mining, tests): its old files go, its shards and rejects are written,
    then its manifest entry (other splits kept). `record` is what produced it (command, config, ...). Returns the
    shard statistics."""
    begin_split(out_dir, split)
    stats = write_shard_files(rows, out_dir, split, num_shards)
    record = dict(record or {"command": "write_shards"})
    record["rejects"] = write_rejects(rejects, out_dir, split)
    commit_split(out_dir, split, stats, record)
    return stats


def rejects_table(rejects: Iterable[Mapping[str, Any]]) -> pa.Table:
    def key(r: Mapping[str, Any]) -> tuple:
        return (r[S.REJECT_SOURCE_FILE], r.get(S.REJECT_LINE) or -1, r.get(S.REJECT_OFFSET) or -1, r[S.REJECT_REASON])

    rows = sorted(rejects, key=key)
    cols = {f.name: [r.get(f.name) for r in rows] for f in S.REJECT_SCHEMA}
    return pa.Table.from_pydict(cols, schema=S.REJECT_SCHEMA)


def rejects_path(out_dir: str, split: str) -> str:
    """`rejects/{split}-00000-of-00001.parquet`: each split keeps its own rejects."""
    return join(out_dir, S.REJECTS_DIR, shard_name(split, 0, 1))


def write_rejects(rejects: Iterable[Mapping[str, Any]], out_dir: str, split: str = "train") -> dict[str, int]:
    """Write every reject of a split's build to `rejects/{split}-00000-of-00001.parquet`; return counts per reason."""
    table = rejects_table(rejects)
    path = rejects_path(out_dir, split)
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
    """Write `manifest.json` as given (atomically). Builders and the miner go through `commit_split` instead."""
    path = join(out_dir, S.MANIFEST_NAME)
    data = json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n"
    write_bytes_atomic(path, data.encode("utf-8"))
    return path


def read_manifest(out_dir: str) -> dict[str, Any]:
    """The parsed `manifest.json` of a directory: FileNotFoundError when absent, DirectoryError when it won't parse."""
    path = join(out_dir, S.MANIFEST_NAME)
    if not FileSystems.exists(path):
        raise FileNotFoundError(f"no {S.MANIFEST_NAME} in {out_dir}: is it a negminer shard directory?")
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        raw = f.read()
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DirectoryError(f"{path} does not parse as JSON ({e})") from None
    if not isinstance(manifest, dict):
        raise DirectoryError(f"{path} is not a JSON object")
    return manifest


# Per-split build record keys; the top level repeats the latest split's, and sums the counts over splits.
RECORD_KEYS = (
    "negminer_version",
    "command",
    "argv",
    "config",
    "inputs",
    "input_build",
    "mining",
    "keep_rates",
    "generate",
)
COUNT_KEYS = ("rows", "negatives", "rows_without_negatives", "duplicates_dropped", "rejects_total")


def split_entry(stats: Mapping[str, Any], record: Mapping[str, Any]) -> dict[str, Any]:
    """One split's manifest entry: its files with their row counts, its counts, and what built it (`record`)."""
    files = sorted(posixpath.basename(f) for f in stats.get("files", []))
    rejects = dict(sorted((record.get("rejects") or {}).items()))
    return {
        **{k: v for k, v in record.items() if k not in ("rejects", "skipped")},
        "rows": stats.get("rows", 0),
        "shards": len(files),
        "files": files,
        "file_rows": {f: stats.get("file_rows", {}).get(f, 0) for f in files},
        "negatives": stats.get("negatives", 0),
        "rows_without_negatives": stats.get("rows_without_negatives", 0),
        "duplicates_dropped": stats.get("duplicates", 0),
        "counts": {
            "source": dict(sorted(stats.get("source", {}).items())),
            "pair_type": dict(sorted(stats.get("pair_type", {}).items())),
        },
        "rejects": rejects,
        "rejects_total": sum(rejects.values()),
        "skipped": dict(sorted((record.get("skipped") or {}).items())),
    }


def assemble_manifest(old: Mapping[str, Any], split: str, entry: Mapping[str, Any]) -> dict[str, Any]:
    """`old` with split `split` replaced by `entry`: other splits kept, totals summed over splits (pure)."""
    splits = {k: dict(v) for k, v in (old.get("splits") or {}).items() if k != split}
    for v in splits.values():  # an entry written before entries held their build record: give it the old one
        for k in RECORD_KEYS:
            if k not in v and k in old:
                v[k] = old[k]
    splits[split] = dict(entry)
    splits = dict(sorted(splits.items()))
    manifest: dict[str, Any] = {k: entry[k] for k in RECORD_KEYS if k in entry}
    manifest.update({"format_version": S.FORMAT_VERSION, "splits": splits})
    for k in COUNT_KEYS:
        manifest[k] = sum(int(v.get(k, 0) or 0) for v in splits.values())
    counts: dict[str, Any] = {"split": {k: v.get("rows", 0) for k, v in splits.items()}, "source": {}, "pair_type": {}}
    rejects: dict[str, int] = {}
    skipped: dict[str, int] = {}
    for v in splits.values():
        for col in ("source", "pair_type"):
            counts[col] = merge_counts(counts[col], (v.get("counts") or {}).get(col, {}))
        rejects = merge_counts(rejects, v.get("rejects") or {})
        skipped = merge_counts(skipped, v.get("skipped") or {})
    manifest["counts"] = {k: dict(sorted(c.items())) for k, c in counts.items()}
    manifest["rejects"] = dict(sorted(rejects.items()))
    manifest["skipped"] = dict(sorted(skipped.items()))
    return manifest


def _existing_manifest(out_dir: str) -> dict[str, Any]:
    try:
        return read_manifest(out_dir)
    except FileNotFoundError:
        return {}
    except DirectoryError as e:
        raise DirectoryError(f"{e}: fix or delete it before writing into {out_dir}") from None


def begin_split(out_dir: str, split: str) -> None:
    """Before writing split `split`: drop its manifest entry, then its old shards and rejects (other splits kept).

    Until `commit_split` lists it again, readers refuse the split (not in the manifest) and any of its shard files
    (not listed), so a build killed half-way is never read as complete.
    """
    S.check_split_name(split)
    old = _existing_manifest(out_dir)
    if split in (old.get("splits") or {}):
        rest = {k: v for k, v in old["splits"].items() if k != split}
        if rest:
            last = sorted(rest)[-1]
            write_manifest(out_dir, assemble_manifest({**old, "splits": rest}, last, rest[last]))
        else:
            FileSystems.delete([join(out_dir, S.MANIFEST_NAME)])
    elif old and not old.get("splits"):
        FileSystems.delete([join(out_dir, S.MANIFEST_NAME)])  # a manifest that lists nothing vouches for nothing
    patterns = [join(out_dir, f"{split}-*-of-*.parquet")]
    patterns += [rejects_path(out_dir, split), join(out_dir, S.REJECTS_DIR, shard_name("rejects", 0, 1))]
    stale = [m.path for r in FileSystems.match(patterns) for m in r.metadata_list]
    stale = [f for f in stale if posixpath.basename(f) == "rejects-00000-of-00001.parquet" or _split_of(f) == split]
    if stale:
        FileSystems.delete(stale)


def _split_of(path: str) -> str | None:
    parsed = S.parse_shard_name(path)
    return parsed[0] if parsed else None


def commit_split(out_dir: str, split: str, stats: Mapping[str, Any], record: Mapping[str, Any]) -> dict[str, Any]:
    """The one manifest writer (builders and the miner): list split `split` with its files, row counts and build
    `record` in `manifest.json`, keeping the other splits; written last, atomically. Returns the manifest."""
    manifest = assemble_manifest(_existing_manifest(out_dir), split, split_entry(stats, record))
    write_manifest(out_dir, manifest)
    return manifest


# ---------------------------------------------------------------- one writer per directory


def check_output_dir(path: str, flag: str = "--output") -> None:
    """Refuse an output that is an existing file (before any work is done)."""
    if "://" not in path and os.path.exists(path) and not os.path.isdir(path):
        raise DirectoryError(f"{flag} {path} is an existing file, not a directory")


@contextlib.contextmanager
def output_lock(out_dir: str, command: str) -> Iterator[None]:
    """Hold `out_dir/.negminer.lock` while writing: a second command writing the same directory refuses at once.

    The lock file is created with O_CREAT | O_EXCL (atomic on local and NFSv3+ file systems) and removed on exit.
    A command killed with SIGKILL leaves it behind: the message says how to clear it. Object stores (gs://, s3://)
    have no exclusive create through Beam's file systems: there the lock is not taken (see docs/format.md).
    """
    if "://" in out_dir:
        yield
        return
    check_output_dir(out_dir)
    created = not os.path.isdir(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, S.LOCK_NAME)
    info = {"pid": os.getpid(), "host": socket.gethostname(), "command": command, "since": time.time()}
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        raise DirectoryError(_lock_message(path)) from None
    with os.fdopen(fd, "w") as f:
        json.dump(info, f)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
        if created:  # a run that wrote nothing (failed early, a dry run) leaves no empty directory behind
            with contextlib.suppress(OSError):
                os.rmdir(out_dir)


def _lock_message(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            held = json.load(f)
    except (OSError, ValueError):
        held = {}
    who = f"`{held.get('command', '?')}` (pid {held.get('pid', '?')} on {held.get('host', '?')})"
    stale = ""
    if held.get("host") == socket.gethostname() and isinstance(held.get("pid"), int) and not _alive(held["pid"]):
        stale = ", which is no longer running"
    return f"{os.path.dirname(path)} is being written by {who}{stale}; if no command is writing it, delete {path}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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


def _listed_parquet(path: str) -> list[str]:
    files = [m.path for m in FileSystems.match([join(path, "*.parquet")])[0].metadata_list]
    return sorted(f for f in files if not posixpath.basename(f).startswith("."))


@contextlib.contextmanager
def open_parquet(path: str) -> Iterator[pq.ParquetFile]:
    """A Parquet file for reading; a file that is not Parquet is a SchemaError naming it."""
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
        try:
            pf = pq.ParquetFile(fh)
        except (pa.ArrowException, OSError) as e:
            raise S.SchemaError(f"{path} is not a Parquet file ({e})") from None
        yield pf


def parquet_rows(path: str) -> int:
    """Rows of one Parquet file, from its footer (no data read)."""
    with open_parquet(path) as pf:
        return pf.metadata.num_rows


def _is_shard_dir(path: str) -> bool:
    return _is_dir(path) or ("://" in path and not path.endswith(".parquet") and "*" not in path)


def shard_files(path: str, split: str | None = None, check: bool = True) -> list[str]:
    """The shard files to read at `path`: a directory's files of `split` (None: every split), or the files a glob
    or file path names (read as named, without the manifest; a file named as a shard of another split is refused).

    A directory is read only as its complete `manifest.json` lists it: a missing or unparseable manifest, a split
    it does not list, a listed file that is missing or whose row count differs, or a shard file it does not list
    (left by a killed or concurrent run) is a DirectoryError naming the problem. `check=False` reads the
    `{split}-*.parquet` files of a directory without a manifest (shards written by other tools).
    """
    if not _is_shard_dir(path):
        files = sorted(f for f in _listed(path) if f"/{S.REJECTS_DIR}/" not in f)
        if not files:
            raise FileNotFoundError(f"no shard files (*.parquet) at {path!r}")
        other = [f for f in files if split is not None and _split_of(f) not in (None, split)]
        if other:
            raise DirectoryError(
                f"{other[0]} is a shard of split {_split_of(other[0])!r}, not {split!r} (see --split)"
            )
        return files
    if split is not None:
        S.check_split_name(split)
    on_disk = _listed_parquet(path)
    if not check:
        files = [f for f in on_disk if split is None or _split_of(f) == split]
        if not files:
            want = f"{split}-*.parquet" if split else "*.parquet"
            raise FileNotFoundError(f"no shard files ({want}) in {path!r}")
        return files
    return _checked_files(path, split, on_disk)


def _checked_files(path: str, split: str | None, on_disk: list[str]) -> list[str]:
    hint = "an unfinished build? (shards written by another tool: pass --no-manifest-check)"
    try:
        manifest = read_manifest(path)
    except FileNotFoundError:
        if not on_disk:
            raise FileNotFoundError(f"no shard files (*.parquet) at {path!r}") from None
        raise DirectoryError(f"{path} has shard files but no {S.MANIFEST_NAME}: {hint}") from None
    splits = manifest.get("splits")
    if not isinstance(splits, dict) or not splits:
        raise DirectoryError(f"{join(path, S.MANIFEST_NAME)} lists no splits: {hint}")
    listed = {f for v in splits.values() for f in v.get("files", [])}
    unlisted = [posixpath.basename(f) for f in on_disk if posixpath.basename(f) not in listed]
    if unlisted:
        raise DirectoryError(
            f"{path}: shard file(s) {', '.join(unlisted[:3])}{' ...' if len(unlisted) > 3 else ''} not listed in "
            f"{S.MANIFEST_NAME} (left by a killed or concurrent run? rebuild that split)"
        )
    if split is not None and split not in splits:
        raise DirectoryError(f"{path} has no split {split!r} (its manifest lists: {', '.join(sorted(splits))})")
    out = []
    for name in sorted(splits) if split is None else [split]:
        out += _verified_split(path, name, splits[name])
    if not out:
        raise FileNotFoundError(f"no shard files (*.parquet) at {path!r}")
    return sorted(out)


def _verified_split(path: str, split: str, entry: Mapping[str, Any]) -> list[str]:
    """The files of one manifest entry, each present with the row count the manifest gives."""
    files = [join(path, f) for f in entry.get("files", [])]
    per_file = entry.get("file_rows") or {}
    total = 0
    for f in files:
        if not FileSystems.exists(f):
            raise DirectoryError(f"{f} is listed in {S.MANIFEST_NAME} but missing")
        n = parquet_rows(f)
        want = per_file.get(posixpath.basename(f))
        if want is not None and n != want:
            raise DirectoryError(f"{f} holds {n} rows, {S.MANIFEST_NAME} says {want}")
        total += n
    if "rows" in entry and total != entry["rows"]:
        raise DirectoryError(f"split {split!r} of {path} holds {total} rows, {S.MANIFEST_NAME} says {entry['rows']}")
    return files


def _listed(pattern: str) -> list[str]:
    files = [m.path for m in FileSystems.match([pattern])[0].metadata_list]
    return sorted(f for f in files if not posixpath.basename(f).startswith("."))


def read_shards(
    path: str | Sequence[str], columns: list[str] | None = None, batch_size: int = 8192
) -> Iterator[pa.RecordBatch]:
    """Stream record batches of the shards at `path` (see `shard_files`: every split of a directory, checked) or
    of the files listed, each checked against the format and cast to it."""
    for f in shard_files(path) if isinstance(path, str) else path:
        with open_parquet(f) as pf:
            S.check_schema(pf.schema_arrow, f)
            for batch in pf.iter_batches(batch_size=batch_size):
                table = S.conform(pa.Table.from_batches([batch]), f)
                if columns is not None:
                    table = table.select(columns)
                yield from table.to_batches()


def iter_rows(path: str | Sequence[str], columns: list[str] | None = None) -> Iterator[dict[str, Any]]:
    """Rows of every shard at `path` (or of the files listed) as dicts, streamed."""
    for batch in read_shards(path, columns):
        yield from batch.to_pylist()


def read_rejects(out_dir: str, split: str | None = None) -> pa.Table:
    """The rejects of one split's build (None: of every split) as one table."""
    files = [m.path for m in FileSystems.match([join(out_dir, S.REJECTS_DIR, "*.parquet")])[0].metadata_list]
    files = [f for f in files if split is None or _split_of(f) == split]
    tables = [pq.read_table(f) for f in sorted(files)]
    return pa.concat_tables(tables) if tables else S.REJECT_SCHEMA.empty_table()
