"""Writing mined shards: negatives and teacher scores into the input rows, split by split, and the manifest."""

from __future__ import annotations

import array
import dataclasses
import json
import os
import shutil
import tempfile
import uuid
from typing import Any

import numpy as np

import negminer
from negminer.mining import extsort
from negminer.mining.config import MineConfig
from negminer.mining.corpus import Corpus, take
from negminer.mining.groups import Groups
from negminer.mining.rerank import SCORE_KIND as RERANKER_KIND
from negminer.mining.spool import ShardSpool
from negminer.pipelines import io, runner
from negminer.pipelines import schema as S

ROWS_AT_ONCE = 1024  # input rows turned into dicts at once while writing
RETRIEVER_KEY = "retriever_scores"  # provenance key holding the retriever's scores when a reranker is the teacher


def score_kind(cfg: MineConfig) -> str:
    """What the shards' teacher scores are: reranker logits, or retriever cosines (encoders are L2-normalised)."""
    if not cfg.reranker:
        return "cosine"
    return "probability" if cfg.reranker_scores == "probability" else RERANKER_KIND


def shard_count(files: list[str]) -> int:
    """Output shards when `--num-shards` is not given: as many as the input split has (1 for other file names)."""
    parsed = [S.parse_shard_name(f) for f in files]
    return max((p[2] for p in parsed if p), default=1)


def score_stats(values: np.ndarray) -> dict[str, float | int]:
    """count, mean, std, min, quartiles and max of the finite values (more than `extsort.BLOCK` values: block by
    block, the quartiles through a bounded-memory sort)."""
    v = np.asarray(values).reshape(-1)
    if len(v) > extsort.BLOCK:
        return _stats_in_blocks(v)
    v = np.asarray(v, dtype=np.float64)
    v = v[np.isfinite(v)]
    if not len(v):
        return {"count": 0}
    q = np.percentile(v, [25, 50, 75])
    out = {"count": int(len(v)), "mean": v.mean(), "std": v.std(), "min": v.min()}
    out.update({"p25": q[0], "p50": q[1], "p75": q[2], "max": v.max()})
    return {k: (round(float(x), 6) if k != "count" else x) for k, x in out.items()}


def _finite(v: np.ndarray):
    """The finite values of `v` as float64, a block at a time."""
    for a, b in extsort.blocks(len(v)):
        x = np.asarray(v[a:b], dtype=np.float64)
        yield x[np.isfinite(x)]


def _stats_in_blocks(v: np.ndarray) -> dict[str, float | int]:
    """`score_stats` of a long array, a block at a time (np.percentile's linear interpolation)."""
    parts = [(len(x), x.sum(), x.min(initial=np.inf), x.max(initial=-np.inf)) for x in _finite(v)]
    n = sum(p[0] for p in parts)
    if not n:
        return {"count": 0}
    mean = sum(p[1] for p in parts) / n
    std = np.sqrt(sum(((x - mean) ** 2).sum() for x in _finite(v)) / n)
    work = os.path.join(tempfile.gettempdir(), "negminer-scratch")
    keys, at, sign = extsort.scratch(work, np.uint64, n), 0, np.uint64(1 << 63)
    for x in _finite(v):  # float64 bits -> unsigned keys in the same order
        bits = x.view(np.uint64)
        keys[at : at + len(x)] = np.where(bits & sign, ~bits, bits | sign)
        at += len(x)
    _, ordered = extsort.argsort(keys, work)

    def value(i: int) -> float:
        k = np.uint64(ordered[i])
        return float((k & ~sign if k & sign else ~k).view(np.float64))

    out = {"count": n, "mean": mean, "std": std, "min": min(p[2] for p in parts)}
    for q in (25, 50, 75):
        pos = q / 100 * (n - 1)
        i, t = int(pos), pos - int(pos)
        a, b = value(i), value(min(i + 1, n - 1))
        out[f"p{q}"] = b - (b - a) * (1 - t) if t >= 0.5 else a + (b - a) * t
    out["max"] = max(p[3] for p in parts)
    return {k: (round(float(x), 6) if k != "count" else x) for k, x in out.items()}


def with_retriever_scores(provenance: str | None, positive: float, negatives: list[float]) -> str:
    """Provenance JSON with the retriever's scores added under `retriever_scores` (other keys kept)."""
    try:
        fields = json.loads(provenance) if provenance else {}
    except json.JSONDecodeError:
        fields = {"original": provenance}
    if not isinstance(fields, dict):
        fields = {"original": fields}
    fields[RETRIEVER_KEY] = {"positive": positive, "negatives": negatives}
    return S.provenance_json(**fields)


