"""Writing mined shards: negatives and teacher scores into the input rows, split by split, and the manifest."""

from __future__ import annotations

import array
import dataclasses
import json
import os
import re
import shutil
import sys
import uuid
from typing import Any

import numpy as np
from apache_beam.io.filesystems import FileSystems

import negminer
from negminer.mining.config import MineConfig
from negminer.mining.corpus import Corpus
from negminer.mining.groups import Groups
from negminer.mining.spool import ShardSpool
from negminer.pipelines import io
from negminer.pipelines import schema as S

_SHARD = re.compile(r"^(?P<split>.+)-\d{5}-of-(?P<count>\d{5})\.parquet$")
RETRIEVER_KEY = "retriever_scores"  # provenance key holding the retriever's scores when a reranker is the teacher


def split_of(path: str) -> tuple[str, int]:
    """(split, shard count) from a `{split}-{i:05d}-of-{n:05d}.parquet` name; (`train`, 1) for other names."""
    m = _SHARD.match(path.rsplit("/", 1)[-1])
    return (m["split"], int(m["count"])) if m else ("train", 1)


def score_stats(values: np.ndarray) -> dict[str, float | int]:
    """count, mean, std, min, quartiles and max of the finite values."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if not len(v):
        return {"count": 0}
    q = np.percentile(v, [25, 50, 75])
    out = {"count": int(len(v)), "mean": v.mean(), "std": v.std(), "min": v.min()}
    out.update({"p25": q[0], "p50": q[1], "p75": q[2], "max": v.max()})
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


def row_positive_slot(groups: Groups) -> np.ndarray:
    """For every input row, the index of its own positive in the `pos_docs` CSR of its group."""
    n_docs = int(max(groups.pos_docs.max(initial=0), groups.row_pos_doc.max(initial=0))) + 1
    owner = np.repeat(np.arange(len(groups)), np.diff(groups.pos_indptr))
    keys = owner.astype(np.int64) * n_docs + groups.pos_docs
    order = np.argsort(keys, kind="stable")
    want = groups.row_group * n_docs + groups.row_pos_doc
    return order[np.searchsorted(keys, want, sorter=order)]


def clear_output(out_dir: str) -> None:
    pats = [io.join(out_dir, "*-*-of-*.parquet"), io.join(out_dir, S.REJECTS_DIR, "*.parquet")]
    stale = [m.path for r in FileSystems.match(pats) for m in r.metadata_list]
    stale += [p for p in [io.join(out_dir, S.MANIFEST_NAME)] if FileSystems.exists(p)]
    if stale:
        FileSystems.delete(stale)


def mined_rows(cfg: MineConfig, corpus: Corpus, groups: Groups, mined, counters: dict[str, int]):
    """Yield (split, shard count, row dict) for every kept input row, with its negatives and scores."""
    slot = row_positive_slot(groups)
    relabelled: set[int] = set()
    reranked = cfg.reranker is not None
    r = 0
    for path in io.shard_files(cfg.input):
        split, count = split_of(path)
        for batch in io.read_shards(path):
            rows = batch.to_pylist()
            g = groups.row_group[r : r + len(rows)]
            docs = mined.neg_doc[g]
            flat = docs[docs >= 0]
            texts = corpus.texts.take(flat).to_pylist()
            ids = corpus.doc_ids.take(flat).to_pylist()
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
                yield split, count, row
                yield from ((split, count, x) for x in relabelled_rows(row, corpus, mined, int(g[i]), relabelled))
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


def write_output(cfg: MineConfig, corpus: Corpus, groups: Groups, mined, rejects, info, timings) -> dict[str, Any]:
    """Write every split's shards (streamed through a `ShardSpool`), the corpus rejects and the manifest."""
    clear_output(cfg.output)
    counters = {"shortfall_rows": 0, "dropped_rows": 0}
    spools: dict[str, ShardSpool] = {}
    pos_scores, neg_scores = array.array("f"), array.array("f")  # float32, as the shards store them
    spill = os.path.join(cfg.work_dir, "spill", uuid.uuid4().hex)
    try:
        for split, count, row in mined_rows(cfg, corpus, groups, mined, counters):
            if split not in spools:
                n = cfg.num_shards or count
                spools[split] = ShardSpool(os.path.join(spill, split), cfg.output, split, n, len(groups.row_group))
            spools[split].add(row)
            pos_scores.append(row[S.POSITIVE_SCORE])
            neg_scores.extend(row[S.NEGATIVE_SCORES])
        splits, stats = {}, {}
        for split, spool in sorted(spools.items()):
            st = spool.finish()
            files = sorted(st.pop("files", []))
            splits[split] = {
                "rows": st.get("rows", 0),
                "shards": len(files),
                "files": [f.rsplit("/", 1)[-1] for f in files],
            }
            stats = io.merge_counts(stats, st)
    finally:
        shutil.rmtree(spill, ignore_errors=True)
    held = max((s.max_held for s in spools.values()), default=0)
    reject_counts = io.write_rejects(rejects, cfg.output)
    try:
        source = io.read_manifest(cfg.input)
    except FileNotFoundError:
        source = {}
    inputs = io.shard_files(cfg.input) + (io.expand_patterns(cfg.corpus) if cfg.corpus else [])
    has_found = mined.found
    mining = {
        **info,
        "thresholds": {
            **{k: v for k, v in dataclasses.asdict(cfg.rules()).items() if k != "ceiling"},
            "positive_aware": str(cfg.ceiling()),
        },
        "removed": dict(mined.removed),
        "shortfall": {
            "groups": int((has_found < cfg.num_negatives).sum()),
            "rows": counters["shortfall_rows"],
            "rows_dropped": counters["dropped_rows"],
        },
        "scores": {
            "teacher": "reranker" if cfg.reranker else "retriever",
            "positive": score_stats(np.array(pos_scores)),
            "negative": score_stats(np.array(neg_scores)),
            "retriever_positive": score_stats(mined.pos_retriever),
            "retriever_negative": score_stats(mined.neg_retriever),
        },
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "rows_held_max": held,
    }
    manifest = {
        **{k: v for k, v in source.items() if k not in ("mining",)},
        "negminer_version": negminer.__version__,
        "command": "mine",
        "argv": list(sys.argv[1:]),
        "config": dataclasses.asdict(cfg),
        "inputs": [io.fingerprint(f) for f in inputs],
        "input_build": {k: source.get(k) for k in ("command", "config", "inputs") if k in source},
        "format_version": S.FORMAT_VERSION,
        "splits": splits,
        "counts": {
            "split": {k: v["rows"] for k, v in splits.items()},
            "source": dict(sorted(stats.get("source", {}).items())),
            "pair_type": dict(sorted(stats.get("pair_type", {}).items())),
        },
        "rows": stats.get("rows", 0),
        "negatives": stats.get("negatives", 0),
        "rows_without_negatives": stats.get("rows_without_negatives", 0),
        "duplicates_dropped": stats.get("duplicates", 0),
        "rejects": reject_counts,
        "rejects_total": sum(reject_counts.values()),
        "mining": mining,
    }
    io.write_manifest(cfg.output, manifest)
    return manifest
