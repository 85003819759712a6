"""`build fever` on Arrow tables: claims ⋈ wiki pages as hash-partitioned pyarrow joins (the twin of `EvidenceRowsFn`).

Wiki pages are read in blocks (`lines.read_blocks`): pyarrow's JSON reader takes the runs of regular lines, and a
page is decided there when its outcome is plain (an id with an ASCII letter, digit or sign, and a text with one, or a
page with no text and no lines at all); every other line goes to the per-line `fever.page_fields`. Parquet pages
(which the keyed-batch path reads as records) are decided the same way per record batch. Claims are parsed per line
by `fever.parse_claim` (their evidence lists mix types, which the JSON reader cannot type) into tables of evidence
(page key, sentence). Both leave their readers as (partition by page key, table shipped by `tables.ship`);
one CoGroupByKey brings a partition's pages and evidence to `JoinEvidenceTablesFn`, which joins them with pyarrow and
splits only the referenced pages' `lines` (with `pyarrow.compute` where they are ASCII). Same rows and rejects as
the keyed-batch path (tests/pipelines/test_fever_columns.py, golden digest).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from negminer.pipelines import lines
from negminer.pipelines.doc_columns import _string_column, parquet_batches
from negminer.pipelines.fever import (
    Evidence,
    evidence_record,
    page_fields,
    page_key,
    page_title,
    parse_claim,
)
from negminer.pipelines.fever_sentences import page_positives, positives_of, rows_table, sentence_table
from negminer.pipelines.qrel_columns import Judged
from negminer.pipelines.source import REJECTS, ReadRecordsFn, Record, _counter, is_parquet, line_record, reject
from negminer.pipelines.tables import PartitionBuffer, from_ipc, string_buffers, take_rows, to_ipc
from negminer.pipelines.transforms.partition import PARTITIONS, SKIPPED_COUNTS
from negminer.pipelines.transforms.tabular import Skip

PAGE_JSON = pa.schema([("id", pa.string()), ("text", pa.string()), ("lines", pa.string())])
PAGE = pa.schema([("key", pa.string()), *PAGE_JSON, ("path", pa.string()), ("line", pa.int64())])
EVIDENCE = pa.schema(
    [
        ("key", pa.string()),
        ("claim_id", pa.string()),
        ("claim", pa.string()),
        ("label", pa.string()),
        ("page", pa.string()),
        ("sentence", pa.string()),  # the evidence line as its decimal text (null for --positive page)
        ("path", pa.string()),
        ("line", pa.int64()),
    ]
)
CLAIMS, PAGES = "claims", "pages"
_GRAPHIC = "[!-~]"  # a printable ASCII character other than space: str.strip() keeps it, so the string is not blank
STUB_UNNAMED = True  # pages no evidence names cross the shuffle without their text and lines
EVIDENCE_BATCH = 65_536  # evidence rows per table handed to the partition buffer


def _count(skipped: dict[str, int], reason: str, n: int = 1) -> None:
    skipped[reason] = skipped.get(reason, 0) + n
    _counter("negminer", f"skipped_{reason}").inc(n)


def _mask(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return pc.fill_null(arr, False).to_numpy(zero_copy_only=False).astype(bool)


def decided_pages(table: pa.Table) -> tuple[pa.Table, np.ndarray, np.ndarray]:
    """A JSON-reader table of pages -> (the kept pages: key, id, text, lines; mask of those rows; mask of the rows
    that are surely `empty_page`). Rows in neither mask go to the per-line `page_fields`."""
    ids = table["id"].combine_chunks()
    text = pc.fill_null(table["text"], "").combine_chunks()
    page_lines = pc.fill_null(table["lines"], "").combine_chunks()
    has_id = has_graphic(ids)
    keep = has_id & has_graphic(text)
    empty = has_id & ~keep
    if empty.any():  # the rest: a text of ASCII whitespace and no lines is surely an empty page
        rest = pa.array(empty)
        blank = pc.equal(pc.utf8_trim(text.filter(rest), lines.ASCII_WHITESPACE), "")
        blank = pc.and_(pc.and_(blank, pc.string_is_ascii(text.filter(rest))), pc.equal(page_lines.filter(rest), ""))
        empty[empty] = _mask(blank)
    ids, text, page_lines = (a.filter(pa.array(keep)) for a in (ids, text, page_lines))
    return pa.table({"key": page_keys(ids), "id": ids, "text": text, "lines": page_lines}), keep, empty


def _buffers(strings: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, data) of a string array without a copy (`tables.string_buffers` casts to large_string first)."""
    if not pa.types.is_string(strings.type):
        return string_buffers(strings)
    offsets = np.frombuffer(strings.buffers()[1], dtype=np.int32)[strings.offset : strings.offset + len(strings) + 1]
    data = strings.buffers()[2]
    return offsets, np.frombuffer(data, np.uint8) if data is not None and data.size else np.zeros(1, np.uint8)


