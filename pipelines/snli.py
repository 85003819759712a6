"""SNLI / MultiNLI -> NLI tuples: (premise, entailed hypothesis, contradicting hypotheses).

Usage: negminer build snli --input snli_1.0_train.jsonl --output out/snli [--source snli|mnli]
"""

from __future__ import annotations

import argparse
import dataclasses
import zlib
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from negminer.pipelines import io, lines, runner
from negminer.pipelines import nli_columns as C
from negminer.pipelines import schema as S
from negminer.pipelines.converter import Converter
from negminer.pipelines.source import (
    REJECTS,
    SKIPPED,
    UNREADABLE_FILE_ERRORS,
    ReadRecordsFn,
    Record,
    _counter,
    is_parquet,
    line_record,
    parse_json_line,
    reject,
)
from negminer.pipelines.tables import PartitionBuffer, from_ipc, spill_dir
from negminer.pipelines.transforms.clean import clean_text

ENTAILMENT, NEUTRAL, CONTRADICTION = "entailment", "neutral", "contradiction"
HF_LABELS = {0: ENTAILMENT, 1: NEUTRAL, 2: CONTRADICTION}  # Hugging Face `snli` / `multi_nli`; -1 = no gold label
SOURCES = ("snli", "mnli")


class NliExample(NamedTuple):
    premise: str
    hypothesis: str
    label: str
    pair_id: str | None
    premise_id: str | None
    genre: str | None
    path: str
    line: int


@dataclasses.dataclass(frozen=True)
class SnliConfig:
    inputs: tuple[str, ...]
    output: str
    source: str = "snli"
    drop_without_negatives: bool = False
    num_shards: int | None = None  # None: from the input size (runner.auto_num_shards)
    split: str = "train"

    def __post_init__(self) -> None:
        if not self.inputs:
            raise ValueError("at least one --input is required")
        if self.source not in SOURCES:
            raise ValueError(f"--source must be one of {SOURCES}, got {self.source!r}")
        runner.check_num_shards(self.num_shards)


def parse_nli(obj: dict[str, Any], path: str = "", line: int = 0) -> NliExample | str:
    """One SNLI/MNLI record (official or Hugging Face layout) to an example, or the reason it is unusable."""
    if "sentence1" in obj or "gold_label" in obj:
        fields = ("sentence1", "sentence2", "gold_label")
        premise, hypothesis, label = (obj.get(f) for f in fields)
    else:
        fields = ("premise", "hypothesis", "label")
        premise, hypothesis, label = (obj.get(f) for f in fields)
        if isinstance(label, bool) or not isinstance(label, (int, type(None))):
            return "unknown_label"
        label = "-" if label == -1 else HF_LABELS.get(label, label)
    for name, value in zip(fields, (premise, hypothesis, label), strict=True):
        if value is None:
            return f"missing_field:{name}"
        if not isinstance(value, str):
            return f"not_a_string:{name}" if name != fields[2] else "unknown_label"
        if not value.strip():
            return f"empty_field:{name}"
    if label == "-":
        return "no_gold_label"
    if label not in (ENTAILMENT, NEUTRAL, CONTRADICTION):
        return "unknown_label"
    premise, hypothesis = clean_text(premise), clean_text(hypothesis)
    if not premise or not hypothesis:
        return "empty_after_cleaning"
    premise_id = obj.get("captionID") or obj.get("promptID")
    pair_id = obj.get("pairID")
    return NliExample(
        premise,
        hypothesis,
        label,
        None if pair_id is None else str(pair_id),
        None if premise_id is None else str(premise_id),
        obj.get("genre"),
        path,
        line,
    )


