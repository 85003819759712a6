"""BM25 pair scores: against bm25s's own full-corpus scoring and a hand computation of Lucene BM25."""

from __future__ import annotations

import math

import numpy as np
import pytest

from negminer.mining.lexical import LexicalIndex

DOCS = ["the cat sat on the mat", "a dog chased the cat cat", "birds fly south in winter", "the mat was red"]


def test_pair_scores_match_bm25s_full_scores():
    ix = LexicalIndex(DOCS)
    queries = ["cat on mat", "winter birds", "zebra"]
    docs = np.array([[0, 1, 3, -1], [2, 0, 1, 3], [0, 1, 2, 3]])
    got = ix.pair_scores(queries, docs)
    import bm25s

    for i, q in enumerate(queries):
        toks = [
            w for w in bm25s.tokenize([q], stopwords="en", return_ids=False, show_progress=False)[0] if w in ix.vocab
        ]
        full = ix.retriever.get_scores(toks) if toks else np.zeros(len(DOCS))
        valid = docs[i] >= 0
        np.testing.assert_allclose(got[i][valid], full[docs[i][valid]], rtol=1e-6)
    assert np.isnan(got[0, 3]) and (got[2] == 0).all()


def test_pair_score_by_hand_lucene_formula():
    # "cat" in doc 1: tf 2, doc length 4 tokens after stopwords ("dog chased cat cat"), df 2 of N 4
    ix = LexicalIndex(DOCS)
    lens = [3, 4, 4, 2]  # cat sat mat | dog chased cat cat | birds fly south winter | mat red
    avg = sum(lens) / 4
    idf = math.log(1 + (4 - 2 + 0.5) / (2 + 0.5))
    tf, k1, b = 2, 1.5, 0.75
    want = idf * tf / (tf + k1 * (1 - b + b * lens[1] / avg))
    assert ix.pair_scores(["cat"], np.array([[1]]))[0, 0] == pytest.approx(want, rel=1e-5)


def test_bad_shapes_are_clear_errors():
    ix = LexicalIndex(DOCS)
    with pytest.raises(ValueError, match="outside"):
        ix.pair_scores(["cat"], np.array([[7]]))
    with pytest.raises(ValueError, match="queries"):
        ix.pair_scores(["cat", "dog"], np.array([[1]]))
    with pytest.raises(ValueError, match="at least one"):
        LexicalIndex([])
