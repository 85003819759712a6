"""`id<TAB>text` and qrels files as Arrow tables, for the joins of `msmarco_columns` (MS MARCO, BEIR).

Files are read in blocks (`lines.read_blocks`): the plain lines (printable ASCII) are parsed by `pyarrow.compute`,
every other line by the per-line parsers of `transforms/tabular.py` (same rows, same rejects). Tables leave the
readers as (partition by the join key, table shipped by `tables.ship`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from negminer.pipelines import lines
from negminer.pipelines.doc_columns import json_doc_runs, parquet_batches, parquet_doc_rows
from negminer.pipelines.nli_columns import clean_ascii
from negminer.pipelines.source import (
    ReadRecordsFn,
    Record,
    _counter,
    is_parquet,
    line_record,
    parse_json_line,
    read_text_lines,
    reject,
)
from negminer.pipelines.tables import (
    PartitionBuffer,
    from_ipc,
    partitioned,
    string_hashes,
    string_partitions,
)
from negminer.pipelines.transforms.partition import SKIPPED_COUNTS
from negminer.pipelines.transforms.tabular import (
    Skip,
    parse_id_text,
    parse_json_doc,
    parse_qrel,
    tidy,
    title_and_text,
)

PARTITIONS = 32
COLUMNAR_PARQUET = True  # BEIR Parquet documents on Arrow (doc_columns); False: row by row (tests, bench)
TEXT = pa.schema([("id", pa.string()), ("text", pa.string()), ("path", pa.string()), ("line", pa.int64())])
QREL = pa.schema(
    [
        ("qid", pa.string()),
        ("doc_id", pa.string()),
        ("score", pa.float64()),
        ("path", pa.string()),
        ("line", pa.int64()),
    ]
)


def plain_lines(block: lines.LineBlock) -> np.ndarray:
    """Per line: True when it is printable ASCII or tab only (no CR, no other control, no byte >= 0x80)."""
    buf = np.frombuffer(block.data, dtype=np.uint8)
    near = np.flatnonzero((buf - np.uint8(0x20)) > 0x5E)  # uint8 wraps: below 0x20, or 0x7F and above
    odd = near[(buf[near] != 9) & (buf[near] != 10)]  # few bytes left: the tabs and newlines are dropped here
    out = np.ones(block.count, dtype=bool)
    if len(odd):
        out[np.searchsorted(block.starts[:-1], odd, side="right") - 1] = False
    return out


def plain_strings(block: lines.LineBlock) -> tuple[np.ndarray, pa.Array, np.ndarray]:
    """(indexes of the plain lines, those lines as strings without their newline, which of them are blank)."""
    plain = np.flatnonzero(plain_lines(block))
    offsets = pa.py_buffer(block.starts.astype(np.int64))
    raw = pa.Array.from_buffers(pa.large_binary(), block.count, [None, offsets, pa.py_buffer(block.data)])
    if len(plain) < block.count:
        raw = raw.take(pa.array(plain))
    raw = raw.cast(pa.large_string()).cast(pa.string())  # plain lines are ASCII
    raw = pc.utf8_slice_codeunits(raw, 0, -1)  # without the newline
    blank = pc.equal(pc.utf8_length(pc.utf8_trim(raw, lines.ASCII_WHITESPACE)), 0).to_numpy(zero_copy_only=False)
    return plain, raw, blank


def _left(block: lines.LineBlock, plain: np.ndarray, taken: np.ndarray, blank: np.ndarray) -> np.ndarray:
    """Indexes of the lines a columnar parse leaves to the per-line path: not plain, or plain, not blank and not
    taken (`taken`: indexes into `plain`)."""
    left = np.ones(block.count, dtype=bool)
    left[plain[blank]] = False
    left[plain[taken]] = False
    return np.flatnonzero(left)


def id_text_table(block: lines.LineBlock, clean: bool) -> tuple[pa.Table, np.ndarray]:
    """`parse_id_text` of a block's plain lines: (Text table of the lines it accepts, indexes of the lines left to
    the per-line path: not plain, no tab, empty id or text). Blank lines are in neither (they are not records)."""
    plain, raw, blank = plain_strings(block)
    parts = pc.split_pattern(raw, "\t", max_splits=1)
    has_tab = pc.equal(pc.list_value_length(parts), 2).to_numpy(zero_copy_only=False)
    keep = np.flatnonzero(~blank & has_tab)
    parts = parts.take(pa.array(keep))
    ids = pc.utf8_trim(pc.list_element(parts, 0), lines.ASCII_WHITESPACE)
    texts = pc.list_element(parts, 1)
    if clean:
        texts = clean_ascii(texts)
    kept = pc.binary_length(
        texts if clean else pc.utf8_trim(texts, lines.ASCII_WHITESPACE)
    )  # clean_ascii trimmed them
    ok = pc.and_(pc.greater(pc.binary_length(ids), 0), pc.greater(kept, 0))
    taken = keep[ok.to_numpy(zero_copy_only=False)]
    numbers = pa.array(block.first + plain[keep], pa.int64())
    table = pa.Table.from_arrays([ids, texts, pa.array([block.path] * len(keep), pa.string()), numbers], schema=TEXT)
    return table.filter(ok), _left(block, plain, taken, blank)


_NUMBER = r"^-?[0-9]+(\.[0-9]+)?$"  # scores the columnar path parses (float() and Arrow agree on these)


def qrel_table(block: lines.LineBlock) -> tuple[pa.Table, np.ndarray]:
    """`tabular.parse_qrel` of a block's plain lines with 3 or 4 fields and a plain decimal score: (Qrel table,
    indexes of the lines left to the per-line path: headers, malformed lines, other number forms)."""
    plain, raw, blank = plain_strings(block)
    has_tab = pc.match_substring(raw, "\t")
    spaced = pc.replace_substring_regex(pc.utf8_trim(raw, " "), " +", "\t")  # str.split() of printable ASCII
    fields = pc.split_pattern(pc.if_else(has_tab, raw, spaced), "\t")
    n = pc.list_value_length(fields).to_numpy(zero_copy_only=False)
    tables, taken = [], []
    for width, cols in ((4, (0, 2, 3)), (3, (0, 1, 2))):
        rows = np.flatnonzero(~blank & (n == width))
        picked = fields.take(pa.array(rows))
        qid, doc, score = (pc.utf8_trim(pc.list_element(picked, i), lines.ASCII_WHITESPACE) for i in cols)
        ok = pc.match_substring_regex(score, _NUMBER)
        numbers = pa.array(block.first + plain[rows], pa.int64())
        table = pa.Table.from_arrays(
            [qid, doc, _to_float(score, ok), pa.array([block.path] * len(rows), pa.string()), numbers], schema=QREL
        )
        tables.append(table.filter(ok))
        taken.append(rows[ok.to_numpy(zero_copy_only=False)])
    return pa.concat_tables(tables), _left(block, plain, np.concatenate(taken), blank)


def _to_float(score: pa.Array, ok: pa.Array) -> pa.Array:
    """Scores as float64 where `ok` (a plain decimal), 0 elsewhere (those rows are dropped)."""
    return pc.if_else(ok, score, "0").cast(pa.float64())


def _slow_items(path: str, items: Iterable[Any], parse: Callable[[Record], Any], rows: list, skipped: dict):
    """The per-line path over reader items: parsed tuples appended to `rows`, Skips counted, rejects yielded."""
    for item in items:
        if item is None:
            continue
        if not isinstance(item, Record):
            yield item
            continue
        out = parse(item)
        if isinstance(out, Skip):
            skipped[out.reason] = skipped.get(out.reason, 0) + 1
            _counter("negminer", f"skipped_{out.reason}").inc()
        elif isinstance(out, str):
            yield reject(item, out)
        else:
            rows.append(tuple(out[1]))


def _table(rows: list[tuple], schema: pa.Schema) -> pa.Table:
    cols = list(zip(*rows, strict=True)) or [()] * len(schema)
    return pa.Table.from_arrays([pa.array(c, f.type) for c, f in zip(cols, schema, strict=True)], schema=schema)


def by_partition(table: pa.Table, key: str, n: int = PARTITIONS, spill: str | None = None) -> Iterator[tuple]:
    """(partition, the rows of `table` whose `key` hashes there, as `tables.ship` sends them)."""
    if table.num_rows:
        yield from partitioned(table, string_partitions(table[key], n), spill)


class Judged:
    """The document ids some kept qrel names (a side input of IPC tables of `doc_id`), as an Arrow array (an id
    judged in several query partitions is there more than once) and a set."""

    def __init__(self, tables: list[bytes]):
        ids = [from_ipc(t)["doc_id"].combine_chunks() for t in tables]
        self.array = pa.concat_arrays(ids) if ids else pa.array([], pa.string())
        self._set: set[str] | None = None
        # sorted for searchsorted; repeats do no harm (np.unique is ~40x slower than a sort on 64-bit keys, numpy 2.4)
        self._hashes = np.sort(string_hashes(self.array))

    def may_hold(self, ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """Per id: True for every judged id (and, rarely, another one with the same `tables.string_hashes`, whose
        text is then kept as if judged: correct, only not left out)."""
        h = string_hashes(ids)
        if not len(self._hashes):
            return np.zeros(len(h), dtype=bool)
        at = np.minimum(np.searchsorted(self._hashes, h), len(self._hashes) - 1)
        return self._hashes[at] == h

    def __contains__(self, doc_id: str) -> bool:
        if self._set is None:
            self._set = set(self.array.to_pylist())
        return doc_id in self._set


def unjudged_stub(record: Record, clean: bool, judged: Judged) -> tuple[str, tuple] | None:
    """(id, stub Text without text) for a line `parse_id_text` would accept whose id no qrel judges, decided without
    ftfy; None when only `parse_id_text` can tell (then it runs).

    A non-ASCII text is surely non-empty after `clean_text` when it holds an ASCII letter or digit and no `&` (HTML
    entities) or ESC (terminal escapes): no other ftfy step removes ASCII letters or digits."""
    parts = record.value.split("\t", 1)
    if len(parts) != 2 or not parts[0].strip() or parts[0].strip() in judged or not _kept(parts[1], clean):
        return None
    doc_id = parts[0].strip()
    return doc_id, (doc_id, None, record.path, record.line)


def _kept(text: str, clean: bool) -> bool:
    """True when `tidy(text, clean)` is surely not blank, decided without ftfy where the text is non-ASCII (see
    `unjudged_stub`); False when only `tidy` can tell, or it is blank."""
    if clean and not text.isascii():
        return not ("&" in text or "\x1b" in text or not any(c.isascii() and c.isalnum() for c in text))
    return bool(tidy(text, clean).strip())


def json_doc_stub(record: Record, clean: bool, judged: Judged) -> tuple[str, tuple] | None:
    """(id, stub Text without text) for a BEIR document `parse_json_doc` would accept whose id no qrel judges,
    decided without ftfy (as `unjudged_stub`); None when only `parse_json_doc` can tell (then it runs). Every check
    of `tabular.beir_object` is made here in its order; only the emptiness of the cleaned text is judged apart."""
    obj = parse_json_line(record)
    if not isinstance(obj, dict):
        return None
    doc_id, text, title = obj.get("_id"), obj.get("text"), obj.get("title") or ""
    if doc_id is None or (isinstance(doc_id, str) and not doc_id.strip()):
        return None
    if not isinstance(text, str) or not isinstance(title, str):
        return None
    doc_id = str(doc_id)
    if doc_id in judged or not _kept(title_and_text(title, text), clean):
        return None
    return doc_id, (doc_id, None, record.path, record.line)


def _json_doc_or_stub(record: Record, clean: bool, judged: Judged | None) -> Any:
    if judged is not None and (stub := json_doc_stub(record, clean, judged)):
        return stub
    return parse_json_doc(record, clean=clean)


def _parse_or_stub(record: Record, clean: bool, judged: Judged | None) -> Any:
    if judged is not None and isinstance(record.value, str) and (stub := unjudged_stub(record, clean, judged)):
        return stub
    return parse_id_text(record, clean=clean)


class ReadTextTablesFn(beam.DoFn):
    """path of an `id<TAB>text` file -> (partition by id, Text table) per block; rejects as `parse_id_text` gives.

    Given `judged` (a side input, see `Judged`), texts of ids no qrel judges are left out (null): they are only
    needed for the `duplicate_doc_id` rule and rejects, which `first_by_id` serves by reading such lines again.
    With `json_docs`, the file holds BEIR JSON documents (`doc_columns`, the rest by `tabular.parse_json_doc`).
    Tables are shipped with `tables.ship` (`spill`: a directory, or None for IPC bytes)."""

    def __init__(self, clean: bool, json_docs: bool = False, spill: str | None = None):
        self.clean, self.json_docs, self.spill = clean, json_docs, spill

    def process(self, path: str, judged: list[bytes] | None = None) -> Iterator[Any]:
        keep = Judged(judged) if judged is not None else None
        if is_parquet(path) and self.json_docs and COLUMNAR_PARQUET:
            yield from self._parquet_docs(path, keep)
            return
        if is_parquet(path):  # id<TAB>text readers reject every Parquet row (`malformed_line`)
            parse = functools.partial(parse_json_doc if self.json_docs else parse_id_text, clean=self.clean)
            rows: list[tuple] = []
            yield from _slow_items(path, ReadRecordsFn().process(path), parse, rows, {})
            yield from by_partition(stub_unjudged(_table(rows, TEXT), keep), "id", spill=self.spill)
            return
        if self.json_docs:
            yield from self._json_docs(path, keep)
            return
        parse = functools.partial(_parse_or_stub, clean=self.clean, judged=keep)
        out = PartitionBuffer("id", PARTITIONS, self.spill)
        for block in lines.read_blocks(path):
            if not isinstance(block, lines.LineBlock):
                yield block
                continue
            table, slow = id_text_table(block, self.clean)
            if keep is not None:
                mask = pa.array(keep.may_hold(table["id"]))
                stubs = table.filter(pc.invert(mask))
                stubs = stubs.set_column(1, "text", pa.nulls(stubs.num_rows, pa.string()))
                table = pa.concat_tables([table.filter(mask), stubs])
            rows = []
            items = (line_record(path, block.first + int(i), block.raw(int(i))) for i in slow)
            yield from _slow_items(path, items, parse, rows, {})
            yield from out.add(pa.concat_tables([table, _table(rows, TEXT)]))
        yield from out.flush()

    def _parquet_docs(self, path: str, keep: Judged | None = None) -> Iterator[Any]:
        """A Parquet file of BEIR documents: plain rows by `doc_columns.parquet_doc_rows`, the others by
        `parse_json_doc` (row numbers 1-based over the file, as `source.parquet_records` counts them); the texts of
        ids `keep` does not hold are left out (`stub_unjudged`)."""
        parse = functools.partial(_json_doc_or_stub, clean=self.clean, judged=keep)
        out, n = PartitionBuffer("id", PARTITIONS, self.spill), 0
        for batch in parquet_batches(path):
            if not isinstance(batch, pa.RecordBatch):
                yield batch  # the reject of a file that cannot be read on
                continue
            ids, texts, taken = parquet_doc_rows(batch, self.clean)
            slow = np.setdiff1d(np.arange(batch.num_rows), taken)
            rows: list[tuple] = []
            picked = batch.take(pa.array(slow)).to_pylist()
            items = (Record(path, n + 1 + int(i), r) for i, r in zip(slow, picked, strict=True))
            yield from _slow_items(path, items, parse, rows, {})
            where, numbers = pa.array([path] * len(taken), pa.string()), pa.array(n + 1 + taken, pa.int64())
            table = pa.Table.from_arrays([ids, texts, where, numbers], schema=TEXT)
            yield from out.add(stub_unjudged(pa.concat_tables([table, _table(rows, TEXT)]), keep))
            n += batch.num_rows
        yield from out.flush()

    def _json_docs(self, path: str, keep: Judged | None = None) -> Iterator[Any]:
        """A JSON-lines file of BEIR documents: plain documents by `doc_columns`, the others by `parse_json_doc`;
        the texts of ids `keep` does not hold are left out (`stub_unjudged`)."""
        parse = functools.partial(_json_doc_or_stub, clean=self.clean, judged=keep)
        out, state = PartitionBuffer("id", PARTITIONS, self.spill), {}
        for block in lines.read_blocks(path):
            if not isinstance(block, lines.LineBlock):
                yield block
                continue
            slow: list[int] = []
            runs = json_doc_runs(block, self.clean, state, slow.append)
            rows: list[tuple] = []
            items = (line_record(path, block.first + i, block.raw(i)) for i in sorted(slow))
            yield from _slow_items(path, items, parse, rows, {})
            tables = [_table(rows, TEXT)]
            for ids, texts, numbers in runs:
                where = pa.array([path] * len(ids), pa.string())
                tables.append(pa.Table.from_arrays([ids, texts, where, pa.array(numbers, pa.int64())], schema=TEXT))
            yield from out.add(stub_unjudged(pa.concat_tables(tables), keep))
        yield from out.flush()


def stub_unjudged(table: pa.Table, keep: Judged | None) -> pa.Table:
    """A Text table with the texts of the ids `keep` surely does not hold made null (id stubs; rows stay in place).
    The texts were decided (the rows are accepted documents): only the `duplicate_doc_id` rule and its rejects
    need them again, and `first_by_id` reads those lines again (`reread_texts`)."""
    if keep is None or not table.num_rows:
        return table
    held = pa.array(keep.may_hold(table["id"]))
    return table.set_column(1, "text", pc.if_else(held, table["text"], pa.scalar(None, pa.string())))


def reread_texts(wanted: list[dict], clean: bool, json_docs: bool = False) -> dict[tuple[str, int], str]:
    """The text of (path, line) records, read again (one scan per file): for the rejects of stubs. Lines of
    `id<TAB>text` files by `parse_id_text`; with `json_docs`, BEIR documents by `parse_json_doc` (JSON lines, or
    Parquet rows numbered from 1 over the file)."""
    out: dict[tuple[str, int], str] = {}
    for path in sorted({w["path"] for w in wanted}):
        lines_wanted = {w["line"] for w in wanted if w["path"] == path}
        if json_docs and is_parquet(path):
            records = _parquet_rows(path, lines_wanted)
        else:
            records = (Record(path, n, raw.decode("utf-8")) for n, raw in read_text_lines(path) if n in lines_wanted)
        parse = parse_json_doc if json_docs else parse_id_text
        found = 0
        for record in records:
            out[(path, record.line)] = parse(record, clean=clean)[1].text
            found += 1
            if found == len(lines_wanted):
                break
    return out


def _parquet_rows(path: str, numbers: set[int]) -> Iterator[Record]:
    """Records of the rows `numbers` (1-based over the file) of a Parquet file, in file order."""
    n = 0
    for batch in parquet_batches(path):
        if not isinstance(batch, pa.RecordBatch):
            return  # the file was read to here before: the rows wanted are above
        at = np.array(sorted(i - n - 1 for i in numbers if n < i <= n + batch.num_rows), dtype=np.int64)
        if len(at):
            for i, row in zip(at, batch.take(pa.array(at)).to_pylist(), strict=True):
                yield Record(path, n + 1 + int(i), row)
        n += batch.num_rows


class ReadQrelTablesFn(beam.DoFn):
    """path of a qrels file -> (partition by qid, Qrel table) of the judgements at or above `threshold` (above it
    when `strict`); the others (`below_reason`) and header lines as one skipped-counts dict per file."""

    def __init__(
        self,
        threshold: float,
        strict: bool = False,
        below_reason: str = "below_min_relevance",
        spill: str | None = None,
    ):
        self.threshold, self.strict, self.below_reason, self.spill = threshold, strict, below_reason, spill

    def process(self, path: str) -> Iterator[Any]:
        skipped: dict[str, int] = {}
        tables = []
        if is_parquet(path):
            rows: list[tuple] = []
            yield from _slow_items(path, ReadRecordsFn().process(path), parse_qrel, rows, skipped)
            tables.append(_table(rows, QREL))
        for block in [] if is_parquet(path) else lines.read_blocks(path):
            if not isinstance(block, lines.LineBlock):
                yield block
                continue
            table, slow = qrel_table(block)
            rows = []
            items = (line_record(path, block.first + int(i), block.raw(int(i))) for i in slow)
            yield from _slow_items(path, items, parse_qrel, rows, skipped)
            tables += [table, _table(rows, QREL)]
        table = pa.concat_tables(tables or [QREL.empty_table()])
        kept = (pc.greater if self.strict else pc.greater_equal)(table["score"], self.threshold)
        below = table.num_rows - (pc.sum(kept).as_py() or 0)
        if below:
            skipped[self.below_reason] = skipped.get(self.below_reason, 0) + below
            _counter("negminer", f"skipped_{self.below_reason}").inc(below)
        yield from by_partition(table.filter(kept), "qid", spill=self.spill)
        if skipped:
            yield beam.pvalue.TaggedOutput(SKIPPED_COUNTS, skipped)