def has_graphic(strings: pa.Array) -> np.ndarray:
    """Per string: True when it holds a printable ASCII character other than space (so `str.strip()` leaves it
    non-empty); False for null. The first byte decides most strings; a regular expression the others."""
    offsets, data = _buffers(strings)
    starts, valid = offsets[:-1], _mask(pc.is_valid(strings))
    first = data[np.minimum(starts, len(data) - 1)]
    out = valid & (offsets[1:] > starts) & (first >= 0x21) & (first <= 0x7E)
    other = np.flatnonzero(valid & ~out)
    if len(other):
        out[other] = _mask(pc.match_substring_regex(strings.take(pa.array(other)), _GRAPHIC))
    return out


def page_keys(ids: pa.Array) -> pa.Array:
    """`fever.page_key` of every id: ASCII ids are their own key, the others are normalised by Python."""
    ascii_ids = _mask(pc.string_is_ascii(ids))
    if ascii_ids.all():
        return ids
    other = np.flatnonzero(~ascii_ids)
    keys = pa.array([page_key(i) for i in ids.take(pa.array(other)).to_pylist()], pa.string())
    return pc.replace_with_mask(ids, pa.array(~ascii_ids), keys)


def _table(rows: list[tuple], schema: pa.Schema) -> pa.Table:
    cols = list(zip(*rows, strict=True)) or [()] * len(schema)
    return pa.Table.from_arrays([pa.array(c, f.type) for c, f in zip(cols, schema, strict=True)], schema=schema)


class ReadPageTablesFn(beam.DoFn):
    """path of a `wiki-*.jsonl` file -> (partition by page key, PAGE table) per flush; rejects and the `empty_page`
    skips as `fever.page_fields` gives them (skips as one counts dict per file).

    Given `judged` (a side input: IPC tables of the evidence's page keys in a `doc_id` column, see
    `qrel_columns.Judged`), pages no evidence names cross the shuffle as stubs without text and lines: the join
    needs them only for the `duplicate_page_id` rule, whose reject holds the page id."""

    def __init__(self, spill: str | None = None):
        self.spill = spill

    def process(self, path: str, judged: list[bytes] | None = None) -> Iterator[Any]:
        out, skipped = PartitionBuffer("key", PARTITIONS, self.spill), {}
        named = Judged(judged) if judged is not None else None
        for got in (parquet_pages if is_parquet(path) else text_pages)(path, skipped):
            if isinstance(got, pa.Table):
                yield from out.add(stubs_unless(got, named))
            else:
                yield got  # a reject
        yield from out.flush()
        if skipped:
            yield beam.pvalue.TaggedOutput(SKIPPED_COUNTS, skipped)


