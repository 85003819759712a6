"""Shared parsing of labelled retrieval sets: id<TAB>text files, JSON-lines documents and qrels, as keyed records."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import apache_beam as beam

from negminer.pipelines.source import REJECTS, SKIPPED, ReadRecords, Record, parse_json_line, reject, skip
from negminer.pipelines.transforms.clean import clean_text

QREL_HEADER_IDS = frozenset({"query-id", "query_id", "qid", "queryid"})  # first column of a qrels header line
_PTB = {"-LRB-": "(", "-RRB-": ")", "-LSB-": "[", "-RSB-": "]", "-LCB-": "{", "-RCB-": "}", "-COLON-": ":"}
# an opening token eats the spaces after it, a closing one the spaces before it: `-LRB- film -RRB-` -> `(film)`
_PTB_RE = re.compile(r"-L[RSC]B-\s*|\s*-R[RSC]B-|-COLON-")


class Skip(NamedTuple):
    """A parse result for valid input that is not used (counted under `skipped`, not a reject)."""

    reason: str


class Text(NamedTuple):
    """A cleaned text with its id and where it came from (1-based line or Parquet row)."""

    id: str
    text: str
    path: str
    line: int


class Qrel(NamedTuple):
    """One relevance judgement: query `qid` judges document `doc_id` with `score`."""

    qid: str
    doc_id: str
    score: float
    path: str
    line: int


def tidy(text: str, clean: bool = True) -> str:
    """`clean_text` (mojibake repair, NFC, whitespace) when `clean`, else the text untouched."""
    return clean_text(text) if clean else text


def untokenize_ptb(text: str) -> str:
    """Penn-Treebank bracket tokens back to characters: `-LRB-film-RRB-` -> `(film)`."""
    return _PTB_RE.sub(lambda m: _PTB[m.group(0).strip()], text)


def title_and_text(title: str, text: str) -> str:
    """The positive of a titled document: `title text`, or the text alone when the title is empty."""
    title, text = title.strip(), text.strip()
    return f"{title} {text}" if title and text else title or text


def parse_id_text(record: Record, clean: bool = True) -> tuple[str, Text] | str:
    """`id<TAB>text` (MS MARCO collection/queries, TREC topics) -> (id, Text), or a reject reason."""
    if not isinstance(record.value, str):
        return "malformed_line"
    parts = record.value.split("\t", 1)
    if len(parts) != 2 or not parts[0].strip():
        return "malformed_line"
    doc_id, text = parts[0].strip(), tidy(parts[1], clean)
    if not text.strip():
        return "empty_text"
    return doc_id, Text(doc_id, text, record.path, record.line)


def _number(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


def qrel_fields(line: str) -> tuple[str, str, float] | str | Skip:
    """A qrels line: TREC `qid 0|Q0 docid rel` or BEIR `query-id corpus-id score` -> (qid, doc id, score).

    Tabs or spaces separate the columns. A BEIR header line (`query-id corpus-id score`) is a `Skip`; anything
    else that is not a judgement is the reason `malformed_qrel`.
    """
    fields = [f.strip() for f in line.split("\t")] if "\t" in line else line.split()
    if len(fields) == 4:
        qid, doc_id, score = fields[0], fields[2], fields[3]
    elif len(fields) == 3:
        qid, doc_id, score = fields
    else:
        return "malformed_qrel"
    value = _number(score)
    if value is None:
        return Skip("qrels_header") if qid.lower() in QREL_HEADER_IDS else "malformed_qrel"
    return qid, doc_id, value


def parse_qrel(record: Record) -> tuple[str, Qrel] | str | Skip:
    """A qrels record keyed by query id (see `qrel_fields`)."""
    if not isinstance(record.value, str):
        return "malformed_qrel"
    got = qrel_fields(record.value)
    if isinstance(got, (str, Skip)):
        return got
    qid, doc_id, value = got
    return qid, Qrel(qid, doc_id, value, record.path, record.line)


def beir_object(
    obj: Any, clean: bool = True, id_fields: Sequence[str] = ("_id",), text_fields: Sequence[str] = ("text",)
) -> tuple[str, str] | str:
    """The one BEIR document reader: a corpus or queries object (`_id`, optional `title`, `text`) -> (id,
    `title text`), or a reject reason (`missing_field:F`, `not_a_string:F`, `empty_text`, `json_not_an_object`).

    Other id / text field names may be allowed, the first one present wins (the miner's `--corpus` accepts `id`,
    `doc_id`, `contents`, ...). Builders, the miner and the trainer's evaluation all read BEIR files through this.
    """
    if not isinstance(obj, dict):
        return "json_not_an_object"
    id_field = next((f for f in id_fields if f in obj), id_fields[0])
    text_field = next((f for f in text_fields if f in obj), text_fields[0])
    doc_id, text, title = obj.get(id_field), obj.get(text_field), obj.get("title") or ""
    if doc_id is None or (isinstance(doc_id, str) and not doc_id.strip()):
        return f"missing_field:{id_field}"
    if not isinstance(text, str) or not isinstance(title, str):
        return f"missing_field:{text_field}" if text is None else f"not_a_string:{text_field}"
    full = tidy(title_and_text(title, text), clean)
    if not full.strip():
        return "empty_text"
    return str(doc_id), full


def parse_json_doc(record: Record, clean: bool = True, id_field: str = "_id") -> tuple[str, Text] | str:
    """A BEIR-style JSON document record -> (id, Text of title + text) (see `beir_object`)."""
    obj = parse_json_line(record)
    if isinstance(obj, str):
        return obj
    got = beir_object(obj, clean, (id_field,))
    if isinstance(got, str):
        return got
    return got[0], Text(got[0], got[1], record.path, record.line)


def plain(value: Any) -> Any:
    """A NamedTuple as a plain tuple, for the wire between steps; `Text._make(...)` etc. rebuild it.

    Beam encodes plain tuples natively but pickles NamedTuples: ~4x slower to encode and decode, and that
    was a large share of a build's CPU time (every keyed value crosses one or two shuffles).
    """
    return tuple(value) if isinstance(value, tuple) else value


class ParseKeyedFn(beam.DoFn):
    """Record -> (key, plain value) (or several) by a pure parse function; reasons to rejects, `Skip`s to skipped."""

    def __init__(self, parse: Callable[[Record], Any]):
        self.parse = parse

    def process(self, record: Record) -> Iterator[Any]:
        out = self.parse(record)
        if isinstance(out, list):  # a record that stands for several keyed values
            for key, value in out:
                yield key, plain(value)
        elif isinstance(out, Skip):
            yield skip(out.reason)
        elif isinstance(out, str):
            yield reject(record, out)
        else:
            yield out[0], plain(out[1])


class ReadKeyed(beam.PTransform):
    """PBegin -> {'keyed': (key, plain value), 'rejects': reject dicts, 'skipped': reasons} from files and a parse function.

    `parse` must be picklable (a module-level function or a functools.partial of one) for multi-process runners.
    """

    def __init__(self, patterns: list[str], parse: Callable[[Record], Any]):
        super().__init__()
        self.patterns, self.parse = list(patterns), parse

    def expand(self, pbegin):
        read = pbegin | "Read" >> ReadRecords(self.patterns)
        parsed = read["records"] | "Parse" >> beam.ParDo(ParseKeyedFn(self.parse)).with_outputs(
            REJECTS, SKIPPED, main="keyed"
        )
        rejects = (read[REJECTS], parsed[REJECTS]) | "Rejects" >> beam.Flatten()
        return {"keyed": parsed.keyed, REJECTS: rejects, SKIPPED: parsed[SKIPPED]}


def flatten_outputs(label: str, parts: list[dict[str, Any]], rows) -> dict[str, Any]:
    """{'rows', 'rejects', 'skipped'} for the sink: `rows` plus every part's rejects and skipped flattened."""
    p = rows.pipeline
    for part in parts:
        if not isinstance(part, dict):  # a DoOutputsTuple answers `in` by its PCollections, not its tags
            raise TypeError(f"flatten_outputs takes dicts of PCollections, got {type(part).__name__}")
    rejects = [part[REJECTS] for part in parts if REJECTS in part] or [p | f"{label}NoRejects" >> beam.Create([])]
    skipped = [part[SKIPPED] for part in parts if SKIPPED in part] or [p | f"{label}NoSkipped" >> beam.Create([])]
    return {
        "rows": rows,
        REJECTS: tuple(rejects) | f"{label}AllRejects" >> beam.Flatten(),
        SKIPPED: tuple(skipped) | f"{label}AllSkipped" >> beam.Flatten(),
    }
