"""Structured documents (title, sections of paragraphs) and the pre-training pairs they give, for every source."""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.metrics import Metrics

from negminer.pipelines import io, runner
from negminer.pipelines import schema as S
from negminer.pipelines.source import REJECTS, _counter
from negminer.pipelines.transforms import dedup, quality

TITLE_LEAD = "title-lead"
TITLE_BODY = "title-body"
HEADING_PARAGRAPH = "heading-paragraph"
ADJACENT_PARAGRAPH = "adjacent-paragraph"
PAIR_TYPES = (TITLE_LEAD, TITLE_BODY, HEADING_PARAGRAPH, ADJACENT_PARAGRAPH)
PATH_SEP = " › "
SKIPPED_COUNTS = "skipped_counts"  # tag and output: dicts reason -> count, one per batch of documents


class Section(NamedTuple):
    """Headings from the top of the page down to this section (empty for the lead) and its paragraphs."""

    path: tuple[str, ...]
    paragraphs: tuple[str, ...]


class Doc(NamedTuple):
    """One page of any source, cleaned: its title, its sections and where it came from."""

    source: str
    key: str  # page id / WARC record id: the stem of query_id and positive_id
    title: str
    sections: tuple[Section, ...]
    provenance: dict[str, Any]


def parse_pair_types(spec: str | Sequence[str], allowed: Sequence[str]) -> tuple[str, ...]:
    """`title-lead,adjacent-paragraph` -> a tuple, in the order of `allowed`; an unknown name is an error."""
    names = [n.strip() for n in (spec.split(",") if isinstance(spec, str) else spec) if n.strip()]
    unknown = [n for n in names if n not in allowed]
    if unknown or not names:
        raise ValueError(f"pair types must be a non-empty subset of {list(allowed)}, got {names}")
    return tuple(n for n in allowed if n in names)


def lead_paragraph(sections: Sequence[Section], min_words: int = 0) -> tuple[int, int, str] | None:
    """(section index, paragraph index, text) of the first paragraph with >= min_words words, or None."""
    for si, sec in enumerate(sections):
        for pi, para in enumerate(sec.paragraphs):
            if len(para.split()) >= min_words:
                return si, pi, para
    return None


class Pair(NamedTuple):
    """A candidate pair of one document, before filters: its type, query and positive with ids, section path."""

    pair_type: str
    query_id: str
    query: str
    positive_id: str
    positive: str
    section: str


def pair_row(doc: Doc, pair: Pair, provenance: str | None = None) -> dict:
    """The row dict of a pair of `doc`: what `S.TupleRow(...).to_dict()` gives, built directly (it is per row).

    `provenance` is the pair's provenance JSON when the caller already has it (it is the same for a section).
    """
    if provenance is None:
        provenance = S.provenance_json(**doc.provenance, section=pair.section or None)
    row = dict.fromkeys(S.COLUMNS)
    row.update(
        {
            S.ID: S.make_id(doc.source, pair.query, pair.positive),
            S.SOURCE: doc.source,
            S.PAIR_TYPE: pair.pair_type,
            S.QUERY: pair.query,
            S.QUERY_ID: pair.query_id,
            S.POSITIVE: pair.positive,
            S.POSITIVE_ID: pair.positive_id,
            S.NEGATIVES: [],
            S.NEGATIVE_IDS: [],
            S.PROVENANCE: provenance,
        }
    )
    # What `S.row_problems` can find in a row built here (every required column is set, text or a list, no
    # negatives): an empty text. The plain test first; the full check only to word the error.
    if not (doc.source.strip() and pair.pair_type.strip() and pair.query.strip() and pair.positive.strip()):
        raise S.SchemaError(f"invalid row {row[S.ID]}: {'; '.join(S.row_problems(row))}")
    return row


