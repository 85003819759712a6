"""Block-wise exact search on Beam equals the in-process sharded search and a float64 brute force."""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline

from negminer.mining import index as ix
from negminer.mining.beam_search import MergeTopK, SearchBlocks
from tests.mining.test_index_store import brute, unit


def blocks(rng, n_docs=230, n_queries=45, dim=16, doc_block=50, query_block=20):
    docs, queries = unit(rng, n_docs, dim).astype(np.float32), unit(rng, n_queries, dim).astype(np.float32)
    corpus = [
        (np.arange(lo, min(lo + doc_block, n_docs)), docs[lo : lo + doc_block]) for lo in range(0, n_docs, doc_block)
    ]
    qblocks = [(lo // query_block, queries[lo : lo + query_block]) for lo in range(0, n_queries, query_block)]
    return docs, queries, corpus, qblocks


def run_beam(corpus, qblocks, k, tmp_path, options=None, side_k=False) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Run `SearchBlocks` and save each query block's result as .npz files (workers may be other processes);
    `side_k`: k given as a side input (known only once the job runs), as the miner does."""

    def save(element, out=str(tmp_path)):
        qid, (s, i) = element
        np.savez(f"{out}/{qid}.npz", s=s, i=i)

    with TestPipeline(options=options) as p:
        c = p | "Corpus" >> beam.Create(corpus, reshuffle=False)
        q = p | "Queries" >> beam.Create(qblocks, reshuffle=False)
        depth = beam.pvalue.AsSingleton(p | "K" >> beam.Create([k])) if side_k else k
        _ = (c, q) | SearchBlocks(depth) | beam.Map(save)
    out = {}
    for qid, _ in qblocks:
        with np.load(tmp_path / f"{qid}.npz") as z:
            out[qid] = z["s"], z["i"]
    return out


def test_merge_is_associative_and_order_free():
    rng = np.random.default_rng(1)
    parts = []
    for lo in range(0, 60, 15):
        s = np.round(rng.standard_normal((3, 15)), 1).astype(np.float32)  # rounded: many exact ties
        i = np.tile(np.arange(lo, lo + 15), (3, 1))
        order = np.lexsort((i, -s), axis=-1)
        parts.append((np.take_along_axis(s, order, 1), np.take_along_axis(i, order, 1)))
    fn = MergeTopK(7)
    a = fn.extract_output(
        fn.merge_accumulators(
            [
                fn.add_input(fn.add_input(None, parts[0]), parts[1]),
                fn.add_input(None, parts[2]),
                fn.add_input(None, parts[3]),
            ]
        )
    )
    b = fn.extract_output(
        fn.merge_accumulators(
            [
                fn.add_input(fn.add_input(None, parts[3]), parts[1]),
                fn.add_input(fn.add_input(None, parts[2]), parts[0]),
            ]
        )
    )
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    s, i = np.concatenate([p[0] for p in parts], 1), np.concatenate([p[1] for p in parts], 1)
    ref = np.lexsort((i, -s), axis=-1)[:, :7]  # the definition: score descending, lower document first
    np.testing.assert_array_equal(a[1], np.take_along_axis(i, ref, 1))


@pytest.mark.parametrize("k,side_k", [(10, False), (300, False), (120, True), (300, True)])
def test_block_search_equals_in_process_and_brute_force(k, side_k, tmp_path):
    """Corpus blocks of 50: k = 120 or 300 is wider than every block (partials padded to k before merging)."""
    docs, queries, corpus, qblocks = blocks(np.random.default_rng(0))
    got = run_beam(corpus, qblocks, k, tmp_path, side_k=side_k)
    scores = np.concatenate([got[b][0] for b in sorted(got)])
    idx = np.concatenate([got[b][1] for b in sorted(got)])
    ref_s, ref_i = ix.search_sharded(queries, corpus, k)
    np.testing.assert_array_equal(idx, ref_i)
    np.testing.assert_array_equal(scores, ref_s)
    kk = min(k, len(docs))
    bs, bi = brute(queries, docs, kk)
    np.testing.assert_array_equal(idx[:, :kk], bi)
    np.testing.assert_allclose(scores[:, :kk], bs, atol=1e-5)
    assert (idx[:, kk:] == -1).all() and np.isneginf(scores[:, kk:]).all()


@pytest.mark.slow
def test_block_search_on_two_worker_processes(tmp_path):
    from apache_beam.options.pipeline_options import PipelineOptions

    docs, queries, corpus, qblocks = blocks(np.random.default_rng(2), n_docs=120, n_queries=30)
    opts = PipelineOptions(["--direct_running_mode=multi_processing", "--direct_num_workers=2"])
    got = run_beam(corpus, qblocks, 12, tmp_path, opts)
    ref_s, ref_i = ix.search_sharded(queries, corpus, 12)
    np.testing.assert_array_equal(np.concatenate([got[b][1] for b in sorted(got)]), ref_i)
    np.testing.assert_array_equal(np.concatenate([got[b][0] for b in sorted(got)]), ref_s)
