"""MS MARCO passage ranking -> QA tuples: one row per (query, relevant passage), BM25 negatives from the triples.

Usage: negminer build msmarco --collection collection.tsv --queries queries.train.tsv --qrels qrels.train.tsv \
    [--triples triples.train.small.tsv] [--min-relevance 1] --output out/msmarco
   or: negminer build msmarco --hf 'ms_marco/v2.1/train-*.parquet' --output out/msmarco
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

import apache_beam as beam

from negminer.pipelines import io, runner
from negminer.pipelines import schema as S
from negminer.pipelines.converter import Converter
from negminer.pipelines.hf_columns import ReadHfTablesFn
from negminer.pipelines.msmarco_columns import JoinQrelTables, QrelJoin
from negminer.pipelines.source import REJECTS, ReadRecordsFn, Record, _counter, parse_json_line, reject, skip
from negminer.pipelines.tables import spill_dir
from negminer.pipelines.transforms.clean import normalize_for_match
from negminer.pipelines.transforms.join import DOCS, PAIRS, QRELS, QUERIES, JoinDocFn, JoinQueryFn, Pair
from negminer.pipelines.transforms.partition import SKIPPED_COUNTS, ReadKeyedBatches, partition_join
from negminer.pipelines.transforms.tabular import Qrel, parse_id_text, parse_qrel, tidy
from negminer.pipelines.triple_columns import SEP as _SEP  # between query and positive in a text-match key
from negminer.pipelines.triple_columns import AttachTripleTables

SOURCE, PAIR_TYPE = "msmarco", "qa"
TRIPLES = "triples"
COLUMNAR_TRIPLES = True  # --triples on Arrow tables (triple_columns.py); False: the keyed-batch path (tests, bench)
COLUMNAR_HF = True  # --hf Parquet records on Arrow (hf_columns.py); False: every record by parse_hf_row (tests, bench)


class Triple(NamedTuple):
    negative: str
    path: str
    line: int


@dataclasses.dataclass(frozen=True)
class MsMarcoConfig:
    output: str
    collection: tuple[str, ...] = ()
    queries: tuple[str, ...] = ()
    qrels: tuple[str, ...] = ()
    triples: tuple[str, ...] = ()
    hf: tuple[str, ...] = ()
    min_relevance: float = 1.0
    clean: bool = True
    num_shards: int | None = None  # None: from the input size (runner.auto_num_shards)
    split: str = "train"

    def __post_init__(self) -> None:
        official = {"--collection": self.collection, "--queries": self.queries, "--qrels": self.qrels}
        given = [k for k, v in official.items() if v]
        if self.hf and (given or self.triples):
            raise ValueError(f"--hf cannot be combined with {given + (['--triples'] if self.triples else [])}")
        if not self.hf and len(given) != 3:
            missing = [k for k, v in official.items() if not v]
            raise ValueError(f"give --hf, or all of --collection --queries --qrels (missing {missing})")
        runner.check_num_shards(self.num_shards)

    def inputs(self) -> list[str]:
        return [*self.collection, *self.queries, *self.qrels, *self.triples, *self.hf]


def match_key(query: str, positive: str) -> str:
    """Key that joins a (query, positive) pair with the triples that share its text (case/space-insensitive)."""
    return normalize_for_match(query) + _SEP + normalize_for_match(positive)


def parse_triple(
    record: Record, clean: bool = True, tidy_text: Callable[[str], str] | None = None
) -> tuple[str, Triple] | str:
    """`query<TAB>positive<TAB>negative` -> (match key, Triple), or a reject reason. `tidy_text` (optional) stands
    for `tidy(text, clean)`, e.g. a memoised one."""
    if not isinstance(record.value, str):
        return "malformed_line"
    parts = record.value.split("\t")
    if len(parts) != 3:
        return "malformed_line"
    query, positive, negative = (tidy_text(p) if tidy_text else tidy(p, clean) for p in parts)
    if not (query.strip() and positive.strip() and negative.strip()):
        return "empty_text"
    return match_key(query, positive), Triple(negative, record.path, record.line)


def pair_row(pair: Pair | tuple, negatives: list[str]) -> dict[str, Any]:
    """The tuple row of a joined (query, passage) pair (a `Pair` or its plain form)."""
    q, d, rel = Pair.of(pair)
    negatives = [n for n in dict.fromkeys(negatives) if n != d.text]
    row = S.TupleRow(
        source=SOURCE,
        pair_type=PAIR_TYPE,
        query=q.text,
        query_id=q.id,
        positive=d.text,
        positive_id=d.id,
        negatives=tuple(negatives),
        provenance=S.provenance_json(qrels=rel.path, line=rel.line, relevance=rel.score),
    )
    return row.to_dict()


def _passages(obj: dict[str, Any]) -> list[tuple[int, str, str | None]] | str:
    """(is_selected, passage_text, url) of a Hugging Face row: `passages` as a dict of lists or a list of dicts."""
    ps = obj.get("passages")
    if isinstance(ps, dict):
        texts, sel, urls = ps.get("passage_text"), ps.get("is_selected"), ps.get("url") or []
        if not isinstance(texts, list) or not isinstance(sel, list) or len(texts) != len(sel):
            return "malformed_passages"
        urls = (list(urls) + [None] * len(texts))[: len(texts)]
        return list(zip(sel, texts, urls, strict=True))
    if isinstance(ps, list) and all(isinstance(p, dict) for p in ps):
        return [(p.get("is_selected"), p.get("passage_text"), p.get("url")) for p in ps]
    return "missing_field:passages" if ps is None else "malformed_passages"


def parse_hf_row(obj: dict[str, Any], path: str = "", line: int = 0, clean: bool = True) -> list[dict] | str:
    """A `microsoft/ms_marco` row -> one row per selected passage, the unselected ones as negatives."""
    query, qid = obj.get("query"), obj.get("query_id")
    if not isinstance(query, str):
        return "missing_field:query"
    query = tidy(query, clean)
    if not query.strip():
        return "empty_text"
    passages = _passages(obj)
    if isinstance(passages, str):
        return passages
    if any(not isinstance(t, str) for _, t, _ in passages):
        return "malformed_passages"
    cleaned = [(bool(s), tidy(t, clean), u) for s, t, u in passages if t.strip()]
    negatives = [t for s, t, _ in cleaned if not s and t.strip()]
    rows = []
    for selected, text, url in cleaned:
        if not selected or not text.strip():
            continue
        row = S.TupleRow(
            source=SOURCE,
            pair_type=PAIR_TYPE,
            query=query,
            query_id=None if qid is None else str(qid),
            positive=text,
            negatives=tuple(n for n in dict.fromkeys(negatives) if n != text),
            provenance=S.provenance_json(file=path, line=line, url=url),
        )
        rows.append(row.to_dict())
    return rows


HF_BATCH = 4096  # rows per element out of a Hugging Face layout file


class ParseHfFileFn(beam.DoFn):
    """path of a Hugging Face layout file -> lists of up to HF_BATCH rows; malformed records to rejects one by one,
    rows without a selected passage counted in one skipped-counts dict per file (not one element per record)."""

    def __init__(self, clean: bool):
        self.clean = clean

    def process(self, path: str) -> Iterator[Any]:
        batch: list[dict] = []
        skipped = 0
        for record in ReadRecordsFn().process(path):
            if not isinstance(record, Record):
                yield record  # a reject of the reader
                continue
            obj = parse_json_line(record)
            rows = obj if isinstance(obj, str) else parse_hf_row(obj, record.path, record.line, self.clean)
            if isinstance(rows, str):
                yield reject(record, rows)
            elif not rows:
                skipped += 1
            else:
                batch += rows
                if len(batch) >= HF_BATCH:
                    yield batch
                    batch = []
        if batch:
            yield batch
        if skipped:
            _counter("negminer", "skipped_no_selected_passage").inc(skipped)
            yield beam.pvalue.TaggedOutput(SKIPPED_COUNTS, {"no_selected_passage": skipped})


class KeyByTextFn(beam.DoFn):
    """Pair -> (match key, Pair), to meet the triples that carry its text."""

    def process(self, pair: tuple) -> Iterator[tuple[str, tuple]]:
        p = Pair.of(pair)
        yield match_key(p.query.text, p.doc.text), pair


class AttachNegativesFn(beam.DoFn):
    """(match key, {pairs, triples}) -> rows with the triples' negatives; triples matching no pair are skipped."""

    def process(self, element: tuple[str, dict[str, Iterable]]) -> Iterator[Any]:
        _, groups = element
        triples = sorted(map(Triple._make, groups[TRIPLES]), key=lambda t: (t.path, t.line))
        pairs = list(groups[PAIRS])
        if not pairs:
            for _ in triples:
                yield skip("triple_without_pair")
            return
        negatives = [t.negative for t in triples]
        for pair in pairs:
            yield pair_row(pair, negatives)


