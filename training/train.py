"""The trainer: InfoNCE on streamed tuple shards, one readable loop.

Usage: negminer train --data shards/snli --model sentence-transformers/all-MiniLM-L6-v2 --output out/ --max-steps 1000
       torchrun --nproc-per-node 2 -m negminer.training.train --data shards/snli --model M --output out/ --max-steps 1000
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import random
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from negminer.pipelines import io
from negminer.pipelines import schema as S
from negminer.training import checkpoint, distributed
from negminer.training.config import TrainConfig
from negminer.training.config import add_arguments as _config_arguments
from negminer.training.data import Batch, batches, count_rows, score_kind
from negminer.training.evaluate import EvalSet, evaluate, is_beir_dir, load_eval
from negminer.training.model import Encoder, check_model_ref
from negminer.training.step import StepSettings, forward_backward, objective

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _config_arguments(parser)


def pick_device(name: str, ctx: distributed.Dist) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and ctx.world > 1:
        name = f"cuda:{ctx.local_rank}"
    return torch.device(name)


def data_files(cfg: TrainConfig) -> list[list[str]]:
    """The shard files of `--split` in every `--data` directory, checked against its manifest (before any work)."""
    return [io.shard_files(d, cfg.split, check=not cfg.no_manifest_check) for d in cfg.data]


def eval_files(cfg: TrainConfig) -> list[str] | None:
    """The shard files to evaluate on: `--eval-split`, or every split except the training one of a --data dir."""
    if cfg.eval is None or is_beir_dir(cfg.eval):
        return None
    check = not cfg.no_manifest_check
    if cfg.eval_split is not None:
        return io.shard_files(cfg.eval, cfg.eval_split, check=check)
    files = io.shard_files(cfg.eval, None, check=check)
    same = any(os.path.abspath(d.rstrip("/")) == os.path.abspath(cfg.eval.rstrip("/")) for d in cfg.data)
    if same:
        files = [f for f in files if (S.parse_shard_name(f) or ("",))[0] != cfg.split]
        if not files:
            raise ValueError(
                f"--eval {cfg.eval} is a --data directory with no split besides {cfg.split!r}: "
                "evaluating on the training rows needs --eval-split"
            )
    return files


def total_steps(cfg: TrainConfig, sources: list[list[str]] | None = None) -> int:
    if cfg.max_steps is not None:
        return cfg.max_steps
    rows = sum(count_rows(s) for s in (sources if sources is not None else data_files(cfg)))
    return max(1, math.ceil(cfg.epochs * rows / cfg.batch_size))


def make_optimizer(encoder: Encoder, cfg: TrainConfig, steps: int):
    """AdamW without decay on biases and norms; transformers' linear schedule: warm-up from 0 over cfg.warmup of the
    steps, then linear decay to 0 (as the Hugging Face Trainer does)."""
    from transformers import get_linear_schedule_with_warmup

    decay, no_decay = [], []
    for name, p in encoder.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr)
    return optimizer, get_linear_schedule_with_warmup(optimizer, math.ceil(cfg.warmup * steps), steps)


def embedder(encoder: Encoder, cfg: TrainConfig, batch_size: int = 64):
    """embed(texts, is_query) -> (n, D) float32 numpy, in eval mode with the query / document prompts."""
    device = next(encoder.parameters()).device

    @torch.no_grad()
    def embed(texts: list[str], is_query: bool) -> np.ndarray:
        was_training = encoder.training
        encoder.eval()
        prompt = cfg.query_prompt if is_query else cfg.doc_prompt
        out = []
        for i in range(0, len(texts), batch_size):
            enc = encoder.tokenize(texts[i : i + batch_size], prompt=prompt).to(device)
            with torch.autocast(device.type, DTYPES[cfg.precision], enabled=DTYPES[cfg.precision] is not None):
                out.append(encoder(enc["input_ids"], enc["attention_mask"]).float().cpu().numpy())
        encoder.train(was_training)
        return np.concatenate(out)

    return embed


class Logger:
    """train_log.jsonl (one object per line) on the main process; keeps only lines up to `start` when resuming."""

    def __init__(self, path: Path, start: int, enabled: bool):
        self.path, self.enabled = path, enabled
        if not enabled:
            return
        kept = []
        if start and path.is_file():
            kept = [
                line for line in path.read_text().splitlines() if line and json.loads(line).get("step", 0) <= start
            ]
        path.write_text("".join(line + "\n" for line in kept))

    def write(self, **record: Any) -> None:
        if self.enabled:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")


def _write_json(path: Path, obj: Any) -> None:
    io.write_bytes_atomic(str(path), (json.dumps(obj, indent=2) + "\n").encode("utf-8"))


def train(cfg: TrainConfig) -> dict[str, Any]:  # noqa: C901, PLR0915 — the one readable training loop (STYLE: nanoGPT); setup/eval/checkpoint are helpers already
    """Run the training job; return {"losses": [...], "metrics": {...}}. The model lands in cfg.output."""
    kind = "cuda" if cfg.device.startswith("cuda") or (cfg.device == "auto" and torch.cuda.is_available()) else "cpu"
    ctx = distributed.init(kind)
    if cfg.batch_size % ctx.world:
        raise ValueError(f"--batch-size {cfg.batch_size} must be divisible by the {ctx.world} processes")
    device = pick_device(cfg.device, ctx)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if cfg.precision == "fp16" and device.type != "cuda":
        raise ValueError("--precision fp16 needs a CUDA device (use bf16 or fp32 on CPU)")
    sources, eval_at = data_files(cfg), eval_files(cfg)  # a bad directory fails here, before the model loads
    check_model_ref(cfg.model)
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)

    encoder = Encoder.from_pretrained(
        cfg.model, cfg.pooling, cfg.max_length, trust_remote_code=cfg.trust_remote_code
    ).to(device)
    encoder.train()
    steps = total_steps(cfg, sources)
    optimizer, scheduler = make_optimizer(encoder, cfg, steps)
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.precision == "fp16")
    metrics: dict[str, Any] = {}
    start = 0
    if cfg.resume:
        state = checkpoint.load(out / "checkpoint", encoder.model)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        start, metrics = state["step"], json.loads(state["metrics"])
        check_resume(json.loads(state["config"]), _jsonable(cfg))
        if state["total_steps"] != steps:
            raise ValueError(f"--resume: checkpoint was for {state['total_steps']} steps, this run has {steps}")

    eval_set: EvalSet | None = load_eval(cfg.eval, eval_at) if cfg.eval else None
    logger = Logger(out / "train_log.jsonl", start, ctx.is_main)

    def run_eval(step: int, key: str | None) -> None:
        if eval_set is not None and ctx.is_main:
            result = evaluate(embedder(encoder, cfg), eval_set)
            logger.write(step=step, eval=result)
            metrics.setdefault("history", []).append({"step": step, **result})
            if key:
                metrics[key] = result
            _write_json(out / "metrics.json", metrics)
        distributed.barrier(ctx)

    if start == 0:
        run_eval(0, "before")
    data_stats: Counter = Counter()
    stream = batches(
        sources,
        cfg.batch_size,
        cfg.num_negatives,
        cfg.seed,
        cfg.shuffle_buffer,
        cfg.same_source_batches,
        data_stats,
        [score_kind(d, cfg.split) for d in cfg.data],
        cfg.instruction_template,
    )
    for _ in range(start):  # the batch sequence is deterministic: skipping re-creates the data position
        next(stream)
    if cfg.resume:
        checkpoint.set_rng_state(state["rng"])

    settings = StepSettings(cfg.grad_cache_chunk, DTYPES[cfg.precision], cfg.query_prompt, cfg.doc_prompt)
    params = [p for p in encoder.parameters() if p.requires_grad]

    def loss_fn(q: torch.Tensor, d: torch.Tensor, batch: Batch) -> torch.Tensor:
        return objective(q, d, batch, cfg)

    def save_checkpoint(step: int) -> None:
        if ctx.is_main:
            trainer = {
                "step": step,
                "total_steps": steps,
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "metrics": json.dumps(metrics),
                "config": json.dumps(_jsonable(cfg)),
            }
            checkpoint.save(out / "checkpoint", encoder.model, trainer)
        distributed.barrier(ctx)

    losses: list[float] = []
    last = start + min(steps - start, cfg.stop_after or steps)
    bar = tqdm(total=steps, initial=start, disable=not ctx.is_main, desc="train", dynamic_ncols=True)
    busy, seen = 0.0, 0  # seconds spent in data + forward/backward + update (not eval / checkpoints), rows
    for step in range(start + 1, last + 1):
        tick = time.perf_counter()
        batch = next(stream)
        optimizer.zero_grad(set_to_none=True)
        loss = forward_backward(encoder, batch, loss_fn, ctx, settings, scale=scaler.scale)
        distributed.sum_grads(params, ctx)
        scaler.unscale_(optimizer)
        if cfg.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        scaler.step(optimizer)
        scaler.update()
        lr = scheduler.get_last_lr()[0]
        scheduler.step()
        losses.append(loss)
        busy, seen = busy + time.perf_counter() - tick, seen + len(batch)
        if step % cfg.log_every == 0 or step == last:
            rate = seen / busy
            logger.write(step=step, loss=loss, lr=lr, samples_per_s=rate)
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", samples_per_s=f"{rate:.1f}")
            busy, seen = 0.0, 0
        bar.update(1)
        if cfg.eval_every and step % cfg.eval_every == 0 and step < steps:
            run_eval(step, None)
        if (cfg.save_every and step % cfg.save_every == 0) or (step == last < steps):
            save_checkpoint(step)
    bar.close()
    logger.write(step=last, data=dict(data_stats))  # rows used / skipped with reasons, epochs begun

    if last == steps:
        run_eval(steps, "after")
        if ctx.is_main:
            encoder.save(str(out), query_prompt=cfg.query_prompt, doc_prompt=cfg.doc_prompt)
            _write_json(out / "training_config.json", _jsonable(cfg))
        distributed.barrier(ctx)
    distributed.shutdown(ctx)
    return {"losses": losses, "metrics": metrics, "steps": last}


# Settings a resumed run may change (where it logs, saves, evaluates, stops, runs); every other one must match.
RESUME_MAY_CHANGE = frozenset(
    {"output", "resume", "stop_after", "save_every", "eval", "eval_split", "eval_every", "log_every", "device"}
)


def check_resume(saved: dict[str, Any], now: dict[str, Any]) -> None:
    """Refuse `--resume` with settings that differ from the checkpoint's (batch size, learning rate, data, ...)."""
    diff = [k for k in sorted(now) if k not in RESUME_MAY_CHANGE and k in saved and saved[k] != now[k]]
    if diff:
        was = ", ".join(f"{k}={saved[k]!r}" for k in diff)
        got = ", ".join(f"{k}={now[k]!r}" for k in diff)
        raise ValueError(f"--resume: the checkpoint was trained with {was}; this run has {got}: resume with the same")


def _jsonable(cfg: TrainConfig) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}


def main(args: argparse.Namespace, extra: list[str]) -> int:
    if extra:
        raise SystemExit(f"negminer train: unknown arguments {extra}")
    train(TrainConfig.from_args(args))
    return 0


if __name__ == "__main__":  # torchrun -m negminer.training.train ...
    parser = argparse.ArgumentParser(prog="negminer.training.train", description=__doc__.splitlines()[0])
    add_arguments(parser)
    sys.exit(main(*parser.parse_known_args()))
