"""Structured documents (title, sections of paragraphs) and the pre-training pairs they give, for every source."""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.metrics import Metrics

from negminer.pipelines import io
from negminer.pipelines import schema as S
from negminer.pipelines.source import REJECTS, SKIPPED, skip
from negminer.pipelines.transforms import dedup, quality

TITLE_LEAD = "title-lead"
TITLE_BODY = "title-body"
HEADING_PARAGRAPH = "heading-paragraph"
ADJACENT_PARAGRAPH = "adjacent-paragraph"
PAIR_TYPES = (TITLE_LEAD, TITLE_BODY, HEADING_PARAGRAPH, ADJACENT_PARAGRAPH)
PATH_SEP = " › "


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


def lead_paragraph(doc: Doc, min_words: int = 0) -> tuple[int, int, str] | None:
    """(section index, paragraph index, text) of the first paragraph with >= min_words words, or None."""
    for si, sec in enumerate(doc.sections):
        for pi, para in enumerate(sec.paragraphs):
            if len(para.split()) >= min_words:
                return si, pi, para
    return None


def _row(doc: Doc, pair_type: str, query: tuple[str, str], positive: tuple[str, str], section: str) -> dict:
    return S.TupleRow(
        source=doc.source,
        pair_type=pair_type,
        query=query[1],
        query_id=query[0],
        positive=positive[1],
        positive_id=positive[0],
        provenance=S.provenance_json(**doc.provenance, section=section or None),
    ).to_dict()


def doc_pairs(doc: Doc, pair_types: Sequence[str], lead_min_words: int = 0) -> list[dict]:
    """Every pair of the requested types from one document (row dicts, not yet filtered).

    - title-lead / title-body: (title, first paragraph of the page with >= lead_min_words words);
      title-lead takes it from the lead section only (Wikipedia), title-body from anywhere (web pages);
    - heading-paragraph: (title › heading path, first paragraph of each section that has a heading);
    - adjacent-paragraph: (paragraph, next paragraph) inside one section.
    Ids: the query/positive id is `<doc key>` for a title and `<doc key>#s<section>p<paragraph>` for text.
    """
    rows = []

    def pid(si: int, pi: int) -> str:
        return f"{doc.key}#s{si}p{pi}"

    title = (doc.key, doc.title)
    for pt in (TITLE_LEAD, TITLE_BODY):
        if pt not in pair_types or not doc.title:
            continue
        # title-lead: the lead section only (before the first heading); title-body: the whole page.
        scope = doc.sections[:1] if pt == TITLE_LEAD and doc.sections and not doc.sections[0].path else ()
        lead = lead_paragraph(doc._replace(sections=scope if pt == TITLE_LEAD else doc.sections), lead_min_words)
        if lead is not None:
            section = PATH_SEP.join(doc.sections[lead[0]].path)
            rows.append(_row(doc, pt, title, (pid(lead[0], lead[1]), lead[2]), section))
    for si, sec in enumerate(doc.sections):
        section = PATH_SEP.join(sec.path)
        if HEADING_PARAGRAPH in pair_types and sec.path and sec.paragraphs:
            heading = PATH_SEP.join((doc.title, *sec.path)) if doc.title else section
            rows.append(
                _row(doc, HEADING_PARAGRAPH, (f"{doc.key}#s{si}", heading), (pid(si, 0), sec.paragraphs[0]), section)
            )
        if ADJACENT_PARAGRAPH in pair_types:
            for pi in range(len(sec.paragraphs) - 1):
                a, b = (pid(si, pi), sec.paragraphs[pi]), (pid(si, pi + 1), sec.paragraphs[pi + 1])
                rows.append(_row(doc, ADJACENT_PARAGRAPH, a, b, section))
    return rows


def doc_lines(doc: Doc) -> list[str]:
    """The page as lines (headings and paragraphs), for document-level filters."""
    return [line for sec in doc.sections for line in (*sec.path[-1:], *sec.paragraphs)]


class DocPairsFn(beam.DoFn):
    """Doc -> its pairs as row dicts; a page failing a document-level filter gives a skip per pair instead."""

    def __init__(self, pair_types: Sequence[str], cfg: quality.QualityConfig, lead_min_words: int = 0):
        self.pair_types, self.cfg, self.lead_min_words = tuple(pair_types), cfg, lead_min_words

    def process(self, doc: Doc) -> Iterator[Any]:
        rows = doc_pairs(doc, self.pair_types, self.lead_min_words)
        if not rows:
            yield skip("page:no_pairs")
            return
        problem = quality.document_problem(doc_lines(doc), self.cfg)
        if problem is not None:
            yield from quality.skip_all(rows, problem)
            return
        yield from rows


class DocsToPairs(beam.PTransform):
    """PCollection[Doc] -> {'rows': filtered, deduplicated row dicts, 'skipped': reason strings}.

    Wires the shared steps of every pre-training source: pairs per document (with document-level
    filters), pair-level quality filters, then exact and near-duplicate removal over the whole run.
    """

    def __init__(
        self,
        pair_types: Sequence[str],
        cfg: quality.QualityConfig,
        dedup_cfg: dedup.DedupConfig,
        lead_min_words: int = 0,
    ):
        super().__init__()
        self.pairs_fn = DocPairsFn(pair_types, cfg, lead_min_words)
        self.cfg, self.dedup_cfg = cfg, dedup_cfg

    def expand(self, docs):
        pairs = docs | "Pairs" >> beam.ParDo(self.pairs_fn).with_outputs(SKIPPED, main="rows")
        kept = pairs.rows | "Quality" >> quality.FilterPairs(self.cfg)
        unique = kept["rows"] | "Dedup" >> dedup.DedupPairs(self.dedup_cfg)
        skipped = (pairs[SKIPPED], kept["skipped"], unique["skipped"]) | "PairSkips" >> beam.Flatten()
        return {"rows": unique["rows"], "skipped": skipped}


def reject_at(path: str, reason: str, raw: Any, offset: int | None = None, line: int | None = None) -> Any:
    """A counted reject located by byte offset (WARC record, dump unit) or line, for file-level readers."""
    Metrics.counter("negminer", f"rejected_{reason}").inc()
    return beam.pvalue.TaggedOutput(REJECTS, io.make_reject(path, reason, raw, line=line, offset=offset))


def add_pretraining_arguments(parser: argparse.ArgumentParser, pair_types: Sequence[str]) -> None:
    """The flags every pre-training builder shares (after its own `--input` and format flags)."""
    parser.add_argument(
        "--pair-types", default=",".join(pair_types), help="comma-separated subset of " + ",".join(pair_types)
    )
    parser.add_argument("--num-shards", type=int, default=1, help="number of output shard files (default 1)")
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
