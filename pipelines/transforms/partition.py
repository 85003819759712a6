"""Hash-partitioned batches through Beam: keyed values travel as (partition, [(key, value), ...]) batches.

A file is parsed by one DoFn call that emits one element per BATCH keyed values (not one per line), a join is
one CoGroupByKey per partition (PARTITIONS of them) whose DoFn groups its batches by key and runs the per-key
join logic of `join.py` unchanged on each key. The same per-key functions give the same rows, rejects and skips
as the per-element pipeline; Beam moves ~1/BATCH as many elements (issue 15).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import apache_beam as beam

from negminer.pipelines import io
from negminer.pipelines.source import REJECTS, SKIPPED, ReadRecordsFn, Record, _counter, reject
from negminer.pipelines.transforms.tabular import Skip, plain

PARTITIONS = 32  # keys are hash-partitioned into this many groups: the unit of work after a shuffle
BATCH = 4096  # keyed values per (partition, batch) element
SKIPPED_COUNTS = "skipped_counts"  # tag: dicts reason -> count (one per file / partition, not one per item)


def partition_of(key: str, n: int = PARTITIONS) -> int:
    """The partition of a key: a stable hash (the same on every worker and run), mod `n`."""
    return zlib.crc32(str(key).encode("utf-8")) % n


class Batcher:
    """Collects (key, value) into per-partition lists; `add` returns full batches to emit, `flush` the rest."""

    def __init__(self) -> None:
        self.buckets: dict[int, list[tuple]] = {}

    def add(self, key: Any, value: Any) -> Iterator[tuple[int, list[tuple]]]:
        part = partition_of(key)
        batch = self.buckets.setdefault(part, [])
        batch.append((key, value))
        if len(batch) >= BATCH:
            yield part, self.buckets.pop(part)

    def flush(self) -> Iterator[tuple[int, list[tuple]]]:
        yield from self.buckets.items()
        self.buckets = {}


def _count(counts: dict[str, int], reason: str, n: int = 1) -> None:
    counts[reason] = counts.get(reason, 0) + n
    _counter("negminer", f"skipped_{reason}").inc(n)


class ParseKeyedFileFn(beam.DoFn):
    """path -> (partition, keyed batch) per BATCH values; rejects one by one; skips as one counts dict per file.

    `parse(record)` is a `ReadKeyed` parse function (-> (key, value), a list of them, a reason, or a `Skip`);
    `keep(key, value)` (optional) returns None to keep a value or the reason it is skipped.
    """

    def __init__(self, parse: Callable[[Record], Any], keep: Callable[[Any, Any], str | None] | None = None):
        self.parse, self.keep = parse, keep

    def process(self, path: str) -> Iterator[Any]:
        batcher, skipped = Batcher(), {}
        for record in ReadRecordsFn().process(path):
            if not isinstance(record, Record):
                yield record  # a reject of the reader
                continue
            out = self.parse(record)
            if isinstance(out, Skip):
                _count(skipped, out.reason)
                continue
            if isinstance(out, str):
                yield reject(record, out)
                continue
            for key, value in out if isinstance(out, list) else [out]:
                reason = self.keep(key, value) if self.keep else None
                if reason is not None:
                    _count(skipped, reason)
                else:
                    yield from batcher.add(key, plain(value))
        yield from batcher.flush()
        if skipped:
            yield beam.pvalue.TaggedOutput(SKIPPED_COUNTS, skipped)


class ReadKeyedBatches(beam.PTransform):
    """PBegin -> {'keyed': (partition, [(key, value)]) batches, 'rejects', 'skipped_counts'} (see ParseKeyedFileFn)."""

    def __init__(self, patterns: list[str], parse: Callable[[Record], Any], keep=None):
        super().__init__()
        self.files, self.parse, self.keep = io.expand_patterns(patterns), parse, keep

    def expand(self, pbegin):
        read = (
            pbegin
            | "ListFiles" >> beam.Create(self.files)
            | "ReshuffleFiles" >> beam.Reshuffle()
            | "ParseFiles"
            >> beam.ParDo(ParseKeyedFileFn(self.parse, self.keep)).with_outputs(REJECTS, SKIPPED_COUNTS, main="keyed")
        )
        return {"keyed": read.keyed, REJECTS: read[REJECTS], SKIPPED_COUNTS: read[SKIPPED_COUNTS]}


class PartitionJoinFn(beam.DoFn):
    """(partition, {tag: [keyed batches]}) -> `fn.process((key, {tag: values}))` for every key of the partition.

    `fn` is the per-key DoFn of a CoGroupByKey (join.py's, unchanged): its rejects pass on one by one, its skip
    reasons become one counts dict, and each main output goes through `then(output)` -> (key, value) pairs,
    re-batched by partition for the next join (`rekey`), or -> items collected into one list (e.g. rows).
    """

    def __init__(self, fn: beam.DoFn, then: Callable[[Any], Iterable[Any]], rekey: bool):
        self.fn, self.then, self.rekey = fn, then, rekey

    def setup(self) -> None:
        self.fn.setup()

    def process(self, element: tuple[int, dict[str, Iterable[list[tuple]]]]) -> Iterator[Any]:
        batcher, items, skipped = Batcher(), [], {}
        for key, values in by_key(element[1]).items():
            for out in self.fn.process((key, values)) or ():
                if isinstance(out, beam.pvalue.TaggedOutput):
                    if out.tag == SKIPPED:
                        skipped[out.value] = skipped.get(out.value, 0) + 1  # already counted by `skip`
                    else:
                        yield out
                    continue
                for got in self.then(out):
                    if self.rekey:
                        yield from batcher.add(got[0], got[1])
                    else:
                        items.append(got)
                        if len(items) >= BATCH:
                            yield items
                            items = []
        yield from batcher.flush()
        if items:
            yield items
        if skipped:
            yield beam.pvalue.TaggedOutput(SKIPPED_COUNTS, skipped)


def by_key(groups: dict[str, Iterable[list[tuple]]]) -> dict[Any, dict[str, list]]:
    """{tag: batches of (key, value)} -> {key: {tag: [values]}}, every tag present for every key (as CoGroupByKey)."""
    tags = list(groups)
    out: dict[Any, dict[str, list]] = {}
    for tag in tags:
        for batch in groups[tag]:
            for key, value in batch:
                out.setdefault(key, {t: [] for t in tags})[tag].append(value)
    return out


def partition_join(label: str, inputs: dict[str, Any], fn: beam.DoFn, then, rekey: bool):
    """CoGroupByKey of keyed batch PCollections by partition, then `PartitionJoinFn`: {'main', rejects, counts}."""
    return (
        inputs
        | f"{label}Group" >> beam.CoGroupByKey()
        | f"{label}Join"
        >> beam.ParDo(PartitionJoinFn(fn, then, rekey)).with_outputs(REJECTS, SKIPPED_COUNTS, main="main")
    )
