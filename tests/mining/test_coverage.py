"""Token coverage: the MaxSim arithmetic by hand, the lazy rounds equal measuring everything, the rule in choose()."""

from __future__ import annotations

import numpy as np
import pytest

from negminer.mining.coverage import TokenCoverage, coverage, coverage_rounds
from negminer.mining.select import Ceiling, Rules, choose, eligible, lowest_positive
from tests.mining.test_select_fn import select

NAN = np.nan


def test_coverage_is_the_mean_of_each_document_token_best_query_cosine():
    e = np.eye(3)
    doc = np.array([e[0], e[1], (e[0] + e[2]) / np.sqrt(2)])  # (3 tokens, D=3)
    query = np.array([e[0], e[2]])
    # token 0 meets e0 (1), token 1 meets nothing (0), token 2: max(1/sqrt2, 1/sqrt2) -> (1 + 0 + 0.7071) / 3
    assert coverage(doc, query) == pytest.approx((1 + 0 + 1 / np.sqrt(2)) / 3)
    assert coverage(query, doc) == pytest.approx((1 + 1 / np.sqrt(2)) / 2)  # not symmetric: the document's side
    assert np.isnan(coverage(np.zeros((0, 3)), query))
    with pytest.raises(ValueError, match="token vectors"):
        coverage(doc, np.ones((2, 4)))


def test_coverage_rule_drops_at_or_above_and_abstains_on_nan():
    rules = Rules(num_negatives=2, range_max=10, ceiling=Ceiling("none", 0.0), near_dup=None, coverage=0.7)
    cand = [[1, 2, 3, 4, 5]]
    score = [[0.9, 0.8, 0.7, 0.6, 0.5]]
    cov = [[0.5, 0.7, NAN, 0.9, 0.1]]  # 2 (= 0.7) and 4 go; 3 not measured stays
    sel, counts = select(cand, score, [[9]], [[1.0]], rules, coverage=cov)
    assert sel.doc.tolist() == [[1, 3]] and counts["coverage"] == 2 and counts["not_sampled"] == 1
    with pytest.raises(ValueError, match="coverage rule is on"):
        select(cand, score, [[9]], [[1.0]], rules)
    with pytest.raises(ValueError, match="coverage must be"):
        Rules(coverage=1.5)


@pytest.mark.parametrize("sampling", ["top", "random"])
def test_rounds_pick_what_measuring_every_candidate_picks(sampling):
    rng = np.random.default_rng(0)
    g, k = 40, 30
    cand = np.stack([rng.permutation(100)[:k] for _ in range(g)])
    cand[rng.random((g, k)) < 0.05] = -1
    score = rng.random((g, k)).astype(np.float32)
    full = rng.random((g, k))
    rules = Rules(
        num_negatives=5, range_max=k, near_dup=None, ceiling=Ceiling("none", 0.0), coverage=0.6, sampling=sampling
    )
    pos = np.full((g, 1), 1000)
    keep, _ = eligible(cand, pos, rules)
    args = (
        cand,
        score,
        keep,
        lowest_positive(np.ones((g, 1), np.float32)),
        None,
        np.arange(g, dtype=np.uint64),
        rules,
    )
    want = choose(*args, coverage=full)
    asked = []

    def measure(gi, ki):
        asked.append(len(gi))
        return full[gi, ki]

    got, cov = coverage_rounds(measure, lambda c: choose(*args, coverage=c), cand)
    assert got.doc.tolist() == want.doc.tolist() and got.found.tolist() == want.found.tolist()
    assert len(asked) >= 2 and sum(asked) < keep.sum()  # lazy: far fewer than every eligible candidate
    again = []
    got2, _ = coverage_rounds(
        lambda gi, ki: again.append(1) or full[gi, ki], lambda c: choose(*args, coverage=c), cand, cov
    )
    assert got2.doc.tolist() == want.doc.tolist() and not again  # the values carried over: nothing measured twice


def test_token_coverage_of_a_tiny_encoder_matches_a_hand_loop(tiny_bert_dir):
    import torch

    from negminer.training.model import Encoder

    enc = Encoder.from_pretrained(str(tiny_bert_dir), max_length=32)
    tc = TokenCoverage(enc, batch_size=2)
    queries, docs = ["a man rides a red bike", "two women hug"], ["a man rides", "the women are sleeping now"]
    got = tc.pairs(queries, docs)
    for q, d, v in zip(queries, docs, got, strict=True):
        with torch.no_grad():
            states = []
            for t in (d, q):  # one text at a time: no padding at all
                b = enc.tokenizer(t, return_tensors="pt")
                h = enc.model(**b).last_hidden_state[0]
                states.append(torch.nn.functional.normalize(h[1:-1], dim=-1).numpy())  # drop [CLS] and [SEP]
        want = np.mean([max(float(a @ b) for b in states[1]) for a in states[0]])
        assert v == pytest.approx(want, abs=1e-5)
    assert tc.pairs(queries[:1], docs[:1])[0] == got[0]  # cached
    with pytest.raises(ValueError, match="token states"):
        TokenCoverage(object())


def test_coverage_rule_in_the_job_keeps_only_uncovered_negatives(mine_data, tmp_path, tiny_bert_dir):
    from negminer.mining.mine import mine
    from negminer.pipelines import io
    from negminer.pipelines import schema as S
    from negminer.training.model import Encoder
    from tests.mining.conftest import mine_config

    tc = TokenCoverage(Encoder.from_pretrained(str(tiny_bert_dir), max_length=64))
    off = mine(mine_config(mine_data, tmp_path, tiny_bert_dir))
    rows = list(io.iter_rows(str(tmp_path / "out")))
    values = np.concatenate([tc.pairs([r[S.QUERY]] * len(r[S.NEGATIVES]), r[S.NEGATIVES]) for r in rows])
    m = float(np.round(np.median(values), 4))
    on = mine(mine_config(mine_data, tmp_path, tiny_bert_dir, coverage=m, output=str(tmp_path / "cov")))
    assert off["mining"]["removed"]["coverage"] == 0 and on["mining"]["removed"]["coverage"] > 0
    assert on["mining"]["thresholds"]["coverage"] == m
    kept = 0
    for r in io.iter_rows(str(tmp_path / "cov")):
        if r[S.NEGATIVES]:
            assert (tc.pairs([r[S.QUERY]] * len(r[S.NEGATIVES]), r[S.NEGATIVES]) < m).all()
            kept += len(r[S.NEGATIVES])
    assert kept > 0


def test_coverage_flag_parses_and_is_refused_with_an_embedding_endpoint(tmp_path):
    from tests.mining.test_mine_fn import _config

    assert _config(["--coverage", "0.7"]).coverage == 0.7
    assert _config(["--coverage", "none"]).coverage is None and _config([]).coverage is None
    with pytest.raises(ValueError, match="token states"):
        _config(["--coverage", "0.7", "--model", "http://127.0.0.1:9/v1", "--api-model", "m"])
