"""Common Crawl WARC (HTML responses) and WET (text conversions) -> filtered, deduplicated pre-training pairs.

Usage: negminer build webcrawl --input 'crawl/*.warc.gz' --output out/web [--pair-types title-body,...]
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from fastwarc.warc import ArchiveIterator, WarcRecord, WarcRecordType

from negminer.pipelines import docpairs, html, runner
from negminer.pipelines.converter import Converter
from negminer.pipelines.docpairs import Doc, DocsToPairs, reject_at
from negminer.pipelines.source import REJECTS, SKIPPED, skip
from negminer.pipelines.transforms import dedup, quality
from negminer.pipelines.warcunits import WarcUnit, warc_units

SOURCE = "webcrawl"
PAIR_TYPES = (docpairs.TITLE_BODY, docpairs.HEADING_PARAGRAPH, docpairs.ADJACENT_PARAGRAPH)
LEAD_MIN_WORDS = 10  # the body lead is the first paragraph of >= 10 words: shorter lines are bylines, menus
_USED = WarcRecordType.response | WarcRecordType.conversion


@dataclasses.dataclass(frozen=True)
class WebcrawlConfig:
    inputs: tuple[str, ...]
    output: str
    pair_types: tuple[str, ...] = PAIR_TYPES
    quality: quality.QualityConfig = dataclasses.field(default_factory=quality.QualityConfig)
    dedup: dedup.DedupConfig = dataclasses.field(default_factory=dedup.DedupConfig)
    num_shards: int | None = None  # None: from the input size (runner.auto_num_shards)
    split: str = "train"
    unit_mb: float = 64.0  # stored MB per work unit of a .warc.gz (whole gzip members) or plain .warc (whole records)

    def __post_init__(self) -> None:
        if not self.inputs:
            raise ValueError("at least one --input is required")
        object.__setattr__(self, "pair_types", docpairs.parse_pair_types(self.pair_types, PAIR_TYPES))
        runner.check_num_shards(self.num_shards)
        if self.unit_mb <= 0:
            raise ValueError(f"--unit-mb must be > 0, got {self.unit_mb}")


def _target_uri(rec: WarcRecord) -> str | None:
    uri = rec.headers.get("WARC-Target-URI")
    return uri.strip().strip("<>") if uri else None  # wget writes <https://...>


def record_doc(rec: WarcRecord, block: bytes, path: str) -> Doc | str:
    """A read WARC record (its whole block) to a Doc, or the reason: `record:<why>` skips, others rejects."""
    if len(block) < rec.content_length:
        return "truncated_record"
    if rec.headers.get("WARC-Truncated"):
        return f"warc_truncated:{rec.headers.get('WARC-Truncated')}"
    prov = {
        "file": path,
        "offset": rec.stream_pos,
        "url": _target_uri(rec),
        "record_id": rec.record_id,
        "crawl_date": rec.headers.get("WARC-Date"),
    }
    if rec.record_type == WarcRecordType.conversion:
        try:
            title, sections = html.wet_sections(block.decode("utf-8"))
        except UnicodeDecodeError as e:
            return f"undecodable_bytes:{e.reason}"
    else:
        try:
            payload = html.parse_http(block)
        except ValueError as e:
            return str(e)
        if payload.status != 200:
            return f"record:http_status_{payload.status}"
        if (payload.content_type or "").split(";")[0].strip() not in html.HTML_TYPES:
            return "record:not_html"
        text, prov["charset"] = html.decode_html(payload.body, payload.charset)
        title, sections = html.html_sections(text)
    if not sections:
        return "record:no_text"
    return Doc(SOURCE, rec.record_id or f"{path}@{rec.stream_pos}", title, sections, prov)


def iter_warc(path: str, start: int = 0, end: int | None = None) -> Iterator[tuple[int, Doc | str, str]]:
    """(offset, Doc or reason, raw head) for every record of a WARC/WET file (.gz/.zst/plain) that starts in
    [start, end) (a work unit, `warcunits`; the whole file by default), streamed.

    A record whose WARC header cannot be parsed ends the unit (the reader cannot find the next record):
    it is reported as `malformed_warc_header` at the offset of the last good record.
    """
    last_good = start
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        f.seek(start)
        records = ArchiveIterator(f, parse_http=False)  # offsets stay absolute: FastWARC asks the file
        while True:
            try:
                rec = next(records)
            except StopIteration:
                return
            except OSError as e:
                yield last_good, "malformed_warc_header", f"after the record at byte {last_good}: {e}"
                return
            if end is not None and rec.stream_pos >= end:
                return
            if not rec.record_type & _USED:
                last_good = rec.stream_pos
                yield rec.stream_pos, f"record:{rec.record_type}", ""
                continue
            block = rec.reader.read()
            last_good = rec.stream_pos
            yield rec.stream_pos, record_doc(rec, block, path), block[:2000].decode("utf-8", "replace")


class WarcDocsFn(beam.DoFn):
    """WarcUnit -> Doc per usable record; other record types and non-HTML skipped, broken records rejected."""

    def process(self, unit: WarcUnit) -> Iterator[Any]:
        path = unit.path
        for offset, doc, raw in iter_warc(path, unit.start, unit.end):
            if isinstance(doc, Doc):
                yield doc
            elif doc.startswith("record:"):
                yield skip(doc)
            else:
                yield reject_at(path, doc, raw, offset=offset)


class BuildWebcrawlPairs(beam.PTransform):
    """PBegin -> {'rows', 'rejects', 'skipped' (reason strings), 'skipped_counts' (dicts)} from WARC/WET files.

    A .warc.gz or plain .warc file larger than `unit_mb` is cut into work units at records, read in parallel
    (`warcunits`); a unit's documents are paired where they were read.
    """

    def __init__(self, inputs: list[str], config: WebcrawlConfig):
        super().__init__()
        self.inputs, self.config = inputs, config

    def expand(self, pbegin):
        cfg = self.config
        docs = (
            pbegin
            | "ListFiles" >> beam.Create(self.inputs)
            | "Units" >> beam.FlatMap(warc_units, unit_bytes=int(cfg.unit_mb * 2**20))
            | "SpreadUnits" >> beam.Reshuffle()
            | "ReadWarc" >> beam.ParDo(WarcDocsFn()).with_outputs(REJECTS, SKIPPED, main="docs")
        )
        # No reshuffle of the documents: reading (HTTP decoding, extraction) is most of the work and the units are
        # the parallelism, so pairing stays fused with its unit instead of shipping every page through a shuffle.
        pairs = docs.docs | "DocsToPairs" >> DocsToPairs(cfg.pair_types, cfg.quality, cfg.dedup, LEAD_MIN_WORDS)
        return {
            "rows": pairs["rows"],
            "rejects": docs[REJECTS],
            "skipped": (docs[SKIPPED], pairs["skipped"]) | "AllSkipped" >> beam.Flatten(),
            "skipped_counts": pairs["skipped_counts"],
        }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", nargs="+", required=True, action="extend", help="WARC/WET files, globs or dirs")
    parser.add_argument("--output", required=True, help="output shard directory (local or gs://)")
    parser.add_argument(
        "--unit-mb",
        type=float,
        default=64.0,
        help="stored MB per work unit of a .warc.gz or plain .warc file (default 64)",
    )
    docpairs.add_pretraining_arguments(parser, PAIR_TYPES)


def config_from_args(args: argparse.Namespace) -> WebcrawlConfig:
    return WebcrawlConfig(unit_mb=args.unit_mb, **docpairs.pretraining_fields(args, PAIR_TYPES))


CONVERTER = Converter("webcrawl", lambda c: c.inputs, lambda c, files: BuildWebcrawlPairs(files, c), config_from_args)
build = CONVERTER.build  # build(config, beam_args=()) -> manifest


def main(args: argparse.Namespace, beam_args: list[str]) -> int:
    """The `negminer build webcrawl` command (the module's `build`, looked up per call)."""
    return CONVERTER.main(args, beam_args, build)
