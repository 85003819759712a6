"""`build msmarco --hf` on Arrow tables: the Hugging Face `microsoft/ms_marco` layout read as record batches, the
passages flattened by `pyarrow.compute`, tuple rows built as tables. The same rows, rejects and skips as
`msmarco.parse_hf_row`, which still decides every record whose outcome is not plain.

A record is decided here when `query` is a string not blank once cleaned, `query_id` an integer or string column,
and `passages` a struct of equally long `passage_text` (strings, no null), `is_selected` (integers or booleans) and,
if present, `url` (strings) lists. ASCII text is cleaned by `pyarrow.compute`, other text one string at a time by
`tidy` (ftfy). Every other record goes to `parse_hf_row` (a list of passage dicts, lists of other lengths or null,
a blank query, JSON lines).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from negminer.pipelines import lines
from negminer.pipelines import schema as S
from negminer.pipelines.doc_columns import parquet_batches
from negminer.pipelines.nli_columns import clean_ascii
from negminer.pipelines.source import (
    Record,
    _counter,
    is_parquet,
    line_record,
    parse_json_line,
    reject,
)
from negminer.pipelines.tables import row_ids
from negminer.pipelines.transforms.partition import SKIPPED_COUNTS
from negminer.pipelines.transforms.tabular import tidy
from negminer.pipelines.triple_columns import negative_lists, with_negatives

NO_SELECTED = "no_selected_passage"


def _non_blank(texts: pa.Array) -> np.ndarray:
    blank = pc.greater(pc.binary_length(pc.utf8_trim(texts, lines.ASCII_WHITESPACE)), 0)
    return pc.fill_null(blank, False).to_numpy(zero_copy_only=False)


def _passage_lists(passages: pa.Array) -> tuple[pa.Array, pa.Array, pa.Array | None] | None:
    """(passage_text, is_selected, url) list arrays of a `passages` struct column, or None for another layout."""
    t = passages.type
    if not pa.types.is_struct(t) or t.get_field_index("passage_text") < 0 or t.get_field_index("is_selected") < 0:
        return None
    texts, sel = passages.field("passage_text"), passages.field("is_selected")
    url = passages.field("url") if t.get_field_index("url") >= 0 else None
    if not (pa.types.is_list(texts.type) and pa.types.is_string(texts.type.value_type)):
        return None
    value = sel.type.value_type if pa.types.is_list(sel.type) else None
    if value is None or not (pa.types.is_integer(value) or pa.types.is_boolean(value)):
        return None
    if url is not None and not (pa.types.is_list(url.type) and pa.types.is_string(url.type.value_type)):
        return None
    return texts, sel, url


def plain_records(batch: pa.RecordBatch) -> np.ndarray:
    """Per record: True when its layout is plain (see the module docstring; the text is checked later)."""
    n = batch.num_rows
    names = batch.schema.names
    if "query" not in names or "passages" not in names or not pa.types.is_string(batch.schema.field("query").type):
        return np.zeros(n, dtype=bool)
    qid = batch.schema.field("query_id").type if "query_id" in names else pa.null()
    if not (pa.types.is_integer(qid) or pa.types.is_string(qid) or pa.types.is_null(qid)):
        return np.zeros(n, dtype=bool)
    lists = _passage_lists(batch.column("passages"))
    if lists is None:
        return np.zeros(n, dtype=bool)
    texts, sel, url = lists
    ok = pc.and_(pc.is_valid(batch.column("query")), pc.is_valid(batch.column("passages")))
    ok = ok.to_numpy(zero_copy_only=False)
    count = pc.list_value_length(texts)
    ok &= pc.fill_null(pc.equal(count, pc.list_value_length(sel)), False).to_numpy(zero_copy_only=False)
    if url is not None:
        ok &= pc.fill_null(pc.equal(count, pc.list_value_length(url)), False).to_numpy(zero_copy_only=False)
    nulls = np.zeros(n, dtype=bool)  # a record with a null passage text
    nulls[pc.list_parent_indices(texts).to_numpy()[~pc.is_valid(pc.list_flatten(texts)).to_numpy(False)]] = True
    return ok & ~nulls


def tidy_texts(texts: pa.Array, clean: bool) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """(`tidy(t, clean)` of each string, which are non-blank before, which after): ASCII strings in Arrow
    (`clean_ascii`), the others one by one in Python (ftfy, NFC, Unicode whitespace)."""
    cleaned = clean_ascii(texts) if clean else texts
    before, after = _non_blank(texts), _non_blank(cleaned)
    other = np.flatnonzero(~pc.string_is_ascii(texts).to_numpy(zero_copy_only=False))
    if len(other):
        raw = texts.take(pa.array(other)).to_pylist()
        fixed = [tidy(t, clean) for t in raw]
        mask = np.zeros(len(texts), dtype=bool)
        mask[other] = True
        cleaned = pc.replace_with_mask(cleaned, pa.array(mask), pa.array(fixed, pa.string()))
        before[other] = [bool(t.strip()) for t in raw]
        after[other] = [bool(t.strip()) for t in fixed]
    return cleaned, before, after


def _quoted(values: pa.Array) -> pa.Array:
    """`json.dumps(v, ensure_ascii=False)` of each string: in Arrow where no character needs escaping."""
    simple = pc.fill_null(
        pc.and_(pc.ascii_is_printable(values), pc.invert(pc.match_substring_regex(values, r'["\\]'))), False
    )
    quoted = pc.binary_join_element_wise('"', values, '"', "")
    rest = np.flatnonzero(~simple.to_numpy(zero_copy_only=False))
    if not len(rest):
        return quoted
    slow = [None if v is None else json.dumps(v, ensure_ascii=False) for v in values.take(pa.array(rest)).to_pylist()]
    mask = np.zeros(len(values), dtype=bool)
    mask[rest] = True
    return pc.replace_with_mask(quoted, pa.array(mask), pa.array(slow, pa.string()))


def _provenance(path: str, numbers: np.ndarray, urls: pa.Array | None) -> pa.Array:
    """`schema.provenance_json(file=path, line=n, url=u)` of each row (no `url` key where it is null)."""
    head = f'{{"file": {json.dumps(path, ensure_ascii=False)}, "line": '
    lines_ = pa.array(numbers, pa.int64()).cast(pa.string())
    prov = pc.binary_join_element_wise(head, lines_, "}", "")
    if urls is None:
        return prov
    with_url = pc.binary_join_element_wise(head, lines_, ', "url": ', _quoted(urls), "}", "")
    return pc.if_else(pc.is_valid(urls), with_url, prov)


def hf_rows_table(
    batch: pa.RecordBatch, lines_: np.ndarray, path: str, clean: bool
) -> tuple[pa.Table, int, np.ndarray]:
    """Tuple rows of plain records (`plain_records`) with their 1-based line/row numbers, as `parse_hf_row` gives
    them; how many records gave no row (no selected passage with text); which records are left to `parse_hf_row`
    (a query blank once cleaned: it rejects them)."""
    query, _, ok = tidy_texts(batch.column("query"), clean)
    if not ok.all():
        batch, query, lines_ = batch.filter(pa.array(ok)), query.filter(pa.array(ok)), lines_[ok]
    n = batch.num_rows
    texts, sel, url = _passage_lists(batch.column("passages"))
    parent = pc.list_parent_indices(texts).to_numpy()
    flat, before, after = tidy_texts(pc.list_flatten(texts), clean)
    # bool(v): a cast to boolean (non-zero is true) holds every integer type, where one to int64 fails above its range
    selected = pc.fill_null(pc.list_flatten(sel).cast(pa.bool_()), False).to_numpy(zero_copy_only=False)
    kept = before & after
    pos, neg = np.flatnonzero(kept & selected), np.flatnonzero(kept & ~selected)
    row_groups = parent[pos]
    positives = flat.take(pa.array(pos))
    negs, offsets = negative_lists(row_groups, positives, parent[neg], flat.take(pa.array(neg)))
    taken = pa.array(row_groups)
    queries = query.take(taken)
    if "query_id" in batch.schema.names and not pa.types.is_null(batch.schema.field("query_id").type):
        qids = batch.column("query_id").cast(pa.string()).take(taken)
    else:
        qids = pa.nulls(len(pos), pa.string())
    m = len(pos)
    urls = pc.list_flatten(url).take(pa.array(pos)) if url is not None else None
    prov = _provenance(path, lines_[row_groups], urls)
    empty = pa.ListArray.from_arrays(pa.array(np.zeros(m + 1, dtype=np.int32)), pa.array([], pa.string()))
    from negminer.pipelines.msmarco import PAIR_TYPE, SOURCE

    columns = {
        S.ID: row_ids(SOURCE, queries, positives),
        S.SOURCE: pa.array([SOURCE] * m, pa.string()),
        S.PAIR_TYPE: pa.array([PAIR_TYPE] * m, pa.string()),
        S.QUERY: queries,
        S.QUERY_ID: qids,
        S.POSITIVE: positives,
        S.NEGATIVES: empty,
        S.NEGATIVE_IDS: empty,
        S.PROVENANCE: prov,
    }
    rows = pa.Table.from_arrays([columns.get(f.name, pa.nulls(m, f.type)) for f in S.SCHEMA], schema=S.SCHEMA)
    without = n - int(np.count_nonzero(np.bincount(row_groups, minlength=n)))
    return with_negatives(rows, negs, offsets), without, np.flatnonzero(~ok)


class ReadHfTablesFn(beam.DoFn):
    """path of a Hugging Face layout file -> tables of tuple rows; malformed records to rejects one by one, records
    without a selected passage counted in one skipped-counts dict per file. Parquet records whose outcome is plain
    are decided in Arrow (`hf_rows_table`), every other record (and JSON lines) by `parse_hf_row`."""

    def __init__(self, clean: bool):
        self.clean = clean

    def process(self, path: str) -> Iterator[Any]:
        from negminer.pipelines.msmarco import parse_hf_row

        parse = functools.partial(parse_hf_row, clean=self.clean)
        counts = {NO_SELECTED: 0}
        if is_parquet(path):
            yield from self._parquet(path, parse, counts)
        else:
            yield from self._json_lines(path, parse, counts)
        if counts[NO_SELECTED]:
            _counter("negminer", f"skipped_{NO_SELECTED}").inc(counts[NO_SELECTED])
            yield beam.pvalue.TaggedOutput(SKIPPED_COUNTS, counts)

    def _decide(self, batch: pa.RecordBatch, numbers: np.ndarray, path: str, counts: dict) -> Iterator[Any]:
        """The rows table of a batch's plain records (yielded), then their indexes left to `parse_hf_row` (returned)."""
        plain = plain_records(batch)
        slow = np.flatnonzero(~plain)
        if plain.any():
            table, without, left = hf_rows_table(batch.filter(pa.array(plain)), numbers[plain], path, self.clean)
            counts[NO_SELECTED] += without
            slow = np.sort(np.r_[slow, np.flatnonzero(plain)[left]])
            if table.num_rows:
                yield table
        return slow

    def _parquet(self, path: str, parse, counts: dict[str, int]) -> Iterator[Any]:
        n = 0
        for batch in parquet_batches(path):
            if not isinstance(batch, pa.RecordBatch):
                yield batch  # the reject of a file that cannot be read on
                continue
            numbers = np.arange(n + 1, n + 1 + batch.num_rows)
            slow = yield from self._decide(batch, numbers, path, counts)
            rows: list[dict] = []
            for i, obj in zip(slow, batch.take(pa.array(slow)).to_pylist(), strict=True):
                yield from _slow_record(Record(path, int(numbers[i]), obj), parse, rows, counts)
            if rows:
                yield S.rows_to_table(rows)
            n += batch.num_rows

    def _json_lines(self, path: str, parse, counts: dict[str, int]) -> Iterator[Any]:
        """JSON lines in blocks: runs of regular lines through pyarrow's JSON reader (`hf_schema`, typed by the
        file's first record), their plain records decided as Parquet's; every other line by `parse_hf_row`."""
        state: dict[str, Any] = {}
        for block in lines.read_blocks(path):
            if not isinstance(block, lines.LineBlock):
                yield block
                continue
            kinds = lines.regular_lines(block)
            if "schema" not in state and (first := lines.first_object(block, kinds)) is not None:
                state["schema"] = hf_schema(first)
            slow: list[int] = []
            if state.get("schema") is None:
                slow = np.flatnonzero(kinds != 0).tolist()
            else:
                for table, numbers in lines.json_runs(block, state["schema"], kinds, slow.append):
                    batch = table.combine_chunks().to_batches()[0]
                    left = yield from self._decide(batch, numbers, path, counts)
                    slow += (numbers[left] - block.first).tolist()
            rows: list[dict] = []
            for i in sorted(slow):
                record = line_record(path, block.first + i, block.raw(i))
                if record is not None:
                    yield from _slow_record(record, parse, rows, counts)
            if rows:
                yield S.rows_to_table(rows)


