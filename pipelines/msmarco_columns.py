"""MS MARCO and BEIR on Arrow tables: qrels ⋈ queries ⋈ documents as hash-partitioned pyarrow joins of the tables
`qrel_columns` reads. The same rows, rejects and counts as the per-key joins of `transforms/join.py`.

Tables travel as (partition, table) with the partition a hash of the join key (`tables.string_partitions`), so one
CoGroupByKey per join brings every table of a key range to one DoFn call, which joins them with pyarrow.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.metrics import Metrics

from negminer.pipelines import io
from negminer.pipelines import schema as S
from negminer.pipelines.qrel_columns import (
    QREL,
    TEXT,
    ReadQrelTablesFn,
    ReadTextTablesFn,
    by_partition,
    reread_texts,
)
from negminer.pipelines.source import (
    REJECTS,
    Record,
    reject,
)
from negminer.pipelines.tables import (
    from_ipc,
    row_ids,
    take_rows,
    to_ipc,
)
from negminer.pipelines.transforms.partition import SKIPPED_COUNTS

QUERIES, QRELS, DOCS, PAIRS = "queries", "qrels", "docs", "pairs"

# collection passages (MS MARCO) and corpus documents (BEIR) no qrel judges cross the shuffle as id stubs, without
# their text; False: with it (tests, bench)
FILTER_UNJUDGED = True


def first_by_id(
    tables: Iterable[pa.Table], reason: str, clean: bool = True, json_docs: bool = False
) -> tuple[pa.Table, list]:
    """The first Text of each id by (path, line) (`join.first_text`), and a reject for every other one (the text of
    a stub is read again from its file: `id<TAB>text` lines, or BEIR documents with `json_docs`)."""
    texts = pa.concat_tables([from_ipc(t) for t in tables] or [TEXT.empty_table()])
    if len(pc.unique(texts["id"])) == texts.num_rows:  # no duplicate id: nothing to sort out
        return texts, []
    texts = take_rows(
        texts, pc.sort_indices(texts, sort_keys=[("id", "ascending"), ("path", "ascending"), ("line", "ascending")])
    )
    ids = texts["id"].combine_chunks()
    first = np.ones(len(ids), dtype=bool)
    if len(ids) > 1:
        first[1:] = pc.not_equal(ids.slice(1), ids.slice(0, len(ids) - 1)).to_numpy(zero_copy_only=False)
    dups = texts.filter(pa.array(~first)).to_pylist()
    again = reread_texts([t for t in dups if t["text"] is None], clean, json_docs)
    rejects = [
        reject(Record(t["path"], t["line"], f"{t['id']}\t{again.get((t['path'], t['line']), t['text'])}"), reason)
        for t in dups
    ]
    return texts.filter(pa.array(first)), rejects


def _qrel_rejects(table: pa.Table, reason: str) -> list:
    """`join.qrel_record` rejects of qrels (qid, doc_id, score, path, line columns)."""
    return [
        reject(Record(q["path"], q["line"], f"{q['qid']}\t{q['doc_id']}\t{q['score']:g}"), reason)
        for q in table.select(["qid", "doc_id", "score", "path", "line"]).to_pylist()
    ]


class JoinQueryTablesFn(beam.DoFn):
    """(partition, {queries, qrels}) -> (partition by doc id, pairs table: qrel columns + `query`); rejects:
    `duplicate_query_id`, `unknown_query` (as `join.JoinQueryFn`)."""

    def __init__(self, spill: str | None = None):
        self.spill = spill

    def setup(self) -> None:
        self.unused = Metrics.counter("negminer", "queries_without_qrels")

    def process(self, element: tuple[int, dict[str, Iterable[pa.Table]]]) -> Iterator[Any]:
        groups = element[1]
        queries, rejects = first_by_id(groups[QUERIES], "duplicate_query_id")
        yield from rejects
        qrels = pa.concat_tables([from_ipc(t) for t in groups[QRELS]] or [QREL.empty_table()])
        queries = queries.select(["id", "text"]).rename_columns(["qid", "query"])
        joined = qrels.join(queries, "qid", join_type="left outer", use_threads=False)
        known = pc.is_valid(joined["query"])
        yield from _qrel_rejects(joined.filter(pc.invert(known)), "unknown_query")
        self.unused.inc(queries.num_rows - len(pc.unique(qrels["qid"])) + _unknown_ids(joined, known))
        yield from by_partition(joined.filter(known), "doc_id", spill=self.spill)


def _doc_ids(element: tuple[int, bytes]) -> bytes:
    """A partition of qrels -> IPC bytes of its document ids (the side input of the collection reader)."""
    return to_ipc(pa.table({"doc_id": pc.unique(from_ipc(element[1])["doc_id"])}))


def _unknown_ids(joined: pa.Table, known: pa.ChunkedArray) -> int:
    """How many distinct qids of the qrels have no query (they are not queries without qrels)."""
    return len(pc.unique(joined.filter(pc.invert(known))["qid"])) if joined.num_rows else 0


class JoinDocTablesFn(beam.DoFn):
    """(partition, {docs, pairs}) -> a table of tuple rows; rejects: `duplicate_doc_id`, `unknown_passage`."""

    def __init__(self, spec: QrelJoin):
        self.spec = spec

    def setup(self) -> None:
        self.unused = Metrics.counter("negminer", "documents_without_qrels")

    def process(self, element: tuple[int, dict[str, Iterable[pa.Table]]]) -> Iterator[Any]:
        groups = element[1]
        docs, rejects = first_by_id(groups[DOCS], "duplicate_doc_id", self.spec.clean, self.spec.json_docs)
        yield from rejects
        pairs = [from_ipc(t) for t in groups[PAIRS]]
        if not pairs:
            self.unused.inc(docs.num_rows)
            return
        pairs = pa.concat_tables(pairs)
        docs = docs.select(["id", "text"]).rename_columns(["doc_id", "positive"])
        joined = pairs.join(docs, "doc_id", join_type="left outer", use_threads=False)
        known = pc.is_valid(joined["positive"])
        yield from _qrel_rejects(joined.filter(pc.invert(known)), self.spec.unknown_doc_reason)
        judged = len(pc.unique(pairs["doc_id"])) - (
            len(pc.unique(joined.filter(pc.invert(known))["doc_id"])) if joined.num_rows else 0
        )
        self.unused.inc(docs.num_rows - judged)
        joined = joined.filter(known)
        if joined.num_rows:
            yield rows_table(joined, self.spec.source, self.spec.pair_type, self.spec.score_key)


def provenance(pairs: pa.Table, score_key: str = "relevance") -> pa.Array:
    """Per pair `{"line": L, "qrels": PATH, "<score_key>": SCORE}` as `msmarco.pair_row` writes it (path and score by
    `json.dumps`, once per distinct value), joined by Arrow."""
    paths = pc.dictionary_encode(pairs["path"].combine_chunks())
    quoted = pa.array([json.dumps(p, ensure_ascii=False) for p in paths.dictionary.to_pylist()], pa.string())
    scores = pairs["score"].combine_chunks()
    distinct = pc.unique(scores)
    rel = pa.array([json.dumps(s) for s in distinct.to_pylist()], pa.string())
    return pc.binary_join_element_wise(
        '{"line": ',
        pc.cast(pairs["line"].combine_chunks(), pa.string()),
        ', "qrels": ',
        quoted.take(paths.indices),
        f', "{score_key}": ',
        rel.take(pc.index_in(scores, distinct)),
        "}",
        "",
    )


def rows_table(pairs: pa.Table, source: str, pair_type: str, score_key: str = "relevance") -> pa.Table:
    """Tuple rows (no negatives) of joined pairs, as `msmarco.pair_row(pair, [])` (`beir.pair_row` with
    `score_key="score"`) gives them."""
    n = pairs.num_rows
    empty = pa.ListArray.from_arrays(pa.array(np.zeros(n + 1, dtype=np.int32)), pa.array([], pa.string()))
    columns = {
        S.ID: row_ids(source, pairs["query"], pairs["positive"]),
        S.SOURCE: pa.array([source] * n, pa.string()),
        S.PAIR_TYPE: pa.array([pair_type] * n, pa.string()),
        S.QUERY: pairs["query"].combine_chunks(),
        S.QUERY_ID: pairs["qid"].combine_chunks(),
        S.POSITIVE: pairs["positive"].combine_chunks(),
        S.POSITIVE_ID: pairs["doc_id"].combine_chunks(),
        S.NEGATIVES: empty,
        S.NEGATIVE_IDS: empty,
        S.PROVENANCE: provenance(pairs, score_key),
    }
    return pa.Table.from_arrays([columns.get(f.name, pa.nulls(n, f.type)) for f in S.SCHEMA], schema=S.SCHEMA)


@dataclasses.dataclass(frozen=True)
class QrelJoin:
    """What a qrels ⋈ queries ⋈ documents build reads and how it decides (MS MARCO's defaults)."""

    queries: tuple[str, ...]
    qrels: tuple[str, ...]
    docs: tuple[str, ...]
    source: str
    pair_type: str = "qa"
    threshold: float = 1.0
    strict: bool = False  # a positive scores above the threshold (True) or at least it (False)
    below_reason: str = "below_min_relevance"
    unknown_doc_reason: str = "unknown_passage"
    score_key: str = "relevance"  # the score's key in the provenance
    clean: bool = True
    json_docs: bool = False  # BEIR JSON documents instead of id<TAB>text lines


class JoinQrelTables(beam.PTransform):
    """PBegin -> {'row_tables', 'rejects', 'skipped_counts'}: qrels ⋈ queries ⋈ documents on Arrow tables."""

    def __init__(self, spec: QrelJoin, spill: str | None = None):
        super().__init__()
        self.spec, self.spill = spec, spill  # spill: where tables cross the shuffles as files (`tables.ship`)
        self.queries, self.qrels = io.expand_patterns(spec.queries), io.expand_patterns(spec.qrels)
        self.docs = io.expand_patterns(spec.docs)

    def _read(self, pbegin, label: str, files: list[str], fn: beam.DoFn, side: dict | None = None):
        return (
            pbegin
            | f"List{label}" >> beam.Create(files)
            | f"Reshuffle{label}" >> beam.Reshuffle()
            | f"Read{label}" >> beam.ParDo(fn, **(side or {})).with_outputs(REJECTS, SKIPPED_COUNTS, main="tables")
        )

    def expand(self, pbegin):
        s = self.spec
        queries = self._read(pbegin, "Queries", self.queries, ReadTextTablesFn(s.clean, s.json_docs, self.spill))
        qrels = self._read(
            pbegin, "Qrels", self.qrels, ReadQrelTablesFn(s.threshold, s.strict, s.below_reason, self.spill)
        )
        side = {}
        if FILTER_UNJUDGED:
            judged = qrels.tables | "JudgedIds" >> beam.Map(_doc_ids)
            side = {"judged": beam.pvalue.AsList(judged)}
        docs = self._read(pbegin, "Collection", self.docs, ReadTextTablesFn(s.clean, s.json_docs, self.spill), side)
        by_doc = (
            {QUERIES: queries.tables, QRELS: qrels.tables}
            | "GroupByQuery" >> beam.CoGroupByKey()
            | "JoinQueries" >> beam.ParDo(JoinQueryTablesFn(self.spill)).with_outputs(REJECTS, main="pairs")
        )
        rows = (
            {DOCS: docs.tables, PAIRS: by_doc.pairs}
            | "GroupByDoc" >> beam.CoGroupByKey()
            | "JoinDocs" >> beam.ParDo(JoinDocTablesFn(self.spec)).with_outputs(REJECTS, main="rows")
        )
        parts = (queries, docs, qrels, by_doc, rows)
        return {
            "row_tables": rows.rows,
            REJECTS: tuple(p[REJECTS] for p in parts) | "AllRejects" >> beam.Flatten(),
            "skipped_counts": tuple(p[SKIPPED_COUNTS] for p in (queries, docs, qrels))
            | "AllSkipCounts" >> beam.Flatten(),
        }
