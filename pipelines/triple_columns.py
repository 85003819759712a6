"""`build msmarco --triples` on Arrow tables: the triples' negatives attached to the joined pairs by a text key,
joined per hash partition with pyarrow/numpy. The same rows, rejects and counts as `msmarco.AttachNegativesFn`.

The triples are read in blocks (`lines.read_blocks`): plain lines (printable ASCII and tabs) are split, cleaned and
keyed by `pyarrow.compute`, every other line by `msmarco.parse_triple`. The pairs' text keys are computed the same
way (ASCII columnar, the rest by `msmarco.match_key`).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from negminer.pipelines import io, lines
from negminer.pipelines import schema as S
from negminer.pipelines.nli_columns import clean_ascii
from negminer.pipelines.qrel_columns import PARTITIONS, _left, _slow_items, _table, by_partition, plain_strings
from negminer.pipelines.source import REJECTS, _counter, line_record
from negminer.pipelines.tables import PartitionBuffer, from_ipc, take_rows
from negminer.pipelines.transforms.clean import normalize_for_match
from negminer.pipelines.transforms.partition import SKIPPED_COUNTS
from negminer.pipelines.transforms.tabular import tidy

KEY = "key"  # the text-match key column (`msmarco.match_key`)
SEP = "\x1f"  # between query and positive in a key (`msmarco._SEP`)
PAIRS, TRIPLES = "pairs", "triples"
TRIPLE = pa.schema([(KEY, pa.string()), ("negative", pa.string()), ("path", pa.string()), ("line", pa.int64())])


def match_keys(queries: pa.Array | pa.ChunkedArray, positives: pa.Array | pa.ChunkedArray) -> pa.Array:
    """`msmarco.match_key(q, p)` of every pair: ASCII texts in Arrow (NFKC and casefold are no-ops there but for
    the case, the whitespace collapse is `clean_ascii`), the others per pair in Python."""
    q, p = _combined(queries), _combined(positives)

    def norm(texts: pa.Array) -> pa.Array:
        return pc.ascii_lower(clean_ascii(texts))

    keys = pc.binary_join_element_wise(norm(q), norm(p), SEP)
    ascii_ = pc.and_(pc.string_is_ascii(q), pc.string_is_ascii(p)).to_numpy(zero_copy_only=False)
    other = np.flatnonzero(~ascii_)
    if not len(other):
        return keys
    taken = pa.array(other)
    slow = [
        normalize_for_match(a) + SEP + normalize_for_match(b)
        for a, b in zip(q.take(taken).to_pylist(), p.take(taken).to_pylist(), strict=True)
    ]
    mask = np.zeros(len(keys), dtype=bool)
    mask[other] = True
    return pc.replace_with_mask(keys, pa.array(mask), pa.array(slow, pa.string()))


def _combined(strings: pa.Array | pa.ChunkedArray) -> pa.Array:
    return strings.combine_chunks() if isinstance(strings, pa.ChunkedArray) else strings


def triple_table(block: lines.LineBlock, clean: bool) -> tuple[pa.Table, np.ndarray]:
    """`parse_triple` of a block's plain lines: (TRIPLE table of the lines it accepts, indexes of the lines left to
    the per-line path: not plain, not 3 fields, a field empty after clean-up). Blank lines are in neither."""
    plain, raw, blank = plain_strings(block)
    fields = pc.split_pattern(raw, "\t")
    keep = np.flatnonzero(~blank & (pc.list_value_length(fields).to_numpy(zero_copy_only=False) == 3))
    fields = fields.take(pa.array(keep))
    query, positive, negative = (pc.list_element(fields, i) for i in range(3))
    if clean:
        query, positive, negative = clean_ascii(query), clean_ascii(positive), clean_ascii(negative)
    ok = np.ones(len(keep), dtype=bool)
    for f in (query, positive, negative):
        ok &= pc.greater(pc.binary_length(pc.utf8_trim(f, lines.ASCII_WHITESPACE)), 0).to_numpy(zero_copy_only=False)
    mask = pa.array(ok)
    keys = match_keys(query.filter(mask), positive.filter(mask))
    numbers = pa.array(block.first + plain[keep[ok]], pa.int64())
    path = pa.array([block.path] * int(ok.sum()), pa.string())
    table = pa.Table.from_arrays([keys, negative.filter(mask), path, numbers], schema=TRIPLE)
    return table, _left(block, plain, keep[ok], blank)


def _parse_keyed_triple(record, clean: bool, tidy_text=None) -> Any:
    """`msmarco.parse_triple` with the key kept in the value (for `_slow_items`)."""
    from negminer.pipelines.msmarco import parse_triple

    out = parse_triple(record, clean, tidy_text)
    return out if isinstance(out, str) else (out[0], (out[0], *out[1]))


MEMO = 1 << 15  # cleaned texts a triples reader remembers: a positive recurs in every triple of its pair, a BM25
# negative in those of many queries, and ftfy (the non-ASCII clean-up) is the per-line path's main cost


class ReadTripleTablesFn(beam.DoFn):
    """path of a triples file -> (partition by text key, TRIPLE table shipped by `tables.ship`); rejects as
    `parse_triple` gives them (`malformed_line`, `empty_text`, undecodable and unreadable files)."""

    def __init__(self, clean: bool, spill: str | None = None):
        self.clean, self.spill = clean, spill

    def process(self, path: str) -> Iterator[Any]:
        memo = functools.lru_cache(maxsize=MEMO)(functools.partial(tidy, clean=self.clean))
        parse = functools.partial(_parse_keyed_triple, clean=self.clean, tidy_text=memo)
        out = PartitionBuffer(KEY, PARTITIONS, self.spill)
        for block in lines.read_blocks(path):
            if not isinstance(block, lines.LineBlock):
                yield block
                continue
            table, slow = triple_table(block, self.clean)
            rows: list[tuple] = []
            items = (line_record(path, block.first + int(i), block.raw(int(i))) for i in slow)
            yield from _slow_items(path, items, parse, rows, {})
            yield from out.add(pa.concat_tables([table, _table(rows, TRIPLE)]))
        yield from out.flush()


def key_by_text(rows: pa.Table, spill: str | None = None) -> Iterator[tuple[int, Any]]:
    """A table of tuple rows -> (partition by text key, the rows with a `key` column, shipped)."""
    keyed = rows.append_column(KEY, match_keys(rows[S.QUERY], rows[S.POSITIVE]))
    yield from by_partition(keyed, KEY, spill=spill)


def negative_lists(
    row_groups: np.ndarray, positives: pa.Array, cand_groups: np.ndarray, cand_texts: pa.Array
) -> tuple[pa.Array, np.ndarray]:
    """Per row: the distinct texts of the candidates of its group, in candidate order, without the row's positive
    (`msmarco.pair_row`'s `[n for n in dict.fromkeys(negatives) if n != positive]`). Candidates must be given grouped
    in ascending group order, in their order inside each group. Returns (texts, list offsets (n + 1,))."""
    n = len(row_groups)
    if len(cand_groups):
        ranks = pa.array(np.arange(len(cand_groups), dtype=np.int64))
        distinct = (
            pa.table({"g": pa.array(cand_groups, pa.int64()), "t": cand_texts, "r": ranks})
            .group_by(["g", "t"], use_threads=False)
            .aggregate([("r", "min")])
        )
        order = np.argsort(distinct["r_min"].to_numpy(), kind="stable")
        dg = distinct["g"].to_numpy()[order]
        dt = take_rows(distinct.select(["t"]), pa.array(order))["t"].combine_chunks()
    else:
        dg, dt = np.zeros(0, dtype=np.int64), pa.array([], pa.string())
    groups = np.arange(int(max(row_groups.max(initial=-1), dg.max(initial=-1))) + 1)
    starts, ends = np.searchsorted(dg, groups, "left"), np.searchsorted(dg, groups, "right")
    lens = (ends - starts)[row_groups] if n else np.zeros(0, dtype=np.int64)
    row_of = np.repeat(np.arange(n), lens)
    within = np.arange(int(lens.sum())) - np.repeat(np.cumsum(lens) - lens, lens)
    texts = dt.take(pa.array(np.repeat(starts[row_groups] if n else starts[:0], lens) + within))
    keep = pc.not_equal(texts, _combined(positives).take(pa.array(row_of))).to_numpy(zero_copy_only=False)
    counts = np.bincount(row_of[keep], minlength=n)
    return texts.filter(pa.array(keep)), np.r_[0, np.cumsum(counts)].astype(np.int32)


def with_negatives(rows: pa.Table, texts: pa.Array, offsets: np.ndarray) -> pa.Table:
    """Tuple rows (of `S.SCHEMA`) with their negatives set (ids null, as `TupleRow` gives them)."""
    offsets = pa.array(offsets, pa.int32())
    negatives = pa.ListArray.from_arrays(offsets, texts)
    ids = pa.ListArray.from_arrays(offsets, pa.nulls(len(texts), pa.string()))
    rows = rows.set_column(rows.schema.get_field_index(S.NEGATIVES), S.SCHEMA.field(S.NEGATIVES), negatives)
    return rows.set_column(rows.schema.get_field_index(S.NEGATIVE_IDS), S.SCHEMA.field(S.NEGATIVE_IDS), ids)


class AttachNegativeTablesFn(beam.DoFn):
    """(partition, {pairs, triples}) -> the partition's tuple rows with the negatives of the triples sharing their
    text key (by file and line, deduplicated, the positive left out); triples that match no pair are counted as
    `triple_without_pair` (one skipped-counts dict per partition)."""

    def process(self, element: tuple[int, dict[str, Iterable[Any]]]) -> Iterator[Any]:
        groups = element[1]
        pairs = [from_ipc(t) for t in groups[PAIRS]]
        triples = pa.concat_tables([from_ipc(t) for t in groups[TRIPLES]] or [TRIPLE.empty_table()])
        pairs = pa.concat_tables(pairs) if pairs else None
        keys = pc.unique(pairs[KEY]) if pairs is not None else pa.array([], pa.string())
        at = pc.index_in(triples[KEY], keys)
        unmatched = at.null_count
        if unmatched:
            _counter("negminer", "skipped_triple_without_pair").inc(unmatched)
            yield beam.pvalue.TaggedOutput(SKIPPED_COUNTS, {"triple_without_pair": unmatched})
        if pairs is None:
            return
        # the matched triples by (key, file, line): only the order is sorted (unmatched keys are null, sorted last),
        # then the negatives taken once; the key strings are not copied
        order = pc.sort_indices(
            pa.table({"g": at, "path": triples["path"], "line": triples["line"]}),
            [("g", "ascending"), ("path", "ascending"), ("line", "ascending")],
        ).slice(0, triples.num_rows - unmatched)
        negatives = take_rows(triples.select(["negative"]), order)["negative"].combine_chunks()
        row_groups = pc.index_in(pairs[KEY], keys).to_numpy(zero_copy_only=False).astype(np.int64)
        cand_groups = at.take(order).to_numpy(zero_copy_only=False).astype(np.int64)
        texts, offsets = negative_lists(row_groups, pairs[S.POSITIVE], cand_groups, negatives)
        yield with_negatives(pairs.drop_columns([KEY]).combine_chunks(), texts, offsets)


class AttachTripleTables(beam.PTransform):
    """{'row_tables', 'rejects', 'skipped_counts'} of the joined pairs -> the same with the triples' negatives."""

    def __init__(self, triples: Iterable[str], clean: bool, spill: str | None = None):
        super().__init__()
        self.files, self.clean, self.spill = io.expand_patterns(list(triples)), clean, spill

    def expand(self, joined):
        p = joined["row_tables"].pipeline
        triples = (
            p
            | "ListTriples" >> beam.Create(self.files)
            | "ReshuffleTriples" >> beam.Reshuffle()
            | "ReadTriples"
            >> beam.ParDo(ReadTripleTablesFn(self.clean, self.spill)).with_outputs(REJECTS, main="tables")
        )
        pairs = joined["row_tables"] | "KeyByText" >> beam.FlatMap(key_by_text, spill=self.spill)
        rows = (
            {PAIRS: pairs, TRIPLES: triples.tables}
            | "GroupByText" >> beam.CoGroupByKey()
            | "AttachNegatives" >> beam.ParDo(AttachNegativeTablesFn()).with_outputs(SKIPPED_COUNTS, main="rows")
        )
        return {
            "row_tables": rows.rows,
            REJECTS: (joined[REJECTS], triples[REJECTS]) | "TripleRejects" >> beam.Flatten(),
            "skipped_counts": (joined["skipped_counts"], rows[SKIPPED_COUNTS]) | "TripleSkipCounts" >> beam.Flatten(),
        }
