"""Beam joins of qrels with queries and documents (CoGroupByKey, never an in-memory dict of a collection)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.metrics import Metrics

from negminer.pipelines.source import REJECTS, SKIPPED, Record, reject, skip
from negminer.pipelines.transforms.tabular import Qrel, Text, plain

QUERIES, DOCS, QRELS, PAIRS = "queries", "docs", "qrels", "pairs"


class Pair(NamedTuple):
    """A judged (query, document) pair after both joins."""

    query: Text
    doc: Text
    qrel: Qrel

    def to_plain(self) -> tuple:
        """Nested plain tuples, as the join's output travels (Beam encodes them without pickling)."""
        return plain(self.query), plain(self.doc), plain(self.qrel)

    @classmethod
    def of(cls, value: tuple) -> Pair:
        """A Pair from its plain form (or from a Pair)."""
        return cls(Text._make(value[0]), Text._make(value[1]), Qrel._make(value[2]))


def qrel_record(q: Qrel) -> Record:
    """Where a qrel came from, for its reject (the raw line is rebuilt from its fields)."""
    return Record(q.path, q.line, f"{q.qid}\t{q.doc_id}\t{q.score:g}")


def first_text(texts: Iterable[Text]) -> tuple[Text | None, list[Text]]:
    """The first of texts sharing one id (by file and line, so the choice is deterministic) and the duplicates."""
    ordered = sorted(texts, key=lambda t: (t.path, t.line))
    return (ordered[0], ordered[1:]) if ordered else (None, [])


def text_record(t: Text) -> Record:
    return Record(t.path, t.line, f"{t.id}\t{t.text}")


class FilterQrelsFn(beam.DoFn):
    """(qid, Qrel) -> itself when its score passes the threshold, else a `skipped` reason."""

    def __init__(self, threshold: float, strict: bool, reason: str):
        self.threshold, self.strict, self.reason = threshold, strict, reason

    def process(self, element: tuple[str, tuple]) -> Iterator[Any]:
        score = Qrel._make(element[1]).score
        if score > self.threshold or (not self.strict and score == self.threshold):
            yield element
        else:
            yield skip(self.reason)


class JoinQueryFn(beam.DoFn):
    """(qid, {queries, qrels}) -> (doc_id, (Qrel, query Text) as plain tuples); qrels of an unknown query to rejects."""

    def __init__(self, unknown_reason: str = "unknown_query"):
        self.unknown_reason = unknown_reason
        self.unused = Metrics.counter("negminer", "queries_without_qrels")

    def process(self, element: tuple[str, dict[str, Iterable]]) -> Iterator[Any]:
        _, groups = element
        query, duplicates = first_text(map(Text._make, groups[QUERIES]))
        for dup in duplicates:
            yield reject(text_record(dup), "duplicate_query_id")
        qrels = list(map(Qrel._make, groups[QRELS]))
        if query is None:
            for q in qrels:
                yield reject(qrel_record(q), self.unknown_reason)
            return
        if not qrels:
            self.unused.inc()
        for q in qrels:
            yield q.doc_id, (plain(q), plain(query))


class JoinDocFn(beam.DoFn):
    """(doc_id, {docs, pairs}) -> Pair per qrel (plain: `Pair.of` rebuilds it); qrels of an unknown doc to rejects."""

    def __init__(self, unknown_reason: str = "unknown_passage"):
        self.unknown_reason = unknown_reason
        self.unused = Metrics.counter("negminer", "documents_without_qrels")

    def process(self, element: tuple[str, dict[str, Iterable]]) -> Iterator[Any]:
        _, groups = element
        doc, duplicates = first_text(map(Text._make, groups[DOCS]))
        for dup in duplicates:
            yield reject(text_record(dup), "duplicate_doc_id")
        judged = sorted(
            ((Qrel._make(q), Text._make(t)) for q, t in groups[PAIRS]), key=lambda qq: (qq[0].path, qq[0].line)
        )
        if doc is None:
            for qrel, _ in judged:
                yield reject(qrel_record(qrel), self.unknown_reason)
            return
        if not judged:
            self.unused.inc()
        for qrel, query in judged:
            yield Pair(query, doc, qrel).to_plain()


class JoinQrels(beam.PTransform):
    """{'queries': (qid, Text), 'docs': (doc_id, Text), 'qrels': (qid, Qrel)} -> {'pairs': Pair, 'rejects', 'skipped'}.

    Values travel as plain tuples (`tabular.plain`); the pairs come out as `Pair.to_plain()`, `Pair.of` reads them.

    Two CoGroupByKeys: qrels with queries by query id, then the result with documents by document id, so no
    worker ever holds more than one key's group. Qrels scoring below `threshold` (or at it, when `strict`)
    are skipped with `below_reason`; qrels whose query or document is missing are rejected.
    """

    def __init__(
        self,
        threshold: float = 1.0,
        strict: bool = False,
        below_reason: str = "below_min_relevance",
        unknown_doc_reason: str = "unknown_passage",
    ):
        super().__init__()
        self.threshold, self.strict = threshold, strict
        self.below_reason, self.unknown_doc_reason = below_reason, unknown_doc_reason

    def expand(self, inputs):
        kept = inputs[QRELS] | "MinScore" >> beam.ParDo(
            FilterQrelsFn(self.threshold, self.strict, self.below_reason)
        ).with_outputs(SKIPPED, main=QRELS)
        by_doc = (
            {QUERIES: inputs[QUERIES], QRELS: kept[QRELS]}
            | "GroupByQuery" >> beam.CoGroupByKey()
            | "JoinQueries" >> beam.ParDo(JoinQueryFn()).with_outputs(REJECTS, main=PAIRS)
        )
        pairs = (
            {DOCS: inputs[DOCS], PAIRS: by_doc[PAIRS]}
            | "GroupByDoc" >> beam.CoGroupByKey()
            | "JoinDocs" >> beam.ParDo(JoinDocFn(self.unknown_doc_reason)).with_outputs(REJECTS, main=PAIRS)
        )
        rejects = (by_doc[REJECTS], pairs[REJECTS]) | "JoinRejects" >> beam.Flatten()
        return {PAIRS: pairs[PAIRS], REJECTS: rejects, SKIPPED: kept[SKIPPED]}