def _qrel_kept(_key: str, qrel: tuple, threshold: float) -> str | None:
    """None for a qrel at or above the threshold (a positive), else the reason it is skipped."""
    return None if Qrel._make(qrel).score >= threshold else "below_min_relevance"


def _itself(value: Any) -> list[Any]:
    return [value]


def _row_without_negatives(pair: tuple) -> list[dict[str, Any]]:
    return [pair_row(pair, [])]


def _key_by_text(pair: tuple) -> list[tuple[str, tuple]]:
    p = Pair.of(pair)
    return [(match_key(p.query.text, p.doc.text), pair)]


class BuildMsMarcoTuples(beam.PTransform):
    """PBegin -> {'rows': row dicts, 'rejects': reject dicts, 'skipped': reason strings} from MS MARCO files."""

    def __init__(self, config: MsMarcoConfig, spill: str | None = None):
        super().__init__()
        self.config, self.spill = config, spill  # spill: where tables cross shuffles as files (`tables.ship`)

    def expand(self, pbegin):
        c = self.config
        if c.hf:  # Arrow record batches (hf_columns.py); COLUMNAR_HF = False: rows built per record (the reference)
            fn = ReadHfTablesFn(c.clean) if COLUMNAR_HF else ParseHfFileFn(c.clean)
            built = (
                pbegin
                | "ListHf" >> beam.Create(io.expand_patterns(c.hf))
                | "ReshuffleHf" >> beam.Reshuffle()
                | "ParseHf" >> beam.ParDo(fn).with_outputs(REJECTS, SKIPPED_COUNTS, main="rows")
            )
            rows = "row_tables" if COLUMNAR_HF else "row_batches"
            return {rows: built.rows, REJECTS: built[REJECTS], "skipped_counts": built[SKIPPED_COUNTS]}
        if not c.triples or COLUMNAR_TRIPLES:  # Arrow tables end to end (msmarco_columns.py, triple_columns.py)
            spec = QrelJoin(c.queries, c.qrels, c.collection, SOURCE, PAIR_TYPE, c.min_relevance, clean=c.clean)
            joined = pbegin | "JoinTables" >> JoinQrelTables(spec, self.spill)
            return (
                joined | "AttachTriples" >> AttachTripleTables(c.triples, c.clean, self.spill) if c.triples else joined
            )
        # The keyed-batch path (transforms/partition.py, the per-key logic of join.py): the reference the
        # columnar path is tested and measured against (COLUMNAR_TRIPLES = False).
        text = functools.partial(parse_id_text, clean=c.clean)
        queries = pbegin | "ReadQueries" >> ReadKeyedBatches(list(c.queries), text)
        docs = pbegin | "ReadCollection" >> ReadKeyedBatches(list(c.collection), text)
        keep = functools.partial(_qrel_kept, threshold=c.min_relevance)
        qrels = pbegin | "ReadQrels" >> ReadKeyedBatches(list(c.qrels), parse_qrel, keep)
        by_doc = partition_join(
            "ByQuery", {QUERIES: queries["keyed"], QRELS: qrels["keyed"]}, JoinQueryFn(), _itself, rekey=True
        )
        then = _key_by_text if c.triples else _row_without_negatives
        pairs = partition_join(
            "ByDoc", {DOCS: docs["keyed"], PAIRS: by_doc.main}, JoinDocFn(), then, rekey=bool(c.triples)
        )
        parts = [queries, docs, qrels, by_doc, pairs]
        rows = pairs.main
        if c.triples:
            parse = functools.partial(parse_triple, clean=c.clean)
            triples = pbegin | "ReadTriples" >> ReadKeyedBatches(list(c.triples), parse)
            built = partition_join(
                "ByText", {PAIRS: pairs.main, TRIPLES: triples["keyed"]}, AttachNegativesFn(), _itself, rekey=False
            )
            parts += [triples, built]
            rows = built.main
        return {
            "row_batches": rows,
            REJECTS: tuple(part[REJECTS] for part in parts) | "AllRejects" >> beam.Flatten(),
            "skipped_counts": tuple(part[SKIPPED_COUNTS] for part in parts) | "AllSkipCounts" >> beam.Flatten(),
        }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    many = {"nargs": "+", "action": "extend", "default": []}
    parser.add_argument("--collection", **many, help="passages: pid<TAB>passage TSV files or globs (.gz/.bz2 ok)")
    parser.add_argument("--queries", **many, help="queries: qid<TAB>query TSV files or globs")
    parser.add_argument("--qrels", **many, help="qrels in TREC form `qid 0|Q0 pid rel` (tabs or spaces)")
    parser.add_argument(
        "--triples", **many, help="optional query<TAB>positive<TAB>negative text triples (BM25 negatives)"
    )
    parser.add_argument("--hf", **many, help="instead of the TSVs: microsoft/ms_marco rows (.parquet or .jsonl)")
    parser.add_argument(
        "--min-relevance", type=float, default=1.0, help="qrels below this are not positives (default 1)"
    )
    parser.add_argument(
        "--no-clean", action="store_true", help="keep text as is (no mojibake repair / NFC / whitespace)"
    )
    parser.add_argument("--output", required=True, help="output shard directory (local or gs://)")
    runner.add_num_shards_argument(parser)
    parser.add_argument("--split", default="train", help="split name in the shard file names (default train)")


def config_from_args(args: argparse.Namespace) -> MsMarcoConfig:
    return MsMarcoConfig(
        output=args.output,
        collection=tuple(args.collection),
        queries=tuple(args.queries),
        qrels=tuple(args.qrels),
        triples=tuple(args.triples),
        hf=tuple(args.hf),
        min_relevance=args.min_relevance,
        clean=not args.no_clean,
        num_shards=args.num_shards,
        split=args.split,
    )


CONVERTER = Converter(
    "msmarco",
    lambda c: c.inputs(),
    lambda c, files: BuildMsMarcoTuples(c, spill_dir(c.output, c.split)),
    config_from_args,
)
build = CONVERTER.build  # build(config, beam_args=()) -> manifest


def main(args: argparse.Namespace, beam_args: list[str]) -> int:
    """The `negminer build msmarco` command (the module's `build`, looked up per call)."""
    return CONVERTER.main(args, beam_args, build)
