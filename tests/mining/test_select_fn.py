"""False-negative rules on hand-made arrays: triangle, lexical ratio, z ceiling (several positives, negative scores)."""

from __future__ import annotations

import numpy as np
import pytest

from negminer.mining.select import (
    Ceiling,
    Rules,
    ceiling_threshold,
    choose,
    eligible,
    lexical_ratio,
    lowest_positive,
    positive_rank,
    positive_side_gap,
    score_spread,
    triangle_gap,
)

NAN = np.nan


def select(cand, score, pos, pos_score, rules, **signals):
    cand, score, pos = np.array(cand), np.array(score, np.float32), np.array(pos)
    keep, counts = eligible(cand, pos, rules)
    keys = np.arange(len(cand), dtype=np.uint64)
    sig = {k: None if v is None else np.array(v, np.float64) for k, v in signals.items()}
    sel = choose(cand, score, keep, lowest_positive(np.array(pos_score, np.float32)), None, keys, rules, **sig)
    return sel, {**counts, **sel.removed}


def test_triangle_gap_takes_the_worst_positive_and_ignores_padding():
    # 1 group, 2 candidates, 2 positives (+1 padding): cos(c, p) and cos(q, p) by hand
    cp = np.array([[[0.9, 0.2, 0.99], [0.1, 0.5, 0.99]]])
    qp = np.array([[0.6, -0.3, NAN]])
    gap = triangle_gap(cp, qp)
    # candidate 0: max(0.9-0.6, 0.2+0.3) = 0.5; candidate 1: max(0.1-0.6, 0.5+0.3) = 0.8; padding never counts
    np.testing.assert_allclose(gap, [[0.5, 0.8]])
    assert np.isneginf(triangle_gap(np.zeros((1, 2, 1)), np.array([[NAN]]))).all()
    with pytest.raises(ValueError, match="G, K, P"):
        triangle_gap(np.zeros((1, 2)), np.zeros((1, 1)))


def test_positive_side_gap_is_the_best_positive_against_the_mean_of_the_other_sides():
    cp = np.array([[[0.9, 0.2, NAN], [0.1, 0.5, NAN]], [[NAN, NAN, NAN], [NAN, NAN, NAN]]])
    cq = np.array([[0.7, 0.6], [0.3, -0.2]])
    qp = np.array([[0.5, -0.4, NAN], [NAN, NAN, NAN]])
    # group 0, candidate 0: max(0.9 - (0.7 + 0.5) / 2, 0.2 - (0.7 - 0.4) / 2) = max(0.3, 0.05) = 0.3
    #          candidate 1: max(0.1 - (0.6 + 0.5) / 2, 0.5 - (0.6 - 0.4) / 2) = max(-0.45, 0.4) = 0.4
    gap = positive_side_gap(cp, cq, qp)
    np.testing.assert_allclose(gap[0], [0.3, 0.4])
    assert np.isneginf(gap[1]).all()  # group 1 has no positive
    with pytest.raises(ValueError, match="G, K, P"):
        positive_side_gap(np.zeros((1, 2, 1)), np.zeros((1, 3)), np.zeros((1, 1)))


def test_positive_rank_counts_only_eligible_candidates_and_takes_the_best_positive():
    # 1 group, 5 candidates (#2 not eligible), 2 positives + 1 padding column
    cp = np.array([[[0.1, 0.8, NAN], [0.5, 0.1, NAN], [0.99, 0.99, NAN], [0.5, 0.3, NAN], [0.4, 0.9, NAN]]])
    keep = np.array([[True, True, False, True, True]])
    # positive 0 orders eligible 1 (0.5), 3 (0.5, tie: retrieval order), 4, 0 -> ranks 3, 0, -, 1, 2
    # positive 1 orders 4 (0.9), 0, 3, 1 -> ranks 1, 3, -, 2, 0; best of both: 1, 0, K, 1, 0
    np.testing.assert_array_equal(positive_rank(cp, keep), [[1, 0, 5, 1, 0]])
    assert (positive_rank(np.full((1, 3, 1), NAN), np.ones((1, 3), bool)) == 3).all()  # no positive: never ranked
    with pytest.raises(ValueError, match="similarities"):
        positive_rank(np.zeros((1, 2, 1)), np.ones((1, 3), bool))


