"""Retrieval evaluation: MRR@10, nDCG@10 (graded, linear gains) and Recall@100 by exact search, scored by ir-measures."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from negminer.pipelines import io
from negminer.pipelines import schema as S
from negminer.pipelines.transforms.tabular import Skip, beir_object, qrel_fields


class EvalSet:
    """Queries, a corpus and graded qrels {qid: {docid: rel}}."""

    def __init__(self, queries: dict[str, str], corpus: dict[str, str], qrels: dict[str, dict[str, int]]):
        self.queries = {q: t for q, t in queries.items() if q in qrels}
        self.corpus, self.qrels = corpus, qrels
        if not self.queries:
            raise ValueError("evaluation set has no query with relevance judgements")


def is_beir_dir(path: str) -> bool:
    return (Path(path) / "corpus.jsonl").is_file()


def load_eval(path: str, files: list[str] | None = None) -> EvalSet:
    """A BEIR-format directory (corpus.jsonl, queries.jsonl, qrels/test.tsv or dev.tsv) or a shard directory
    (every split, checked against its manifest), or the shard `files` given."""
    if is_beir_dir(path):
        return _load_beir(Path(path))
    return _load_shards(path if files is None else files)


def _load_beir(p: Path) -> EvalSet:
    qrels_file = next((p / "qrels" / n for n in ("test.tsv", "dev.tsv") if (p / "qrels" / n).is_file()), None)
    if qrels_file is None:
        raise FileNotFoundError(f"{p}: no qrels/test.tsv or qrels/dev.tsv")
    qrels: dict[str, dict[str, int]] = {}
    for n, line in enumerate(qrels_file.read_text(encoding="utf-8").splitlines(), start=1):
        got = qrel_fields(line)
        if isinstance(got, Skip) or not line.strip():  # the header line
            continue
        if isinstance(got, str):
            raise ValueError(f"{qrels_file}:{n}: {got}: {line[:80]!r}")
        qid, doc_id, score = got
        qrels.setdefault(qid, {})[doc_id] = int(score)
    return EvalSet(_beir_texts(p / "queries.jsonl"), _beir_texts(p / "corpus.jsonl"), qrels)


def _beir_texts(path: Path) -> dict[str, str]:
    """id -> `title text` of a BEIR corpus.jsonl / queries.jsonl (the shared reader, texts as they are)."""
    out = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        got = beir_object(json.loads(line), clean=False)
        if isinstance(got, str):
            raise ValueError(f"{path}:{n}: {got}")
        out[got[0]] = got[1]
    return out


def _load_shards(path: str | list[str]) -> EvalSet:
    queries: dict[str, str] = {}
    corpus: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    ids: dict[str, str] = {}  # text -> doc id, so a text is one document

    def doc_id(text: str) -> str:
        return ids.setdefault(text, f"d{len(ids)}")

    for row in io.iter_rows(path, columns=[S.QUERY, S.POSITIVE, S.NEGATIVES]):
        qid = queries.setdefault(row[S.QUERY], f"q{len(queries)}")
        pid = doc_id(row[S.POSITIVE])
        corpus[pid] = row[S.POSITIVE]
        qrels.setdefault(qid, {})[pid] = 1
        for n in row[S.NEGATIVES] or []:
            corpus[doc_id(n)] = n
    return EvalSet({v: k for k, v in queries.items()}, corpus, qrels)


def metrics_from_rankings(rankings: dict[str, list[str]], qrels: dict[str, dict[str, int]]) -> dict[str, float]:
    """Mean nDCG@10, MRR@10 and Recall@100 of ranked doc ids per query, by ir-measures (trec_eval's definitions:
    linear gains, judged grade > 0 is relevant). A query without a relevant document scores 0 on each."""
    import ir_measures
    from ir_measures import RR, R, nDCG

    measures = {"ndcg@10": nDCG @ 10, "mrr@10": RR @ 10, "recall@100": R @ 100}
    # strictly falling scores keep our order (trec_eval would break score ties by doc id)
    run = {q: {d: float(len(ranked) - i) for i, d in enumerate(ranked)} for q, ranked in rankings.items()}
    judged = {q: {d: int(r) for d, r in rels.items()} for q, rels in qrels.items() if q in rankings}
    per_query = {(m.query_id, m.measure): m.value for m in ir_measures.iter_calc(list(measures.values()), judged, run)}
    return {
        name: float(np.mean([per_query.get((q, m), 0.0) for q in rankings])) if rankings else 0.0
        for name, m in measures.items()
    }


def evaluate(embed: Callable[[list[str], bool], np.ndarray], data: EvalSet, k: int = 100) -> dict[str, float]:
    """Encode with `embed(texts, is_query)` -> (n, D) float32, rank the corpus by dot product, score the rankings."""
    qids, doc_ids = list(data.queries), list(data.corpus)
    q = embed([data.queries[i] for i in qids], True)  # (Q, D)
    d = embed([data.corpus[i] for i in doc_ids], False)  # (N, D)
    scores = q @ d.T  # (Q, N)
    k = min(k, len(doc_ids))
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    rankings = {}
    for row, qid in enumerate(qids):
        order = top[row][np.argsort(-scores[row, top[row]], kind="stable")]
        rankings[qid] = [doc_ids[j] for j in order]
    return metrics_from_rankings(rankings, data.qrels)
