"""Reading raw input in Beam: files by pattern, as located records (path, line, value), bad bytes rejected."""

from __future__ import annotations

import bz2
import functools
import gzip
import json
import posixpath
import re
import zlib
from collections.abc import Iterator
from typing import Any, NamedTuple

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from negminer.pipelines import io

REJECTS = "rejects"  # tag of the rejects output of every DoFn that can reject
SKIPPED = "skipped"  # tag of counted-but-unused input (e.g. neutral NLI hypotheses); elements are reason strings

PARQUET_SUFFIXES = (".parquet", ".pq")


class Record(NamedTuple):
    """One input unit: a text line (str) or a Parquet row (dict), with where it came from (1-based line/row)."""

    path: str
    line: int
    value: Any


def is_parquet(path: str) -> bool:
    return posixpath.basename(path).lower().endswith(PARQUET_SUFFIXES)


@functools.lru_cache(maxsize=4096)
def _counter(namespace: str, name: str):
    """One counter object per name: building one per record cost ~4x its inc() (it delegates to the current
    metrics container at each inc(), so sharing it is safe)."""
    return Metrics.counter(namespace, name)


def reject(record: Record, reason: str, counter_ns: str = "negminer") -> beam.pvalue.TaggedOutput:
    """Route a record to the rejects output with its reason, and count it."""
    _counter(counter_ns, f"rejected_{reason}").inc()
    return beam.pvalue.TaggedOutput(REJECTS, io.make_reject(record.path, reason, record.value, line=record.line))


def skip(reason: str, counter_ns: str = "negminer") -> beam.pvalue.TaggedOutput:
    """Count input that is valid but not used (it is not a reject); it appears in the manifest under `skipped`."""
    _counter(counter_ns, f"skipped_{reason}").inc()
    return beam.pvalue.TaggedOutput(SKIPPED, reason)


class TruncatedFileError(EOFError):
    """A compressed file that ends before its end-of-stream marker: it was cut short (an interrupted download)."""


BOM = b"\xef\xbb\xbf"  # the UTF-8 byte order mark


def read_text_lines(path: str) -> Iterator[tuple[int, bytes]]:
    """(line number, raw bytes without newline) of a plain or compressed (.gz/.bz2 by extension) file.

    Compressed files are read with Python's gzip / bz2 over the raw stream, which notice a file cut short (Beam's
    decompressor stops there without a word): the lines before the cut come out, then `TruncatedFileError`.
    A UTF-8 byte order mark at the start of the file (Windows editors and exports write one) is not part of line 1.
    """
    opener = {".gz": gzip.GzipFile, ".bz2": bz2.BZ2File}.get(posixpath.splitext(path.lower())[1])
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as raw_file:
        f = opener(fileobj=raw_file) if opener is gzip.GzipFile else opener(raw_file) if opener else raw_file
        n = 0
        try:
            while raw := f.readline():
                n += 1
                if n == 1 and raw.startswith(BOM):
                    raw = raw[len(BOM) :]
                yield n, raw.rstrip(b"\r\n")
        except EOFError as e:
            raise TruncatedFileError(f"cut short after line {n}: {e}") from None


# A file that cannot be read on (not gzip despite its name, corrupt Parquet, ...): one reject, the rest goes on.
UNREADABLE_FILE_ERRORS = (OSError, EOFError, zlib.error, pa.ArrowException)
TRUNCATED_FILE = "truncated_file"  # the reject reason of a compressed file cut short


def parquet_records(path: str) -> Iterator[Record]:
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        n = 0
        for batch in pq.ParquetFile(f).iter_batches(batch_size=4096):
            for row in batch.to_pylist():
                n += 1
                yield Record(path, n, row)


def line_record(path: str, n: int, raw: bytes) -> Record | beam.pvalue.TaggedOutput | None:
    """Line `n` of a text file: its Record (decoded UTF-8), a reject when undecodable, None when blank."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return reject(Record(path, n, raw.decode("utf-8", "replace")), f"undecodable_bytes:{e.reason}")
    return Record(path, n, text) if text.strip() else None


def text_records(path: str) -> Iterator[Any]:
    """Record per non-blank line (decoded UTF-8); undecodable lines as rejects. Blank lines are not records."""
    for n, raw in read_text_lines(path):
        item = line_record(path, n, raw)
        if item is not None:
            yield item


class ReadRecordsFn(beam.DoFn):
    """path -> Record per line (decoded UTF-8) or per Parquet row; undecodable lines and unreadable files to rejects."""

    def process(self, path: str) -> Iterator[Any]:
        line = 0
        try:
            for item in parquet_records(path) if is_parquet(path) else text_records(path):
                line = item.line if isinstance(item, Record) else line + 1
                yield item
        except TruncatedFileError as e:
            yield reject(Record(path, line + 1, str(e)), TRUNCATED_FILE)
        except UNREADABLE_FILE_ERRORS as e:
            yield reject(Record(path, line + 1, f"{type(e).__name__}: {e}"), "unreadable_file")


class ReadRecords(beam.PTransform):
    """PBegin -> PCollection[Record] (main) and reject dicts (tag `rejects`), from files matching `patterns`.

    Files are listed when the pipeline is built (an empty match fails at once) and spread over the workers;
    each file is read by one worker, and its records go straight on to the caller's parse step (fused, no
    per-record reshuffle: that held every raw line in memory and took more time than the whole parse). Work
    spreads again at the caller's GroupByKey; to parallelise one huge file, split it into several.
    """

    def __init__(self, patterns: list[str]):
        super().__init__()
        self.files = io.expand_patterns(patterns)

    def expand(self, pbegin):
        read = (
            pbegin
            | "ListFiles" >> beam.Create(self.files)
            | "ReshuffleFiles" >> beam.Reshuffle()
            | "ReadFiles" >> beam.ParDo(ReadRecordsFn()).with_outputs(REJECTS, main="records")
        )
        return {"records": read.records, REJECTS: read[REJECTS]}


def parse_json_line(record: Record) -> dict | str:
    """A JSON-lines record to a dict (Parquet rows pass through); a reason string when it cannot be one."""
    if isinstance(record.value, dict):
        return record.value
    try:
        obj = json.loads(record.value)
    except json.JSONDecodeError:
        return "malformed_json"
    if not isinstance(obj, dict):
        return "json_not_an_object"
    if _SURROGATE_ESCAPE.search(record.value):
        obj = without_lone_surrogates(obj)
    return obj


# A JSON `\\uD800`-`\\uDFFF` escape: JSON allows one alone (not a character), UTF-8 cannot hold it.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF]")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def without_lone_surrogates(value: Any) -> Any:
    """`value` (parsed JSON) with every lone surrogate in its strings and keys replaced by U+FFFD.

    `json.loads` joins an escaped surrogate pair into its character but keeps a lone `"\\ud800"` as it is; such a
    string cannot be written as UTF-8 (Parquet, row ids), so it would stop a build at the write. U+FFFD is what the
    clean-up (ftfy's `fix_surrogates`) makes of it: the same character with and without `--no-clean`, on
    every path (pyarrow's JSON reader refuses such a line, which then comes here)."""
    if isinstance(value, str):
        return _LONE_SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {without_lone_surrogates(k): without_lone_surrogates(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_lone_surrogates(v) for v in value]
    return value