def row_positive_slot(groups: Groups, work: str | None = None) -> np.ndarray:
    """For every input row, the index of its own positive in the `pos_docs` CSR of its group (a bounded-memory
    sort of (group, document) keys; scratch arrays under `work`, by default the system temp dir)."""
    work = work or os.path.join(tempfile.gettempdir(), "negminer-scratch")
    n_docs = int(max(groups.pos_docs.max(initial=0), groups.row_pos_doc.max(initial=0))) + 1
    keys = extsort.scratch(work, np.int64, len(groups.pos_docs))
    for a, b in extsort.blocks(len(keys)):
        owner = np.searchsorted(groups.pos_indptr, np.arange(a, b), "right") - 1
        keys[a:b] = owner.astype(np.int64) * n_docs + np.asarray(groups.pos_docs[a:b])
    order, sorted_keys = extsort.argsort(keys, work)
    slot = extsort.scratch(work, np.int64, len(groups.row_group))
    for a, b in extsort.blocks(len(slot)):
        want = np.asarray(groups.row_group[a:b]) * n_docs + np.asarray(groups.row_pos_doc[a:b])
        slot[a:b] = np.asarray(order[np.searchsorted(sorted_keys, want)])
    return slot


def mined_rows(cfg: MineConfig, files: list[str], corpus: Corpus, groups: Groups, mined, counters: dict[str, int]):
    """Yield every kept input row (of `files`, in order), with its negatives and scores."""
    slot = row_positive_slot(groups, corpus.scratch_dir)
    relabelled: set[int] = set()
    reranked = cfg.reranker is not None
    r = 0
    for path in files:
        for batch in (
            b.slice(lo, ROWS_AT_ONCE) for b in io.read_shards([path]) for lo in range(0, len(b), ROWS_AT_ONCE)
        ):
            rows = batch.to_pylist()
            g = groups.row_group[r : r + len(rows)]
            docs = mined.neg_doc[g]
            flat = docs[docs >= 0]
            texts = take(corpus.texts, flat).to_pylist()
            ids = take(corpus.doc_ids, flat).to_pylist()
            cut = 0
            for i, row in enumerate(rows):
                f = int(mined.found[g[i]])
                short = f < cfg.num_negatives
                counters["shortfall_rows"] += short
                if short and cfg.drop_shortfall:
                    counters["dropped_rows"] += 1
                    cut += f
                    continue
                s = slot[r + i]
                row[S.NEGATIVES], row[S.NEGATIVE_IDS] = texts[cut : cut + f], ids[cut : cut + f]
                row[S.POSITIVE_SCORE] = float(mined.pos_score[s])
                row[S.NEGATIVE_SCORES] = [float(x) for x in mined.neg_score[g[i], :f]]
                if reranked:
                    negs = [float(x) for x in mined.neg_retriever[g[i], :f]]
                    row[S.PROVENANCE] = with_retriever_scores(row[S.PROVENANCE], float(mined.pos_retriever[s]), negs)
                cut += f
                yield row
                yield from relabelled_rows(row, corpus, mined, int(g[i]), relabelled)
            r += len(rows)


def relabelled_rows(row: dict, corpus: Corpus, mined, group: int, done: set[int]):
    """`--judge-relabel`: once per query group, one extra row per candidate the judge called relevant, as the
    positive (teacher score as its score), with the group's negatives and `relabelled_by: judge` provenance."""
    if group in done or group not in mined.relabel:
        return
    done.add(group)
    for doc, score in mined.relabel[group]:
        text, doc_id = corpus.texts[doc].as_py(), corpus.doc_ids[doc].as_py()
        extra = {**row, S.POSITIVE: text, S.POSITIVE_ID: doc_id, S.POSITIVE_SCORE: score}
        extra[S.ID] = S.make_id(row[S.SOURCE], row[S.QUERY], text)
        extra[S.PROVENANCE] = S.provenance_json(relabelled_by="judge", from_row=row[S.ID])
        yield extra


