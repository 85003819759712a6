"""Selection and writing on Beam: query groups in the in-process miner's batches, input rows joined to their pick.

A select task takes one batch of `mine.GROUP_BATCH` query groups (the batches the in-process miner cuts), reads only
what it needs from the run's shared files (group arrays, corpus texts and embedding locations memory-mapped, its rows
of the top-k) and runs `mine.select_all` on that batch alone: the same arrays and calls, so the same picks and
reranker batches. Input rows are read file by file, joined to their group's pick by group number (CoGroupByKey) and
written by the pipelines' `WriteShardFn` (the bytes of the in-process `ShardSpool`). No stage holds the corpus or
all rows; the manifest is written last from counts and score arrays gathered by combines.

Usage (inside a pipeline, see `beam_mine.build_pipeline`):
    selected = batch_numbers | Select(run)  # .picks: (group number, Pick); [SUMMARY]: one BatchSummary per batch
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import ModelHandler, RunInference
from apache_beam.utils.shared import Shared

from negminer.mining import mine as core
from negminer.mining.corpus import take
from negminer.mining.groups import Groups
from negminer.mining.output import MinedSummary, commit_mined, with_retriever_scores
from negminer.pipelines import io
from negminer.pipelines import schema as S
from negminer.pipelines.sink import WriteShardFn

SUMMARY = "summary"  # tagged output of SelectFn: one BatchSummary per batch
SCORES = "scores"  # tagged output of MinedRowsFn: one RowScores per group


@dataclasses.dataclass
class Pick:
    """One query group's result: its negatives (N slots, -1 / nan padded) and its positives' scores (CSR order)."""

    neg_doc: np.ndarray  # (N,) int64
    neg_score: np.ndarray  # (N,) float32 teacher
    neg_retriever: np.ndarray  # (N,) float32
    found: int
    pos_score: np.ndarray  # (P,) float32 teacher
    pos_retriever: np.ndarray  # (P,) float32


@dataclasses.dataclass
class BatchSummary:
    first: int  # first group of the batch
    removed: dict[str, int]
    shortfall_groups: int
    pos_retriever: np.ndarray  # the batch's slice of the positives' CSR
    neg_retriever: np.ndarray  # (B, N)
    reranker: str | None


@dataclasses.dataclass
class RowScores:
    rows: np.ndarray  # (m,) input row numbers of the group's written rows
    pos: np.ndarray  # (m,) their positive's teacher score
    neg: list[np.ndarray]  # their negatives' teacher scores
    shortfall_rows: int
    dropped_rows: int


class _Texts:
    """What `select_all` reads of a corpus: its texts (memory-mapped, indexed by document number)."""

    def __init__(self, texts):
        self.texts = texts


def _select(run, b: int, reranker, lexical=None, coverage=None) -> tuple[int, Groups, Any]:
    """`mine.select_all` on group batch `b` alone: (its first group, its groups, the Mined result)."""
    cfg = run.cfg
    lo = b * core.GROUP_BATCH
    hi = min(lo + core.GROUP_BATCH, run.meta()["queries"])
    groups = run.group_batch(lo, hi)
    scores, idx = run.top(lo, hi)
    docs, doc_loc = run.located("documents")
    queries, (qchunk, qrow) = run.located("queries")
    q = queries.gather(np.asarray(qchunk[lo:hi]), np.asarray(qrow[lo:hi]))  # (B, D)
    texts = _Texts(run.texts("documents"))
    threshold = core.verdict_threshold(cfg)
    mined = core.select_all(
        cfg.rules(), groups, texts, docs, doc_loc, q, idx, scores, reranker, lexical, None, threshold, coverage
    )
    return lo, groups, mined


class _RecordingReranker:
    """Stands in for the reranker in a first pass over a batch: records the (queries, documents) lists `rescore`
    asks to score (they depend on the rules and the retriever only), answers with placeholders."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], list[str]]] = []

    def score(self, queries: list[str], docs: list[str], desc: str = "rerank") -> np.ndarray:
        self.calls.append((list(queries), list(docs)))
        return np.zeros(len(docs), np.float32)


class _ReplayReranker:
    """Answers `rescore`'s calls, in order, with the scores RunInference computed for the recorded calls."""

    def __init__(self, scores: list[np.ndarray], name: str):
        self.scores, self._name = list(scores), name

    def score(self, queries: list[str], docs: list[str], desc: str = "rerank") -> np.ndarray:
        out = self.scores.pop(0)
        if len(out) != len(docs):
            raise ValueError(f"replayed {len(out)} reranker scores for {len(docs)} pairs")
        return out

    def name(self) -> str:
        return self._name


class RerankPairsFn(beam.DoFn):
    """Batch number -> (batch number, [(queries, documents)]): the reranker calls of the batch, in order."""

    def __init__(self, run):
        self.run = run

    def process(self, b: int):
        recorder = _RecordingReranker()
        _select(self.run, b, recorder)
        yield b, recorder.calls


