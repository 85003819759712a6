"""Streaming batches: shuffled, deterministic, no duplicate texts within a batch, one source per batch on request."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest

from negminer.pipelines import io
from negminer.pipelines import schema as S
from negminer.pipelines.schema import TupleRow
from negminer.training.data import batches, count_rows, shuffled_rows


def _rows(n: int, source: str, shared_every: int = 0) -> list[dict]:
    """Rows whose negatives sometimes equal another row's positive (a false in-batch negative to avoid)."""
    rows = []
    for i in range(n):
        negs = (f"{source} positive {i + 1}",) if shared_every and i % shared_every == 0 else (f"{source} neg {i}",)
        rows.append(
            TupleRow(
                source=source,
                pair_type="qa",
                query=f"{source} query {i}",
                positive=f"{source} positive {i}",
                negatives=negs,
            ).to_dict()
        )
    return rows


@pytest.fixture
def two_dirs(tmp_path) -> list[str]:
    a, b = tmp_path / "a", tmp_path / "b"
    rows_a = _rows(60, "srcA", shared_every=3)
    rows_a.append(TupleRow(source="srcA", pair_type="qa", query="same", positive="same").to_dict())  # unusable
    io.write_shards(rows_a, str(a), num_shards=3)
    io.write_shards(_rows(20, "srcB"), str(b), num_shards=1)
    return [str(a), str(b)]


def test_shuffled_rows_is_one_permutation_per_epoch(two_dirs):
    want = sorted(r[S.ID] for d in two_dirs for r in io.iter_rows(d))
    assert count_rows(two_dirs[0]) + count_rows(two_dirs[1]) == len(want) == 81
    e0 = [r[S.QUERY] for r in shuffled_rows(two_dirs, seed=0, epoch=0, buffer=8)]
    e1 = [r[S.QUERY] for r in shuffled_rows(two_dirs, seed=0, epoch=1, buffer=8)]
    assert len(e0) == len(set(e0)) == 81 and sorted(e0) == sorted(e1)
    assert e0 != e1
    assert e0 == [r[S.QUERY] for r in shuffled_rows(two_dirs, seed=0, epoch=0, buffer=8)]
    file_order = [r[S.QUERY] for d in two_dirs for r in io.iter_rows(d)]
    assert e0 != file_order


def test_batches_have_no_duplicate_texts_and_are_deterministic(two_dirs):
    stats: Counter = Counter()
    got = list(itertools.islice(batches(two_dirs, 8, 1, seed=1, shuffle_buffer=8, stats=stats), 20))
    for b in got:
        texts = b.queries + b.positives + [t for n in b.negatives for t in n]
        assert len(texts) == len(set(texts)) and len(b) == 8
    assert stats["skipped_repeated_text"] >= 1  # the query == positive row, counted with its reason
    queries = {q for b in got[:9] for q in b.queries}
    assert any(q.startswith("srcB") for q in queries) and any(q.startswith("srcA") for q in queries)
    again = list(itertools.islice(batches(two_dirs, 8, 1, seed=1, shuffle_buffer=8), 20))
    assert [b.queries for b in again] == [b.queries for b in got]
    other = list(itertools.islice(batches(two_dirs, 8, 1, seed=2, shuffle_buffer=8), 20))
    assert [b.queries for b in other] != [b.queries for b in got]


def test_same_source_batches(two_dirs):
    got = list(itertools.islice(batches(two_dirs, 4, 1, seed=0, shuffle_buffer=8, same_source=True), 40))
    for b in got:
        assert {q.split()[0] for q in b.queries} == {b.source}
    sources = Counter(b.source for b in got)
    assert sources["srcA"] > sources["srcB"] > 0  # sampled by size: 60 vs 20 rows


def test_batch_larger_than_the_data_fails_clearly(two_dirs):
    with pytest.raises(ValueError, match="cannot form a batch of 200"):
        next(batches(two_dirs[1:], 200, 1, seed=0, shuffle_buffer=8))


def test_num_negatives_caps_and_scores_align(tmp_path):
    row = TupleRow(
        source="s",
        pair_type="qa",
        query="q",
        positive="p",
        negatives=("n1", "n2", "n3"),
        positive_score=0.9,
        negative_scores=(0.5, 0.4, 0.3),
    ).to_dict()
    row2 = TupleRow(source="s", pair_type="qa", query="q2", positive="p2").to_dict()
    io.write_shards([row, row2], str(tmp_path), num_shards=1)
    b = next(batches([str(tmp_path)], 2, 2, seed=0, shuffle_buffer=4))
    by_query = dict(zip(b.queries, zip(b.negatives, b.negative_scores, b.positive_scores, strict=True), strict=True))
    negs, neg_scores, pos_score = by_query["q"]
    assert negs == ["n1", "n2"] and neg_scores == pytest.approx([0.5, 0.4]) and pos_score == pytest.approx(0.9)
    assert by_query["q2"][0] == [] and by_query["q2"][2] is None


def test_training_on_a_train_and_dev_directory_sees_only_train_rows(tmp_path):
    from negminer.training.config import TrainConfig
    from negminer.training.train import data_files, eval_files, total_steps

    d = str(tmp_path / "mined")
    io.write_shards(_rows(30, "train"), d, "train", 2)
    io.write_shards(_rows(10, "dev"), d, "dev", 1)
    cfg = TrainConfig(data=(d,), model="m", output=str(tmp_path / "o"), batch_size=4, epochs=1.0, eval=d)
    sources = data_files(cfg)
    seen = Counter()
    for batch in itertools.islice(batches(sources, 4, 1, seed=0, shuffle_buffer=8), 20):  # 20 batches: > 2 epochs
        seen.update(q.split()[0] for q in batch.queries)
    assert set(seen) == {"train"}
    assert total_steps(cfg) == 8  # ceil(30 / 4): dev rows are not counted either
    # evaluating on the same directory: every split but the training one, unless named
    assert [f.rsplit("/", 1)[-1] for f in eval_files(cfg)] == ["dev-00000-of-00001.parquet"]
    named = TrainConfig(data=(d,), model="m", output=str(tmp_path / "o"), max_steps=1, eval=d, eval_split="train")
    assert len(eval_files(named)) == 2
    with pytest.raises(ValueError, match="has no split 'test'"):
        data_files(TrainConfig(data=(d,), model="m", output=str(tmp_path / "o"), max_steps=1, split="test"))
