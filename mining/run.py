"""`negminer mine`: hard negatives for tuple shards (encoder + FAISS + positive-aware filters + optional reranker).

Usage: negminer mine --input shards/msmarco --output shards/msmarco-mined --model sentence-transformers/all-MiniLM-L6-v2
       (add --runner DirectRunner|DataflowRunner|FlinkRunner|SparkRunner and any Beam flags to run it on Beam)
"""

from __future__ import annotations

import argparse
import logging
import time

from negminer.mining.config import POOLINGS, MineConfig, default_work_dir
from negminer.mining.encode import DEVICES, DTYPES
from negminer.mining.groups import DEFAULT_INSTRUCTION_TEMPLATE
from negminer.mining.index import INDEX_KINDS
from negminer.mining.preset import PRESETS, resolve
from negminer.mining.select import SAMPLINGS

log = logging.getLogger("negminer.mining")


def _optional_int(value: str) -> int | None:
    if value.strip().lower() == "none":
        return None
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number or 'none', got {value!r}") from None


def _optional_float(value: str) -> float | None:
    if value.strip().lower() == "none":
        return None
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'none', got {value!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    a = parser.add_argument
    a("--input", required=True, help="tuple shards to mine for (a shard dir, a glob or a .parquet file)")
    a("--output", required=True, help="directory for the mined shards (other splits already there are kept)")
    a("--split", default="train", help="the input split to mine, written under the same name (default train)")
    a(
        "--no-manifest-check",
        action="store_true",
        help="read an input directory without a manifest (shards written by other tools): its {split}-*.parquet",
    )
    a(
        "--model",
        required=True,
        help="encoder: local dir or Hugging Face name (safetensors weights), or an OpenAI-compatible endpoint URL",
    )
    a("--api-model", help="with an endpoint URL in --model: the embedding model it serves (names the cache)")
    a("--api-batch-size", type=int, default=32, help="texts per embeddings request to an endpoint (default 32)")
    a("--api-concurrency", type=int, default=4, help="embeddings requests in flight to an endpoint (default 4)")
    a(
        "--corpus",
        nargs="+",
        default=[],
        help="extra candidate documents: shard dirs, BEIR corpus.jsonl, "
        "MS MARCO collection.tsv, Parquet/JSONL with id+text (globs ok, .gz ok)",
    )
    a(
        "--reranker",
        help="cross-encoder (AutoModelForSequenceClassification) whose logits become the teacher scores (default none)",
    )
    a(
        "--reranker-threshold",
        type=_optional_float,
        default=0.0,
        help="drop candidates whose reranker logit is >= this: the ones it judges relevant; 0 = probability 0.5, "
        "'none' keeps them (default 0)",
    )
    a(
        "--reranker-scores",
        choices=("logit", "probability"),
        default="logit",
        help="store the reranker's raw logits, or their sigmoid (sentence-transformers' scale; thresholds then "
        "apply to probabilities) (default logit)",
    )
    a("--num-negatives", type=int, default=7, help="negatives per row (default 7)")
    a("--range-min", type=int, default=0, help="skip this many best non-positive candidates (default 0)")
    a("--range-max", type=int, default=100, help="consider candidates ranked below this (default 100)")
    a(
        "--preset",
        choices=tuple(PRESETS),
        help="named false-negative settings (clean: " + _preset_text("clean") + "); explicit flags override them",
    )
    a(
        "--positive-aware",
        default=argparse.SUPPRESS,
        help="perc:P (score < P x lowest positive score), margin:M (score < lowest positive - M), "
        "z:A (score < lowest positive - A x the query's candidate-score std) or none; in the teacher's space "
        "(default auto: perc:0.95 of cosines, margin:1 between reranker logits)",
    )
    a(
        "--triangle",
        type=_optional_float,
        default=argparse.SUPPRESS,
        help="drop candidates with cos(candidate, positive) - cos(query, positive) >= this; 'none' (default) off",
    )
    a(
        "--positive-side",
        type=_optional_float,
        default=argparse.SUPPRESS,
        help="drop candidates with cos(c, positive) - (cos(c, query) + cos(query, positive)) / 2 >= this (leaning "
        "to the positive's side of the triangle); 'none' (default) off",
    )
    a(
        "--positive-rank",
        type=_optional_int,
        default=argparse.SUPPRESS,
        help="drop the R candidates closest to a positive (rank among the query's candidates by cosine to the "
        "positive); 'none' (default) off",
    )
    a(
        "--lexical",
        type=_optional_float,
        default=argparse.SUPPRESS,
        help="drop candidates whose BM25 with the query is >= this x the positive's (bm25s); 'none' (default) off",
    )
    a(
        "--coverage",
        type=_optional_float,
        default=argparse.SUPPRESS,
        help="drop candidates whose token coverage by the query (mean over the candidate's tokens of the best "
        "cosine to a query token, the encoder's token states) is >= this; 'none' (default) off",
    )
    a("--max-score", type=_optional_float, default=None, help="drop candidates scoring above this")
    a("--min-score", type=_optional_float, default=None, help="drop candidates scoring below this")
    a(
        "--near-dup-threshold",
        dest="near_dup",
        type=_optional_float,
        default=0.98,
        help="drop candidates whose cosine to a positive is >= this; 'none' disables (default 0.98)",
    )
    a("--judge", help="LLM relevance judge: a local causal LM dir, or the model name served at --judge-url")
    a(
        "--judge-url",
        help="OpenAI-compatible endpoint of the judge (e.g. http://localhost:8000/v1; key in $OPENAI_API_KEY)",
    )
    a(
        "--judge-relabel",
        action="store_true",
        help="add what the judge calls relevant as extra positive rows (default: drop it)",
    )
    a(
        "--judge-rounds",
        type=int,
        default=2,
        help="judge, replace the relevant picks, judge again: at most N rounds (default 2)",
    )
    a("--judge-concurrency", type=int, default=8, help="judge requests in flight (default 8)")
    a("--sampling", choices=SAMPLINGS, default="top", help="top: hardest first; random: seeded draw (default top)")
    a("--seed", type=int, default=0, help="seed of --sampling random (default 0)")
    a("--drop-shortfall", action="store_true", help="drop rows that got fewer than --num-negatives (default: keep)")
    a("--query-prompt", help="text prepended to every query before encoding (e.g. 'query: ')")
    a(
        "--instruction-template",
        type=lambda s: s.replace("\\n", "\n"),  # a shell passes \n as two characters
        default=DEFAULT_INSTRUCTION_TEMPLATE,
        help="how a row's instruction and query are encoded together; \\n is a newline (default %(default)s)",
    )
    a("--doc-prompt", help="text prepended to every document before encoding (e.g. 'passage: ')")
    a("--pooling", choices=POOLINGS, default="auto", help="auto reads the model's sentence-transformers config")
    a("--max-length", type=int, default=512, help="encoder max tokens (default 512)")
    a("--batch-size", type=int, default=64, help="encoder / reranker batch size (default 64)")
    a("--device", choices=DEVICES, default="auto", help="auto: cuda when available (default auto)")
    a("--dtype", choices=DTYPES, default="auto", help="auto: bfloat16 on cuda, float32 on cpu (default auto)")
    a("--index", choices=INDEX_KINDS, default="flat", help="flat (exact, default), ivf or hnsw")
    a("--work-dir", default="", help=f"embedding and search cache (default {default_work_dir()})")
    a("--chunk-size", type=int, default=16384, help="texts per cached embedding chunk (default 16384)")
    a("--num-shards", type=int, help="output shards per split (default: as many as the input)")
    a("--reranker-max-length", type=int, default=512, help="reranker max tokens per pair (default 512)")
    a("--trust-remote-code", action="store_true", help="allow model code from the hub (off by default)")


def _preset_text(name: str) -> str:
    return " ".join(f"--{k.replace('_', '-')} {v}" for k, v in PRESETS[name].items())


def config_from_args(args: argparse.Namespace) -> MineConfig:
    """Flags given on the command line, over the preset's values (when `--preset`), over the defaults."""
    fields = MineConfig.__dataclass_fields__
    given = {k: v for k, v in vars(args).items() if k in fields}
    return MineConfig(**resolve(given.get("preset"), given))


def main(args: argparse.Namespace, extra: list[str]) -> int:
    on_beam = any(a == "--runner" or a.startswith("--runner=") for a in extra)
    if extra and not on_beam:
        raise ValueError(
            f"unrecognized arguments: {' '.join(extra)} (Beam flags need --runner, e.g. --runner DirectRunner)"
        )
    cfg = config_from_args(args)  # a bad setting is a ValueError: one line and exit 2 at the CLI
    if on_beam and cfg.index != "flat":
        raise ValueError(f"--index {cfg.index}: on Beam the miner searches exactly (--index flat) only")
    t0 = time.perf_counter()
    if on_beam:
        from negminer.mining.beam_mine import mine_beam

        manifest = mine_beam(cfg, extra)
        if not manifest:
            log.info("job graph built (--dry_run): nothing was run")
            return 0
    else:
        from negminer.mining.mine import mine

        manifest = mine(cfg)
    m = manifest["mining"]
    log.info(
        "mined %d rows (%d negatives, %d short of %d) in %.1fs; encoded %s -> %s",
        manifest["rows"],
        manifest["negatives"],
        m["shortfall"]["rows"],
        cfg.num_negatives,
        time.perf_counter() - t0,
        m["encoded"],
        cfg.output,
    )
    return 0