def stubs_unless(pages: pa.Table, named: Judged | None) -> pa.Table:
    """The pages whose key `named` may hold as they are, the others without text and lines (null)."""
    if named is None or not pages.num_rows:
        return pages
    mask = pa.array(named.may_hold(pages["key"]))
    stubs = pages.filter(pc.invert(mask))
    nulls = pa.nulls(stubs.num_rows, pa.string())
    stubs = stubs.set_column(2, "text", nulls).set_column(3, "lines", nulls)
    return pa.concat_tables([pages.filter(mask), stubs])


def evidence_keys(element: tuple[int, Any]) -> bytes:
    """A partition's evidence table -> IPC bytes of its distinct page keys as `doc_id` (the pages' side input)."""
    return to_ipc(pa.table({"doc_id": pc.unique(from_ipc(element[1])["key"])}))


def text_pages(path: str, skipped: dict[str, int]) -> Iterator[Any]:
    """The pages of a JSON-lines file: one PAGE table per block, and the rejects of its lines and of the reader."""
    for block in lines.read_blocks(path):
        if not isinstance(block, lines.LineBlock):
            yield block  # a reject of the reader
            continue
        tables = []
        for got in block_pages(block, skipped):
            if isinstance(got, pa.Table):
                tables.append(got)
            else:
                yield got
        yield pa.concat_tables(tables)


def parquet_pages(path: str, skipped: dict[str, int]) -> Iterator[Any]:
    """The pages of a Parquet file (`id`, `text`, `lines` columns, as the Hub's FEVER `wiki_pages`), read as records
    by the keyed-batch path (`source.ReadRecordsFn`): one PAGE table per record batch, string columns decided as the
    JSON reader's tables, the other rows (or a batch of other column types) by `page_fields` with their 1-based row
    numbers; a file that cannot be read on gives one `unreadable_file` reject."""
    first = 1  # the row number of a batch's first row
    for batch in parquet_batches(path):
        if not isinstance(batch, pa.RecordBatch):
            yield batch
            continue
        numbers = np.arange(first, first + batch.num_rows, dtype=np.int64)
        columns = [_string_column(batch, f.name, f.name == "id") for f in PAGE_JSON]
        slow = np.arange(batch.num_rows)
        tables = []
        if all(c is not None for c in columns):
            left: list[int] = []
            tables.append(_decided(pa.Table.from_arrays(columns, schema=PAGE_JSON), numbers, path, skipped, left))
            slow = np.asarray(left, dtype=np.int64) - first
        rows = batch.take(pa.array(slow, pa.int64())).to_pylist()
        records = (Record(path, int(numbers[i]), r) for i, r in zip(slow, rows, strict=True))
        for got in undecided_pages(records, skipped):
            if isinstance(got, pa.Table):
                tables.append(got)
            else:
                yield got
        yield pa.concat_tables(tables)
        first += batch.num_rows


def _decided(table: pa.Table, numbers: np.ndarray, path: str, skipped: dict[str, int], slow: list) -> pa.Table:
    """The PAGE table of the pages `decided_pages` keeps (`numbers`: their line or row numbers); the surely empty
    ones counted, the numbers of the others appended to `slow`."""
    pages, keep, empty = decided_pages(table)
    slow.extend(numbers[~(keep | empty)].tolist())
    if empty.any():
        _count(skipped, "empty_page", int(empty.sum()))
    where = pa.array([path] * pages.num_rows, pa.string())
    return pages.append_column("path", where).append_column("line", pa.array(numbers[keep])).cast(PAGE)


def undecided_pages(records: Iterable[Any], skipped: dict[str, int]) -> Iterator[Any]:
    """`page_fields` of each record (or a reader's reject passed on): rejects yielded, skips counted, then one PAGE
    table of the pages kept."""
    rows = []
    for item in records:
        got = page_fields(item) if isinstance(item, Record) else item
        if isinstance(got, Skip):
            _count(skipped, got.reason)
        elif isinstance(got, str):
            yield reject(item, got)
        elif isinstance(got, tuple):
            rows.append((*got, item.path, item.line))
        elif got is not None:
            yield got  # the reject of an undecodable line
    yield _table(rows, PAGE)


