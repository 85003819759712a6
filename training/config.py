"""The training job's settings: one frozen dataclass, checked before any model is loaded."""

from __future__ import annotations

import argparse
import dataclasses

from negminer.mining.groups import DEFAULT_INSTRUCTION_TEMPLATE, check_template
from negminer.pipelines import io
from negminer.pipelines import schema as S
from negminer.training.model import POOLINGS

LOSSES = ("infonce", "infonce-bidirectional")
PRECISIONS = ("fp32", "bf16", "fp16")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    data: tuple[str, ...]
    model: str
    output: str
    split: str = "train"
    eval_split: str | None = None
    no_manifest_check: bool = False
    pooling: str = "auto"
    batch_size: int = 128
    num_negatives: int = 7
    temperature: float = 0.05
    loss: str = "infonce"
    distill: bool = False
    distill_weight: float = 1.0
    teacher_temperature: float | None = None
    instruction_template: str = DEFAULT_INSTRUCTION_TEMPLATE
    lr: float = 2e-5
    warmup: float = 0.05
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    max_steps: int | None = None
    epochs: float | None = None
    max_length: int = 256
    grad_cache_chunk: int | None = None
    precision: str = "fp32"
    same_source_batches: bool = False
    shuffle_buffer: int = 10_000
    query_prompt: str | None = None
    doc_prompt: str | None = None
    eval: str | None = None
    eval_every: int | None = None
    save_every: int | None = None
    log_every: int = 1
    stop_after: int | None = None
    resume: bool = False
    seed: int = 0
    device: str = "auto"
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ValueError(msg)

        need(bool(self.data), "at least one --data directory is required")
        S.check_split_name(self.split)
        check_template(self.instruction_template)
        need(self.eval_split is None or self.eval is not None, "--eval-split needs --eval")
        io.check_output_dir(self.output)
        need(self.pooling == "auto" or self.pooling in POOLINGS, f"--pooling must be auto or one of {POOLINGS}")
        need(self.batch_size >= 2, f"--batch-size must be >= 2 (in-batch negatives), got {self.batch_size}")
        need(self.num_negatives >= 0, f"--num-negatives must be >= 0, got {self.num_negatives}")
        need(self.temperature > 0, f"--temperature must be > 0, got {self.temperature}")
        need(self.loss in LOSSES, f"--loss must be one of {LOSSES}, got {self.loss!r}")
        need(self.lr > 0, f"--lr must be > 0, got {self.lr}")
        need(0 <= self.warmup < 1, f"--warmup is a fraction of the steps in [0, 1), got {self.warmup}")
        need((self.max_steps is None) != (self.epochs is None), "give exactly one of --max-steps and --epochs")
        need(self.max_steps is None or self.max_steps > 0, f"--max-steps must be > 0, got {self.max_steps}")
        need(self.epochs is None or self.epochs > 0, f"--epochs must be > 0, got {self.epochs}")
        need(self.max_length >= 4, f"--max-length must be >= 4, got {self.max_length}")
        need(self.grad_cache_chunk is None or self.grad_cache_chunk > 0, "--grad-cache-chunk must be > 0")
        need(self.precision in PRECISIONS, f"--precision must be one of {PRECISIONS}, got {self.precision!r}")
        need(self.eval_every is None or self.eval_every > 0, "--eval-every must be > 0")
        need(self.save_every is None or self.save_every > 0, "--save-every must be > 0")
        need(self.log_every > 0, f"--log-every must be > 0, got {self.log_every}")
        need(self.stop_after is None or self.stop_after > 0, "--stop-after must be > 0")
        need(0 <= self.weight_decay, f"--weight-decay must be >= 0, got {self.weight_decay}")
        need(self.max_grad_norm >= 0, f"--max-grad-norm must be >= 0 (0 = no clipping), got {self.max_grad_norm}")
        need(self.shuffle_buffer >= 1, f"--shuffle-buffer must be >= 1, got {self.shuffle_buffer}")
        need(
            self.distill_weight >= 0 and (self.teacher_temperature is None or self.teacher_temperature > 0),
            "--distill-weight >= 0, --teacher-temperature > 0",
        )
        need(
            self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"), f"bad --device {self.device!r}"
        )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in vars(args).items() if k in names}
        kw["data"] = tuple(kw["data"])
        return cls(**kw)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    a = parser.add_argument
    a(
        "--data",
        action="append",
        required=True,
        help="tuple-shard directory to train on (repeat for several); only its --split is read",
    )
    a("--split", default="train", help="the split of every --data directory to train on (default train)")
    a(
        "--no-manifest-check",
        action="store_true",
        help="read --data / --eval directories without a manifest: shards written by other tools (default off)",
    )
    a("--model", required=True, help="Hugging Face model name or local path to start from (safetensors)")
    a("--output", required=True, help="output directory: model, train_log.jsonl, metrics.json, checkpoint/")
    a(
        "--pooling",
        default="auto",
        choices=("auto", *POOLINGS),
        help="auto: from the model's sentence-transformers config, last for decoders, else mean (default auto)",
    )
    a("--batch-size", type=int, default=128, help="global batch size in rows, all GPUs together (default 128)")
    a(
        "--num-negatives",
        type=int,
        default=7,
        help="hard negatives per row taken from the shards, hardest first (default 7)",
    )
    a("--temperature", type=float, default=0.05, help="InfoNCE temperature τ (default 0.05)")
    a(
        "--loss",
        default="infonce",
        choices=LOSSES,
        help="infonce: query->documents; -bidirectional adds documents->query (default infonce)",
    )
    a("--distill", action="store_true", help="add KL to the shards' teacher scores (rows without scores are skipped)")
    a("--distill-weight", type=float, default=1.0, help="weight of the distillation term (default 1.0)")
    a(
        "--teacher-temperature",
        type=float,
        default=None,
        help="temperature of the teacher scores' softmax (default: by the scores' kind in the manifest: "
        "cosine 0.05, logit 1, probability 1 after turning it into a logit)",
    )
    a("--lr", type=float, default=2e-5, help="peak learning rate of AdamW (default 2e-5)")
    a(
        "--warmup",
        type=float,
        default=0.05,
        help="fraction of steps of linear warm-up, then linear decay to 0 (default 0.05)",
    )
    a("--weight-decay", type=float, default=0.01, help="AdamW weight decay, not on biases and norms (default 0.01)")
    a("--max-grad-norm", type=float, default=1.0, help="clip the gradient norm to this; 0 = no clipping (default 1.0)")
    a("--max-steps", type=int, default=None, help="optimizer steps to train (give this or --epochs)")
    a("--epochs", type=float, default=None, help="passes over the data, fractions allowed (give this or --max-steps)")
    a("--max-length", type=int, default=256, help="max tokens per text (default 256)")
    a(
        "--grad-cache-chunk",
        type=int,
        default=None,
        help="GradCache: encode in chunks of N texts, fixed memory (default off)",
    )
    a(
        "--precision",
        default="fp32",
        choices=PRECISIONS,
        help="autocast dtype: bf16/fp16 on GPU; bf16 also on CPU (default fp32)",
    )
    a(
        "--same-source-batches",
        action="store_true",
        help="each batch from one source, sources sampled by size (default off)",
    )
    a("--shuffle-buffer", type=int, default=10_000, help="rows held for shuffling the stream (default 10000)")
    a("--query-prompt", default=None, help="text prepended to every query, saved with the model (default none)")
    a("--doc-prompt", default=None, help="text prepended to every document, saved with the model (default none)")
    a(
        "--instruction-template",
        type=lambda s: s.replace("\\n", "\n"),  # a shell passes \n as two characters
        default=DEFAULT_INSTRUCTION_TEMPLATE,
        help="how a row's instruction and query are encoded together; \\n is a newline (default %(default)s)",
    )
    a("--eval", default=None, help="BEIR-format directory or shard directory to evaluate on (default none)")
    a(
        "--eval-split",
        default=None,
        help="shard --eval: the split to evaluate on (default: every split, but never --split of a --data directory)",
    )
    a(
        "--eval-every",
        type=int,
        default=None,
        help="also evaluate every N steps; --eval always runs before and after training (default: only then)",
    )
    a(
        "--save-every",
        type=int,
        default=None,
        help="checkpoint every N steps, for --resume (default: only when --stop-after leaves early)",
    )
    a("--log-every", type=int, default=1, help="write a train_log.jsonl line every N steps (default 1)")
    a(
        "--stop-after",
        type=int,
        default=None,
        help="leave after N steps of this run with a checkpoint, for time-sliced jobs (default: run to the end)",
    )
    a("--resume", action="store_true", help="continue from OUTPUT/checkpoint exactly (default: start fresh)")
    a("--seed", type=int, default=0, help="seed of shuffling and initialisation (default 0)")
    a("--device", default="auto", help="auto|cpu|cuda[:N]; auto: cuda when available (default auto)")
    a("--trust-remote-code", action="store_true", help="allow model code from the hub (default off)")
