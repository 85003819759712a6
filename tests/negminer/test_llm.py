"""The LLM client: greedy local generation against a hand-rolled decode loop, a real `transformers serve` on
loopback, retries on injected faults (counted), a one-line error for an unreachable endpoint, the answer cache."""

from __future__ import annotations

import logging

import pytest
import torch

from negminer.llm import LLM, AnswerCache, LLMConfig, LLMError, Sampling, cache_key
from tests.llm_servers import FaultServer, chat_body, free_port, suppressed_ids

PROMPTS = ["the river flows through", "what is the capital of france ?", "who wrote the music ?"]


def _greedy_by_hand(model_dir, prompts: list[str], n: int) -> list[str]:
    """Reference: argmax of the full forward pass, one prompt and one token at a time, no KV cache, no generate()."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    banned = suppressed_ids(tok)  # what the model's generation_config suppresses
    answers = []
    for prompt in prompts:
        msg = [{"role": "user", "content": prompt}]
        text = tok.apply_chat_template(msg, tokenize=False, add_generation_prompt=True)
        ids = tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"]  # (1, T)
        out = []
        with torch.no_grad():
            for _ in range(n):
                logits = model(input_ids=ids).logits[0, -1]
                logits[banned] = float("-inf")
                nxt = int(logits.argmax())
                if nxt == tok.eos_token_id:
                    break
                out.append(nxt)
                ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
        answers.append(tok.decode(out, skip_special_tokens=True))
    return answers


def test_local_greedy_matches_hand_decode_with_padding(tiny_causal_lm, tmp_path, one_torch_thread):
    # three prompts of different lengths in one left-padded batch: padding must not change any answer
    llm = LLM(LLMConfig(model=str(tiny_causal_lm), device="cpu", cache_dir=str(tmp_path / "c")))
    got = llm.generate(PROMPTS, Sampling(max_new_tokens=6))
    assert [a.text for a in got] == _greedy_by_hand(tiny_causal_lm, PROMPTS, 6)
    assert all(a.error is None and not a.cached for a in got)
    again = LLM(LLMConfig(model=str(tiny_causal_lm), device="cpu", cache_dir=str(tmp_path / "c")))
    assert [a.text for a in again.generate(PROMPTS, Sampling(max_new_tokens=6))] == [a.text for a in got]
    assert again.stats.cache_hits == 3 and again._backend is None  # a fully cached rerun never loads the model


def test_cache_key_names_everything_the_answer_depends_on():
    base = cache_key("m", "p", Sampling())
    assert base == cache_key("m", "p", Sampling())
    others = [
        cache_key("m2", "p", Sampling()),
        cache_key("m", "p2", Sampling()),
        cache_key("m", "p", Sampling(temperature=0.7)),
        cache_key("m", "p", Sampling(max_new_tokens=65)),
        cache_key("m", "p", Sampling(seed=1)),
        cache_key("m", "p", Sampling(), system="be brief"),
        cache_key("m", "p", Sampling(), chat=False),
    ]
    assert len({base, *others}) == 8


def test_bad_settings_fail_at_construction():
    with pytest.raises(ValueError, match="temperature"):
        Sampling(temperature=-1)
    with pytest.raises(ValueError, match="max_new_tokens"):
        Sampling(max_new_tokens=0)
    with pytest.raises(ValueError, match="base_url"):
        LLMConfig(model="m", base_url="localhost:8000")


def test_unreachable_endpoint_is_one_line_error_before_work():
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    llm = LLM(LLMConfig(model="m", base_url=url, timeout_s=2))
    with pytest.raises(LLMError) as e:
        llm.check()
    assert url in str(e.value) and "\n" not in str(e.value)
    assert llm.stats.requests == 0


def test_429_then_200_and_dropped_connection_are_retried_and_counted(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("NEGMINER_TEST_KEY", "sk-secret-do-not-log")
    caplog.set_level(logging.DEBUG)
    with FaultServer(["429", "close", "503", "ok"]) as srv:
        cfg = LLMConfig(model="fault-model", base_url=srv.base_url, api_key_env="NEGMINER_TEST_KEY", backoff_s=0.01)
        llm = LLM(replace_cache(cfg, tmp_path))
        llm.check()
        (a,) = llm.generate(["one prompt"], Sampling(max_new_tokens=8))
    assert a.text == "fine query" and a.error is None
    assert llm.stats.retries == {"http_429": 1, "connection": 1, "http_503": 1}
    assert llm.stats.requests == 4 and len(srv.seen) == 4
    assert all(auth == "Bearer sk-secret-do-not-log" for _, auth, _ in srv.seen)  # the key is used ...
    assert "sk-secret-do-not-log" not in caplog.text  # ... and never logged
    assert "sk-secret-do-not-log" not in str(llm.provenance(Sampling())) + str(llm.stats.as_dict())
    body = srv.seen[-1][2]
    assert body["messages"] == [{"role": "user", "content": "one prompt"}]
    assert body["max_tokens"] == 8 and body["temperature"] == 0


def replace_cache(cfg: LLMConfig, tmp_path) -> LLMConfig:
    from dataclasses import replace

    return replace(cfg, cache_dir=str(tmp_path / "cache"))


def test_retries_exhausted_stop_the_job_and_a_bad_request_is_a_reason(tmp_path):
    with FaultServer(["500"] * 10) as srv:
        llm = LLM(LLMConfig(model="m", base_url=srv.base_url, max_retries=2, backoff_s=0.01))
        with pytest.raises(LLMError, match="gave up after 2 retries, last error http_500"):
            llm.generate(["p"])
        assert llm.stats.retries == {"http_500": 2} and llm.stats.errors == {"http_500": 1}
    with FaultServer(["400", "ok"]) as srv:
        llm = LLM(LLMConfig(model="m", base_url=srv.base_url, cache_dir=str(tmp_path / "c"), concurrency=1))
        a, b = llm.generate(["too long", "fine"])
    assert (a.text, a.error) == (None, "http_400") and b.text == "fine query"
    assert len(AnswerCache(str(tmp_path / "c"))) == 1  # the failed prompt is not cached: a rerun asks again


def test_refusal_and_content_filter_are_reasons_not_text():
    refusal = chat_body("")
    refusal["choices"][0]["message"]["refusal"] = "I can't help with that"
    with FaultServer([], ok_body=refusal) as srv:
        (a,) = LLM(LLMConfig(model="m", base_url=srv.base_url)).generate(["p"])
    assert (a.text, a.error) == (None, "refused")
    with FaultServer([], ok_body=chat_body("", finish_reason="content_filter")) as srv:
        (a,) = LLM(LLMConfig(model="m", base_url=srv.base_url)).generate(["p"])
    assert (a.text, a.error) == (None, "content_filter")


def test_concurrency_sends_every_prompt_once_and_keeps_order(tmp_path):
    prompts = [f"prompt {i}" for i in range(20)] + ["prompt 3"]  # a repeat is asked once
    with FaultServer([]) as srv:
        llm = LLM(LLMConfig(model="m", base_url=srv.base_url, concurrency=4, cache_dir=str(tmp_path / "c")))
        got = llm.generate(prompts)
        assert len(srv.seen) == 20
        asked = sorted(b["messages"][0]["content"] for _, _, b in srv.seen)
        assert asked == sorted(set(prompts))
        again = llm.generate(prompts)
        assert len(srv.seen) == 20  # all from the cache
    assert len(got) == len(again) == 21 and all(a.cached for a in again)
    assert llm.stats.cache_hits == 21 and llm.stats.cache_misses == 20


@pytest.mark.slow  # starting `transformers serve` costs ~10-20 s on a loaded CPU
def test_transformers_serve_chat_and_completions(llm_server, tiny_causal_lm, tmp_path, one_torch_thread):
    url, name = llm_server
    llm = LLM(LLMConfig(model=name, base_url=url, cache_dir=str(tmp_path / "c"), concurrency=2))
    llm.check()
    chat = llm.generate(PROMPTS, Sampling(max_new_tokens=5))
    assert all(a.text and a.error is None for a in chat)
    assert all(a.finish_reason in ("length", "stop") for a in chat)
    local_chat = LLM(LLMConfig(model=str(tiny_causal_lm), device="cpu")).generate(PROMPTS, Sampling(max_new_tokens=5))
    assert [a.text for a in chat] == [a.text for a in local_chat]  # greedy: the server's answer is the local one
    assert llm.generate(PROMPTS, Sampling(max_new_tokens=5)) and llm.stats.cache_hits == 3
    # plain completions, greedy: the server's answer equals the local back end's on the same weights
    plain = LLM(LLMConfig(model=name, base_url=url, chat=False)).generate(PROMPTS, Sampling(max_new_tokens=5))
    local = LLM(LLMConfig(model=str(tiny_causal_lm), chat=False, device="cpu")).generate(
        PROMPTS, Sampling(max_new_tokens=5)
    )
    assert [a.text for a in plain] == [a.text for a in local]