def block_pages(block: lines.LineBlock, skipped: dict[str, int]) -> Iterator[Any]:
    """The pages of a block as PAGE tables (the JSON reader's, then one of the lines left to `page_fields`), and
    the rejects of its lines; skips are counted into `skipped`."""
    slow: list[int] = []
    kinds = lines.regular_lines(block)
    for table, numbers in lines.json_runs(block, PAGE_JSON, kinds, slow.append):
        decided: list[int] = []
        yield _decided(table, numbers, block.path, skipped, decided)
        slow.extend(i - block.first for i in decided)
    records = (line_record(block.path, block.first + i, block.raw(i)) for i in sorted(slow))
    yield from undecided_pages(records, skipped)


class ReadEvidenceTablesFn(beam.DoFn):
    """path of a claims file -> (partition by page key, EVIDENCE table); rejects and skips as `parse_claim` gives."""

    def __init__(self, positive: str, clean: bool, spill: str | None = None):
        self.positive, self.clean, self.spill = positive, clean, spill

    def process(self, path: str) -> Iterator[Any]:
        out, skipped, rows = PartitionBuffer("key", PARTITIONS, self.spill), {}, []
        for record in ReadRecordsFn().process(path):
            if not isinstance(record, Record):
                yield record  # a reject of the reader
                continue
            got = parse_claim(record, self.positive, self.clean)
            if isinstance(got, Skip):
                _count(skipped, got.reason)
            elif isinstance(got, str):
                yield reject(record, got)
            else:
                for key, ev in got:
                    sentence = None if ev.line is None else str(ev.line)
                    rows.append((key, ev.claim_id, ev.claim, ev.label, ev.page, sentence, ev.path, ev.record_line))
                if len(rows) >= EVIDENCE_BATCH:
                    yield from out.add(_table(rows, EVIDENCE))
                    rows = []
        yield from out.add(_table(rows, EVIDENCE))
        yield from out.flush()
        if skipped:
            yield beam.pvalue.TaggedOutput(SKIPPED_COUNTS, skipped)


def first_pages(tables: Iterable[Any]) -> tuple[pa.Table, list]:
    """The first page of each key by (path, line), with a row `index`, and a `duplicate_page_id` reject (raw: the
    page id) for every other page of the key (as `EvidenceRowsFn`)."""
    pages = pa.concat_tables([from_ipc(t) for t in tables] or [PAGE.empty_table()])
    rejects = []
    if len(pc.unique(pages["key"])) < pages.num_rows:
        order = pc.sort_indices(pages, sort_keys=[("key", "ascending"), ("path", "ascending"), ("line", "ascending")])
        pages = take_rows(pages, order)
        keys = pages["key"].combine_chunks()
        first = np.ones(len(keys), dtype=bool)
        first[1:] = _mask(pc.not_equal(keys.slice(1), keys.slice(0, len(keys) - 1)))
        for dup in pages.filter(pa.array(~first)).select(["id", "path", "line"]).to_pylist():
            rejects.append(reject(Record(dup["path"], dup["line"], dup["id"]), "duplicate_page_id"))
        pages = pages.filter(pa.array(first))
    return pages.append_column("index", pa.array(np.arange(pages.num_rows, dtype=np.int64))), rejects


def evidence_rejects(evidence: pa.Table, reason: str) -> list:
    """`evidence_record` rejects of evidence rows (the claim's id, claim, page and line as JSON)."""
    out = []
    for e in evidence.select([f.name for f in EVIDENCE]).to_pylist():
        line = None if e["sentence"] is None else int(e["sentence"])
        ev = Evidence(e["claim_id"], e["claim"], e["label"], e["page"], line, e["path"], e["line"])
        out.append(reject(evidence_record(ev), reason))
    return out


