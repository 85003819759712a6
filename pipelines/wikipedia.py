"""Wikipedia (XML dump, WikiExtractor output, Hugging Face layout) -> filtered, deduplicated pre-training pairs.

Usage: negminer build wikipedia --input enwiki-*-pages-articles-multistream.xml.bz2 --output out/wiki \
    [--pair-types title-lead,heading-paragraph,adjacent-paragraph]
"""

from __future__ import annotations

import argparse
import dataclasses
import html
import posixpath
import re
from collections.abc import Iterator
from typing import Any

import apache_beam as beam

from negminer.pipelines import docpairs, runner, wikidump, wikitext
from negminer.pipelines.converter import Converter
from negminer.pipelines.docpairs import Doc, DocsToPairs, reject_at
from negminer.pipelines.source import (
    REJECTS,
    SKIPPED,
    ReadRecords,
    Record,
    parse_json_line,
    read_text_lines,
    reject,
    skip,
)
from negminer.pipelines.transforms import dedup, quality
from negminer.pipelines.transforms.clean import clean_text

SOURCE = "wikipedia"
PAIR_TYPES = (docpairs.TITLE_LEAD, docpairs.HEADING_PARAGRAPH, docpairs.ADJACENT_PARAGRAPH)
FORMATS = ("auto", "dump", "wikiextractor", "hf")
_HF_SUFFIXES = (".parquet", ".pq", ".jsonl", ".json", ".ndjson")
_DOC_OPEN = re.compile(r"^<doc\s+(.*?)>\s*$")
_ATTR = re.compile(r'(\w+)="([^"]*)"')


@dataclasses.dataclass(frozen=True)
class WikipediaConfig:
    inputs: tuple[str, ...]
    output: str
    pair_types: tuple[str, ...] = PAIR_TYPES
    input_format: str = "auto"
    quality: quality.QualityConfig = dataclasses.field(default_factory=quality.QualityConfig)
    dedup: dedup.DedupConfig = dataclasses.field(default_factory=dedup.DedupConfig)
    unit_mb: float = 64.0
    num_shards: int | None = None  # None: from the input size (runner.auto_num_shards)
    split: str = "train"

    def __post_init__(self) -> None:
        if not self.inputs:
            raise ValueError("at least one --input is required")
        object.__setattr__(self, "pair_types", docpairs.parse_pair_types(self.pair_types, PAIR_TYPES))
        if self.input_format not in FORMATS:
            raise ValueError(f"--format must be one of {FORMATS}, got {self.input_format!r}")
        if self.unit_mb <= 0:
            raise ValueError(f"--unit-mb must be > 0, got {self.unit_mb}")
        runner.check_num_shards(self.num_shards)


def input_format(path: str) -> str:
    """`dump` (*.xml*), `hf` (Parquet / JSON lines) or `wikiextractor` (anything else, e.g. wiki_00), by name."""
    name = posixpath.basename(path).lower()
    for ext in (".bz2", ".gz"):
        name = name.removesuffix(ext)
    if name.endswith(_HF_SUFFIXES):
        return "hf"
    return "dump" if ".xml" in name else "wikiextractor"


def page_doc(page: wikidump.RawPage) -> Doc | str:
    """A dump page to a Doc, or the reason it is not used (`page:<reason>`) / cannot be (`missing_field:<f>`)."""
    for name in ("page_id", "title", "ns", "text"):
        if getattr(page, name) is None:
            return f"missing_field:{name}"
    if page.ns != "0":
        return "page:namespace"
    if page.redirect:
        return "page:redirect"
    sections = wikitext.parse_page(page.title, page.text)
    if isinstance(sections, str):
        return f"page:{sections}"
    prov = {"file": page.path, "page_id": page.page_id, "revision_id": page.revision_id, "title": page.title}
    return Doc(SOURCE, page.page_id, clean_text(page.title), sections, prov)


