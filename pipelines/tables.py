"""Tuple rows as Arrow tables: split by shard, sort and dedup by id, statistics (the columnar twin of io's row path).

Every function gives what `io.shard_of`, `io.sort_and_dedup` and `io.row_stats` give for the same rows as dicts, so
a shard written from a table has the same bytes as one written from row dicts (tests/pipelines/test_tables.py).
"""

from __future__ import annotations

import os
import posixpath
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from negminer.pipelines import io
from negminer.pipelines import schema as S


def string_buffers(strings: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(int64 offsets, uint8 data) of a string array (never empty data, so it can be indexed)."""
    arr = strings.combine_chunks() if isinstance(strings, pa.ChunkedArray) else strings
    arr = arr.cast(pa.large_string()) if pa.types.is_string(arr.type) else arr
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset : arr.offset + len(arr) + 1]
    data = arr.buffers()[2]
    data = np.frombuffer(data, dtype=np.uint8) if data is not None and data.size else np.zeros(1, np.uint8)
    return offsets, data


def row_ids(source: str, queries: pa.Array | pa.ChunkedArray, positives: pa.Array | pa.ChunkedArray) -> pa.Array:
    """`schema.make_ids(source, queries, positives)` of two string columns: each row's hashed message is built by
    Arrow (length prefixes as fixed-width binaries, one element-wise join) and hashed from one buffer, with no
    Python string per row."""
    import hashlib

    n = len(queries)
    src = source.encode("utf-8")
    head = len(src).to_bytes(8, "little") + src

    def prefixed(strings, lead: bytes) -> tuple[pa.Array, pa.Array]:
        strings = strings.combine_chunks() if isinstance(strings, pa.ChunkedArray) else strings
        m = np.empty((n, len(lead) + 8), np.uint8)
        m[:, : len(lead)] = np.frombuffer(lead, np.uint8)
        lengths = pc.binary_length(strings).to_numpy(zero_copy_only=False).astype("<i8")
        m[:, len(lead) :] = lengths.view(np.uint8).reshape(n, 8)
        fixed = pa.FixedSizeBinaryArray.from_buffers(pa.binary(len(lead) + 8), n, [None, pa.py_buffer(m)])
        return fixed.cast(pa.large_binary()), strings.cast(pa.large_binary())

    if not n:
        return pa.array([], pa.string())
    empty = pa.scalar(b"", pa.large_binary())
    message = pc.binary_join_element_wise(*prefixed(queries, head), *prefixed(positives, b""), empty)
    offsets = np.frombuffer(message.buffers()[1], np.int64)[message.offset : message.offset + n + 1].tolist()
    data, blake = memoryview(message.buffers()[2]), hashlib.blake2b
    return pa.array(
        [blake(data[a:b], digest_size=16).hexdigest() for a, b in zip(offsets[:-1], offsets[1:], strict=True)],
        pa.string(),
    )


_HEX = np.full(256, 255, dtype=np.uint8)
_HEX[np.frombuffer(b"0123456789", np.uint8)] = np.arange(10)
_HEX[np.frombuffer(b"abcdef", np.uint8)] = np.arange(10, 16)
_HEX[np.frombuffer(b"ABCDEF", np.uint8)] = np.arange(10, 16)


def shard_indices(ids: pa.Array | pa.ChunkedArray, count: int) -> np.ndarray:
    """`io.shard_of(id, count)` of every id, as an int array: in numpy when every id starts with 15 hex digits
    (the format's ids, `schema.make_id`), else id by id."""
    n = len(ids)
    if count == 1:
        return np.zeros(n, dtype=np.int64)
    offsets, data = string_buffers(ids)
    if n and ids.null_count == 0 and (np.diff(offsets) >= 15).all():
        digits = _HEX[data[offsets[:-1, None] + np.arange(15)]]  # (n, 15)
        if (digits < 16).all():
            value = np.zeros(n, dtype=np.uint64)
            for k in range(15):  # 60 bits: no overflow
                value = (value << np.uint64(4)) | digits[:, k].astype(np.uint64)
            return (value % np.uint64(count)).astype(np.int64)
    return np.fromiter((io.shard_of(i, count) for i in ids.to_pylist()), dtype=np.int64, count=n)


def string_partitions(strings: pa.Array | pa.ChunkedArray, count: int) -> np.ndarray:
    """A stable hash of each string mod `count` (the same on every worker and run), computed in numpy.

    It mixes the byte length with the first and the last 8 bytes (FNV-1a style): enough to spread keys evenly
    over the partitions of a shuffle, where any deterministic function of the key is correct.
    """
    offsets, data = string_buffers(strings)
    n = len(offsets) - 1
    starts, ends = offsets[:-1], offsets[1:]
    lengths = ends - starts
    h = np.full(n, 1469598103934665603, dtype=np.uint64) ^ lengths.astype(np.uint64)
    prime = np.uint64(1099511628211)
    last = max(len(data) - 1, 0)
    for k in range(8):
        for pos in (starts + k, ends - 1 - k):
            byte = np.where(lengths > k, data[np.clip(pos, 0, last)], 0).astype(np.uint64)
            h = (h ^ byte) * prime
    return (h % np.uint64(count)).astype(np.int64)


HASHED_BYTES = 64  # `string_hashes` mixes in this many leading bytes of each string (and its length)


def string_hashes(strings: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A 64-bit hash of each string's length and first HASHED_BYTES bytes (FNV-1a, byte by byte), in numpy.

    For set membership over many calls (`qrel_columns.Judged`): hash the set once, then each batch is a
    `np.searchsorted`; pyarrow's `is_in` builds its hash table of the whole set again on every call."""
    offsets, data = string_buffers(strings)
    n = len(offsets) - 1
    starts, lengths = offsets[:-1], np.diff(offsets)
    h = np.full(n, 1469598103934665603, dtype=np.uint64) ^ lengths.astype(np.uint64)
    prime, last = np.uint64(1099511628211), max(len(data) - 1, 0)
    for k in range(min(int(lengths.max(initial=0)), HASHED_BYTES)):  # the same for any batch the string is in
        more = lengths > k
        h = np.where(more, (h ^ data[np.minimum(starts + k, last)].astype(np.uint64)) * prime, h)
    return h


def to_ipc(table: pa.Table) -> bytes:
    """A table as Arrow IPC stream bytes: how tables cross a Beam shuffle. Beam would pickle a pa.Table, ~5x slower,
    and a pickled slice carries its parent's whole buffers; IPC writes only the slice's rows."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


SPILL_DIR = ".negminer-spill-{split}"  # under a build's output directory: tables that cross a shuffle as files


def spill_dir(out_dir: str, split: str = "train") -> str:
    """Where a build of split `split` into `out_dir` spills the tables it shuffles (`ship`); removed when the build
    ends. One per split: builds of other splits of the same directory may run at once where no lock is taken
    (object stores, see `io.output_lock`)."""
    return io.join(out_dir, SPILL_DIR.format(split=split))


def ship(table: pa.Table, spill: str | None = None) -> bytes | str:
    """How a table crosses a Beam shuffle: its IPC bytes, or with a `spill` directory the path of an IPC file
    written there (a fresh name, so a retried bundle never overwrites what another one shipped).

    The shuffle then carries a path, not the data: Beam's local runner copies every shuffled byte ~10 times through
    its data plane (encode, protobuf, regroup, decode), which cost more CPU than the whole join. It is the pattern
    Beam's own file sinks use (bundles write temporary files, the next step gets their names), on any file system.
    """
    if spill is None:
        return to_ipc(table)
    path = io.join(spill, f"{uuid.uuid4().hex}.arrow")
    if "://" in path:
        with FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            f.write(to_ipc(table))
        return path
    os.makedirs(spill, exist_ok=True)
    with pa.OSFile(path, "wb") as f, pa.ipc.new_stream(f, table.schema) as writer:
        writer.write_table(table)
    return path


def from_ipc(data: bytes | str | pa.Table) -> pa.Table:
    """The table of `to_ipc` bytes or of a file `ship` wrote (zero-copy over them); a table passes through."""
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, str):
        if "://" in data:
            with FileSystems.open(data, compression_type=CompressionTypes.UNCOMPRESSED) as f:
                data = f.read()
        else:
            return pa.ipc.open_stream(pa.memory_map(data)).read_all()
    return pa.ipc.open_stream(data).read_all()


def remove_spill(out_dir: str, split: str = "train") -> None:
    """Delete what `ship` spilled for a build of split `split` into `out_dir` (after it, or left by a killed one)."""
    path = spill_dir(out_dir, split)
    if "://" not in path:
        if os.path.isdir(path):
            for name in os.listdir(path):
                os.unlink(os.path.join(path, name))
            os.rmdir(path)
        return
    files = [m.path for r in FileSystems.match([io.join(path, "*")]) for m in r.metadata_list]
    if files:
        FileSystems.delete(files)


COMBINE_BYTES = 1 << 30  # `take_rows` makes a table one chunk first up to this size (string offsets are int32)


def take_rows(table: pa.Table, indices: pa.Array | np.ndarray) -> pa.Table:
    """`table.take(indices)`, ~10x faster on a table of many chunks: Arrow's take resolves the chunk of every index
    of a chunked column one by one, so the chunks are combined first (one copy) when the table is not too large."""
    if table.num_columns and table.column(0).num_chunks > 1 and table.nbytes < COMBINE_BYTES:
        table = table.combine_chunks()
    return table.take(indices)


def partitioned(table: pa.Table, parts: np.ndarray, spill: str | None = None) -> Iterator[tuple[int, bytes | str]]:
    """(part, the rows of `table` in that part as `ship` sends them) for every part present in `parts` (one per
    row)."""
    if not table.num_rows:
        return
    order = np.argsort(parts, kind="stable")
    ordered, taken = parts[order], take_rows(table, pa.array(order))
    bounds = np.flatnonzero(np.diff(ordered)) + 1
    for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, len(order)], strict=True):
        yield int(ordered[lo]), ship(taken.slice(lo, hi - lo), spill)


class PartitionBuffer:
    """Tables gathered until they hold `limit` bytes, then split by the hash of their `key` column into `n`
    partitions at once (`partitioned`): fewer and larger elements cross the shuffle than one set per block."""

    def __init__(self, key: str, n: int, spill: str | None = None, limit: int = 64 << 20):
        self.key, self.n, self.spill, self.limit = key, n, spill, limit
        self.tables: list[pa.Table] = []
        self.nbytes = 0

    def add(self, table: pa.Table) -> Iterator[tuple[int, bytes | str]]:
        if table.num_rows:
            self.tables.append(table)
            self.nbytes += table.nbytes
        if self.nbytes >= self.limit:
            yield from self.flush()

    def flush(self) -> Iterator[tuple[int, bytes | str]]:
        if self.tables:
            table = pa.concat_tables(self.tables)
            self.tables, self.nbytes = [], 0
            yield from partitioned(table, string_partitions(table[self.key], self.n), self.spill)


def split_by_shard(table: pa.Table, count: int, spill: str | None = None) -> Iterator[tuple[int, bytes | str]]:
    """(shard index, the rows of `table` that go there, as `ship` sends them) for every shard the table touches."""
    yield from partitioned(table, shard_indices(table.column(S.ID), count), spill)


def sort_and_dedup(table: pa.Table) -> tuple[pa.Table, int]:
    """Rows sorted by id; of rows sharing an id, the one with the smallest JSON form survives (as io.sort_and_dedup).

    Returns one-chunk table and how many duplicates were dropped. The JSON tie-break runs only on colliding ids.
    """
    table = take_rows(table, pc.sort_indices(table.column(S.ID)))
    ids = table.column(S.ID).combine_chunks()
    n = len(ids)
    if n < 2:
        return table.combine_chunks(), 0
    same = pc.equal(ids.slice(1), ids.slice(0, n - 1)).to_numpy(zero_copy_only=False)
    if not same.any():
        return table.combine_chunks(), 0
    keep = np.ones(n, dtype=bool)
    starts = np.flatnonzero(same & ~np.r_[False, same[:-1]])  # first of each run of equal ids (index into same)
    for s in starts:
        e = s + 1
        while e < n - 1 and same[e]:
            e += 1
        rows = table.slice(s, e - s + 1).to_pylist()
        keys = [io._dedup_key(r) for r in rows]
        best = min(range(len(rows)), key=lambda i: (keys[i], i))
        keep[s : e + 1] = False
        keep[s + best] = True
    return table.filter(pa.array(keep)).combine_chunks(), int(n - keep.sum())


def row_stats(table: pa.Table) -> dict[str, Any]:
    """`io.row_stats` of a table's rows."""
    lengths = pc.list_value_length(table.column(S.NEGATIVES)).fill_null(0)
    stats: dict[str, Any] = {
        "rows": table.num_rows,
        "negatives": int(pc.sum(lengths).as_py() or 0),
        "rows_without_negatives": int(pc.sum(pc.equal(lengths, 0)).as_py() or 0),
    }
    for col in (S.SOURCE, S.PAIR_TYPE):
        counts = pc.value_counts(table.column(col).combine_chunks()).to_pylist()
        stats[col] = {c["values"]: c["counts"] for c in counts}
    return stats


def write_shard(table: pa.Table, path: str) -> dict[str, Any]:
    """`io.write_shard` for a table of `S.SCHEMA`: sorted, deduplicated, written atomically; its statistics."""
    ordered, dropped = sort_and_dedup(table)
    io.write_bytes_atomic(path, io.table_to_parquet_bytes(ordered))
    stats = row_stats(ordered)
    return {"file": path, "duplicates": dropped, **stats, "file_rows": {posixpath.basename(path): stats["rows"]}}
