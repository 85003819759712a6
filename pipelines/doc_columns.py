"""BEIR JSON documents on Arrow tables: the columnar twin of `tabular.parse_json_doc` for blocks of JSON lines.

pyarrow's JSON reader takes the runs of regular lines (`lines.json_runs`); a row is decided here only when its
outcome is plain (an `_id` that is an integer or a non-blank ASCII string, `title` absent, null or ASCII, `text` an
ASCII string, non-empty once joined and cleaned). Every other line goes back to the exact per-line path, which gives
the same values and rejects as before. The reader is stricter than `json.loads` where they could differ: a key given
twice, or a value of another type than the schema's (a number for a string, `1.0` for an integer), fails its run,
which then goes line by line.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from negminer.pipelines import lines
from negminer.pipelines.nli_columns import clean_ascii


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
