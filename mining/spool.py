"""Writing a split's shards without holding its rows: rows spill to id-range buckets, then go out in id order.

A row's shard is `io.shard_of(id)` as for every writer; inside a shard it lands in one of `buckets` id ranges
(the id's first 8 hex digits), so sorting each bucket alone sorts the shard, and rows sharing an id meet in one
bucket (deduplicated as `io.sort_and_dedup` does). At most `SPILL_ROWS` rows wait in memory, one bucket is sorted
at a time, and a shard's Parquet row group is built from Arrow columns: shards of up to `ROW_GROUP_ROWS` rows get
the bytes `io.write_shard` writes (one row group), larger ones several row groups of that size.
"""

from __future__ import annotations

import math
import os
import posixpath
from collections import defaultdict
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from negminer.pipelines import io
from negminer.pipelines import schema as S

SPILL_ROWS = 4096  # rows buffered before they are appended to their buckets' spill files
BUCKET_ROWS = 8192  # target rows per bucket: the most rows sorted in memory at once
ROW_GROUP_ROWS = 1 << 16  # rows per Parquet row group of a streamed shard
MAX_OPEN = 256  # spill files open at once per split (buckets grow beyond BUCKET_ROWS instead)


def bucket_of(row_id: str, buckets: int) -> int:
    """Id-range bucket: monotone in the id, so buckets in order hold ids in order."""
    return (int(row_id[:8], 16) * buckets) >> 32


class ShardSpool:
    """Collects one split's rows (any order) and writes its `num_shards` shard files, sorted and deduplicated."""

    def __init__(self, spill_dir: str, out_dir: str, split: str, num_shards: int, expected_rows: int):
        self.spill_dir, self.out_dir, self.split, self.num_shards = spill_dir, out_dir, split, num_shards
        want = math.ceil(max(expected_rows, 1) / (num_shards * BUCKET_ROWS))
        self.buckets = max(1, min(want, MAX_OPEN // num_shards))
        self.max_held = 0  # most row dicts held at once (the streaming test reads it)
        self._buf: list[dict] = []
        self._writers: dict[tuple[int, int], Any] = {}
        os.makedirs(spill_dir, exist_ok=True)

    def add(self, row: dict) -> None:
        self._buf.append(row)
        self.max_held = max(self.max_held, len(self._buf))
        if len(self._buf) >= SPILL_ROWS:
            self._flush()

    def _path(self, shard: int, bucket: int) -> str:
        return os.path.join(self.spill_dir, f"{self.split}-{shard}-{bucket}.arrows")

    def _flush(self) -> None:
        parts: dict[tuple[int, int], list[dict]] = defaultdict(list)
        for r in self._buf:
            parts[io.shard_of(r[S.ID], self.num_shards), bucket_of(r[S.ID], self.buckets)].append(r)
        self._buf = []
        for key, rows in sorted(parts.items()):
            if key not in self._writers:
                self._writers[key] = pa.ipc.new_stream(self._path(*key), S.SCHEMA)
            self._writers[key].write_table(S.rows_to_table(rows))

    def finish(self) -> dict[str, Any]:
        """Write every shard (empty ones too); returns the merged statistics, as `io.write_shards` does."""
        self._flush()
        for w in self._writers.values():
            w.close()
        stats: dict[str, Any] = {}
        for shard in range(self.num_shards):
            path = io.join(self.out_dir, io.shard_name(self.split, shard, self.num_shards))
            st = self._write_shard(shard, path)
            st["files"], st["file_rows"] = [path], {posixpath.basename(path): st["rows"]}
            stats = io.merge_counts(stats, st)
        return stats

    def _write_shard(self, shard: int, path: str) -> dict[str, Any]:
        stats: dict[str, Any] = {"duplicates": 0, **io.row_stats([])}
        pending: list[pa.Table] = []
        with _AtomicParquet(path) as writer:
            for bucket in range(self.buckets):
                spill = self._path(shard, bucket)
                if not os.path.exists(spill):
                    continue
                with pa.ipc.open_stream(spill) as reader:
                    rows = reader.read_all().to_pylist()
                os.remove(spill)
                self.max_held = max(self.max_held, len(rows))
                ordered, dropped = io.sort_and_dedup(rows)
                stats = io.merge_counts(stats, {"duplicates": dropped, **io.row_stats(ordered)})
                pending.append(S.rows_to_table(ordered))
                del rows, ordered
                if sum(t.num_rows for t in pending) >= ROW_GROUP_ROWS:
                    pending = writer.write(pending)
            writer.write(pending, final=True)
        return stats


class _AtomicParquet:
    """A Parquet writer through `io.atomic_create`: a temp name beside `path`, renamed over it on a clean exit."""

    def __init__(self, path: str):
        self.path = path

    def __enter__(self) -> _AtomicParquet:
        self._file = io.atomic_create(self.path)
        self._fh = self._file.__enter__()
        self._pq = pq.ParquetWriter(self._fh, S.SCHEMA, compression=io.PARQUET_COMPRESSION, write_statistics=True)
        return self

    def write(self, tables: list[pa.Table], final: bool = False) -> list[pa.Table]:
        """Write whole row groups of `tables` (all that is left when `final`); returns the unwritten rest."""
        table = pa.concat_tables(tables) if tables else S.SCHEMA.empty_table()
        whole = table.num_rows if final else table.num_rows - table.num_rows % ROW_GROUP_ROWS
        if whole or (final and not self._written):
            self._pq.write_table(table.slice(0, whole), row_group_size=ROW_GROUP_ROWS)
            self._written = True
        return [table.slice(whole)] if whole < table.num_rows else []

    _written = False

    def __exit__(self, exc_type, exc, tb) -> bool | None:
        self._pq.close()
        return self._file.__exit__(exc_type, exc, tb)