class RerankHandler(ModelHandler):
    """(batch number, [(queries, documents)]) -> (batch number, ([float32 scores per call], reranker name)): the
    cross-encoder through RunInference (one model per worker process), each recorded call scored as in-process."""

    def __init__(self, cfg):
        super().__init__(max_batch_size=1)  # an element already holds the batch's calls, batched as in-process
        self.cfg = cfg

    def load_model(self):
        from negminer.mining.encode import resolve_device, resolve_dtype
        from negminer.mining.rerank import Reranker

        cfg = self.cfg
        device = resolve_device(cfg.device)
        return Reranker.from_pretrained(
            cfg.reranker,
            device,
            resolve_dtype(cfg.dtype, device),
            max_length=cfg.reranker_max_length,
            batch_size=cfg.batch_size,
            probabilities=cfg.reranker_scores == "probability",
        )

    def run_inference(self, batch: Sequence[tuple[int, list]], model, inference_args=None) -> Iterable[Any]:
        return [(b, ([model.score(q, d) for q, d in calls], model.name())) for b, calls in batch]


def _lexical_index(run):
    """The `--lexical` rule's BM25 index over the run's corpus texts."""
    from negminer.mining.lexical import LexicalIndex

    return LexicalIndex(run.texts("documents").to_pylist())


class SelectFn(beam.DoFn):
    """(batch number, reranker scores or None) -> (group number, Pick) per group of the batch; tagged SUMMARY: the
    batch's BatchSummary."""

    def __init__(self, run):
        self.run = run
        self._shared, self._shared_coverage = Shared(), Shared()  # one object per Shared handle (tags reload)
        self.lexical = self.coverage = None

    def setup(self) -> None:  # Shared holds these weakly: the attributes keep them alive while the DoFn lives
        run, rules = self.run, self.run.cfg.rules()
        if rules.coverage is not None:  # the mining model's token states, loaded once per process
            self.coverage = self._shared_coverage.acquire(
                lambda: core.make_coverage(run.cfg), tag=f"coverage:{run.dir}"
            )
        if rules.lexical is not None:  # one BM25 index per worker process, over the whole corpus
            self.lexical = self._shared.acquire(lambda: _lexical_index(run), tag=f"lexical:{run.dir}")

    def process(self, element: tuple[int, tuple[list[np.ndarray], str] | None]):
        b, scored = element
        reranker = _ReplayReranker(*scored) if scored is not None else None
        lo, groups, mined = _select(self.run, b, reranker, self.lexical, self.coverage)
        for i in range(len(groups)):
            p0, p1 = groups.pos_indptr[i], groups.pos_indptr[i + 1]
            pick = Pick(
                mined.neg_doc[i], mined.neg_score[i], mined.neg_retriever[i], int(mined.found[i]),
                mined.pos_score[p0:p1], mined.pos_retriever[p0:p1],
            )  # fmt: skip
            yield lo + i, pick
        short = int((mined.found < self.run.cfg.num_negatives).sum())
        name = reranker.name() if reranker else None
        summary = BatchSummary(lo, mined.removed, short, mined.pos_retriever, mined.neg_retriever, name)
        yield beam.pvalue.TaggedOutput(SUMMARY, summary)


class Select(beam.PTransform):
    """PCollection[batch number] -> the SelectFn outputs (`picks`, SUMMARY); with `--reranker`, the batch's reranker
    calls are recorded first and scored by RunInference, then replayed into the selection."""

    def __init__(self, run):
        super().__init__()
        self.run = run

    def expand(self, batches):
        if self.run.cfg.reranker:
            scored = (
                batches
                | "RerankPairs" >> beam.ParDo(RerankPairsFn(self.run))
                | "Rerank" >> RunInference(RerankHandler(self.run.cfg))
            )
        else:
            scored = batches | "NoReranker" >> beam.Map(lambda b: (b, None))
        return scored | "Select" >> beam.ParDo(SelectFn(self.run)).with_outputs(SUMMARY, main="picks")


class ReadRowsFn(beam.DoFn):
    """(input file, number of its first row) -> (group number, (row number, positive slot in the group, row))."""

    def __init__(self, run):
        self.run = run

    def process(self, item: tuple[str, int]):
        path, r = item
        row_group, slot, pos_indptr = (self.run.array(n) for n in ("row_group", "row_slot", "pos_indptr"))
        for batch in io.read_shards([path]):
            for row in batch.to_pylist():
                g = int(row_group[r])
                yield g, (r, int(slot[r] - pos_indptr[g]), row)
                r += 1


