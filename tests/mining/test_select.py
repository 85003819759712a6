"""Selection rules on hand-made score arrays: positives, rank window, bounds, ceilings, near-duplicates, sampling."""

from __future__ import annotations

import numpy as np
import pytest

from negminer.mining.select import (
    Ceiling,
    Rules,
    ceiling_threshold,
    choose,
    eligible,
    lowest_positive,
    positive_mask,
    window_mask,
)

NAN = np.nan


def run(cand, score, pos, pos_score, rules, sim=None, keys=None):  # noqa: PLR0913 — test helper mirroring choose()'s inputs
    cand, score, pos = np.array(cand), np.array(score, np.float32), np.array(pos)
    keep, counts = eligible(cand, pos, rules)
    keys = np.arange(len(cand), dtype=np.uint64) if keys is None else np.array(keys, np.uint64)
    sim = None if sim is None else np.array(sim, np.float32)
    sel = choose(cand, score, keep, lowest_positive(np.array(pos_score, np.float32)), sim, keys, rules)
    return sel, {**counts, **sel.removed}


def test_ceiling_parse_and_errors():
    assert Ceiling.parse("perc:0.95") == Ceiling("perc", 0.95)
    assert Ceiling.parse(" Margin:0.05 ") == Ceiling("margin", 0.05)
    assert Ceiling.parse("none").kind == "none"
    for bad in ("perc", "perc:1.5", "perc:x", "margin:-1", "top:3", "0.95"):
        with pytest.raises(ValueError, match=bad.split(":")[-1] if ":" in bad else bad):
            Ceiling.parse(bad)


def test_ceiling_threshold_respects_the_sign_of_scores():
    p = np.array([0.8, -0.2, 0.0])
    # perc:0.95 must stay below the positive whatever its sign: p - |p| * 0.05
    np.testing.assert_allclose(ceiling_threshold(p, Ceiling("perc", 0.95)), [0.76, -0.21, 0.0])
    np.testing.assert_allclose(ceiling_threshold(p, Ceiling("margin", 0.05)), [0.75, -0.25, -0.05])
    assert np.isinf(ceiling_threshold(p, Ceiling("none", 0.0))).all()


def test_negative_cosine_positive_keeps_only_candidates_below_it():
    # positive scores -0.1: 95% of it naively would be -0.095, ABOVE the positive; the ceiling must be -0.105
    rules = Rules(num_negatives=3, range_max=10, ceiling=Ceiling("perc", 0.95), near_dup=None)
    sel, counts = run([[5, 6, 7, 8]], [[-0.09, -0.102, -0.11, -0.3]], [[9]], [[-0.1]], rules)
    assert sel.doc.tolist() == [[7, 8, -1]]
    assert counts["positive_aware"] == 2
    assert sel.found.tolist() == [2]


def test_several_positives_all_excluded_and_lowest_positive_bounds():
    # group positives 1 (score 0.9) and 3 (score 0.6): both never emitted, ceiling from 0.6 -> 0.57
    rules = Rules(num_negatives=4, range_max=10, ceiling=Ceiling("perc", 0.95), near_dup=None)
    cand = [[1, 2, 3, 4, 5, 6, 7]]
    score = [[0.9, 0.8, 0.6, 0.58, 0.56, 0.5, 0.3]]
    sel, counts = run(cand, score, [[1, 3]], [[0.9, 0.6]], rules)
    assert sel.doc.tolist() == [[5, 6, 7, -1]]
    np.testing.assert_allclose(sel.score[0, :3], [0.56, 0.5, 0.3], rtol=1e-6)
    assert np.isnan(sel.score[0, 3])
    assert counts["positive"] == 2 and counts["positive_aware"] == 2


def test_margin_ceiling():
    rules = Rules(num_negatives=2, range_max=10, ceiling=Ceiling("margin", 0.1), near_dup=None)
    sel, _ = run([[2, 3, 4]], [[0.75, 0.69, 0.6]], [[1]], [[0.8]], rules)
    assert sel.doc.tolist() == [[3, 4]]  # 0.75 > 0.8 - 0.1


def test_rank_window_counts_only_non_positives():
    valid = np.array([[True, True, True, True, True]])
    is_pos = np.array([[True, False, False, True, False]])
    assert window_mask(valid & ~is_pos, 1, 3).tolist() == [[False, False, True, False, True]]
    rules = Rules(num_negatives=2, range_min=1, range_max=3, ceiling=Ceiling("none", 0), near_dup=None)
    sel, counts = run([[1, 2, 3, 4, 5]], [[0.9, 0.8, 0.7, 0.6, 0.5]], [[1, 4]], [[0.9, 0.6]], rules)
    assert sel.doc.tolist() == [[3, 5]]
    assert counts["positive"] == 2 and counts["rank_window"] == 1