def candidate_pairs(doc: Doc, pair_types: Sequence[str], lead_min_words: int = 0) -> list[Pair]:
    """Every pair of the requested types from one document (not yet filtered).

    - title-lead / title-body: (title, first paragraph of the page with >= lead_min_words words);
      title-lead takes it from the lead section only (Wikipedia), title-body from anywhere (web pages);
    - heading-paragraph: (title › heading path, first paragraph of each section that has a heading);
    - adjacent-paragraph: (paragraph, next paragraph) inside one section.
    Ids: the query/positive id is `<doc key>` for a title and `<doc key>#s<section>p<paragraph>` for text.
    """
    pairs = []

    def pid(si: int, pi: int) -> str:
        return f"{doc.key}#s{si}p{pi}"

    for pt in (TITLE_LEAD, TITLE_BODY):
        if pt not in pair_types or not doc.title:
            continue
        # title-lead: the lead section only (before the first heading); title-body: the whole page.
        scope = doc.sections[:1] if pt == TITLE_LEAD and doc.sections and not doc.sections[0].path else ()
        lead = lead_paragraph(scope if pt == TITLE_LEAD else doc.sections, lead_min_words)
        if lead is not None:
            section = PATH_SEP.join(doc.sections[lead[0]].path)
            pairs.append(Pair(pt, doc.key, doc.title, pid(lead[0], lead[1]), lead[2], section))
    heading_pairs, adjacent_pairs = HEADING_PARAGRAPH in pair_types, ADJACENT_PARAGRAPH in pair_types
    for si, sec in enumerate(doc.sections):
        section = PATH_SEP.join(sec.path)
        if heading_pairs and sec.path and sec.paragraphs:
            heading = PATH_SEP.join((doc.title, *sec.path)) if doc.title else section
            pairs.append(Pair(HEADING_PARAGRAPH, f"{doc.key}#s{si}", heading, pid(si, 0), sec.paragraphs[0], section))
        paras = sec.paragraphs
        if adjacent_pairs and len(paras) > 1:
            ids = [f"{doc.key}#s{si}p{pi}" for pi in range(len(paras))]  # each paragraph's id once, not per pair
            new = Pair._make  # (type, query id, query, positive id, positive, section) per adjacent pair
            pairs += [
                new((ADJACENT_PARAGRAPH, ids[pi], paras[pi], ids[pi + 1], paras[pi + 1], section))
                for pi in range(len(paras) - 1)
            ]
    return pairs


def doc_pairs(doc: Doc, pair_types: Sequence[str], lead_min_words: int = 0) -> list[dict]:
    """Every pair of the requested types from one document as row dicts (via `S.TupleRow`), not yet filtered."""
    rows = []
    for p in candidate_pairs(doc, pair_types, lead_min_words):
        prov = S.provenance_json(**doc.provenance, section=p.section or None)
        rows.append(
            S.TupleRow(
                doc.source, p.pair_type, p.query, p.positive, p.query_id, p.positive_id, provenance=prov
            ).to_dict()
        )
    return rows


def doc_lines(doc: Doc) -> list[str]:
    """The page as lines (headings and paragraphs), for document-level filters."""
    return [line for sec in doc.sections for line in (*sec.path[-1:], *sec.paragraphs)]


def filtered_rows(
    docs: Sequence[Doc], pair_types: Sequence[str], cfg: quality.QualityConfig, lead_min_words: int = 0
) -> tuple[list[dict], dict[str, int]]:
    """(rows that pass every filter, skip counts per reason) of a batch of documents (pure).

    A document without pairs counts `page:no_pairs`; one failing a document-level filter counts
    `filter:<name>:<pair_type>` for each of its pairs; otherwise each pair is checked by the pair-level filters.
    Row dicts (ids, provenance) are built only for the pairs kept.
    """
    rows: list[dict] = []
    skipped: Counter[str] = Counter()
    per_doc = [candidate_pairs(doc, pair_types, lead_min_words) for doc in docs]
    with_pairs = [i for i, pairs in enumerate(per_doc) if pairs]
    skipped["page:no_pairs"] += len(docs) - len(with_pairs)
    problems = quality.document_problems([doc_lines(docs[i]) for i in with_pairs], cfg)
    for i, problem in zip(with_pairs, problems, strict=True):
        provenance: dict[str, str] = {}  # per section of the document
        for pair in per_doc[i]:
            reason = problem or quality.pair_problem(pair.query, pair.positive, cfg)
            if reason is None:
                if pair.section not in provenance:
                    provenance[pair.section] = S.provenance_json(**docs[i].provenance, section=pair.section or None)
                rows.append(pair_row(docs[i], pair, provenance[pair.section]))
            else:
                skipped[quality.filter_reason(reason, pair.pair_type)] += 1
    return rows, {k: n for k, n in skipped.items() if n}


