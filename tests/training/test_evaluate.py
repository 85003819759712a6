"""Retrieval metrics against hand computations on tiny rankings; BEIR and shard directories as eval sets."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from negminer.pipelines import io
from negminer.pipelines.schema import TupleRow
from negminer.training.evaluate import evaluate, load_eval, metrics_from_rankings


def test_metrics_by_hand_graded():
    qrels = {"q1": {"d1": 2, "d3": 1, "d9": 0}, "q2": {"d5": 1}}
    filler = [f"x{i}" for i in range(110)]
    rankings = {
        "q1": ["d2", "d1", "d9", "d4"] + filler[:100] + ["d3"],  # d3 at rank 105: outside @10 and @100
        "q2": ["d5", "d6"],
    }
    got = metrics_from_rankings(rankings, qrels)
    # q1: first relevant (d1, grade 2) at rank 2; d9 is judged 0 = not relevant. q2: rank 1.
    assert got["mrr@10"] == pytest.approx((1 / 2 + 1) / 2)
    ndcg_q1 = (2 / math.log2(3)) / (2 / math.log2(2) + 1 / math.log2(3))  # linear gains, ideal = grades 2, 1
    assert got["ndcg@10"] == pytest.approx((ndcg_q1 + 1.0) / 2)
    assert got["recall@100"] == pytest.approx((1 / 2 + 1) / 2)


def _write_beir(path, corpus, queries, qrels) -> None:
    (path / "qrels").mkdir(parents=True)
    (path / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in corpus))
    (path / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t{s}" for q, d, s in qrels]
    (path / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n")


def _hand_metrics(rankings, qrels):
    """The trainer's former hand-written metrics (kept here as the reference for the library)."""
    mrr, ndcg, recall = [], [], []
    for qid, ranked in rankings.items():
        rels = qrels.get(qid, {})
        relevant = {d for d, r in rels.items() if r > 0}
        mrr.append(next((1.0 / k for k, d in enumerate(ranked[:10], start=1) if d in relevant), 0.0))
        dcg = sum(rels.get(d, 0) / math.log2(k + 1) for k, d in enumerate(ranked[:10], start=1) if rels.get(d, 0) > 0)
        ideal = sorted((r for r in rels.values() if r > 0), reverse=True)[:10]
        idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal))
        ndcg.append(dcg / idcg if idcg > 0 else 0.0)
        recall.append(len(relevant.intersection(ranked[:100])) / len(relevant) if relevant else 0.0)
    return {"ndcg@10": np.mean(ndcg), "mrr@10": np.mean(mrr), "recall@100": np.mean(recall)}


def test_library_metrics_equal_the_former_hand_values_on_random_rankings():
    rng = np.random.default_rng(0)
    docs = [f"d{i}" for i in range(300)]
    for _ in range(20):
        qrels, rankings = {}, {}
        for q in range(int(rng.integers(1, 8))):
            judged = rng.choice(docs, size=int(rng.integers(1, 15)), replace=False)
            qrels[f"q{q}"] = {d: int(rng.integers(0, 4)) for d in judged}  # grades 0..3; some queries all 0
            rankings[f"q{q}"] = list(rng.choice(docs, size=int(rng.integers(1, 150)), replace=False))
        got, want = metrics_from_rankings(rankings, qrels), _hand_metrics(rankings, qrels)
        assert got == pytest.approx(want, abs=1e-9)


def test_evaluate_beir_dir_with_exact_search(tmp_path):
    corpus = [{"_id": "a", "title": "T", "text": "alpha"}, {"_id": "b", "text": "beta"}, {"_id": "c", "text": "gamma"}]
    queries = [{"_id": "1", "text": "find beta"}, {"_id": "2", "text": "find gamma"}, {"_id": "3", "text": "unjudged"}]
    _write_beir(tmp_path, corpus, queries, [("1", "b", 1), ("2", "a", 2), ("2", "c", 1)])
    data = load_eval(str(tmp_path))
    assert set(data.queries) == {"1", "2"} and data.corpus["a"] == "T alpha"
    vectors = {
        "T alpha": [1, 0, 0],
        "beta": [0, 1, 0],
        "gamma": [0, 0, 1],
        "find beta": [0.1, 0.9, 0.0],
        "find gamma": [0.0, 0.2, 0.8],
    }

    def embed(texts, is_query):
        return np.array([vectors[t] for t in texts], dtype=np.float32)

    got = evaluate(embed, data)
    # q1 ranks b first. q2 ranks c (0.8), b (0.2), a (0.0): the grade-1 doc at 1, the grade-2 doc at 3.
    ndcg_q2 = (1 / math.log2(2) + 2 / math.log2(4)) / (2 / math.log2(2) + 1 / math.log2(3))
    assert got["mrr@10"] == pytest.approx(1.0)
    assert got["ndcg@10"] == pytest.approx((1.0 + ndcg_q2) / 2)
    assert got["recall@100"] == pytest.approx(1.0)


def test_load_eval_from_shards(tmp_path):
    rows = [
        TupleRow(source="s", pair_type="qa", query="q1", positive="p1", negatives=("n1", "p2")).to_dict(),
        TupleRow(source="s", pair_type="qa", query="q2", positive="p2").to_dict(),
    ]
    io.write_shards(rows, str(tmp_path), num_shards=1)
    data = load_eval(str(tmp_path))
    assert sorted(data.corpus.values()) == ["n1", "p1", "p2"]  # one document per distinct text
    by_text = {data.queries[q]: {data.corpus[d] for d in rel} for q, rel in data.qrels.items()}
    assert by_text == {"q1": {"p1"}, "q2": {"p2"}}


def test_load_eval_without_qrels_fails(tmp_path):
    (tmp_path / "corpus.jsonl").write_text("")
    with pytest.raises(FileNotFoundError, match="qrels"):
        load_eval(str(tmp_path))