def rows_for_premise(
    examples: Iterable[NliExample], source: str, drop_without_negatives: bool = False
) -> tuple[list[dict], dict[str, int]]:
    """All rows of one premise: one per distinct entailment, every distinct contradiction as a negative.

    Returns the rows and counts of what was not used, by reason. The order of `examples` does not matter.
    """
    examples = sorted(examples, key=lambda e: (e.hypothesis, e.pair_id or "", e.path, e.line))
    unused: dict[str, int] = {}

    def count(reason: str, n: int = 1) -> None:
        if n:
            unused[reason] = unused.get(reason, 0) + n

    entailed: dict[str, NliExample] = {}
    contradicted: dict[str, NliExample] = {}
    for ex in examples:
        if ex.label == NEUTRAL:
            count("neutral_hypothesis")
            continue
        bucket = entailed if ex.label == ENTAILMENT else contradicted
        if ex.hypothesis in bucket:
            count(f"duplicate_{ex.label}")
        else:
            bucket.setdefault(ex.hypothesis, ex)
    # A hypothesis labelled both ways would be its own row's negative: use it as neither.
    for hyp in sorted(entailed.keys() & contradicted.keys()):
        del entailed[hyp], contradicted[hyp]
        count("conflicting_labels", 2)
    if not entailed:
        count("contradiction_without_entailment", len(contradicted))
        return [], unused
    if not contradicted and drop_without_negatives:
        count("no_negatives", len(entailed))
        return [], unused
    negatives = list(contradicted.values())
    rows = []
    for ex in entailed.values():
        row = S.TupleRow(
            source=source,
            pair_type="nli",
            query=ex.premise,
            query_id=ex.premise_id,
            positive=ex.hypothesis,
            positive_id=ex.pair_id,
            negatives=tuple(n.hypothesis for n in negatives),
            negative_ids=tuple(n.pair_id for n in negatives),
            provenance=S.provenance_json(file=ex.path, line=ex.line, genre=ex.genre),
        )
        rows.append(row.to_dict())
    return rows, unused


PARTITIONS = 32  # premises are hash-partitioned into this many groups: the unit of work after the shuffle


def partition_of(premise: str, n: int = PARTITIONS) -> int:
    """The partition of a premise: a stable hash (the same on every worker and run), mod `n`."""
    return zlib.crc32(premise.encode("utf-8")) % n


def example_or_reject(item: Any) -> NliExample | beam.pvalue.TaggedOutput:
    """The per-record path: a reader's item (a Record or its reject) -> an example or a reject."""
    if not isinstance(item, Record):
        return item
    obj = parse_json_line(item)
    ex = obj if isinstance(obj, str) else parse_nli(obj, item.path, item.line)
    return reject(item, ex) if isinstance(ex, str) else ex


class ParseNliFileFn(beam.DoFn):
    """path -> (partition, Arrow IPC bytes of examples) per block of lines; unusable records to `rejects`.

    JSON-lines files are read in blocks: pyarrow's JSON reader and `nli_columns.json_examples` take the regular
    lines, the per-line path (`example_or_reject`) the rest; Parquet files go row by row. Tables are shipped with
    `tables.ship` (`spill`: a directory, or None for IPC bytes)."""

    def __init__(self, spill: str | None = None):
        self.spill = spill

    def process(self, path: str) -> Iterator[Any]:
        if is_parquet(path):
            yield from _parse_parquet(path, self.spill)
            return
        state: dict = {"schema": None}
        out = PartitionBuffer("premise", PARTITIONS, self.spill)
        for block in lines.read_blocks(path):
            if isinstance(block, lines.LineBlock):
                for item in _parse_block(block, state):
                    yield from out.add(item) if isinstance(item, pa.Table) else [item]
            else:
                yield block  # the reject of a file that cannot be read on
        yield from out.flush()


def _parse_parquet(path: str, spill: str | None = None) -> Iterator[Any]:
    """A Parquet file: its columns decided by `nli_columns` where plain, the other rows by `parse_nli`; a file that
    cannot be read whole, or with odd column types, goes row by row (`ReadRecordsFn`, its rejects)."""
    try:
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            table = pq.ParquetFile(f).read()
    except UNREADABLE_FILE_ERRORS:
        table = None
    view = C.parquet_view(table) if table is not None else None
    examples: list[tuple] = []
    if view is None:
        yield from _examples_or_rejects(ReadRecordsFn().process(path), examples)
        yield from C.by_partition(C.examples_table(examples), PARTITIONS, spill)
        return
    got, irregular = C.json_examples(view, None, path, np.arange(1, table.num_rows + 1))
    rows = np.flatnonzero(irregular)
    records = (
        Record(path, int(i) + 1, obj) for i, obj in zip(rows, table.take(pa.array(rows)).to_pylist(), strict=True)
    )
    yield from _examples_or_rejects(records, examples)
    yield from C.by_partition(pa.concat_tables([got, C.examples_table(examples)]), PARTITIONS, spill)


def _examples_or_rejects(items: Iterable[Any], examples: list[tuple]) -> Iterator[Any]:
    """`example_or_reject` of each record: examples appended to `examples` (as tuples), rejects yielded."""
    for item in items:
        got = example_or_reject(item)
        if isinstance(got, NliExample):
            examples.append(tuple(got))
        else:
            yield got


