"""The `negminer mine` settings: one frozen dataclass, validated before anything is read or loaded."""

from __future__ import annotations

import dataclasses
import os

from negminer.mining.encode import DEVICES, DTYPES
from negminer.mining.groups import DEFAULT_INSTRUCTION_TEMPLATE, check_template
from negminer.mining.index import INDEX_KINDS
from negminer.mining.preset import PRESETS
from negminer.mining.select import SAMPLINGS, Ceiling, Rules
from negminer.pipelines import io
from negminer.pipelines import schema as S

POOLINGS = ("auto", "mean", "cls", "last")
RERANKER_SCORES = ("logit", "probability")
AUTO_RETRIEVER_CEILING = "perc:0.95"  # NV-Retriever's TopK-PercPos on cosines
AUTO_RERANKER_CEILING = "margin:1"  # logits: a negative's odds at most e^-1 of the positive's, for every query


def default_work_dir() -> str:
    """Shared embedding cache: `$NEGMINER_CACHE/mining`, else `~/.cache/negminer/mining`."""
    base = os.environ.get("NEGMINER_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "negminer")
    return os.path.join(base, "mining")


@dataclasses.dataclass(frozen=True)
class MineConfig:
    input: str
    output: str
    model: str
    split: str = "train"
    no_manifest_check: bool = False
    corpus: tuple[str, ...] = ()
    reranker: str | None = None
    num_negatives: int = 7
    range_min: int = 0
    range_max: int = 100
    positive_aware: str = "auto"
    reranker_threshold: float | None = 0.0
    reranker_scores: str = "logit"
    instruction_template: str = DEFAULT_INSTRUCTION_TEMPLATE
    max_score: float | None = None
    min_score: float | None = None
    near_dup: float | None = 0.98
    triangle: float | None = None
    positive_side: float | None = None
    positive_rank: int | None = None
    lexical: float | None = None
    coverage: float | None = None
    preset: str | None = None
    judge: str | None = None
    judge_url: str | None = None
    judge_relabel: bool = False
    judge_rounds: int = 2
    judge_concurrency: int = 8
    sampling: str = "top"
    seed: int = 0
    drop_shortfall: bool = False
    query_prompt: str | None = None
    doc_prompt: str | None = None
    pooling: str = "auto"
    max_length: int = 512
    batch_size: int = 64
    device: str = "auto"
    dtype: str = "auto"
    index: str = "flat"
    work_dir: str = ""
    chunk_size: int = 16384
    num_shards: int | None = None
    reranker_max_length: int = 512
    trust_remote_code: bool = False
    api_model: str | None = None  # with an endpoint URL in `model`: the model it serves (mining/remote.py)
    api_batch_size: int = 32
    api_concurrency: int = 4

    def __post_init__(self) -> None:
        object.__setattr__(self, "corpus", tuple(self.corpus))
        if not self.work_dir:
            object.__setattr__(self, "work_dir", default_work_dir())
        self.rules()  # validates the selection settings, with their own messages
        S.check_split_name(self.split)
        check_template(self.instruction_template)
        io.check_output_dir(self.output)
        checks = [
            (self.index in INDEX_KINDS, f"--index must be one of {INDEX_KINDS}, got {self.index!r}"),
            (self.pooling in POOLINGS, f"--pooling must be one of {POOLINGS}, got {self.pooling!r}"),
            (self.device in DEVICES, f"--device must be one of {DEVICES}, got {self.device!r}"),
            (self.dtype in DTYPES, f"--dtype must be one of {DTYPES}, got {self.dtype!r}"),
            (self.sampling in SAMPLINGS, f"--sampling must be one of {SAMPLINGS}, got {self.sampling!r}"),
            (self.batch_size > 0, f"--batch-size must be > 0, got {self.batch_size}"),
            (self.chunk_size > 0, f"--chunk-size must be > 0, got {self.chunk_size}"),
            (self.max_length > 0, f"--max-length must be > 0, got {self.max_length}"),
            (
                self.reranker_scores in RERANKER_SCORES,
                f"--reranker-scores must be one of {RERANKER_SCORES}, got {self.reranker_scores!r}",
            ),
            (self.reranker_max_length > 0, f"--reranker-max-length must be > 0, got {self.reranker_max_length}"),
            (self.num_shards is None or self.num_shards > 0, f"--num-shards must be > 0, got {self.num_shards}"),
            (bool(self.model), "--model is required"),
            (self.judge_rounds >= 1, f"--judge-rounds must be >= 1, got {self.judge_rounds}"),
            (self.judge_concurrency >= 1, f"--judge-concurrency must be >= 1, got {self.judge_concurrency}"),
            (
                bool(self.judge) or not (self.judge_url or self.judge_relabel),
                "--judge-url/--judge-relabel need --judge",
            ),
            (
                bool(self.api_model) == self.model.startswith(("http://", "https://")),
                "--api-model NAME is required with an endpoint URL in --model, and only then",
            ),
            (
                self.coverage is None or not self.api_model,
                "--coverage needs the encoder's token states: not available from an embedding endpoint",
            ),
            (self.api_batch_size > 0, f"--api-batch-size must be > 0, got {self.api_batch_size}"),
            (self.api_concurrency > 0, f"--api-concurrency must be > 0, got {self.api_concurrency}"),
            (
                self.preset is None or self.preset in PRESETS,
                f"--preset must be one of {tuple(PRESETS)}, got {self.preset!r}",
            ),
            (_norm(self.input) != _norm(self.output), f"--output must differ from --input ({self.input})"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def input_files(self) -> list[str]:
        """The input shard files of `split`, checked against the input's manifest (see `io.shard_files`)."""
        return io.shard_files(self.input, self.split, check=not self.no_manifest_check)

    def ceiling(self) -> Ceiling:
        return Ceiling.parse(self.positive_aware_spec())

    def positive_aware_spec(self) -> str:
        """`auto`: `perc:0.95` of retriever cosines, or `margin:1` between reranker logits (odds ratio e^-1)."""
        if self.positive_aware.strip().lower() != "auto":
            return self.positive_aware
        return AUTO_RERANKER_CEILING if self.reranker else AUTO_RETRIEVER_CEILING

    def rules(self) -> Rules:
        return Rules(
            num_negatives=self.num_negatives,
            range_min=self.range_min,
            range_max=self.range_max,
            min_score=self.min_score,
            max_score=self.max_score,
            ceiling=self.ceiling(),
            near_dup=self.near_dup,
            triangle=self.triangle,
            positive_side=self.positive_side,
            positive_rank=self.positive_rank,
            lexical=self.lexical,
            coverage=self.coverage,
            sampling=self.sampling,
            seed=self.seed,
        )


def _norm(path: str) -> str:
    return path.rstrip("/") if "://" in path else os.path.abspath(path)