class MinedRowsFn(beam.DoFn):
    """(group number, {'rows': [(r, slot, row)], 'pick': [Pick]}) -> the group's rows with their negatives and
    scores (as `output.mined_rows` fills them); tagged SCORES: the group's RowScores."""

    def __init__(self, run):
        self.run = run

    def setup(self) -> None:
        self.texts, self.ids = self.run.texts("documents"), self.run.doc_ids()

    def process(self, element):
        _, parts = element
        (pick,) = parts["pick"]
        cfg, f = self.run.cfg, pick.found
        docs = pick.neg_doc[:f]
        texts, ids = take(self.texts, docs).to_pylist(), take(self.ids, docs).to_pylist()  # not Arrow's take
        negs = [float(x) for x in pick.neg_score[:f]]
        short = f < cfg.num_negatives
        rows, pos = [], []
        dropped = 0
        for r, j, row in sorted(parts["rows"], key=lambda x: x[0]):
            if short and cfg.drop_shortfall:
                dropped += 1
                continue
            row[S.NEGATIVES], row[S.NEGATIVE_IDS] = list(texts), list(ids)
            row[S.POSITIVE_SCORE] = float(pick.pos_score[j])
            row[S.NEGATIVE_SCORES] = list(negs)
            if cfg.reranker is not None:
                retr = [float(x) for x in pick.neg_retriever[:f]]
                row[S.PROVENANCE] = with_retriever_scores(row[S.PROVENANCE], float(pick.pos_retriever[j]), retr)
            rows.append(r)
            pos.append(row[S.POSITIVE_SCORE])
            yield row
        n = len(parts["rows"])
        neg = [np.asarray(pick.neg_score[:f], np.float32)] * len(rows)
        scores = RowScores(np.array(rows, np.int64), np.array(pos, np.float32), neg, n * short, dropped)
        yield beam.pvalue.TaggedOutput(SCORES, scores)


class WriteRows(beam.PTransform):
    """PCollection[row] -> PCollection[dict]: the split's `num_shards` shard files written (every index, empty or
    not; sorted and deduplicated by id) and their merged statistics, one element."""

    def __init__(self, out_dir: str, split: str, num_shards: int):
        super().__init__()
        self.out_dir, self.split, self.n = out_dir, split, num_shards

    def expand(self, rows):
        n = self.n
        every = rows.pipeline | "EveryShard" >> beam.Create([(i, None) for i in range(n)])
        keyed = rows | "KeyByShard" >> beam.Map(lambda r: (io.shard_of(r[S.ID], n), r))
        return (
            (every, keyed)
            | "Flatten" >> beam.Flatten()
            | "GroupShards" >> beam.GroupByKey()
            | "WriteShards" >> beam.ParDo(WriteShardFn(self.out_dir, self.split, n))
            | "MergeStats" >> beam.CombineGlobally(lambda ds: functools.reduce(io.merge_counts, ds, {}))
        )


def summarize(cfg, summaries: list[BatchSummary], scores: list[RowScores]) -> tuple[MinedSummary, str | None]:
    """The batches' and groups' parts in the in-process order (groups, then input rows) -> the manifest's summary."""
    summaries = sorted(summaries, key=lambda s: s.first)
    removed: dict[str, int] = {}
    for s in summaries:
        for rule, count in s.removed.items():
            removed[rule] = removed.get(rule, 0) + count
    rows = np.concatenate([s.rows for s in scores]) if scores else np.zeros(0, np.int64)
    neg = [v for s in scores for v in s.neg]
    order = np.argsort(rows, kind="stable")
    empty = np.zeros(0, np.float32)
    summary = MinedSummary(
        removed=removed,
        shortfall_groups=sum(s.shortfall_groups for s in summaries),
        shortfall_rows=sum(s.shortfall_rows for s in scores),
        dropped_rows=sum(s.dropped_rows for s in scores),
        pos_scores=np.concatenate([s.pos for s in scores])[order] if scores else empty,
        neg_scores=np.concatenate([neg[i] for i in order]) if neg else empty,
        pos_retriever=np.concatenate([s.pos_retriever for s in summaries]),
        neg_retriever=np.concatenate([s.neg_retriever for s in summaries]),
        rows_held_max=None,
    )
    return summary, next((s.reranker for s in summaries), None)


class CommitFn(beam.DoFn):
    """Last: the rejects and the manifest entry of the split, from the shards' statistics and the gathered parts."""

    def __init__(self, run, runner: str):
        self.run, self.runner = run, runner

    def process(self, _, stats: dict, summaries: list, scores: list, encoded: dict):
        run, cfg = self.run, self.run.cfg
        summary, reranker = summarize(cfg, summaries, scores)
        meta = run.meta()
        info: dict[str, Any] = {**meta["info"], "reranker": reranker}
        info["encoded"] = {kind: int(encoded.get(kind, 0)) for kind in ("documents", "queries")}
        info["runner"] = self.runner
        stats = {**stats, "files": sorted(stats.get("files", []))}
        yield commit_mined(cfg, meta["files"], stats, summary, run.rejects(), {**info, "timings_s": {}})