def _parse_block(block: lines.LineBlock, state: dict) -> Iterator[Any]:
    """One block of a JSON-lines file -> rejects, then its examples (one table)."""
    kinds = lines.regular_lines(block)
    if state["schema"] is None and (first := lines.first_object(block, kinds)) is not None:
        state["schema"] = C.json_schema(first)
    slow: list[int] = []
    tables = []
    if state["schema"] is None:
        slow = [int(i) for i in np.flatnonzero(kinds != 0)]
    else:
        raw = lines.line_strings(block) if not C.is_official(dict.fromkeys(state["schema"].names)) else None
        for table, numbers in lines.json_runs(block, state["schema"], kinds, slow.append):
            texts = raw.take(pa.array(numbers - block.first)) if raw is not None else None
            got, irregular = C.json_examples(table, texts, block.path, numbers)
            tables.append(got)
            slow.extend(int(i) for i in numbers[irregular] - block.first)
    examples = []
    for i in sorted(slow):
        item = line_record(block.path, block.first + i, block.raw(i))
        got = example_or_reject(item) if item is not None else None
        if isinstance(got, NliExample):
            examples.append(tuple(got))
        elif got is not None:
            yield got
    tables.append(C.examples_table(examples))
    yield pa.concat_tables(tables)


class PartitionRowsFn(beam.DoFn):
    """(partition, example tables as IPC bytes) -> one Arrow table of tuple rows (main), one dict of unused counts
    (`skipped`)."""

    def __init__(self, source: str, drop_without_negatives: bool):
        self.source, self.drop = source, drop_without_negatives

    def process(self, element: tuple[int, Iterable[pa.Table]]) -> Iterator[Any]:
        examples = pa.concat_tables([from_ipc(t) for t in element[1]])
        rows, unused = C.rows_table(examples, self.source, self.drop)
        for reason, n in unused.items():
            _counter("negminer", f"skipped_{reason}").inc(n)
        if rows.num_rows:
            yield rows
        if unused:
            yield beam.pvalue.TaggedOutput(SKIPPED, unused)


class BuildNliTuples(beam.PTransform):
    """PBegin -> {'rows': row dicts, 'rejects': reject dicts, 'skipped': reason strings} from NLI files."""

    def __init__(
        self, inputs: list[str], source: str = "snli", drop_without_negatives: bool = False, spill: str | None = None
    ):
        super().__init__()
        self.inputs, self.source, self.drop = inputs, source, drop_without_negatives
        self.spill = spill  # where tables cross the shuffle as files (`tables.ship`)

    def expand(self, pbegin):
        parsed = (
            pbegin
            | "ListFiles" >> beam.Create(io.expand_patterns(self.inputs))
            | "ReshuffleFiles" >> beam.Reshuffle()
            | "ParseFiles" >> beam.ParDo(ParseNliFileFn(self.spill)).with_outputs(REJECTS, main="examples")
        )
        built = (
            parsed.examples
            | "GroupByPartition" >> beam.GroupByKey()
            | "Rows" >> beam.ParDo(PartitionRowsFn(self.source, self.drop)).with_outputs(SKIPPED, main="rows")
        )
        return {"row_tables": built.rows, "rejects": parsed[REJECTS], "skipped_counts": built[SKIPPED]}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--input", nargs="+", required=True, action="extend", help="files or globs (.jsonl[.gz], .parquet)"
    )
    parser.add_argument("--output", required=True, help="output shard directory (local or gs://)")
    parser.add_argument("--source", default="snli", choices=SOURCES, help="value of the `source` column")
    parser.add_argument(
        "--drop-without-negatives", action="store_true", help="drop rows whose premise has no contradiction"
    )
    runner.add_num_shards_argument(parser)
    parser.add_argument("--split", default="train", help="split name in the shard file names (default train)")


def config_from_args(args: argparse.Namespace) -> SnliConfig:
    return SnliConfig(
        inputs=tuple(args.input),
        output=args.output,
        source=args.source,
        drop_without_negatives=args.drop_without_negatives,
        num_shards=args.num_shards,
        split=args.split,
    )


CONVERTER = Converter(
    "snli",
    lambda c: c.inputs,
    lambda c, files: BuildNliTuples(files, c.source, c.drop_without_negatives, spill_dir(c.output, c.split)),
    config_from_args,
)
build = CONVERTER.build  # build(config, beam_args=()) -> manifest


def main(args: argparse.Namespace, beam_args: list[str]) -> int:
    """The `negminer build snli` command (the module's `build`, looked up per call)."""
    return CONVERTER.main(args, beam_args, build)
