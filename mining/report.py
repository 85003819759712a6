"""Summary of a mined shard directory for `negminer inspect`: settings, removals, shortfall, score histogram."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pyarrow.compute as pc

from negminer.pipelines import io
from negminer.pipelines import schema as S

HISTOGRAM_NAME = "score_histogram.png"


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
    return lines


def _title(mining: dict) -> str:
    """Short plot title: the model's last path parts (a local path can be long) and the index."""
    model = str(mining.get("model", "")).rstrip("/")
    short = "/".join(model.split("/")[-2:]) if model else "model"
    return f"teacher scores: {short}"