class DocPairsFn(beam.DoFn):
    """A batch of Docs -> the rows that pass the document- and pair-level filters, and one dict of skip counts.

    Batches let language id run over many pages at once and replace one Beam element per dropped pair by a count.
    """

    def __init__(self, pair_types: Sequence[str], cfg: quality.QualityConfig, lead_min_words: int = 0):
        self.pair_types, self.cfg, self.lead_min_words = tuple(pair_types), cfg, lead_min_words

    def process(self, docs: list[Doc]) -> Iterator[Any]:
        rows, skipped = filtered_rows(docs, self.pair_types, self.cfg, self.lead_min_words)
        yield from rows
        if skipped:
            for reason, n in skipped.items():
                _counter("negminer", f"skipped_{reason}").inc(n)
            yield beam.pvalue.TaggedOutput(SKIPPED_COUNTS, skipped)


class DocsToPairs(beam.PTransform):
    """PCollection[Doc] -> {'rows': filtered, deduplicated row dicts, 'skipped': reason strings,
    'skipped_counts': dicts reason -> count}.

    Wires the shared steps of every pre-training source: documents in batches of up to `batch` to their pairs
    (with document- and pair-level filters), then exact and near-duplicate removal over the whole run.
    """

    def __init__(
        self,
        pair_types: Sequence[str],
        cfg: quality.QualityConfig,
        dedup_cfg: dedup.DedupConfig,
        lead_min_words: int = 0,
        batch: int = 256,
    ):
        super().__init__()
        self.pairs_fn = DocPairsFn(pair_types, cfg, lead_min_words)
        self.dedup_cfg, self.batch = dedup_cfg, batch

    def expand(self, docs):
        pairs = (
            docs
            | "BatchDocs" >> beam.BatchElements(min_batch_size=self.batch, max_batch_size=self.batch)
            | "Pairs" >> beam.ParDo(self.pairs_fn).with_outputs(SKIPPED_COUNTS, main="rows")
        )
        unique = pairs.rows | "Dedup" >> dedup.DedupPairs(self.dedup_cfg)
        counts = (pairs[SKIPPED_COUNTS], unique[SKIPPED_COUNTS]) | "PairSkipCounts" >> beam.Flatten()
        return {"rows": unique["rows"], "skipped": unique["skipped"], SKIPPED_COUNTS: counts}


def reject_at(path: str, reason: str, raw: Any, offset: int | None = None, line: int | None = None) -> Any:
    """A counted reject located by byte offset (WARC record, dump unit) or line, for file-level readers."""
    Metrics.counter("negminer", f"rejected_{reason}").inc()
    return beam.pvalue.TaggedOutput(REJECTS, io.make_reject(path, reason, raw, line=line, offset=offset))


def add_pretraining_arguments(parser: argparse.ArgumentParser, pair_types: Sequence[str]) -> None:
    """The flags every pre-training builder shares (after its own `--input` and format flags)."""
    parser.add_argument(
        "--pair-types", default=",".join(pair_types), help="comma-separated subset of " + ",".join(pair_types)
    )
    runner.add_num_shards_argument(parser)
    parser.add_argument("--split", default="train", help="split name in the shard file names (default train)")
    quality.add_arguments(parser)
    dedup.add_arguments(parser)


def pretraining_fields(args: argparse.Namespace, pair_types: Sequence[str]) -> dict[str, Any]:
    """The config fields those shared flags (and `--input`, `--output`) set."""
    return dict(
        inputs=tuple(args.input),
        output=args.output,
        pair_types=parse_pair_types(args.pair_types, pair_types),
        quality=quality.config_from_args(args),
        dedup=dedup.config_from_args(args),
        num_shards=args.num_shards,
        split=args.split,
    )