def test_positive_side_and_rank_remove_and_count_in_order():
    rules = Rules(
        num_negatives=3, range_max=10, ceiling=Ceiling("none"), near_dup=None, positive_side=0.0, positive_rank=1
    )
    cand = [[1, 2, 3, 4, 5, 6]]
    score = [[0.9, 0.8, 0.7, 0.6, 0.5, 0.4]]
    side = [[0.1, -0.2, 0.0, -0.1, -0.3, -0.5]]  # 1 and 3 (>= 0) -> positive_side
    prank = [[0, 3, 2, 0, 1, 4]]  # rank 0: 1 (already gone) and 4 -> positive_rank
    sel, counts = select(cand, score, [[9]], [[0.95]], rules, side=side, prank=prank)
    assert sel.doc.tolist() == [[2, 5, 6]]
    assert (counts["positive_side"], counts["positive_rank"], counts["triangle"]) == (2, 1, 0)
    with pytest.raises(ValueError, match="positive_rank rule is on"):
        select(cand, score, [[9]], [[0.95]], rules, side=side)
    with pytest.raises(ValueError, match="positive rank"):
        Rules(positive_rank=0)
    with pytest.raises(ValueError, match="positive-side"):
        Rules(positive_side=3.0)


def test_lexical_ratio_uses_the_lowest_overlapping_positive_and_abstains_without_one():
    cand = np.array([[3.0, 1.0, 0.0], [2.0, 5.0, 1.0]])
    pos = np.array([[2.0, 4.0, 0.0], [0.0, NAN, NAN]])  # group 0: lowest positive with overlap 2.0; group 1: none
    r = lexical_ratio(cand, pos)
    np.testing.assert_allclose(r[0], [1.5, 0.5, 0.0])
    assert np.isnan(r[1]).all()


def test_score_spread_matches_numpy_std_on_eligible_only():
    score = np.array([[0.5, 0.3, -0.2, 9.0], [0.1, 0.0, 0.0, 0.0]])
    keep = np.array([[True, True, True, False], [True, False, False, False]])
    np.testing.assert_allclose(score_spread(score, keep), [np.std([0.5, 0.3, -0.2]), 0.0])


def test_z_ceiling_in_the_querys_own_units():
    p, spread = np.array([0.8, -0.2]), np.array([0.1, 0.05])
    np.testing.assert_allclose(ceiling_threshold(p, Ceiling("z", 1.5), spread), [0.65, -0.275])
    assert Ceiling.parse("z:1.5") == Ceiling("z", 1.5)
    with pytest.raises(ValueError, match="z:-1"):
        Ceiling.parse("z:-1")
    with pytest.raises(ValueError, match="spread"):
        ceiling_threshold(p, Ceiling("z", 1.0))
    # a shifted, rescaled model keeps the same choice: z does not depend on the score scale
    scores = np.array([[0.7, 0.6, 0.5, 0.4, 0.3]])
    rules = Rules(num_negatives=2, range_max=5, ceiling=Ceiling("z", 1.0), near_dup=None)
    a, _ = select([[1, 2, 3, 4, 5]], scores, [[9]], [[0.75]], rules)
    b, _ = select([[1, 2, 3, 4, 5]], scores * 3 - 1, [[9]], [[0.75 * 3 - 1]], rules)
    assert a.doc.tolist() == b.doc.tolist() == [[2, 3]]  # std 0.1414: ceiling 0.75 - 0.1414 = 0.6086 drops 1


def test_triangle_and_lexical_remove_and_count_after_the_ceiling():
    # negative scores, two positives (ids 1 and 3, lowest score -0.1): perc:0.95 ceiling = -0.105
    rules = Rules(
        num_negatives=3, range_max=10, ceiling=Ceiling("perc", 0.95), near_dup=None, triangle=0.0, lexical=1.0
    )
    cand = [[1, 2, 3, 4, 5, 6, 7]]
    score = [[0.9, -0.09, 0.5, -0.2, -0.3, -0.4, -0.5]]
    tri = [[0, 0.5, 0, 0.1, -0.2, -0.3, -0.1]]  # 4 (>= 0) -> triangle; 2 already gone to the ceiling
    lex = [[0, 0, 0, 0, 2.0, NAN, 0.3]]  # 5 (>= 1) -> lexical; nan (no positive overlap) abstains
    sel, counts = select(cand, score, [[1, 3]], [[0.2, -0.1]], rules, triangle=tri, lexical=lex)
    assert sel.doc.tolist() == [[6, 7, -1]]
    assert (counts["positive"], counts["positive_aware"], counts["triangle"], counts["lexical"]) == (2, 1, 1, 1)
    assert sel.found.tolist() == [2]


def test_rules_off_count_zero_and_on_without_signal_is_an_error():
    rules = Rules(num_negatives=1, range_max=3, near_dup=None)
    sel, counts = select([[1, 2]], [[0.1, 0.05]], [[9]], [[0.9]], rules)
    assert counts["triangle"] == counts["lexical"] == 0
    with pytest.raises(ValueError, match="triangle rule is on"):
        select([[1, 2]], [[0.1, 0.05]], [[9]], [[0.9]], Rules(num_negatives=1, range_max=3, triangle=0.0))
    with pytest.raises(ValueError, match="lexical ratio"):
        Rules(lexical=0.0)
    with pytest.raises(ValueError, match="triangle margin"):
        Rules(triangle=5.0)
