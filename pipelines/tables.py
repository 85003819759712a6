"""Tuple rows as Arrow tables: split by shard, sort and dedup by id, statistics (the columnar twin of io's row path).

Every function gives what `io.shard_of`, `io.sort_and_dedup` and `io.row_stats` give for the same rows as dicts, so
a shard written from a table has the same bytes as one written from row dicts (tests/pipelines/test_tables.py).
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from negminer.pipelines import io
from negminer.pipelines import schema as S


def shard_indices(ids: pa.Array | pa.ChunkedArray, count: int) -> np.ndarray:
    """`io.shard_of(id, count)` of every id, as an int array."""
    if count == 1:
        return np.zeros(len(ids), dtype=np.int64)
    return np.fromiter((io.shard_of(i, count) for i in ids.to_pylist()), dtype=np.int64, count=len(ids))


def string_partitions(strings: pa.Array | pa.ChunkedArray, count: int) -> np.ndarray:
    """A stable hash of each string mod `count` (the same on every worker and run), computed in numpy.

    It mixes the byte length with the first and the last 8 bytes (FNV-1a style): enough to spread keys evenly
    over the partitions of a shuffle, where any deterministic function of the key is correct.
    """
    arr = strings.combine_chunks() if isinstance(strings, pa.ChunkedArray) else strings
    arr = arr.cast(pa.large_string()) if pa.types.is_string(arr.type) else arr
    n = len(arr)
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset : arr.offset + n + 1]
    data = arr.buffers()[2]
    data = np.frombuffer(data, dtype=np.uint8) if data is not None and data.size else np.zeros(1, np.uint8)
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


def to_ipc(table: pa.Table) -> bytes:
    """A table as Arrow IPC stream bytes: how tables cross a Beam shuffle. Beam would pickle a pa.Table, ~5x slower,
    and a pickled slice carries its parent's whole buffers; IPC writes only the slice's rows."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def from_ipc(data: bytes | pa.Table) -> pa.Table:
    """The table of `to_ipc` bytes (zero-copy over them); a table passes through."""
    return data if isinstance(data, pa.Table) else pa.ipc.open_stream(data).read_all()


def partitioned(table: pa.Table, parts: np.ndarray) -> Iterator[tuple[int, bytes]]:
    """(part, IPC bytes of the rows of `table` in that part) for every part present in `parts` (one per row)."""
    if not table.num_rows:
        return
    order = np.argsort(parts, kind="stable")
    ordered, taken = parts[order], table.take(pa.array(order))
    bounds = np.flatnonzero(np.diff(ordered)) + 1
    for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, len(order)], strict=True):
        yield int(ordered[lo]), to_ipc(taken.slice(lo, hi - lo))


def split_by_shard(table: pa.Table, count: int) -> Iterator[tuple[int, bytes]]:
    """(shard index, IPC bytes of the rows of `table` that go there) for every shard the table touches."""
    yield from partitioned(table, shard_indices(table.column(S.ID), count))


def sort_and_dedup(table: pa.Table) -> tuple[pa.Table, int]:
    """Rows sorted by id; of rows sharing an id, the one with the smallest JSON form survives (as io.sort_and_dedup).

    Returns one-chunk table and how many duplicates were dropped. The JSON tie-break runs only on colliding ids.
    """
    table = table.take(pc.sort_indices(table.column(S.ID)))
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
