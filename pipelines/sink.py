"""Writing a shard directory from Beam: deterministic shards, rejects/ and manifest.json."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
import pyarrow as pa

from negminer.pipelines import io, tables
from negminer.pipelines import schema as S


def _merge_all(dicts: Iterable[dict]) -> dict:
    return functools.reduce(io.merge_counts, dicts, {})


class WriteShardFn(beam.DoFn):
    """(shard index, rows) -> the shard file written atomically; yields its statistics."""

    def __init__(self, out_dir: str, split: str, num_shards: int):
        self.out_dir, self.split, self.num_shards = out_dir, split, num_shards

    def process(self, element: tuple[int, Iterable[dict | list[dict] | pa.Table | None]]):
        index, items = element[0], list(element[1])
        path = io.join(self.out_dir, io.shard_name(self.split, index, self.num_shards))
        parts = [tables.from_ipc(t) for t in items if isinstance(t, (bytes, str, pa.Table))]
        if parts:  # Arrow tables (with any row dicts converted): sorted and deduplicated in Arrow, same bytes
            rows = list(_rows_of(items))
            stats = tables.write_shard(pa.concat_tables(parts + ([S.rows_to_table(rows)] if rows else [])), path)
        else:
            stats = io.write_shard(_rows_of(items), path)
        stats["files"] = [stats.pop("file")]
        yield stats


def _rows_of(items: Iterable[dict | list[dict] | pa.Table | None]) -> Iterator[dict]:
    """The row dicts of a shard's grouped items: single rows, batches of rows (lists); not tables (or their IPC
    bytes or spilled paths) or `None`."""
    for item in items:
        if isinstance(item, list):
            yield from item
        elif isinstance(item, dict):
            yield item


def _batch_by_shard(rows: list[dict], n: int) -> Iterator[tuple[int, list[dict]]]:
    """A batch of rows -> one (shard index, rows) batch per shard it touches (the same index as one row's)."""
    out: dict[int, list[dict]] = {}
    for r in rows:
        out.setdefault(io.shard_of(r[S.ID], n), []).append(r)
    yield from out.items()


def _write_rejects(element: tuple[int, Iterable[dict | None]], out_dir: str, split: str) -> dict[str, int]:
    return io.write_rejects((r for r in element[1] if r is not None), out_dir, split)


def build_record(base: dict[str, Any], stats: dict, rejects: dict, skipped: dict) -> dict[str, Any]:
    """What built a split (pure): the base (command, config, inputs), its rejects, skips and keep-rates."""
    record = {**base, "rejects": dict(rejects), "skipped": dict(skipped)}
    if any(k.startswith(("filter:", "dedup:")) for k in skipped):
        from negminer.pipelines.transforms.quality import keep_rates  # only pipelines with quality filters need it

        record["keep_rates"] = keep_rates({"counts": {S.PAIR_TYPE: stats.get(S.PAIR_TYPE, {})}, "skipped": skipped})
    return record


def _write_manifest(_, out_dir: str, base: dict, split: str, stats: dict, rejects: dict, skipped: dict) -> str:
    io.commit_split(out_dir, split, stats, build_record(base, stats, rejects, skipped))
    return io.join(out_dir, S.MANIFEST_NAME)


class WriteShardDir(beam.PTransform):
    """{'rows': PCollection[row dict], 'rejects': PCollection[reject dict], 'skipped': PCollection[str]} -> DIR.

    Batched builders may give instead (or as well) `row_batches` (PCollection[list[row dict]]), `row_tables`
    (PCollection[pa.Table of `S.SCHEMA`]) and `skipped_counts` (PCollection[dict reason -> count]): the same shards
    and counts with far fewer Beam elements (tables are sorted and deduplicated in Arrow, see tables.py).

    Rows go to `num_shards` files by hash of their id (every index is written, empty or not), sorted by id
    and deduplicated by id inside each file, so the same input gives byte-identical shards on every run and
    runner. Rejects go to `rejects/`, and `manifest.json` is written last with the counts of all three.
    With `spill` (a directory), row tables reach the shard writers as files there (`tables.ship`), not as bytes.
    """

    def __init__(  # noqa: PLR0913
        self,
        out_dir: str,
        manifest_base: dict[str, Any],
        split: str = "train",
        num_shards: int = 1,
        spill: str | None = None,
    ):
        super().__init__()
        if num_shards < 1:
            raise ValueError(f"num_shards must be >= 1, got {num_shards}")
        self.out_dir, self.base, self.split, self.num_shards = out_dir, manifest_base, split, num_shards
        self.spill = spill

    def expand(self, pcolls):
        p = next(iter(pcolls.values())).pipeline
        n = self.num_shards
        every_shard = p | "EveryShard" >> beam.Create([(i, None) for i in range(n)])
        parts = [every_shard]
        if "rows" in pcolls:
            parts.append(pcolls["rows"] | "KeyByShard" >> beam.Map(lambda r, n=n: (io.shard_of(r[S.ID], n), r)))
        if "row_batches" in pcolls:
            parts.append(pcolls["row_batches"] | "BatchByShard" >> beam.FlatMap(_batch_by_shard, n=n))
        if "row_tables" in pcolls:
            parts.append(
                pcolls["row_tables"] | "TableByShard" >> beam.FlatMap(tables.split_by_shard, count=n, spill=self.spill)
            )
        stats = (
            tuple(parts)
            | "FlattenShards" >> beam.Flatten()
            | "GroupShards" >> beam.GroupByKey()
            | "WriteShards" >> beam.ParDo(WriteShardFn(self.out_dir, self.split, n))
            | "MergeStats" >> beam.CombineGlobally(_merge_all).without_defaults()  # every shard gives stats
        )
        rejects = (
            (
                pcolls.get("rejects", p | "NoRejects" >> beam.Create([])) | "KeyRejects" >> beam.Map(lambda r: (0, r)),
                p | "OneRejectFile" >> beam.Create([(0, None)]),
            )
            | "FlattenRejects" >> beam.Flatten()
            | "GroupRejects" >> beam.GroupByKey()
            | "WriteRejects" >> beam.Map(_write_rejects, out_dir=self.out_dir, split=self.split)
        )
        if "skipped_counts" in pcolls and "skipped" not in pcolls:  # batched builders: counts only, one combine
            skipped = (
                pcolls["skipped_counts"] | "MergeSkipCounts" >> beam.CombineGlobally(_merge_all).without_defaults()
            )
        else:
            skipped = (
                pcolls.get("skipped", p | "NoSkipped" >> beam.Create([]))
                | "CountSkipped" >> beam.combiners.Count.PerElement()
                | "SkippedDict" >> beam.combiners.ToDict()
            )
        if "skipped_counts" in pcolls and "skipped" in pcolls:
            skipped = (
                (skipped, pcolls["skipped_counts"])
                | "FlattenSkipCounts" >> beam.Flatten()
                | "MergeSkipCounts" >> beam.CombineGlobally(_merge_all)
            )
        return (
            p
            | "ManifestTrigger" >> beam.Create([None])
            | "WriteManifest"
            >> beam.Map(
                _write_manifest,
                out_dir=self.out_dir,
                base=self.base,
                split=self.split,
                stats=beam.pvalue.AsSingleton(stats),
                rejects=beam.pvalue.AsSingleton(rejects),
                skipped=beam.pvalue.AsSingleton(skipped, default_value={}),
            )
        )
