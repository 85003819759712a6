"""The mining job end to end with a tiny random encoder: output rows, scores, resume, splits, report, CLI errors."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from negminer import cli
from negminer.mining.config import MineConfig
from negminer.mining.mine import mine
from negminer.mining.report import describe
from negminer.pipelines import io
from negminer.pipelines import schema as S
from negminer.pipelines.transforms.clean import normalize_for_match
from tests.mining.conftest import N_DOCS, mine_config


def reference_embed(model_dir, texts):
    """Mean-pooled, L2-normalised float64 embeddings computed here with plain transformers (no negminer code)."""
    from transformers import AutoModel, AutoTokenizer

    tok, model = AutoTokenizer.from_pretrained(model_dir), AutoModel.from_pretrained(model_dir).eval()
    with torch.no_grad():
        b = tok(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
        h = model(**b).last_hidden_state.double()
        m = b["attention_mask"].unsqueeze(-1).double()
        e = (h * m).sum(1) / m.sum(1)
    return torch.nn.functional.normalize(e, dim=-1).numpy()


def test_mined_rows_match_a_brute_force_reference(mine_data, tmp_path, tiny_bert_dir):
    cfg = mine_config(mine_data, tmp_path, tiny_bert_dir, range_max=N_DOCS)  # k covers the corpus
    train = mine(cfg)
    assert set(train["splits"]) == {"train"} and train["rows"] == 6  # dev is not mined with train
    train_entry = io.read_manifest(cfg.output)["splits"]["train"]
    manifest = mine(dataclasses.replace(cfg, split="dev"))  # a second command, into the same directory
    assert io.read_manifest(cfg.output)["splits"]["train"] == train_entry and manifest["splits"]["dev"]["rows"] == 3
    out = list(io.iter_rows(str(tmp_path / "out")))
    assert sorted(r[S.ID] for r in out) == sorted(S.TupleRow(**r).id for r in mine_data["rows"])
    train_ids = {r[S.ID] for r in io.iter_rows(io.shard_files(str(tmp_path / "out"), "train"))}
    assert train_ids == {S.TupleRow(**r).id for r in mine_data["rows"][:6]}
    # every distinct normalised text once (the tokenizer lower-cases, so any spelling embeds the same)
    corpus = list(
        {normalize_for_match(t): t for t in mine_data["docs"] + [r["positive"] for r in mine_data["rows"]]}.values()
    )
    where = {normalize_for_match(t): i for i, t in enumerate(corpus)}
    emb = reference_embed(tiny_bert_dir, corpus)
    positives: dict[str, set] = {}
    for r in mine_data["rows"]:
        positives.setdefault(normalize_for_match(r["query"]), set()).add(normalize_for_match(r["positive"]))
    for r in out:
        scores = emb @ reference_embed(tiny_bert_dir, [r[S.QUERY]])[0]
        pos = positives[normalize_for_match(r[S.QUERY])]
        allowed = np.array([normalize_for_match(t) not in pos for t in corpus])
        fifth_best = np.sort(scores[allowed])[::-1][4]
        assert len(r[S.NEGATIVES]) == 5 and not {normalize_for_match(n) for n in r[S.NEGATIVES]} & pos
        ref = [scores[where[normalize_for_match(n)]] for n in r[S.NEGATIVES]]
        np.testing.assert_allclose(r[S.NEGATIVE_SCORES], ref, atol=3e-3)  # float16 cache
        assert min(ref) >= fifth_best - 3e-3  # the five hardest non-positives
        assert r[S.NEGATIVE_SCORES] == sorted(r[S.NEGATIVE_SCORES], reverse=True)
        assert r[S.POSITIVE_SCORE] == pytest.approx(scores[where[normalize_for_match(r[S.POSITIVE])]], abs=3e-3)
        assert all(i.startswith("c") for i in r[S.NEGATIVE_IDS])
    m = manifest["mining"]
    bad_line = "tsv: expected 2 tab-separated fields (id, text), got 1"
    assert m["corpus"]["rejects"] == 1 and manifest["splits"]["dev"]["rejects"] == {bad_line: 1}
    assert manifest["rejects"] == {bad_line: 2}  # each split keeps its own rejects; the top level sums them
    assert m["corpus"]["documents"] == len(corpus)

    def n_positives(rows):  # every positive of each query group: all retrieved, all removed
        groups: dict[str, set] = {}
        for r in rows:
            groups.setdefault(normalize_for_match(r["query"]), set()).add(normalize_for_match(r["positive"]))
        return sum(map(len, groups.values()))

    assert train["mining"]["removed"]["positive"] == n_positives(mine_data["rows"][:6])
    assert m["removed"]["positive"] == n_positives(mine_data["rows"][6:])
    lines = describe(str(tmp_path / "out"), io.read_manifest(str(tmp_path / "out")), str(tmp_path / "h.png"))
    print("\n".join(lines))
    assert any("removed:" in ln and f"positive={m['removed']['positive']}," in ln for ln in lines) and any(
        str(tiny_bert_dir) in ln for ln in lines
    )
    assert (tmp_path / "h.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


class Killed(RuntimeError):
    pass


def test_killed_run_resumes_encoding_only_what_is_missing(mine_data, tmp_path, tiny_bert_dir):
    n_unique = len({normalize_for_match(t) for t in mine_data["docs"] + [r["positive"] for r in mine_data["rows"]]})
    cfg = mine_config(mine_data, tmp_path, tiny_bert_dir)

    def kill_after_two(chunk):
        if chunk == 1:
            raise Killed

    with pytest.raises(Killed):
        mine(cfg, on_chunk=kill_after_two)
    assert not (tmp_path / "out" / S.MANIFEST_NAME).exists()
    second = mine(cfg)
    assert second["mining"]["encoded"]["documents"] == n_unique - 2 * cfg.chunk_size
    # another threshold setting: nothing encoded again, and the selection changes
    third = mine(dataclasses.replace(cfg, output=str(tmp_path / "out3"), positive_aware="margin:0.0", range_min=2))
    assert third["mining"]["encoded"] == {"documents": 0, "queries": 0}
    assert third["mining"]["removed"] != second["mining"]["removed"]
    # a different max length is a different cache key: everything is encoded again
    fourth = mine(dataclasses.replace(cfg, output=str(tmp_path / "out4"), max_length=32))
    assert fourth["mining"]["encoded"]["documents"] == n_unique


def test_shortfall_rows_kept_or_dropped(mine_data, tmp_path, tiny_bert_dir):
    cfg = mine_config(mine_data, tmp_path, tiny_bert_dir, min_score=0.9999, num_negatives=3)
    kept = mine(cfg)
    short = sum(len(r[S.NEGATIVES]) < 3 for r in io.iter_rows(cfg.output))
    assert kept["mining"]["shortfall"]["rows"] == short == kept["rows"] > 0
    dropped = mine(dataclasses.replace(cfg, output=str(tmp_path / "dropped"), drop_shortfall=True))
    assert dropped["rows"] == 0 and dropped["mining"]["shortfall"]["rows_dropped"] == short


def test_reranker_scores_equal_a_direct_call(mine_data, tmp_path, tiny_bert_dir, tiny_cross_encoder_dir):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    cfg = mine_config(
        mine_data, tmp_path, tiny_bert_dir, reranker=str(tiny_cross_encoder_dir), positive_aware="perc:0.99"
    )
    manifest = mine(cfg)
    tok = AutoTokenizer.from_pretrained(tiny_cross_encoder_dir)
    ce = AutoModelForSequenceClassification.from_pretrained(tiny_cross_encoder_dir).eval()

    def direct(q, d):  # the raw logit: the teacher score stored, kind "logit"
        with torch.no_grad():
            return ce(**tok([q], [d], return_tensors="pt")).logits[0, 0].item()

    rows = list(io.iter_rows(cfg.output))
    min_pos: dict[str, float] = {}
    for r in rows:
        key = normalize_for_match(r[S.QUERY])
        min_pos[key] = min(min_pos.get(key, 1.0), direct(r[S.QUERY], r[S.POSITIVE]))
    assert manifest["mining"]["scores"]["teacher"] == "reranker" and manifest["mining"]["scores"]["kind"] == "logit"
    for r in rows:
        assert r[S.POSITIVE_SCORE] == pytest.approx(direct(r[S.QUERY], r[S.POSITIVE]), abs=1e-5)
        want = [direct(r[S.QUERY], n) for n in r[S.NEGATIVES]]
        np.testing.assert_allclose(r[S.NEGATIVE_SCORES], want, atol=1e-5)
        assert r[S.NEGATIVE_SCORES] == sorted(r[S.NEGATIVE_SCORES], reverse=True)
        p = min_pos[normalize_for_match(r[S.QUERY])]
        assert all(s < p - abs(p) * 0.01 + 1e-6 for s in r[S.NEGATIVE_SCORES])  # ceiling in reranker space
        retr = json.loads(r[S.PROVENANCE])["retriever_scores"]
        assert len(retr["negatives"]) == len(r[S.NEGATIVES]) and -1 <= retr["positive"] <= 1


def test_bad_flags_fail_before_any_work(tmp_path, capsys):
    base = ["mine", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--model", "m"]
    for flags, message in [
        (["--num-negatives", "0"], "num_negatives must be >= 1, got 0"),
        (["--positive-aware", "perc:2"], "perc:2.0 must be in (0, 1]"),
        (["--range-min", "5", "--range-max", "5"], "5..5"),
        (["--near-dup-threshold", "abc"], "expected a number or 'none'"),
        (["--batch-size", "0"], "--batch-size must be > 0, got 0"),
        (["--direct_num_workers=2"], "Beam flags need --runner"),
        (["--runner=DirectRunner", "--index", "hnsw"], "on Beam the miner searches exactly (--index flat) only"),
    ]:
        try:
            code = cli.main(base + flags)
        except SystemExit as e:  # argparse's own checks
            code = e.code
        assert code == 2 and message in capsys.readouterr().err
    with pytest.raises(ValueError, match="--output must differ from --input"):
        MineConfig(input="a/b", output="a/b/", model="m")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="--device cuda, but torch sees no CUDA GPU"):
            mine(MineConfig(input=str(tmp_path / "in"), output=str(tmp_path / "o"), model="m", device="cuda"))


def test_cli_runs_the_job(mine_data, tmp_path, tiny_bert_dir):
    out = tmp_path / "cli-out"
    argv = ["mine", "--input", mine_data["input"], "--output", str(out), "--model", str(tiny_bert_dir)]
    argv += ["--corpus", mine_data["corpus"], "--work-dir", str(tmp_path / "w"), "--num-negatives", "3"]
    argv += ["--positive-aware", "margin:0.01", "--sampling", "random", "--seed", "3", "--max-length", "64"]
    assert cli.main(argv) == 0
    manifest = io.read_manifest(str(out))
    assert manifest["command"] == "mine" and manifest["config"]["seed"] == 3
    assert manifest["mining"]["thresholds"]["positive_aware"] == "margin:0.01"
    assert manifest["input_build"]["command"] == "test"  # the input manifest is carried along
    assert all(len(r[S.NEGATIVES]) <= 3 for r in io.iter_rows(str(out)))


def test_a_candidate_the_reranker_judges_relevant_is_not_kept(
    mine_data, tmp_path, tiny_bert_dir, tiny_cross_encoder_dir
):
    base = mine_config(mine_data, tmp_path, tiny_bert_dir, reranker=str(tiny_cross_encoder_dir), positive_aware="none")
    kept_all = mine(dataclasses.replace(base, reranker_threshold=None))
    scores = np.array([s for r in io.iter_rows(base.output) for s in r[S.NEGATIVE_SCORES]])
    verdict = float(np.median(scores))  # a threshold that some kept negatives reach (a random reranker's logits)
    assert (scores >= verdict).any() and kept_all["mining"]["removed"].get("reranker_relevant", 0) == 0
    judged = mine(dataclasses.replace(base, output=str(tmp_path / "judged"), reranker_threshold=verdict))
    after = [s for r in io.iter_rows(str(tmp_path / "judged")) for s in r[S.NEGATIVE_SCORES]]
    assert after and max(after) < verdict  # nothing the reranker calls relevant is a negative
    assert judged["mining"]["removed"]["reranker_relevant"] >= int((scores >= verdict).sum())
    assert judged["mining"]["thresholds"]["reranker_threshold"] == verdict
    assert MineConfig(input="i", output="o", model="m").reranker_threshold == 0.0  # default: logit 0 = probability 0.5
    assert str(dataclasses.replace(base, positive_aware="auto").ceiling()) == "margin:1"
    from negminer.mining.mine import verdict_threshold

    as_probability = dataclasses.replace(base, reranker_scores="probability", reranker_threshold=0.0)
    assert verdict_threshold(as_probability) == 0.5  # the threshold is a logit whatever the stored scale
