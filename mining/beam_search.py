"""Exact inner-product top-k on Beam: one task per (corpus block x query block), partial top-k merged by a combine.

The merge is `index.merge_topk` (score descending, lower document number first on ties): a total order on
(score, document), so merging partial lists in any grouping and order gives the same top-k — what a CombineFn
needs to be correct on any runner. Each task runs the same FAISS flat search as the in-process miner.

Usage (inside a pipeline):
    top = SearchBlocks(k=100)(corpus_blocks, query_blocks)  # -> (query block id, (scores (B, k), docs (B, k)))
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

import apache_beam as beam
import numpy as np

from negminer.mining import index as ix

Partial = tuple[np.ndarray, np.ndarray]  # (B, k) float32 scores, (B, k) int64 document numbers (-1 padded)


class MergeTopK(beam.CombineFn):
    """Partial (scores, docs) lists of one query block -> the best `k` of their union."""

    def __init__(self, k: int | None):
        if k is not None and k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k = k  # None: as wide as the widest partial (tasks already cut their lists to k)

    def create_accumulator(self) -> Partial | None:
        return None

    def add_input(self, acc: Partial | None, part: Partial) -> Partial:
        if acc is None:
            return part
        k = self.k or max(acc[1].shape[1], part[1].shape[1])
        return ix.merge_topk(acc[0], acc[1], part[0], part[1], k)

    def merge_accumulators(self, accs: Iterable[Partial | None]) -> Partial | None:
        return functools.reduce(lambda a, b: b if a is None else a if b is None else self.add_input(a, b), accs, None)

    def extract_output(self, acc: Partial | None) -> Partial | None:
        if acc is None:
            return None
        s, i = acc
        if self.k is not None and s.shape[1] < self.k:  # a corpus smaller than k: pad as the in-process search does
            pad = self.k - s.shape[1]
            s = np.pad(s, ((0, 0), (0, pad)), constant_values=-np.inf)
            i = np.pad(i, ((0, 0), (0, pad)), constant_values=-1)
        return s, i


class SearchBlockFn(beam.DoFn):
    """(document numbers, vectors) of one corpus block x every query block -> (query block id, partial top-k)."""

    def __init__(self, k: int, gpu: bool = False):
        self.k, self.gpu = k, gpu

    def process(self, block: tuple[np.ndarray, np.ndarray], queries: Iterable[tuple[int, np.ndarray]], k: int = 0):
        docs, vecs = block
        k = k or self.k
        for qid, q in queries:
            s, i = ix.search_sharded(q, [(np.asarray(docs, np.int64), vecs)], min(k, len(docs)), gpu=self.gpu)
            if s.shape[1] < k:  # a block smaller than k: padded, so that merging partials never narrows below k
                s = np.pad(s, ((0, 0), (0, k - s.shape[1])), constant_values=-np.inf)
                i = np.pad(i, ((0, 0), (0, k - i.shape[1])), constant_values=-1)
            beam.metrics.Metrics.counter("negminer.mine", "search_tasks").inc()
            yield qid, (s, i)


class SearchBlocks(beam.PTransform):
    """(corpus blocks, query blocks) -> PCollection[(query block id, (scores (B, k), docs (B, k)))].

    corpus blocks: PCollection[(int64 document numbers (n,), float32 vectors (n, D))];
    query blocks: PCollection[(block id, float32 vectors (B, D))], passed to every task as a side input iterated
    block by block (`AsIter`: a runner may stream it instead of holding every query vector in each worker);
    k: an int, or an `AsSingleton` side input holding it.
    """

    def __init__(self, k: int | beam.pvalue.AsSingleton, gpu: bool = False):
        super().__init__()
        self.k, self.gpu = k, gpu

    def expand(self, pcolls):
        corpus_blocks, query_blocks = pcolls
        fixed = self.k if isinstance(self.k, int) else None  # else a side input known once the job has run so far
        side = [] if fixed is not None else [self.k]
        return (
            corpus_blocks
            | "Search" >> beam.ParDo(SearchBlockFn(fixed or 0, self.gpu), beam.pvalue.AsIter(query_blocks), *side)
            | "MergeTopK" >> beam.CombinePerKey(MergeTopK(fixed))
        )