def text_doc(obj: dict[str, Any], path: str, detect_headings: bool) -> Doc | str:
    """A WikiExtractor / Hugging Face page {id, url, title, text} to a Doc, or a reason."""
    for name in ("id", "title", "text"):
        if obj.get(name) is None:
            return f"missing_field:{name}"
        if not isinstance(obj[name], (str, int)):
            return f"not_a_string:{name}"
    title, text = clean_text(str(obj["title"])), str(obj["text"])
    if title.endswith("(disambiguation)"):
        return "page:disambiguation"
    head, _, rest = text.lstrip().partition("\n")
    if clean_text(head) == title:  # both layouts repeat the title as the first line
        text = rest
    sections = wikitext.text_sections(text, detect_headings)
    prov = {"file": path, "page_id": str(obj["id"]), "title": title, "url": obj.get("url")}
    return Doc(SOURCE, str(obj["id"]), title, sections, prov)


def iter_extractor_docs(path: str) -> Iterator[tuple[int, dict[str, Any] | str, str]]:
    """(line of `<doc>`, {id, url, title, text} or a reason, raw head) for each document of a WikiExtractor file."""
    open_line, attrs, lines = 0, None, []
    for n, raw in read_text_lines(path):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            yield n, f"undecodable_bytes:{e.reason}", raw.decode("utf-8", "replace")
            continue
        m = _DOC_OPEN.match(line)
        if m:
            if attrs is not None:
                yield open_line, "unclosed_doc", "\n".join(lines[:5])
            open_line, attrs, lines = n, {k: html.unescape(v) for k, v in _ATTR.findall(m.group(1))}, []
        elif line.strip() == "</doc>" and attrs is not None:
            yield open_line, {**attrs, "text": "\n".join(lines)}, ""
            attrs = None
        elif attrs is not None:
            lines.append(line)
        elif line.strip():
            yield n, "text_outside_doc", line
    if attrs is not None:
        yield open_line, "truncated_doc", "\n".join(lines[:5])


class DumpUnitsFn(beam.DoFn):
    """dump path -> its work units (runs of whole bz2 streams)."""

    def __init__(self, min_unit_bytes: int):
        self.min_unit_bytes = min_unit_bytes

    def process(self, path: str) -> Iterator[wikidump.DumpUnit]:
        yield from wikidump.dump_units(path, self.min_unit_bytes)


class ReadDumpUnitFn(beam.DoFn):
    """DumpUnit -> RawPage per <page>; a broken unit (bad bz2, truncated or malformed XML) to rejects."""

    def process(self, unit: wikidump.DumpUnit) -> Iterator[Any]:
        for item in wikidump.read_unit(unit):
            if isinstance(item, wikidump.DumpError):
                yield reject_at(item.path, item.reason, item.detail, offset=item.offset)
            else:
                yield item


class PageDocFn(beam.DoFn):
    """RawPage -> Doc; redirects, other namespaces and disambiguation pages to `skipped`, broken pages to rejects."""

    def process(self, page: wikidump.RawPage) -> Iterator[Any]:
        doc = page_doc(page)
        if isinstance(doc, Doc):
            yield doc
        elif doc.startswith("page:"):
            yield skip(doc)
        else:
            yield reject_at(page.path, doc, page.title or "", offset=page.offset)


class ExtractorDocsFn(beam.DoFn):
    """WikiExtractor file -> Doc per <doc>; unclosed, truncated or undecodable documents to rejects."""

    def process(self, path: str) -> Iterator[Any]:
        for line, obj, raw in iter_extractor_docs(path):
            doc = obj if isinstance(obj, str) else text_doc(obj, path, detect_headings=False)
            if isinstance(doc, str) and doc.startswith("page:"):
                yield skip(doc)
            elif isinstance(doc, str):
                yield reject_at(path, doc, raw or str(obj)[:200], line=line)
            else:
                yield doc


class HfDocFn(beam.DoFn):
    """Record of a Hugging Face `wikimedia/wikipedia` file -> Doc; unusable records to rejects."""

    def process(self, record: Record) -> Iterator[Any]:
        obj = parse_json_line(record)
        doc = obj if isinstance(obj, str) else text_doc(obj, record.path, detect_headings=True)
        if isinstance(doc, str):
            yield skip(doc) if doc.startswith("page:") else reject(record, doc)
        else:
            yield doc


