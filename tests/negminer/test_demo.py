"""`negminer demo`: build + inspect on the bundled sample (chain skipped cleanly), then the whole chain end to end."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest

from negminer import cli, demo
from negminer.export import FORMATS, MANIFEST_NAME
from negminer.pipelines import io
from negminer.pipelines import schema as S


def _expected_from_raw(path: str) -> dict[str, int]:
    """Rows, negatives and rejects of the bundled sample, counted with plain Python over the raw lines."""
    rejects = 0
    by_premise: dict[str, dict[str, set]] = defaultdict(lambda: defaultdict(set))
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            rejects += 1
            continue
        p, h, label = obj.get("sentence1", ""), obj.get("sentence2", ""), obj.get("gold_label")
        if label == "-" or not p.strip() or not h.strip():
            rejects += 1
            continue
        by_premise[p.strip()][label].add(h.strip())
    rows = sum(len(d["entailment"]) for d in by_premise.values())
    negatives = sum(len(d["entailment"]) * len(d["contradiction"]) for d in by_premise.values())
    return {"rows": rows, "negatives": negatives, "rejects": rejects}


def _export_rows(out: Path, fmt: str) -> int:
    d = out / "export" / fmt
    if fmt == "sentence-transformers":
        import pyarrow.parquet as pq

        return sum(pq.read_table(f).num_rows for f in d.glob("*.parquet"))
    return sum(len(f.read_text().splitlines()) for f in d.glob("*.jsonl"))


def test_bundled_data_is_small_and_well_formed(tmp_path):
    sample = demo.bundled(demo.SNLI_SAMPLE)
    total = sum(f.stat().st_size for f in Path(demo.DATA).rglob("*") if f.is_file())
    assert total < 300_000
    exp = _expected_from_raw(sample)
    assert 150 <= len(Path(sample).read_text().splitlines()) <= 300 and exp["rejects"] == 3
    ev = Path(demo.eval_set(str(tmp_path / "eval")))
    corpus = {json.loads(x)["_id"] for x in (ev / "corpus.jsonl").read_text().splitlines()}
    queries = {json.loads(x)["_id"] for x in (ev / "queries.jsonl").read_text().splitlines()}
    qrels = [x.split("\t") for x in (ev / "qrels" / "test.tsv").read_text().splitlines()[1:]]
    assert qrels and all(q in queries and d in corpus for q, d, _ in qrels)
    from negminer.training.evaluate import load_eval  # the trainer's own BEIR reader accepts the laid-out folder

    assert set(load_eval(str(ev)).queries) == queries
    # held out: no eval query is a premise of the training sample
    premises = {json.loads(x)["sentence1"] for x in Path(sample).read_text().splitlines() if x.endswith("}")}
    texts = {json.loads(x)["text"] for x in (ev / "queries.jsonl").read_text().splitlines()}
    assert not premises & texts


def test_demo_builds_and_inspects_and_skips_the_chain_clearly(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(demo, "chain_unavailable", lambda model: "mining is not built yet (test)")
    out = tmp_path / "demo"
    assert cli.main(["demo", "--output", str(out), "--quick"]) == 0
    printed = capsys.readouterr().out
    assert "SKIPPED — mining is not built yet (test)" in printed
    assert "tuple-shard format" in printed  # inspect ran
    exp = _expected_from_raw(demo.bundled(demo.SNLI_SAMPLE))
    built = out / "shards" / "snli"
    rows = list(io.iter_rows(str(built)))
    assert len(rows) == exp["rows"]
    assert sum(len(r[S.NEGATIVES]) for r in rows) == exp["negatives"]
    assert len(io.read_rejects(str(built))) == exp["rejects"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["built"]["rows"] == exp["rows"] and sum(summary["built"]["rejects"].values()) == exp["rejects"]
    assert "mined" not in summary and "model" not in summary
    for fmt in FORMATS:  # exports of the built shards: every row has a contradiction, so none is dropped
        assert _export_rows(out, fmt) == exp["rows"] == summary["exports"][fmt]["rows"]


def test_a_failing_step_is_reported_and_the_rest_still_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(demo, "chain_unavailable", lambda model: None)
    real_main = cli.main

    def main(argv):
        if argv[0] == "mine":
            raise RuntimeError("the miner broke (test)")
        return real_main(argv)

    monkeypatch.setattr(demo.cli, "main", main)
    out = tmp_path / "demo"
    assert real_main(["demo", "--output", str(out), "--quick", "--model", "unused"]) == 1
    printed = capsys.readouterr().out
    assert "FAILED (exit 1)" in printed and "FAILED: mine hard negatives" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert "mined" not in summary and "model" not in summary  # train needs mined shards: not attempted
    assert [s["step"] for s in summary["steps"] if s["step"].startswith("train")] == []
    assert all(summary["exports"][fmt]["rows"] == summary["built"]["rows"] for fmt in FORMATS)


@pytest.mark.slow
def test_demo_whole_chain_end_to_end(tmp_path, capsys):
    model = demo.default_model()
    why = demo.chain_unavailable(model)
    if why:
        pytest.skip(why)
    out = tmp_path / "demo"
    assert cli.main(["demo", "--output", str(out), "--quick"]) == 0
    printed = capsys.readouterr().out
    assert "SKIPPED" not in printed and "negminer demo — summary" in printed
    summary = json.loads((out / "summary.json").read_text())
    built, mined = out / "shards" / "snli", out / "shards" / "snli-mined"
    built_rows = list(io.iter_rows(str(built)))
    mined_rows = list(io.iter_rows(str(mined)))
    assert len(mined_rows) == len(built_rows) == summary["mined"]["rows"]
    assert {r[S.ID] for r in mined_rows} == {r[S.ID] for r in built_rows}
    for r in mined_rows:  # scores came with the negatives, and no negative is the row's positive
        assert r[S.POSITIVE_SCORE] is not None and len(r[S.NEGATIVE_SCORES]) == len(r[S.NEGATIVES])
        assert r[S.POSITIVE] not in r[S.NEGATIVES]
    margins = [r[S.POSITIVE_SCORE] - max(r[S.NEGATIVE_SCORES]) for r in mined_rows if r[S.NEGATIVES]]
    assert summary["mined"]["margins"]["mean"] == pytest.approx(sum(margins) / len(margins), abs=1e-6)
    metrics = json.loads((out / "model" / "metrics.json").read_text())
    for key in ("before", "after"):
        assert set(metrics[key]) >= {"ndcg@10", "mrr@10", "recall@100"}
        assert summary["model"][key] == metrics[key]
    assert (out / "model" / "config.json").exists()
    assert Path(summary["histogram"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with_negs = sum(1 for r in mined_rows if r[S.NEGATIVES])
    for fmt in FORMATS:
        manifest = json.loads((out / "export" / fmt / MANIFEST_NAME).read_text())
        assert manifest["rows_in"] == len(mined_rows)
        want = with_negs if fmt == "sentence-transformers" else len(mined_rows)
        assert _export_rows(out, fmt) == want == summary["exports"][fmt]["rows"]
