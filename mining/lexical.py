"""BM25 (bm25s, Lucene variant) over the mining corpus, scored for given (query, document) pairs only.

The lexical rule's second opinion: `select.lexical_ratio` compares BM25(query, candidate) with BM25(query, positive).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

STOPWORDS = "en"


class LexicalIndex:
    """bm25s's eager BM25 matrix (documents x vocabulary) over `texts`, kept document-major for pair lookups."""

    def __init__(self, texts: Sequence[str], k1: float = 1.5, b: float = 0.75):
        import bm25s
        import scipy.sparse as sp

        if not len(texts):
            raise ValueError("the lexical index needs at least one document")
        self._bm25s = bm25s
        tokens = bm25s.tokenize(list(texts), stopwords=STOPWORDS, return_ids=False, show_progress=False)
        self.retriever = bm25s.BM25(k1=k1, b=b, method="lucene")
        self.retriever.index(tokens, show_progress=False)
        sc = self.retriever.scores
        n_vocab = len(sc["indptr"]) - 1
        csc = sp.csc_matrix((sc["data"], sc["indices"], sc["indptr"]), shape=(sc["num_docs"], n_vocab))
        self.matrix = csc.tocsr()  # (N, V) per-document term scores
        self.vocab: dict[str, int] = self.retriever.vocab_dict

    def __len__(self) -> int:
        return self.matrix.shape[0]

    def query_terms(self, queries: Sequence[str]):
        """(Q, V) sparse term counts of the queries (tokens outside the corpus vocabulary score nothing)."""
        import scipy.sparse as sp

        toks = self._bm25s.tokenize(list(queries), stopwords=STOPWORDS, return_ids=False, show_progress=False)
        rows, cols = [], []
        for i, words in enumerate(toks):
            for w in words:
                j = self.vocab.get(w)
                if j is not None and w:
                    rows.append(i)
                    cols.append(j)
        data = np.ones(len(rows), dtype=np.float32)
        return sp.csr_matrix((data, (rows, cols)), shape=(len(toks), self.matrix.shape[1]))

    def pair_scores(self, queries: Sequence[str], docs: np.ndarray) -> np.ndarray:
        """Queries (G,) and documents (G, K) int64 corpus indices (-1 padding) -> (G, K) float32 BM25; nan pads."""
        if docs.ndim != 2 or docs.shape[0] != len(queries):
            raise ValueError(f"need (G, K) documents for {len(queries)} queries, got {docs.shape}")
        if docs.size and docs.max(initial=-1) >= len(self):
            raise ValueError(f"document index {int(docs.max())} is outside the {len(self)}-document index")
        g, k = docs.shape
        terms = self.query_terms(queries)
        flat = docs.ravel()
        valid = flat >= 0
        out = np.full(g * k, np.nan, dtype=np.float32)
        if valid.any():
            rows = np.repeat(np.arange(g), k)[valid]
            prod = self.matrix[flat[valid]].multiply(terms[rows])  # (pairs, V): term score x query term count
            out[valid] = np.asarray(prod.sum(axis=1), dtype=np.float32).ravel()
        return out.reshape(g, k)