def write_output(  # noqa: PLR0913 — the mined job's parts; cfg carries the settings
    cfg: MineConfig, files: list[str], corpus: Corpus, groups: Groups, mined, rejects, info, timings
) -> dict[str, Any]:
    """Write split `cfg.split` of the output (its shards streamed through a `ShardSpool`, the corpus rejects, then
    its manifest entry; other splits of the output directory are kept); returns the manifest."""
    counters = {"shortfall_rows": 0, "dropped_rows": 0}
    pos_scores, neg_scores = array.array("f"), array.array("f")  # float32, as the shards store them
    spill = os.path.join(cfg.work_dir, "spill", uuid.uuid4().hex)
    io.begin_split(cfg.output, cfg.split)
    n = cfg.num_shards or shard_count(files)
    spool = ShardSpool(spill, cfg.output, cfg.split, n, len(groups.row_group))
    try:
        for row in mined_rows(cfg, files, corpus, groups, mined, counters):
            spool.add(row)
            pos_scores.append(row[S.POSITIVE_SCORE])
            neg_scores.extend(row[S.NEGATIVE_SCORES])
        stats = spool.finish()
    finally:
        shutil.rmtree(spill, ignore_errors=True)
    summary = MinedSummary(
        removed=dict(mined.removed),
        shortfall_groups=int((mined.found < cfg.num_negatives).sum()),
        shortfall_rows=counters["shortfall_rows"],
        dropped_rows=counters["dropped_rows"],
        pos_scores=np.frombuffer(pos_scores, np.float32),
        neg_scores=np.frombuffer(neg_scores, np.float32),
        pos_retriever=mined.pos_retriever,
        neg_retriever=mined.neg_retriever,
        rows_held_max=spool.max_held,
    )
    return commit_mined(cfg, files, stats, summary, rejects, {**info, "timings_s": timings})


@dataclasses.dataclass
class MinedSummary:
    """What the manifest says about a mined split besides its shards' statistics (both drivers fill it)."""

    removed: dict[str, int]
    shortfall_groups: int  # query groups with fewer than `--num-negatives`
    shortfall_rows: int
    dropped_rows: int
    pos_scores: np.ndarray  # teacher scores of the written rows' positives, in row order ...
    neg_scores: np.ndarray  # ... and of their negatives
    pos_retriever: np.ndarray  # retriever scores of every positive of every group
    neg_retriever: np.ndarray  # ... and of every chosen negative (nan padded)
    rows_held_max: int | None  # most row dicts held at once (None: not measured)


def commit_mined(  # noqa: PLR0913 — the parts of a finished split; cfg carries the settings
    cfg: MineConfig, files: list[str], stats: dict, summary: MinedSummary, rejects, info: dict
) -> dict[str, Any]:
    """Write the rejects and the manifest entry of split `cfg.split` after its shards (`stats`); returns the
    manifest. `info` holds the run's model/index/corpus facts and `timings_s`."""
    try:
        source = io.read_manifest(cfg.input)
    except FileNotFoundError:
        source = {}
    source = {**source, **((source.get("splits") or {}).get(cfg.split) or {})}  # the input split's own build
    inputs = files + (io.expand_patterns(cfg.corpus) if cfg.corpus else [])
    info = dict(info)
    timings = info.pop("timings_s", {})
    mining = {
        **info,
        "thresholds": {
            **{k: v for k, v in dataclasses.asdict(cfg.rules()).items() if k != "ceiling"},
            "positive_aware": str(cfg.ceiling()),
            "reranker_threshold": cfg.reranker_threshold if cfg.reranker else None,
        },
        "removed": dict(summary.removed),
        "shortfall": {
            "groups": summary.shortfall_groups,
            "rows": summary.shortfall_rows,
            "rows_dropped": summary.dropped_rows,
        },
        "scores": {
            "teacher": "reranker" if cfg.reranker else "retriever",
            "kind": score_kind(cfg),
            "positive": score_stats(summary.pos_scores),
            "negative": score_stats(summary.neg_scores),
            "retriever_positive": score_stats(summary.pos_retriever),
            "retriever_negative": score_stats(summary.neg_retriever),
        },
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "rows_held_max": summary.rows_held_max,
    }
    record = {
        "negminer_version": negminer.__version__,
        "command": "mine",
        "argv": runner.command_line(),
        "config": dataclasses.asdict(cfg),
        "inputs": [io.fingerprint(f) for f in inputs],
        "input_build": {k: source.get(k) for k in ("command", "config", "inputs") if k in source},
        "mining": mining,
    }
    record["rejects"] = io.write_rejects(rejects, cfg.output, cfg.split)
    return io.commit_split(cfg.output, cfg.split, stats, record)