def hf_schema(first: dict) -> pa.Schema | None:
    """The columns pyarrow's JSON reader takes from a JSON-lines file, typed as in its first record (a record of
    other types fails its run, which then goes line by line); None when `passages` is not a dict there (a list of
    passage dicts: the file goes line by line). `url` and `query_id` are always read, so none is ever dropped."""
    passages = first.get("passages")
    if not isinstance(passages, dict):
        return None
    qid = first.get("query_id")
    sel = passages.get("is_selected")
    is_bool = isinstance(sel, list) and bool(sel) and all(isinstance(s, bool) for s in sel)
    struct = pa.struct(
        [
            ("is_selected", pa.list_(pa.bool_() if is_bool else pa.int64())),
            ("passage_text", pa.list_(pa.string())),
            ("url", pa.list_(pa.string())),
        ]
    )
    is_int = isinstance(qid, int) and not isinstance(qid, bool)
    return pa.schema(
        [("query", pa.string()), ("query_id", pa.int64() if is_int else pa.string()), ("passages", struct)]
    )


def _slow_record(record: Any, parse, rows: list[dict], counts: dict[str, int]) -> Iterator[Any]:
    """`parse_hf_row` of one record (or a reader's reject passed on): rows appended, rejects yielded, skips counted."""
    if not isinstance(record, Record):
        yield record
        return
    obj = parse_json_line(record)
    got = obj if isinstance(obj, str) else parse(obj, record.path, record.line)
    if isinstance(got, str):
        yield reject(record, got)
    elif not got:
        counts[NO_SELECTED] += 1
    else:
        rows += got
