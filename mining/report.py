"""Summary of a mined shard directory for `negminer inspect`: settings, removals, shortfall, score histogram."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pyarrow.compute as pc

from negminer.pipelines import io
from negminer.pipelines import schema as S

HISTOGRAM_NAME = "score_histogram.png"
RELATIVE_NAME = "negatives_vs_positive.png"


def read_scores(shard_dir: str) -> tuple[np.ndarray, np.ndarray]:
    """All positive scores and all negative scores of the shards (nulls skipped)."""
    pos, neg = [], []
    for batch in io.read_shards(shard_dir, columns=[S.POSITIVE_SCORE, S.NEGATIVE_SCORES]):
        p = batch.column(S.POSITIVE_SCORE).drop_null()
        pos.append(p.to_numpy(zero_copy_only=False))
        n = pc.list_flatten(batch.column(S.NEGATIVE_SCORES)).drop_null()
        neg.append(n.to_numpy(zero_copy_only=False))
    cat = lambda xs: np.concatenate(xs).astype(np.float64) if xs else np.zeros(0)  # noqa: E731
    return cat(pos), cat(neg)


def read_relative(shard_dir: str) -> tuple[np.ndarray, np.ndarray]:
    """Per kept negative: its row's positive score and its own score (rows without scores skipped)."""
    pos, neg = [], []
    for batch in io.read_shards(shard_dir, columns=[S.POSITIVE_SCORE, S.NEGATIVE_SCORES]):
        scores = batch.column(S.NEGATIVE_SCORES)
        p = batch.column(S.POSITIVE_SCORE).to_numpy(zero_copy_only=False).astype(np.float64)
        n = pc.list_value_length(scores).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
        flat = pc.list_flatten(scores).fill_null(np.nan).to_numpy(zero_copy_only=False).astype(np.float64)
        pos.append(np.repeat(p, n))
        neg.append(flat)
    cat = lambda xs: np.concatenate(xs) if xs else np.zeros(0)  # noqa: E731
    p, n = cat(pos), cat(neg)
    ok = ~(np.isnan(p) | np.isnan(n))
    return p[ok], n[ok]


