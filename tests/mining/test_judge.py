"""The LLM judge: verdict parsing, rounds, and `--judge` in the mining job against real loopback servers."""

from __future__ import annotations

import time

import numpy as np
import pytest

from negminer.llm import LLMError
from negminer.mining.judge import NOT_RELEVANT, RELEVANT, UNKNOWN, Judge, JudgeConfig, judge_rounds, parse_verdict
from negminer.mining.mine import mine
from negminer.mining.select import Rules, choose, eligible
from negminer.pipelines import io
from negminer.pipelines import schema as S
from tests.llm_servers import FaultServer, chat_body
from tests.mining.conftest import mine_config


def test_parse_verdict_counts_what_it_cannot_read():
    assert [parse_verdict(t) for t in ("Yes.", " no", "NO, it is not", "Relevant")] == [1, 0, 0, 1]
    assert [parse_verdict(t) for t in ("", None, "maybe", "42", "the river flows")] == [UNKNOWN] * 5
    assert (RELEVANT, NOT_RELEVANT) == (1, 0)
    with pytest.raises(ValueError, match="judge-rounds"):
        JudgeConfig(model="m", rounds=0)


def candidate_of(prompt: str) -> str:
    return prompt.split("Candidate passage: ", 1)[1].split("\n", 1)[0]


def verdict_server(says):
    """FaultServer whose answer is `says(candidate text)`; it records every request."""
    return lambda body: chat_body(says(candidate_of(body["messages"][0]["content"])))


def test_rounds_replace_relevant_picks_and_judge_only_new_ones(tmp_path):
    # one group, candidates 1..6 by score; the judge calls 2 and 4 relevant and cannot answer for 5
    says = {"d2": "yes", "d4": "Yes, it is", "d5": "hmm"}
    with FaultServer([], ok_body=verdict_server(lambda c: says.get(c, "no"))) as srv:
        judge = Judge(JudgeConfig(model="m", base_url=srv.base_url, rounds=3, cache_dir=str(tmp_path / "c")))
        cand = np.array([[1, 2, 3, 4, 5, 6]])
        rules = Rules(num_negatives=3, range_max=6, near_dup=None)
        keep, _ = eligible(cand, np.array([[9]]), rules)
        score = np.array([[0.9, 0.8, 0.7, 0.6, 0.5, 0.4]], np.float32)

        def select(judged):
            return choose(cand, score, keep, np.array([1.0]), None, np.zeros(1, np.uint64), rules, judged=judged)

        sel, judged = judge_rounds(judge, select, cand, lambda g, d: ("q", "p", f"d{d}"))
        assert sel.doc.tolist() == [[1, 3, 5]]  # 2 and 4 dropped; 5 unparseable stays a negative
        assert sel.removed["judge"] == 2
        assert judged.tolist() == [[0, 1, 0, 1, UNKNOWN, -2]]  # 6 was never picked, never asked
        assert len(srv.seen) == 5  # round 1: 1, 2, 3; round 2: 4, 5 (1 and 3 not asked twice)
    assert dict(judge.counts) == {"asked": 5, "not_relevant": 2, "relevant": 2, "unparseable": 1}


def test_judge_in_the_job_drops_relabels_retries_and_caches(mine_data, tmp_path, tiny_bert_dir):
    relevant = set(mine_data["docs"][20:40])  # the judge calls a third of the corpus relevant
    says = verdict_server(lambda c: "yes" if c in relevant else "no")
    with FaultServer(["429", "close"], ok_body=says) as srv:
        kw = dict(judge="judge-model", judge_url=srv.base_url, judge_rounds=3)
        manifest = mine(mine_config(mine_data, tmp_path, tiny_bert_dir, **kw))
        j = manifest["mining"]["judge"]
        assert j["llm"]["retries"] == {"http_429": 1, "connection": 1} and j["asked"] == len(srv.seen) - 2
        assert j["relevant"] == manifest["mining"]["removed"]["judge"] > 0 and j["unparseable"] == 0
        asked = len(srv.seen)
        rows = list(io.iter_rows(str(tmp_path / "out")))
        kept = [n for r in rows for n in r[S.NEGATIVES]]
        # after 3 rounds a relevant document can survive only if it was never picked before the last round
        assert sum(n in relevant for n in kept) < j["relevant"]
        # a rerun, relabelling: every verdict from the cache, no request
        out2 = str(tmp_path / "out2")
        again = mine(mine_config(mine_data, tmp_path, tiny_bert_dir, output=out2, judge_relabel=True, **kw))
        assert len(srv.seen) == asked and again["mining"]["judge"]["llm"]["cache_hits"] == j["asked"]
    extra = [r for r in io.iter_rows(out2) if r[S.PROVENANCE] and "relabelled_by" in r[S.PROVENANCE]]
    assert extra and all(r[S.POSITIVE] in relevant for r in extra)
    assert len(extra) == again["mining"]["judge"]["relevant"]
    assert again["rows"] == len(rows) + len(extra)


def test_judge_timeout_is_retried_and_an_unreachable_judge_fails_first(tmp_path):
    calls = []

    def slow_once(body):
        calls.append(1)
        if len(calls) == 1:
            time.sleep(1.5)  # longer than the client's timeout: the client gives up and retries
        return chat_body("no")

    with FaultServer([], ok_body=slow_once) as srv:
        judge = Judge(JudgeConfig(model="m", base_url=srv.base_url, timeout_s=0.5))
        judge.llm.cfg = type(judge.llm.cfg)(**{**judge.llm.cfg.__dict__, "backoff_s": 0.01})
        assert judge.verdicts([("q", "p", "c")]).tolist() == [NOT_RELEVANT]
    assert judge.llm.stats.retries == {"timeout": 1}
    with pytest.raises(LLMError):
        Judge(JudgeConfig(model="m", base_url="http://127.0.0.1:9/v1", max_retries=0)).check()


@pytest.mark.slow  # starts `transformers serve` (~10-20 s on a loaded CPU)
def test_real_transformers_serve_nonsense_is_counted_unparseable(llm_server, tmp_path):
    url, name = llm_server
    judge = Judge(JudgeConfig(model=name, base_url=url, cache_dir=str(tmp_path / "c")))
    got = judge.verdicts([("what is the capital of france ?", "paris is the capital of france .", "water")] * 2)
    # the tiny random LM answers nonsense: never guessed, counted (a 'yes'/'no' by chance is still parsed)
    assert judge.counts["asked"] == 2 and judge.llm.stats.cache_misses == 1
    assert judge.counts["unparseable"] + judge.counts["relevant"] + judge.counts["not_relevant"] == 2
    assert set(got.tolist()) <= {UNKNOWN, RELEVANT, NOT_RELEVANT}


def test_local_causal_lm_judge_counts_every_answer(tiny_causal_lm, tmp_path):
    judge = Judge(JudgeConfig(model=str(tiny_causal_lm), cache_dir=str(tmp_path / "c"), concurrency=2))
    triples = [("what is the capital of france ?", "paris is the capital of france .", c) for c in ("water", "paris")]
    got = judge.verdicts(triples)
    assert judge.counts["asked"] == 2 and len(got) == 2
    assert sum(judge.counts[k] for k in ("relevant", "not_relevant", "unparseable", "failed")) == 2
    again = Judge(JudgeConfig(model=str(tiny_causal_lm), cache_dir=str(tmp_path / "c")))
    assert again.verdicts(triples).tolist() == got.tolist() and again.llm.stats.cache_hits == 2
