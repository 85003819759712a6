"""The false-negative rules inside the mining job and the `--preset` flag (tiny random encoder)."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from negminer import cli
from negminer.mining import run as mine_run
from negminer.mining.lexical import LexicalIndex
from negminer.mining.mine import mine
from negminer.mining.preset import PRESETS, resolve
from negminer.pipelines import io
from negminer.pipelines import schema as S
from negminer.pipelines.transforms.clean import normalize_for_match
from tests.mining.conftest import mine_config
from tests.mining.test_mine import reference_embed


def _positives(rows):
    out: dict[str, list[str]] = {}
    for r in rows:
        out.setdefault(normalize_for_match(r["query"]), []).append(r["positive"])
    return out


def test_triangle_rule_in_the_job_keeps_only_candidates_inside_the_triangle(mine_data, tmp_path, tiny_bert_dir):
    off = mine(mine_config(mine_data, tmp_path, tiny_bert_dir))
    manifest = mine(mine_config(mine_data, tmp_path, tiny_bert_dir, triangle=-0.05, output=str(tmp_path / "o2")))
    removed = manifest["mining"]["removed"]
    assert off["mining"]["removed"]["triangle"] == 0 and removed["triangle"] > 0
    assert manifest["mining"]["thresholds"]["triangle"] == -0.05
    positives = _positives(mine_data["rows"])
    for r in io.iter_rows(str(tmp_path / "o2")):
        pos = positives[normalize_for_match(r[S.QUERY])]
        q, p = reference_embed(tiny_bert_dir, [r[S.QUERY]]), reference_embed(tiny_bert_dir, pos)
        for n in reference_embed(tiny_bert_dir, r[S.NEGATIVES]) if r[S.NEGATIVES] else []:
            assert (p @ n - (p @ q[0])).max() < -0.05 + 3e-3  # float16 cache tolerance


def test_positive_side_and_rank_rules_in_the_job(mine_data, tmp_path, tiny_bert_dir):
    side = mine(mine_config(mine_data, tmp_path, tiny_bert_dir, positive_side=-0.1, positive_aware="none"))
    assert side["mining"]["removed"]["positive_side"] > 0 and side["mining"]["thresholds"]["positive_side"] == -0.1
    positives = _positives(mine_data["rows"])
    for r in io.iter_rows(str(tmp_path / "out")):
        pos = positives[normalize_for_match(r[S.QUERY])]
        q, p = reference_embed(tiny_bert_dir, [r[S.QUERY]]), reference_embed(tiny_bert_dir, pos)
        for n in reference_embed(tiny_bert_dir, r[S.NEGATIVES]) if r[S.NEGATIVES] else []:
            assert (p @ n - (n @ q[0] + p @ q[0]) / 2).max() < -0.1 + 3e-3  # float16 cache tolerance
    out = str(tmp_path / "rank")  # window over the whole corpus: every non-positive document is a candidate
    ranked = mine(mine_config(mine_data, tmp_path, tiny_bert_dir, positive_rank=3, range_max=100, output=out))
    queries = {normalize_for_match(r[S.QUERY]) for r in io.iter_rows(out)}
    n_pos = sum(len(positives[q]) for q in queries)
    assert 3 * len(queries) <= ranked["mining"]["removed"]["positive_rank"] <= 3 * n_pos  # R per positive, shared
    docs = list({normalize_for_match(t): t for t in mine_data["docs"]}.values())
    for r in io.iter_rows(out):
        pos = {normalize_for_match(p) for p in positives[normalize_for_match(r[S.QUERY])]}
        cands = [t for t in docs if normalize_for_match(t) not in pos]
        sim = reference_embed(tiny_bert_dir, sorted(pos)) @ reference_embed(tiny_bert_dir, cands).T  # (P, C)
        for row in sim:  # surely among the 3 closest: above the 4th closest by more than the float16 tolerance
            banned = {normalize_for_match(cands[i]) for i in np.nonzero(row > np.sort(row)[-4] + 3e-3)[0]}
            assert not banned & {normalize_for_match(n) for n in r[S.NEGATIVES]}


def test_lexical_rule_in_the_job(mine_data, tmp_path, tiny_bert_dir):
    manifest = mine(mine_config(mine_data, tmp_path, tiny_bert_dir, lexical=0.5))
    assert manifest["mining"]["removed"]["lexical"] > 0 and manifest["mining"]["thresholds"]["lexical"] == 0.5
    texts = list(
        {normalize_for_match(t): t for t in mine_data["docs"] + [r["positive"] for r in mine_data["rows"]]}.values()
    )
    ix = LexicalIndex(texts)
    at = {normalize_for_match(t): i for i, t in enumerate(texts)}
    positives = _positives(mine_data["rows"])
    for r in io.iter_rows(str(tmp_path / "out")):
        pos = np.array([[at[normalize_for_match(p)] for p in positives[normalize_for_match(r[S.QUERY])]]])
        neg = np.array([[at[normalize_for_match(n)] for n in r[S.NEGATIVES]]])
        p = ix.pair_scores([r[S.QUERY]], pos)[0]
        if (p > 0).any() and neg.size:
            assert (ix.pair_scores([r[S.QUERY]], neg)[0] < 0.5 * p[p > 0].min()).all()


def _config(argv):
    parser = argparse.ArgumentParser()
    mine_run.add_arguments(parser)
    return mine_run.config_from_args(parser.parse_args(["--input", "i", "--output", "o", "--model", "m", *argv]))


def test_preset_values_and_explicit_flags_override_them():
    clean = PRESETS["clean"]
    cfg = _config(["--preset", "clean"])
    assert {f: getattr(cfg, f) for f in clean} == clean
    cfg = _config(["--preset", "clean", "--triangle", "none", "--positive-aware", "margin:0.1"])
    assert {f: getattr(cfg, f) for f in clean} == {**clean, "triangle": None, "positive_aware": "margin:0.1"}
    cfg = _config([])  # no preset: the plain defaults
    assert (cfg.positive_aware, cfg.triangle, cfg.lexical, cfg.preset) == ("auto", None, None, None)
    assert cfg.positive_aware_spec() == "perc:0.95"  # auto without a reranker
    assert resolve(None, {"lexical": 2.0}) == {"lexical": 2.0}
    with pytest.raises(ValueError, match="--preset must be one of"):
        resolve("dirty", {})


def test_cli_preset_is_recorded_resolved_in_the_manifest(mine_data, tmp_path, tiny_bert_dir, capsys):
    out = tmp_path / "cli-out"
    argv = ["mine", "--input", mine_data["input"], "--output", str(out), "--model", str(tiny_bert_dir)]
    argv += ["--corpus", mine_data["corpus"], "--work-dir", str(tmp_path / "w"), "--num-negatives", "3"]
    argv += ["--max-length", "64", "--preset", "clean", "--lexical", "2"]
    assert cli.main(argv) == 0
    m = io.read_manifest(str(out))
    assert m["config"]["preset"] == "clean" and m["config"]["lexical"] == 2.0
    th = m["mining"]["thresholds"]
    assert th["lexical"] == 2.0  # the explicit flag over the preset
    assert {f: th[f] for f in PRESETS["clean"] if f != "lexical"} == {
        f: v for f, v in PRESETS["clean"].items() if f != "lexical"
    }
    with pytest.raises(SystemExit) as e:
        cli.main(argv[:7] + ["--preset", "dirty"])
    assert "dirty" in str(e.value) + capsys.readouterr().err


def test_report_places_kept_negatives_relative_to_their_positive(tmp_path):
    from negminer.mining.report import RELATIVE_NAME, describe, read_relative

    rows = [
        dict(source="t", pair_type="qa", query="a", positive="p", negatives=["x", "y"], negative_ids=["1", "2"]),
        dict(source="t", pair_type="qa", query="b", positive="q", negatives=["z"], negative_ids=["3"]),
        dict(source="t", pair_type="qa", query="c", positive="r", negatives=[], negative_ids=[]),
    ]
    scores = [(0.8, [0.7, 0.9]), (-0.2, [-0.5]), (0.5, [])]
    for r, (p, n) in zip(rows, scores, strict=True):
        r.update(positive_score=p, negative_scores=n)
    io.write_shards([S.TupleRow(**r).to_dict() for r in rows], str(tmp_path / "m"))
    p, n = read_relative(str(tmp_path / "m"))
    np.testing.assert_allclose(np.sort(n - p), [-0.3, -0.1, 0.1], atol=1e-6)  # shard order is by row id
    judge = {"model": "j", "backend": "openai", "mode": "drop", "rounds": 2, "asked": 9, "relevant": 3}
    judge |= {"not_relevant": 5, "unparseable": 1, "failed": 0, "llm": {"cache_hits": 4}}
    manifest = {
        "mining": {"model": "m", "removed": {"positive_aware": 4, "triangle": 2, "lexical": 1}, "judge": judge}
    }
    lines = describe(str(tmp_path / "m"), manifest, str(tmp_path / "plots" / "h.png"))
    text = "\n".join(lines)
    assert "triangle=2" in text and "lexical=1" in text
    assert "asked 9, relevant 3, not relevant 5, unparseable 1, failed 0; cache hits 4" in text
    assert "mean=-0.1000" in text and "1 of 3 score at or above their positive" in text
    assert (tmp_path / "plots" / RELATIVE_NAME).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