class BuildWikipediaPairs(beam.PTransform):
    """PBegin -> {'rows', 'rejects', 'skipped' (reason strings), 'skipped_counts' (dicts)} from Wikipedia files.

    Dumps are cut into work units (runs of bz2 streams) that are read in parallel; pages are reshuffled
    before the (slow) wikitext parse so it spreads over workers even for a single-stream file.
    """

    def __init__(self, inputs: list[str], config: WikipediaConfig):
        super().__init__()
        self.config = config
        formats = {f: (config.input_format if config.input_format != "auto" else input_format(f)) for f in inputs}
        self.by_format = {k: sorted(f for f, v in formats.items() if v == k) for k in FORMATS[1:]}

    def expand(self, pbegin):
        cfg = self.config
        p = pbegin.pipeline
        units = (
            pbegin
            | "DumpFiles" >> beam.Create(self.by_format["dump"])
            | "Units" >> beam.ParDo(DumpUnitsFn(int(cfg.unit_mb * 2**20)))
            | "SpreadUnits" >> beam.Reshuffle()
        )
        pages = units | "ReadUnits" >> beam.ParDo(ReadDumpUnitFn()).with_outputs(REJECTS, main="pages")
        dump_docs = (
            pages.pages
            | "SpreadPages" >> beam.Reshuffle()
            | "ParsePages" >> beam.ParDo(PageDocFn()).with_outputs(REJECTS, SKIPPED, main="docs")
        )
        extractor_docs = (
            p
            | "ExtractorFiles" >> beam.Create(self.by_format["wikiextractor"])
            | "ReadExtractor" >> beam.ParDo(ExtractorDocsFn()).with_outputs(REJECTS, SKIPPED, main="docs")
        )
        rejects = [pages[REJECTS], dump_docs[REJECTS], extractor_docs[REJECTS]]
        docs = [dump_docs.docs, extractor_docs.docs]
        skipped = [dump_docs[SKIPPED], extractor_docs[SKIPPED]]
        if self.by_format["hf"]:
            read = p | "ReadHf" >> ReadRecords(self.by_format["hf"])
            hf_docs = read["records"] | "HfDocs" >> beam.ParDo(HfDocFn()).with_outputs(REJECTS, SKIPPED, main="docs")
            rejects += [read[REJECTS], hf_docs[REJECTS]]
            skipped.append(hf_docs[SKIPPED])
            docs.append(hf_docs.docs)
        pairs = (
            docs | "AllDocs" >> beam.Flatten() | "DocsToPairs" >> DocsToPairs(cfg.pair_types, cfg.quality, cfg.dedup)
        )
        return {
            "rows": pairs["rows"],
            "rejects": rejects | "AllRejects" >> beam.Flatten(),
            "skipped": [*skipped, pairs["skipped"]] | "AllSkipped" >> beam.Flatten(),
            "skipped_counts": pairs["skipped_counts"],
        }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", nargs="+", required=True, action="extend", help="files, globs or directories")
    parser.add_argument("--output", required=True, help="output shard directory (local or gs://)")
    parser.add_argument("--format", default="auto", choices=FORMATS, help="input layout (auto: by file name)")
    parser.add_argument("--unit-mb", type=float, default=64.0, help="compressed MB per dump work unit (default 64)")
    docpairs.add_pretraining_arguments(parser, PAIR_TYPES)


def config_from_args(args: argparse.Namespace) -> WikipediaConfig:
    fields = docpairs.pretraining_fields(args, PAIR_TYPES)
    return WikipediaConfig(input_format=args.format, unit_mb=args.unit_mb, **fields)


CONVERTER = Converter(
    "wikipedia", lambda c: c.inputs, lambda c, files: BuildWikipediaPairs(files, c), config_from_args
)
build = CONVERTER.build  # build(config, beam_args=()) -> manifest


def main(args: argparse.Namespace, beam_args: list[str]) -> int:
    """The `negminer build wikipedia` command (the module's `build`, looked up per call)."""
    return CONVERTER.main(args, beam_args, build)