def plot_relative(pos: np.ndarray, neg: np.ndarray, path: str, title: str = "") -> str:
    """PNG: each kept negative's score against its positive's (left, with y = x and perc:0.95) and the
    distribution of negative minus positive (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.5))
    ax.scatter(pos, neg, s=4, alpha=0.35)
    if len(pos):
        lo, hi = float(min(pos.min(), neg.min())), float(max(pos.max(), neg.max()))
        xs = np.linspace(lo, hi, 50)
        ax.plot(xs, xs, "k-", lw=1, label="negative = positive")
        ax.plot(xs, xs - np.abs(xs) * 0.05, "r--", lw=1, label="perc:0.95 ceiling")
        ax.legend(loc="upper left")
    ax.set_xlabel("positive score")
    ax.set_ylabel("kept negative score")
    ax.set_title(title or "kept negatives vs their positive")
    bx.hist(neg - pos, bins=50)
    bx.axvline(0.0, color="k", lw=1)
    bx.set_xlabel("negative score - positive score")
    bx.set_ylabel("kept negatives")
    bx.set_title(f"n={len(neg)}, mean {np.mean(neg - pos) if len(neg) else float('nan'):+.3f}")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_histogram(pos: np.ndarray, neg: np.ndarray, path: str, title: str = "") -> str:
    """PNG of positive vs negative score distributions (matplotlib Agg, no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    both = np.concatenate([pos, neg])
    bins = np.linspace(both.min(), both.max(), 50) if len(both) and both.min() < both.max() else 10
    ax.hist(neg, bins=bins, alpha=0.6, label=f"negatives (n={len(neg)})", density=True)
    ax.hist(pos, bins=bins, alpha=0.6, label=f"positives (n={len(pos)})", density=True)
    ax.set_xlabel("teacher score")
    ax.set_ylabel("density")
    ax.set_title(title or "positive vs negative scores")
    ax.legend()
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _fmt_stats(st: dict[str, Any]) -> str:
    if not st.get("count"):
        return "none"
    keys = ("count", "mean", "std", "min", "p25", "p50", "p75", "max")
    return " ".join(f"{k}={st[k]:.4f}" if isinstance(st[k], float) else f"{k}={st[k]}" for k in keys if k in st)


def describe(shard_dir: str, manifest: dict[str, Any], plot_path: str | None = None) -> list[str]:
    """Lines describing how `shard_dir` was mined; writes the score histogram PNG (default in the dir itself)."""
    m = manifest.get("mining")
    if not m:
        return ["mining: none (these shards were not mined: manifest has no 'mining' key)"]
    th = m.get("thresholds", {})
    lines = [
        f"mining: model {m.get('model')} (fingerprint {str(m.get('fingerprint'))[:16]}, pooling {m.get('pooling')}, "
        f"max_length {m.get('max_length')}, {m.get('dtype')} on {m.get('device')})",
        f"  index: {m.get('index')} top-{m.get('k')}{' on GPU' if m.get('faiss_gpu') else ''}; "
        f"reranker: {m.get('reranker') or 'none'}",
        "  thresholds: " + " ".join(f"{k}={v}" for k, v in th.items()),
        "  removed: " + (", ".join(f"{k}={v}" for k, v in m.get("removed", {}).items()) or "nothing"),
    ]
    j = m.get("judge")
    if j:
        lines.append(
            f"  judge: {j.get('model')} ({j.get('backend')}, {j.get('mode')}, {j.get('rounds')} rounds): asked "
            f"{j.get('asked')}, relevant {j.get('relevant')}, not relevant {j.get('not_relevant')}, unparseable "
            f"{j.get('unparseable')}, failed {j.get('failed')}; cache hits {j.get('llm', {}).get('cache_hits')}"
        )
    short = m.get("shortfall", {})
    lines.append(
        f"  shortfall: {short.get('rows', 0)} rows ({short.get('groups', 0)} queries) got fewer than "
        f"{th.get('num_negatives')} negatives; {short.get('rows_dropped', 0)} dropped"
    )
    lines.append(f"  encoded now: {m.get('encoded')} (the rest came from the cache)")
    scores = m.get("scores", {})
    lines.append(f"  positive scores ({scores.get('teacher')}): {_fmt_stats(scores.get('positive', {}))}")
    lines.append(f"  negative scores ({scores.get('teacher')}): {_fmt_stats(scores.get('negative', {}))}")
    if scores.get("teacher") == "reranker":
        lines.append(f"  retriever positive scores: {_fmt_stats(scores.get('retriever_positive', {}))}")
        lines.append(f"  retriever negative scores: {_fmt_stats(scores.get('retriever_negative', {}))}")
    pos, neg = read_scores(shard_dir)
    if len(pos) or len(neg):
        path = plot_path or io.join(shard_dir, HISTOGRAM_NAME)
        if "://" in path:
            lines.append(f"  histogram: not written ({path} is not local; pass a local plot path)")
        else:
            lines.append(f"  histogram: {plot_histogram(pos, neg, path, title=_title(m))}")
            lines += _relative_lines(shard_dir, os.path.join(os.path.dirname(os.path.abspath(path)), RELATIVE_NAME))
    return lines


def _relative_lines(shard_dir: str, path: str) -> list[str]:
    """Where the kept negatives sit relative to their own row's positive: stats line and the PNG."""
    p, n = read_relative(shard_dir)
    if not len(n):
        return []
    d = n - p
    q = np.percentile(d, [5, 50, 95])
    above = int((d >= 0).sum())
    return [
        f"  negatives - positive: mean={d.mean():+.4f} p5={q[0]:+.4f} p50={q[1]:+.4f} p95={q[2]:+.4f}; "
        f"{above} of {len(d)} score at or above their positive",
        f"  negatives vs positive: {plot_relative(p, n, path)}",
    ]


def _title(mining: dict) -> str:
    """Short plot title: the model's last path parts (a local path can be long) and the index."""
    model = str(mining.get("model", "")).rstrip("/")
    short = "/".join(model.split("/")[-2:]) if model else "model"
    return f"teacher scores: {short}"
