"""The training job's settings: one frozen dataclass, checked before any model is loaded."""

from __future__ import annotations

import argparse
import dataclasses

from negminer.training.model import POOLINGS

LOSSES = ("infonce", "infonce-bidirectional")
PRECISIONS = ("fp32", "bf16", "fp16")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    data: tuple[str, ...]
    model: str
    output: str
    pooling: str = "auto"
    batch_size: int = 128
    num_negatives: int = 7
    temperature: float = 0.05
    loss: str = "infonce"
    distill: bool = False
    distill_weight: float = 1.0
    teacher_temperature: float = 1.0
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
            self.distill_weight >= 0 and self.teacher_temperature > 0,
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
    a("--data", action="append", required=True, help="shard directory (repeatable)")
    a("--model", required=True, help="Hugging Face model name or local path (safetensors)")
    a("--output", required=True, help="output directory: model, train_log.jsonl, metrics.json, checkpoint/")
    a(
        "--pooling",
        default="auto",
        choices=("auto", *POOLINGS),
        help="auto: from the model's sentence-transformers config",
    )
    a("--batch-size", type=int, default=128, help="global batch size (rows)")
    a("--num-negatives", type=int, default=7, help="hard negatives per row taken from the shards (hardest first)")
    a("--temperature", type=float, default=0.05, help="InfoNCE temperature τ")
    a("--loss", default="infonce", choices=LOSSES)
    a("--distill", action="store_true", help="add KL to the shards' teacher scores (rows without scores are skipped)")
    a("--distill-weight", type=float, default=1.0)
    a("--teacher-temperature", type=float, default=1.0)
    a("--lr", type=float, default=2e-5)
    a("--warmup", type=float, default=0.05, help="fraction of steps of linear warm-up, then linear decay to 0")
    a("--weight-decay", type=float, default=0.01)
    a("--max-grad-norm", type=float, default=1.0)
    a("--max-steps", type=int, default=None)
    a("--epochs", type=float, default=None)
    a("--max-length", type=int, default=256, help="max tokens per text")
    a("--grad-cache-chunk", type=int, default=None, help="GradCache: encode in chunks of N texts (fixed memory)")
    a("--precision", default="fp32", choices=PRECISIONS, help="autocast dtype (bf16/fp16 on GPU; bf16 also on CPU)")
    a("--same-source-batches", action="store_true", help="each batch from one source, sources sampled by size")
    a("--shuffle-buffer", type=int, default=10_000)
    a("--query-prompt", default=None)
    a("--doc-prompt", default=None)
    a("--eval", default=None, help="BEIR-format directory or shard directory to evaluate on")
    a("--eval-every", type=int, default=None)
    a("--save-every", type=int, default=None, help="checkpoint every N steps (for --resume)")
    a("--log-every", type=int, default=1, help="write a train_log.jsonl line every N steps")
    a(
        "--stop-after",
        type=int,
        default=None,
        help="leave after N steps of this run with a checkpoint (time-sliced jobs)",
    )
    a("--resume", action="store_true", help="continue from OUTPUT/checkpoint exactly")
    a("--seed", type=int, default=0)
    a("--device", default="auto", help="auto|cpu|cuda[:N]")
    a("--trust-remote-code", action="store_true")
