"""FEVER claims + wiki pages -> fact tuples: (claim, evidence sentence or page), one row per distinct evidence.

Usage: negminer build fever --claims train.jsonl --wiki-pages wiki-pages/ --output out/fever [--positive sentence|page]
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import unicodedata
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import apache_beam as beam

from negminer.pipelines import io, runner
from negminer.pipelines import schema as S
from negminer.pipelines.converter import Converter
from negminer.pipelines.source import REJECTS, Record, parse_json_line, reject
from negminer.pipelines.tables import spill_dir
from negminer.pipelines.transforms.partition import SKIPPED_COUNTS, ReadKeyedBatches, partition_join
from negminer.pipelines.transforms.tabular import Skip, tidy, title_and_text, untokenize_ptb

SOURCE, PAIR_TYPE = "fever", "fact"
SUPPORTS, REFUTES, NEI = "SUPPORTS", "REFUTES", "NOT ENOUGH INFO"
POSITIVES = ("sentence", "page")
CLAIMS, PAGES = "claims", "pages"


class Evidence(NamedTuple):
    """One distinct piece of evidence of one claim (line is None in page mode)."""

    claim_id: str
    claim: str
    label: str
    page: str
    line: int | None
    path: str
    record_line: int


class Page(NamedTuple):
    """A wiki page: its readable title, its text (page mode) and its numbered sentences (sentence mode)."""

    id: str
    title: str
    text: str
    sentences: dict[int, str]
    path: str
    line: int


@dataclasses.dataclass(frozen=True)
class FeverConfig:
    claims: tuple[str, ...]
    wiki_pages: tuple[str, ...]
    output: str
    positive: str = "sentence"
    clean: bool = True
    num_shards: int | None = None  # None: from the input size (runner.auto_num_shards)
    split: str = "train"

    def __post_init__(self) -> None:
        if not self.claims or not self.wiki_pages:
            raise ValueError("both --claims and --wiki-pages are required")
        if self.positive not in POSITIVES:
            raise ValueError(f"--positive must be one of {POSITIVES}, got {self.positive!r}")
        runner.check_num_shards(self.num_shards)


def page_key(page_id: str) -> str:
    """Join key of a page id: NFC, since FEVER dumps mix NFC and NFD spellings of the same title."""
    return unicodedata.normalize("NFC", page_id)


def page_title(page_id: str) -> str:
    """`Soul_Food_-LRB-film-RRB-` -> `Soul Food (film)`."""
    return untokenize_ptb(page_id.replace("_", " ")).strip()


def parse_wiki_lines(lines: str) -> dict[int, str]:
    """The `lines` field (`n<TAB>sentence<TAB>anchor...` per line) -> {n: sentence}, empty sentences left out.

    Pieces that do not start with a line number continue the previous line's anchors (a newline inside an
    anchor, as in the real dump) and are ignored.
    """
    out: dict[int, str] = {}
    for piece in lines.split("\n"):
        head, _, rest = piece.partition("\t")
        if not head.isdecimal():  # not isdigit: int() refuses digits such as "²", which isdigit accepts
            continue
        sentence = rest.split("\t", 1)[0]
        if sentence.strip():
            out[int(head)] = sentence
    return out


def parse_claim(
    record: Record, positive: str = "sentence", clean: bool = True
) -> list[tuple[str, Evidence]] | str | Skip:
    """An official FEVER claim -> (page key, Evidence) per distinct evidence; NEI claims are a `Skip`."""
    obj = parse_json_line(record)
    if isinstance(obj, str):
        return obj
    label, claim, evidence = obj.get("label"), obj.get("claim"), obj.get("evidence")
    if label == NEI:
        return Skip("not_enough_info")
    if label not in (SUPPORTS, REFUTES):
        return "unknown_label"
    if not isinstance(claim, str):
        return "missing_field:claim"
    claim = tidy(claim, clean)
    if not claim.strip():
        return "empty_text"
    found = evidence_pages(evidence, positive)
    if isinstance(found, str):
        return found
    cid = str(obj.get("id"))
    return [(page_key(p), Evidence(cid, claim, label, p, n, record.path, record.line)) for p, n in found]


def evidence_pages(evidence: Any, positive: str) -> dict[tuple[str, int | None], None] | str:
    """A claim's evidence sets -> its distinct (page, sentence line) pairs (line None for `--positive page`), or a
    reject reason (`malformed_evidence`, `no_evidence`)."""
    if not isinstance(evidence, list) or not all(isinstance(s, list) for s in evidence):
        return "malformed_evidence"
    found: dict[tuple[str, int | None], None] = {}
    for entry in (e for s in evidence for e in s):
        if not isinstance(entry, list) or len(entry) != 4:
            return "malformed_evidence"
        page, line = entry[2], entry[3]
        if not isinstance(page, str) or not page or isinstance(line, bool) or not isinstance(line, int):
            return "malformed_evidence"
        found[(page, line if positive == "sentence" else None)] = None
    return found or "no_evidence"


def page_fields(record: Record) -> tuple[str, str, str, str] | str | Skip:
    """A `wiki-*.jsonl` line -> (page key, id, raw text, raw lines); a page without text is a `Skip`, one without id
    a reject. The checks of `parse_page`, shared with the columnar reader (`fever_columns`)."""
    obj = parse_json_line(record)
    if isinstance(obj, str):
        return obj
    page_id, text, lines = obj.get("id"), obj.get("text") or "", obj.get("lines") or ""
    if not isinstance(page_id, str) or not page_id.strip():
        return "empty_page_id"
    if not isinstance(text, str) or not isinstance(lines, str):
        return "not_a_string:text"
    if not text.strip() and not parse_wiki_lines(lines):
        return Skip("empty_page")
    return page_key(page_id), page_id, text, lines


def page_positive(title: str, text: str, sentences: dict[int, str], clean: bool = True) -> str:
    """The positive of `--positive page`: `title text`, the text being the sentences in order when it is blank."""
    body = text if text.strip() else " ".join(sentences[k] for k in sorted(sentences))
    return tidy(title_and_text(title, untokenize_ptb(body)), clean)


def parse_page(record: Record, positive: str = "sentence", clean: bool = True) -> tuple[str, Page] | str | Skip:
    """A `wiki-*.jsonl` line -> (page key, Page); a page without text is a `Skip`, one without id a reject."""
    got = page_fields(record)
    if isinstance(got, (str, Skip)):
        return got
    key, page_id, text, lines = got
    sentences = parse_wiki_lines(lines)
    title = page_title(page_id)
    if positive == "page":
        return key, Page(page_id, title, page_positive(title, text, sentences, clean), {}, record.path, record.line)
    sentences = {k: tidy(untokenize_ptb(v), clean) for k, v in sentences.items()}
    return key, Page(page_id, title, "", sentences, record.path, record.line)


def evidence_record(ev: Evidence) -> Record:
    raw = json.dumps({"id": ev.claim_id, "claim": ev.claim, "page": ev.page, "line": ev.line}, ensure_ascii=False)
    return Record(ev.path, ev.record_line, raw)


def evidence_row(ev: Evidence, page: Page) -> dict[str, Any] | str:
    """The row of one evidence on its page, or the reject reason when the page lacks that line."""
    if ev.line is None:
        positive, positive_id = page.text, page.id
    else:
        positive, positive_id = page.sentences.get(ev.line, ""), f"{page.id}:{ev.line}"
    if not positive.strip():
        return "missing_line"
    row = S.TupleRow(
        source=SOURCE,
        pair_type=PAIR_TYPE,
        query=ev.claim,
        query_id=ev.claim_id,
        positive=positive,
        positive_id=positive_id,
        provenance=S.provenance_json(
            file=ev.path, line=ev.record_line, page=page.id, title=page.title, sentence=ev.line, label=ev.label
        ),
    )
    return row.to_dict()


class EvidenceRowsFn(beam.DoFn):
    """(page key, {claims, pages}) -> rows; evidence on a missing page or line to rejects."""

    def process(self, element: tuple[str, dict[str, Iterable]]) -> Iterator[Any]:
        _, groups = element
        pages = sorted(map(Page._make, groups[PAGES]), key=lambda pg: (pg.path, pg.line))
        for dup in pages[1:]:
            yield reject(Record(dup.path, dup.line, dup.id), "duplicate_page_id")
        for ev in sorted(map(Evidence._make, groups[CLAIMS]), key=lambda e: (e.path, e.record_line, e.line or 0)):
            row = evidence_row(ev, pages[0]) if pages else "missing_page"
            yield reject(evidence_record(ev), row) if isinstance(row, str) else row


def _itself(value: Any) -> list[Any]:
    return [value]


COLUMNAR = True  # Arrow tables and pyarrow joins (fever_columns.py); False: the keyed-batch path, kept to test against


class BuildFeverTuples(beam.PTransform):
    """PBegin -> {'row_tables' or 'row_batches', 'rejects', 'skipped_counts'}: claims ⋈ wiki pages by page key.

    By default on Arrow tables (`fever_columns.JoinFeverTables`: pages read by pyarrow's JSON reader, one pyarrow
    join per hash partition). With `columnar=False` claims and pages travel as keyed batches hash-partitioned by
    page key (`transforms/partition.py`): one CoGroupByKey per partition runs `EvidenceRowsFn` on every page of the
    partition. Both give the same rows and rejects.
    """

    def __init__(self, config: FeverConfig, spill: str | None = None, columnar: bool | None = None):
        super().__init__()
        self.config, self.spill = config, spill  # spill: where tables cross the shuffles as files (`tables.ship`)
        self.columnar = COLUMNAR if columnar is None else columnar

    def expand(self, pbegin):
        c = self.config
        if self.columnar:
            from negminer.pipelines.fever_columns import JoinFeverTables  # it imports this module

            files = io.expand_patterns(list(c.claims)), io.expand_patterns(list(c.wiki_pages))
            return pbegin | "JoinTables" >> JoinFeverTables(*files, c.positive, c.clean, self.spill)
        claims = pbegin | "ReadClaims" >> ReadKeyedBatches(
            list(c.claims), functools.partial(parse_claim, positive=c.positive, clean=c.clean)
        )
        pages = pbegin | "ReadPages" >> ReadKeyedBatches(
            list(c.wiki_pages), functools.partial(parse_page, positive=c.positive, clean=c.clean)
        )
        built = partition_join(
            "ByPage", {CLAIMS: claims["keyed"], PAGES: pages["keyed"]}, EvidenceRowsFn(), _itself, rekey=False
        )
        parts = (claims, pages, built)
        return {
            "row_batches": built.main,
            REJECTS: tuple(part[REJECTS] for part in parts) | "AllRejects" >> beam.Flatten(),
            "skipped_counts": tuple(part[SKIPPED_COUNTS] for part in parts) | "AllSkipCounts" >> beam.Flatten(),
        }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    many = {"nargs": "+", "action": "extend", "required": True}
    parser.add_argument("--claims", **many, help="FEVER claims JSON lines (id, label, claim, evidence)")
    parser.add_argument(
        "--wiki-pages", **many, help="wiki-pages directory, glob or files (wiki-*.jsonl, or Parquet: id, text, lines)"
    )
    parser.add_argument("--output", required=True, help="output shard directory (local or gs://)")
    parser.add_argument(
        "--positive", default="sentence", choices=POSITIVES, help="evidence sentence (default) or page"
    )
    parser.add_argument(
        "--no-clean", action="store_true", help="keep text as is (no mojibake repair / NFC / whitespace)"
    )
    runner.add_num_shards_argument(parser)
    parser.add_argument("--split", default="train", help="split name in the shard file names (default train)")


def config_from_args(args: argparse.Namespace) -> FeverConfig:
    return FeverConfig(
        claims=tuple(args.claims),
        wiki_pages=tuple(args.wiki_pages),
        output=args.output,
        positive=args.positive,
        clean=not args.no_clean,
        num_shards=args.num_shards,
        split=args.split,
    )


CONVERTER = Converter(
    "fever",
    lambda c: [*c.claims, *c.wiki_pages],
    lambda c, files: BuildFeverTuples(c, spill_dir(c.output, c.split)),
    config_from_args,
)
build = CONVERTER.build  # build(config, beam_args=()) -> manifest


def main(args: argparse.Namespace, beam_args: list[str]) -> int:
    """The `negminer build fever` command (the module's `build`, looked up per call)."""
    return CONVERTER.main(args, beam_args, build)