class JoinEvidenceTablesFn(beam.DoFn):
    """(partition, {claims, pages}) -> a table of tuple rows; rejects: `duplicate_page_id`, `missing_page`,
    `missing_line` (as `fever.EvidenceRowsFn`)."""

    def __init__(self, positive: str, clean: bool):
        self.positive, self.clean = positive, clean

    def process(self, element: tuple[int, dict[str, Iterable[Any]]]) -> Iterator[Any]:
        groups = element[1]
        pages, rejects = first_pages(groups[PAGES])
        yield from rejects
        evidence = [from_ipc(t) for t in groups[CLAIMS]]
        if not evidence:
            return
        evidence = pa.concat_tables(evidence)
        joined = evidence.join(pages.select(["key", "index"]), "key", join_type="left outer", use_threads=False)
        found = pc.is_valid(joined["index"])
        yield from evidence_rejects(joined.filter(pc.invert(found)), "missing_page")
        joined = joined.filter(found)
        if not joined.num_rows:
            return
        needed = take_rows(pages, pc.unique(joined["index"]))
        titles = pa.array([page_title(i) for i in needed["id"].to_pylist()], pa.string())
        needed = needed.append_column("title", titles)
        if self.positive == "page":
            joined = joined.join(page_positives(needed, self.clean), "index", use_threads=False)
        else:
            sentences = sentence_table(needed.select(["index", "lines"]))
            joined = joined.join(sentences, ["index", "sentence"], join_type="left outer", use_threads=False)
            raw = pc.fill_null(joined["raw"], "").combine_chunks()
            joined = joined.append_column("positive", positives_of(raw, self.clean)).drop_columns(["raw"])
        joined = joined.join(needed.select(["index", "id", "title"]), "index", use_threads=False)
        blank = _mask(pc.equal(joined["positive"], ""))
        yield from evidence_rejects(joined.filter(pa.array(blank)), "missing_line")
        if not blank.all():
            yield rows_table(joined.filter(pa.array(~blank)), self.positive)


def _read(pbegin, label: str, files: list[str], fn: beam.DoFn, side: dict | None = None):
    return (
        pbegin
        | f"List{label}" >> beam.Create(files)
        | f"Reshuffle{label}" >> beam.Reshuffle()
        | f"Read{label}" >> beam.ParDo(fn, **(side or {})).with_outputs(REJECTS, SKIPPED_COUNTS, main="tables")
    )


class JoinFeverTables(beam.PTransform):
    """PBegin -> {'row_tables', 'rejects', 'skipped_counts'}: FEVER claims ⋈ wiki pages on Arrow tables."""

    def __init__(self, claims: list[str], pages: list[str], positive: str, clean: bool, spill: str | None = None):
        super().__init__()
        self.claims, self.pages, self.positive, self.clean, self.spill = claims, pages, positive, clean, spill

    def expand(self, pbegin):
        claims = _read(pbegin, "Claims", self.claims, ReadEvidenceTablesFn(self.positive, self.clean, self.spill))
        side = {}
        if STUB_UNNAMED:
            keys = claims.tables | "EvidenceKeys" >> beam.Map(evidence_keys)
            side = {"judged": beam.pvalue.AsList(keys)}
        pages = _read(pbegin, "Pages", self.pages, ReadPageTablesFn(self.spill), side)
        rows = (
            {CLAIMS: claims.tables, PAGES: pages.tables}
            | "GroupByPage" >> beam.CoGroupByKey()
            | "JoinEvidence"
            >> beam.ParDo(JoinEvidenceTablesFn(self.positive, self.clean)).with_outputs(REJECTS, main="rows")
        )
        parts = (claims, pages, rows)
        return {
            "row_tables": rows.rows,
            REJECTS: tuple(p[REJECTS] for p in parts) | "AllRejects" >> beam.Flatten(),
            "skipped_counts": (claims[SKIPPED_COUNTS], pages[SKIPPED_COUNTS]) | "AllSkipCounts" >> beam.Flatten(),
        }