def test_padding_and_positive_padding_never_match():
    cand = np.array([[3, -1, -1]])
    assert positive_mask(cand, np.array([[3, -1]])).tolist() == [[True, False, False]]
    rules = Rules(num_negatives=2, range_max=5, near_dup=None, ceiling=Ceiling("none", 0))
    sel, counts = run([[7, -1, -1]], [[0.5, -np.inf, -np.inf]], [[3, -1]], [[0.9, NAN]], rules)
    assert sel.doc.tolist() == [[7, -1]] and counts["positive"] == 0 and counts["rank_window"] == 0


def test_score_bounds_are_charged_in_order():
    rules = Rules(num_negatives=3, range_max=10, min_score=0.2, max_score=0.7, ceiling=Ceiling("perc", 0.95))
    rules = Rules(**{**rules.__dict__, "near_dup": None})
    sel, counts = run([[2, 3, 4, 5, 6]], [[0.9, 0.72, 0.67, 0.3, 0.1]], [[1]], [[0.7]], rules)
    # 0.9 and 0.72 go to max_score first, 0.67 to the ceiling (0.665), 0.1 to min_score
    assert counts["max_score"] == 2 and counts["positive_aware"] == 1 and counts["min_score"] == 1
    assert sel.doc.tolist() == [[5, -1, -1]]


def test_near_duplicates_of_a_positive_are_dropped():
    rules = Rules(num_negatives=2, range_max=10, near_dup=0.95, ceiling=Ceiling("none", 0))
    sim = [[0.99, 0.5, 0.95]]
    sel, counts = run([[2, 3, 4]], [[0.8, 0.7, 0.6]], [[1]], [[0.9]], rules, sim=sim)
    assert sel.doc.tolist() == [[3, -1]] and counts["near_duplicate"] == 2


def test_top_sampling_orders_by_score_and_counts_leftovers():
    rules = Rules(num_negatives=2, range_max=10, near_dup=None, ceiling=Ceiling("none", 0))
    # retrieval order is not score order once a reranker rescored: output follows the score
    sel, counts = run([[2, 3, 4, 5]], [[0.1, 0.4, 0.3, 0.2]], [[1]], [[0.9]], rules)
    assert sel.doc.tolist() == [[3, 4]]
    assert counts["not_sampled"] == 2


def test_random_sampling_is_seeded_and_independent_of_batching():
    rng = np.random.default_rng(1)
    cand = np.stack([rng.permutation(np.arange(10, 60))[:40] for _ in range(3)])
    score = -np.sort(-rng.random((3, 40)), axis=1)
    pos, ps = np.array([[1], [2], [3]]), np.array([[2.0], [2.0], [2.0]])
    rules = Rules(num_negatives=5, range_max=40, near_dup=None, sampling="random", seed=7)
    a, _ = run(cand, score, pos, ps, rules, keys=[11, 22, 33])
    b, _ = run(cand, score, pos, ps, rules, keys=[11, 22, 33])
    alone, _ = run(cand[2:], score[2:], pos[2:], ps[2:], rules, keys=[33])
    other, _ = run(cand, score, pos, ps, Rules(**{**rules.__dict__, "seed": 8}), keys=[11, 22, 33])
    assert (a.doc == b.doc).all() and (a.doc[2] == alone.doc[0]).all()
    assert (a.doc != other.doc).any()
    top, _ = run(cand, score, pos, ps, Rules(**{**rules.__dict__, "sampling": "top"}), keys=[11, 22, 33])
    assert (a.doc != top.doc).any()  # 5 of 40 drawn at random are not the top 5 (p ~ 1e-6 per row)
    for g in range(3):
        assert set(a.doc[g]) <= set(cand[g])
        assert (np.diff(a.score[g]) <= 0).all()  # hardest first


def test_rules_validation_names_the_value():
    with pytest.raises(ValueError, match="num_negatives=8"):
        Rules(num_negatives=8, range_min=0, range_max=5)
    with pytest.raises(ValueError, match="3..3"):
        Rules(range_min=3, range_max=3)
    with pytest.raises(ValueError, match="min_score 0.5 > max_score 0.1"):
        Rules(min_score=0.5, max_score=0.1)
    with pytest.raises(ValueError, match="'best'"):
        Rules(sampling="best")
    with pytest.raises(ValueError, match="1.5"):
        Rules(near_dup=1.5)


def test_shape_errors():
    rules = Rules(num_negatives=1, range_max=5)
    with pytest.raises(ValueError, match="2-D"):
        eligible(np.array([1, 2]), np.array([[1]]), rules)
    with pytest.raises(ValueError, match="at least one positive"):
        lowest_positive(np.array([[NAN, NAN]]))
