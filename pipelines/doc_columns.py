"""BEIR documents on Arrow tables: the columnar twin of `tabular.parse_json_doc` for blocks of JSON lines and for
Parquet record batches.

pyarrow's JSON reader takes the runs of regular lines (`lines.json_runs`); a row is decided here only when its
outcome is plain (an `_id` that is an integer or a non-blank ASCII string, `title` absent, null or ASCII, `text` an
ASCII string, non-empty once joined and cleaned). Every other line goes back to the exact per-line path, which gives
the same values and rejects as before. The reader is stricter than `json.loads` where they could differ: a key given
twice, or a value of another type than the schema's (a number for a string, `1.0` for an integer), fails its run,
which then goes line by line. Parquet columns of another type than these (a float `_id`, a number `title`) send
their whole batch row by row.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from negminer.pipelines import lines
from negminer.pipelines.nli_columns import clean_ascii
from negminer.pipelines.source import UNREADABLE_FILE_ERRORS, Record, reject

BATCH_ROWS = 4096  # records per Parquet batch (as `source.parquet_records` reads them)


def doc_schema(first: dict) -> pa.Schema:
    """The fields the JSON reader takes, `_id` typed as in the file's first document (other types go per line)."""
    doc_id = first.get("_id")
    is_int = isinstance(doc_id, int) and not isinstance(doc_id, bool)
    return pa.schema([("_id", pa.int64() if is_int else pa.string()), ("title", pa.string()), ("text", pa.string())])


def doc_rows(table: pa.Table, clean: bool) -> tuple[pa.Array, pa.Array, np.ndarray]:
    """(ids, texts, mask of the rows decided) of a JSON-reader table (`beir_object` for those rows)."""
    plain = np.ones(table.num_rows, dtype=bool)
    doc_id, title, text = table["_id"].combine_chunks(), table["title"], table["text"]
    if pa.types.is_integer(doc_id.type):
        ids = doc_id.cast(pa.string())
    else:
        ids = doc_id
        blank = pc.equal(pc.binary_length(pc.utf8_trim(doc_id, lines.ASCII_WHITESPACE)), 0)
        plain &= ~pc.fill_null(blank, True).to_numpy(zero_copy_only=False)
        plain &= pc.fill_null(pc.string_is_ascii(doc_id), False).to_numpy(zero_copy_only=False)
    plain &= pc.is_valid(doc_id).to_numpy(zero_copy_only=False)
    title = pc.fill_null(title, "").combine_chunks()
    text = text.combine_chunks()
    plain &= pc.fill_null(pc.and_(pc.string_is_ascii(title), pc.string_is_ascii(text)), False).to_numpy(False)
    title, text = pc.fill_null(title, ""), pc.fill_null(text, "")
    title, text = pc.utf8_trim(title, lines.ASCII_WHITESPACE), pc.utf8_trim(text, lines.ASCII_WHITESPACE)
    both = pc.and_(pc.greater(pc.binary_length(title), 0), pc.greater(pc.binary_length(text), 0))
    joined = pc.if_else(
        both,
        pc.binary_join_element_wise(title, text, " "),
        pc.if_else(pc.greater(pc.binary_length(title), 0), title, text),
    )
    full = clean_ascii(joined) if clean else joined
    plain &= pc.greater(pc.binary_length(full), 0).to_numpy(zero_copy_only=False)
    return ids, full, plain


def json_doc_runs(
    block: lines.LineBlock, clean: bool, state: dict, on_line
) -> list[tuple[pa.Array, pa.Array, np.ndarray]]:
    """(ids, texts, line numbers) of the documents decided in a block; `on_line(i)` for every other non-empty line.
    `state` keeps the file's schema across blocks (from its first document)."""
    kinds = lines.regular_lines(block)
    if state.get("schema") is None and (first := lines.first_object(block, kinds)) is not None:
        state["schema"] = doc_schema(first)
    if state.get("schema") is None:
        for i in np.flatnonzero(kinds != 0):
            on_line(int(i))
        return []
    out = []
    for table, numbers in lines.json_runs(block, state["schema"], kinds, on_line):
        ids, texts, plain = doc_rows(table, clean)
        for i in (numbers - block.first)[~plain]:
            on_line(int(i))
        keep = pa.array(plain)
        out.append((ids.filter(keep), texts.filter(keep), numbers[plain]))
    return out


def parquet_batches(path: str) -> Iterator[pa.RecordBatch | Any]:
    """The record batches of a Parquet file (BATCH_ROWS rows), then one `unreadable_file` reject if it cannot be
    read on, at the row `source.ReadRecordsFn` names (the one after the rows read)."""
    n = 0
    try:
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            for batch in pq.ParquetFile(f).iter_batches(batch_size=BATCH_ROWS):
                n += batch.num_rows
                yield batch
    except UNREADABLE_FILE_ERRORS as e:
        yield reject(Record(path, n + 1, f"{type(e).__name__}: {e}"), "unreadable_file")


def _string_column(batch: pa.RecordBatch, name: str, required: bool) -> pa.Array | None:
    """A string column of a batch (null where absent, unless `required`), or None when its type is another."""
    if name not in batch.schema.names:
        return None if required else pa.nulls(batch.num_rows, pa.string())
    col = batch.column(name)
    if pa.types.is_null(col.type) and not required:
        return pa.nulls(batch.num_rows, pa.string())
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        return col.cast(pa.string())
    return None


def parquet_doc_rows(batch: pa.RecordBatch, clean: bool) -> tuple[pa.Array, pa.Array, np.ndarray]:
    """(ids, texts, indexes of the rows decided) of a Parquet batch of BEIR documents (`_id`, `title`, `text`): as
    `doc_rows` decides them; every other row, or the whole batch when a column has another type, is left over."""
    none = (pa.array([], pa.string()), pa.array([], pa.string()), np.zeros(0, dtype=np.int64))
    doc_id = batch.column("_id") if "_id" in batch.schema.names else None
    if doc_id is None or not (pa.types.is_integer(doc_id.type) or pa.types.is_string(doc_id.type)):
        return none
    title, text = _string_column(batch, "title", False), _string_column(batch, "text", True)
    if title is None or text is None:
        return none
    ids, texts, plain = doc_rows(pa.table({"_id": doc_id, "title": title, "text": text}), clean)
    keep = pa.array(plain)
    return ids.filter(keep), texts.filter(keep), np.flatnonzero(plain)
