"""The bounded-memory argsort equals numpy's stable sort; scratch arrays live in unlinked files."""

from __future__ import annotations

import os

import numpy as np
import pytest

from negminer.mining import extsort


@pytest.mark.parametrize(
    "make",
    [
        lambda rng, n: rng.integers(0, 2**64, n, dtype=np.uint64),  # hash keys
        lambda rng, n: rng.integers(0, 2**64, n // 10, dtype=np.uint64)[rng.integers(0, n // 10, n)],  # duplicates
        lambda rng, n: rng.integers(0, 7, n).astype(np.int32),  # few values (chunk numbers)
        lambda rng, n: np.where(rng.random(n) < 0.9, 5, rng.integers(0, 1000, n)).astype(np.uint64),  # skewed
        lambda rng, n: np.full(n, 3, np.int64),  # one value
    ],
)
def test_argsort_equals_numpy_stable(tmp_path, monkeypatch, make):
    monkeypatch.setattr(extsort, "BLOCK", 256)
    rng = np.random.default_rng(0)
    keys = make(rng, 5000)
    order, sorted_keys = extsort.argsort(keys, str(tmp_path))
    assert isinstance(order, np.memmap)
    want = np.argsort(keys, kind="stable")
    assert np.array_equal(np.asarray(order), want)
    assert np.array_equal(np.asarray(sorted_keys), keys[want].astype(np.uint64))
    assert os.listdir(tmp_path) == []  # scratch files are unlinked once mapped


def test_argsort_with_secondary_key_equals_lexsort(tmp_path, monkeypatch):
    monkeypatch.setattr(extsort, "BLOCK", 128)
    rng = np.random.default_rng(1)
    keys = rng.integers(0, 50, 3000).astype(np.uint64)
    then = rng.integers(0, 1000, 3000)
    order, _ = extsort.argsort(keys, str(tmp_path), then=then)
    assert np.array_equal(np.asarray(order), np.lexsort((then, keys)))


def test_small_input_stays_in_memory_and_negative_keys_refused(tmp_path, monkeypatch):
    order, _ = extsort.argsort(np.array([3, 1, 2, 1], np.uint64), str(tmp_path))
    assert order.tolist() == [1, 3, 2, 0] and not isinstance(order, np.memmap)
    monkeypatch.setattr(extsort, "BLOCK", 4)
    with pytest.raises(ValueError, match="non-negative"):
        extsort.argsort(np.array([-1] * 10), str(tmp_path))


def test_run_starts_and_scratch(tmp_path, monkeypatch):
    monkeypatch.setattr(extsort, "BLOCK", 2)
    keys = np.array([1, 1, 2, 2, 2, 3, 4, 4, 9], np.uint64)
    assert np.asarray(extsort.run_starts(keys, str(tmp_path))).tolist() == [1, 0, 1, 0, 0, 1, 1, 0, 1]
    arr = extsort.scratch(str(tmp_path), np.int32, 5, fill=-1)
    assert isinstance(arr, np.memmap) and np.asarray(arr).tolist() == [-1] * 5 and os.listdir(tmp_path) == []


@pytest.mark.parametrize("block", [3, 1 << 18])
def test_plan_missing_equals_the_in_memory_plan(tmp_path, monkeypatch, block):
    """Bounded `plan_missing` = the former numpy plan: uncached keys once (first occurrence), longest first."""
    from negminer.mining.encode import length_order, plan_missing
    from negminer.mining.store import EmbeddingStore

    monkeypatch.setattr(extsort, "BLOCK", block)
    rng = np.random.default_rng(2)
    keys = rng.integers(1, 40, 200).astype(np.uint64)  # repeated keys
    lengths = rng.integers(1, 9, 200)  # tied lengths
    store = EmbeddingStore(str(tmp_path), {"m": 1})
    cached = np.array([3, 5, 7, 11], np.uint64)
    store.write_chunk(cached, np.ones((4, 2), np.float32))
    missing = np.flatnonzero(~np.isin(keys, cached))
    _, first = np.unique(keys[missing], return_index=True)
    missing = missing[np.sort(first)]
    want = missing[length_order(lengths[missing])]
    assert np.asarray(plan_missing(store, keys, lengths)).tolist() == want.tolist()


def test_score_stats_in_blocks_equal_numpy(monkeypatch):
    """Above BLOCK values the manifest's score statistics are computed block by block: the same figures."""
    from negminer.mining.output import score_stats

    rng = np.random.default_rng(3)
    v = rng.normal(0.3, 0.2, 1001).astype(np.float32)
    v[::7] = np.nan
    v[5] = -0.0
    want = score_stats(v)
    monkeypatch.setattr(extsort, "BLOCK", 16)
    assert score_stats(v) == want and want["count"] == 1001 - 143
    assert score_stats(v.reshape(-1, 7)) == want and score_stats(np.full(40, np.nan)) == {"count": 0}


def test_row_positive_slot_through_scratch(tmp_path, monkeypatch):
    """Each row's own positive in its group's CSR, the same through scratch files as in memory."""
    from negminer.mining.groups import Groups
    from negminer.mining.output import row_positive_slot

    rng = np.random.default_rng(4)
    row_group = rng.integers(0, 30, 400)
    row_pos_doc = rng.integers(0, 50, 400)
    pairs = sorted({(g, d) for g, d in zip(row_group.tolist(), row_pos_doc.tolist(), strict=True)})
    indptr = np.searchsorted([g for g, _ in pairs], np.arange(31))
    pos_docs = np.array([d for _, d in pairs])
    groups = Groups(None, np.zeros(30, np.uint64), row_group, row_pos_doc, indptr, pos_docs, indptr, pos_docs)
    want = [pairs.index((g, d)) for g, d in zip(row_group.tolist(), row_pos_doc.tolist(), strict=True)]
    monkeypatch.setattr(extsort, "BLOCK", 8)
    assert np.asarray(row_positive_slot(groups, str(tmp_path))).tolist() == want
