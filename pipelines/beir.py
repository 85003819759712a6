"""Any BEIR-format retrieval set -> retrieval tuples: one row per (query, document with score > 0).

Usage: negminer build beir --corpus corpus.jsonl --queries queries.jsonl --qrels qrels/train.tsv --name scifact \
    --output out/scifact
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from typing import Any

import apache_beam as beam

from negminer.pipelines import runner
from negminer.pipelines import schema as S
from negminer.pipelines.converter import Converter
from negminer.pipelines.msmarco_columns import JoinQrelTables, QrelJoin
from negminer.pipelines.tables import spill_dir
from negminer.pipelines.transforms.join import Pair

PAIR_TYPE = "qa"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclasses.dataclass(frozen=True)
class BeirConfig:
    corpus: tuple[str, ...]
    queries: tuple[str, ...]
    qrels: tuple[str, ...]
    name: str
    output: str
    clean: bool = True
    num_shards: int | None = None  # None: from the input size (runner.auto_num_shards)
    split: str = "train"

    def __post_init__(self) -> None:
        if not (self.corpus and self.queries and self.qrels):
            raise ValueError("--corpus, --queries and --qrels are all required")
        if not _NAME.match(self.name):
            raise ValueError(
                f"--name must be letters, digits, '.', '_' or '-' (it becomes beir/<name>), got {self.name!r}"
            )
        runner.check_num_shards(self.num_shards)

    @property
    def source(self) -> str:
        return f"beir/{self.name}"


def pair_row(pair: Pair | tuple, source: str) -> dict[str, Any]:
    """The tuple row of a joined (query, document) pair (a `Pair` or its plain form); the text is title + text."""
    q, d, rel = Pair.of(pair)
    row = S.TupleRow(
        source=source,
        pair_type=PAIR_TYPE,
        query=q.text,
        query_id=q.id,
        positive=d.text,
        positive_id=d.id,
        provenance=S.provenance_json(qrels=rel.path, line=rel.line, score=rel.score),
    )
    return row.to_dict()


class BuildBeirTuples(beam.PTransform):
    """PBegin -> {'row_tables', 'rejects', 'skipped_counts'} from BEIR files: Arrow tables joined per hash
    partition (`msmarco_columns.JoinQrelTables`); JSON-lines and Parquet documents are read in blocks / record
    batches (`doc_columns`), the rows whose outcome is not plain by `parse_json_doc`."""

    def __init__(self, config: BeirConfig, spill: str | None = None):
        super().__init__()
        self.config, self.spill = config, spill  # spill: where tables cross shuffles as files (`tables.ship`)

    def expand(self, pbegin):
        c = self.config
        spec = QrelJoin(
            c.queries,
            c.qrels,
            c.corpus,
            c.source,
            PAIR_TYPE,
            threshold=0.0,
            strict=True,
            below_reason="non_positive_score",
            unknown_doc_reason="unknown_document",
            score_key="score",
            clean=c.clean,
            json_docs=True,
        )
        return pbegin | "JoinTables" >> JoinQrelTables(spec, self.spill)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    many = {"nargs": "+", "action": "extend", "required": True}
    parser.add_argument("--corpus", **many, help="corpus.jsonl (_id, title, text) files or globs, or Parquet")
    parser.add_argument("--queries", **many, help="queries.jsonl (_id, text) files or globs, or Parquet")
    parser.add_argument("--qrels", **many, help="qrels TSV (header `query-id corpus-id score`)")
    parser.add_argument("--name", required=True, help="dataset name; rows get source `beir/<name>`")
    parser.add_argument("--output", required=True, help="output shard directory (local or gs://)")
    parser.add_argument(
        "--no-clean", action="store_true", help="keep text as is (no mojibake repair / NFC / whitespace)"
    )
    runner.add_num_shards_argument(parser)
    parser.add_argument("--split", default="train", help="split name in the shard file names (default train)")


def config_from_args(args: argparse.Namespace) -> BeirConfig:
    return BeirConfig(
        corpus=tuple(args.corpus),
        queries=tuple(args.queries),
        qrels=tuple(args.qrels),
        name=args.name,
        output=args.output,
        clean=not args.no_clean,
        num_shards=args.num_shards,
        split=args.split,
    )


CONVERTER = Converter(
    "beir",
    lambda c: [*c.corpus, *c.queries, *c.qrels],
    lambda c, files: BuildBeirTuples(c, spill_dir(c.output, c.split)),
    config_from_args,
)
build = CONVERTER.build  # build(config, beam_args=()) -> manifest


def main(args: argparse.Namespace, beam_args: list[str]) -> int:
    """The `negminer build beir` command (the module's `build`, looked up per call)."""
    return CONVERTER.main(args, beam_args, build)
