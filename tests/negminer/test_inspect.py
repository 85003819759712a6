"""`negminer inspect`: counts, rejects, exact streamed length statistics, samples, and the mining hook."""

from __future__ import annotations

import json
import random
import sys
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from negminer import cli
from negminer import inspect as insp
from negminer.pipelines import io
from negminer.pipelines import schema as S

WORDS = ["a", "dog", "runs", "über", "the", "café", "naïve", "x" * 30, "and", "then"]


def _text(rng: random.Random, n_min: int, n_max: int) -> str:
    seps = [" ", "  ", "\t", "\n", "\u00a0"]
    words = [rng.choice(WORDS) for _ in range(rng.randint(n_min, n_max))]
    return "".join(w + rng.choice(seps) for w in words).strip(" ") or "solo"


def make_rows(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    return [
        S.TupleRow(
            source=rng.choice(["snli", "msmarco"]),
            pair_type=rng.choice(["nli", "qa"]),
            query=f"{i} " + _text(rng, 1, 40),
            positive=_text(rng, 1, 80),
            negatives=tuple(_text(rng, 0, 60) for _ in range(rng.choice([0, 0, 1, 3, 7]))),
        ).to_dict()
        for i in range(n)
    ]


@pytest.fixture
def shard_dir(tmp_path):
    """train in 3 shards + dev in 1, a rejects file, and a manifest."""
    train, dev = make_rows(300, seed=1), make_rows(40, seed=2)
    d = str(tmp_path / "shards")
    rejects = [
        io.make_reject("in.jsonl", r, "x", line=i) for i, r in enumerate(["malformed_json"] * 2 + ["no_gold_label"])
    ]
    record = {"command": "build test", "skipped": {"neutral_hypothesis": 5}}
    io.write_shards(train, d, split="train", num_shards=3, record=record, rejects=rejects)
    io.write_shards(dev, d, split="dev", num_shards=1, record={"command": "build test"})
    return d, train + dev, {"train": len(train), "dev": len(dev)}


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    rc = cli.main(["inspect", *argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _stats(values: list[int]) -> dict:
    a = np.asarray(values, dtype=np.float64)
    return {
        "count": len(a),
        "mean": pytest.approx(a.mean()),
        "p50": pytest.approx(np.percentile(a, 50)),
        "p95": pytest.approx(np.percentile(a, 95)),
        "max": int(a.max()),
    }


def test_int_histogram_quantiles_equal_numpy():
    rng = np.random.default_rng(0)
    chunks = [rng.integers(0, 500, size=rng.integers(0, 300)) for _ in range(20)] + [np.array([10_000])]
    h = insp.IntHistogram()
    for c in chunks:
        h.add(c)
    every = np.concatenate(chunks)
    for q in (0.0, 0.01, 0.5, 0.95, 0.999, 1.0):
        assert h.quantile(q) == pytest.approx(np.percentile(every, 100 * q))
    assert insp.IntHistogram().summary() == {"count": 0}


def test_text_lengths_count_like_python():
    texts = ["", " ", "a", "  a  b ", "a\tb\nc", "é ü", "a\u00a0b", "café  naïve", None]
    chars, tokens = insp.text_lengths(pa.array(texts, pa.string()))
    kept = [t for t in texts if t is not None]
    assert chars.tolist() == [len(t) for t in kept]
    assert tokens.tolist() == [len(t.split()) for t in kept]


def test_json_report_matches_the_rows(shard_dir, capsys):
    d, rows, splits = shard_dir
    rc, out, _ = run([d, "--json"], capsys)
    assert rc == 0
    s = json.loads(out)
    assert s["format_version"] == S.FORMAT_VERSION and s["files"] == 4 and s["rows"] == len(rows)
    assert s["counts"]["split"] == splits
    assert s["counts"]["source"] == dict(Counter(r[S.SOURCE] for r in rows))
    assert s["counts"]["pair_type"] == dict(Counter(r[S.PAIR_TYPE] for r in rows))
    assert s["rejects"] == {"malformed_json": 2, "no_gold_label": 1}
    assert s["skipped"] == {"neutral_hypothesis": 5}
    texts = {
        S.QUERY: [r[S.QUERY] for r in rows],
        S.POSITIVE: [r[S.POSITIVE] for r in rows],
        S.NEGATIVES: [n for r in rows for n in r[S.NEGATIVES]],
    }
    for field, values in texts.items():
        assert s["lengths"][field]["chars"] == _stats([len(t) for t in values])
        assert s["lengths"][field]["tokens"] == _stats([len(t.split()) for t in values])
    per_row = [len(r[S.NEGATIVES]) for r in rows]
    assert s["negatives_per_row"] == {**_stats(per_row), "rows_without_negatives": per_row.count(0)}
    by_id = {r[S.ID]: r for r in rows}
    assert len(s["samples"]) == 3 and all(by_id[x[S.ID]] == x for x in s["samples"])
    assert s["warnings"] == [] and "mining" not in s


@pytest.mark.parametrize("n", [0, 5])
def test_samples_flag(shard_dir, capsys, n):
    rc, out, _ = run([shard_dir[0], "--json", "--samples", str(n)], capsys)
    assert rc == 0 and len(json.loads(out)["samples"]) == n


def test_text_report(shard_dir, capsys):
    d, rows, _ = shard_dir
    rc, out, _ = run([d], capsys)
    assert rc == 0
    assert f"tuple-shard format {S.FORMAT_VERSION}, built by `build test`" in out
    assert f"rows: {len(rows)} in 4 shard file(s)" in out
    assert "rejects: 3 (malformed_json=2, no_gold_label=1)" in out
    assert "skipped: 5 (neutral_hypothesis=5)" in out
    assert out.count("query:    ") == 3 and "negatives per row" in out


def test_without_manifest_counts_rejects_from_files(shard_dir, capsys, tmp_path):
    d, rows, _ = shard_dir
    (tmp_path / "shards" / S.MANIFEST_NAME).unlink()
    rc, _, err = run([d, "--json"], capsys)
    assert rc == 2 and "no manifest.json" in err and "--no-manifest-check" in err
    rc, out, _ = run([d, "--json", "--no-manifest-check"], capsys)
    s = json.loads(out)
    assert rc == 0 and s["manifest"] is False and s["rows"] == len(rows)
    assert s["format_version"] == S.FORMAT_VERSION  # from the Parquet schema metadata
    assert s["rejects"] == {"malformed_json": 2, "no_gold_label": 1}


def test_manifest_disagreeing_with_shards_is_flagged(shard_dir, capsys):
    d, rows, _ = shard_dir
    m = io.read_manifest(d)
    io.write_manifest(d, {**m, "rows": len(rows) + 7})
    rc, out, _ = run([d], capsys)
    assert rc == 0 and f"WARNING: manifest.json says {len(rows) + 7} rows, the shards hold {len(rows)}" in out
    m["splits"]["dev"]["file_rows"]["dev-00000-of-00001.parquet"] += 1  # a shard's count disagrees: refused
    io.write_manifest(d, m)
    rc, _, err = run([d], capsys)
    assert rc == 2 and "dev-00000-of-00001.parquet holds 40 rows, manifest.json says 41" in err


def test_mined_shards_call_mining_report_with_the_plot_path(shard_dir, capsys, monkeypatch, tmp_path):
    report = pytest.importorskip("negminer.mining.report")
    d, _, _ = shard_dir
    io.write_manifest(d, {**io.read_manifest(d), "mining": {"model": "tiny"}})
    calls = []

    def fake_describe(shard_dir, manifest, plot_path=None):
        calls.append((shard_dir, manifest["mining"], plot_path))
        return ["mining: model tiny", "  thresholds: margin=0.1"]

    monkeypatch.setattr(report, "describe", fake_describe)
    plot = str(tmp_path / "hist.png")
    rc, out, _ = run([d, "--plot", plot], capsys)
    assert rc == 0 and calls == [(d, {"model": "tiny"}, plot)]
    assert "mining: model tiny\n  thresholds: margin=0.1" in out
    rc, out, _ = run([d, "--json"], capsys)
    assert json.loads(out)["mining"] == ["mining: model tiny", "  thresholds: margin=0.1"] and calls[-1][2] is None


def test_mining_report_missing_is_a_one_line_note(shard_dir, capsys, monkeypatch):
    d, _, _ = shard_dir
    io.write_manifest(d, {**io.read_manifest(d), "mining": {"model": "tiny"}})
    # `from negminer.mining import report` then raises ImportError, as when the mining area is not installed
    monkeypatch.setitem(sys.modules, "negminer.mining.report", None)
    if "negminer.mining" in sys.modules:
        monkeypatch.delattr(sys.modules["negminer.mining"], "report", raising=False)
    rc, out, _ = run([d], capsys)
    notes = [line for line in out.splitlines() if line.startswith("mining:")]
    assert rc == 0 and len(notes) == 1 and "cannot be imported" in notes[0]


def test_plot_without_mining_is_a_warning(shard_dir, capsys, tmp_path):
    rc, out, _ = run([shard_dir[0], "--plot", str(tmp_path / "p.png")], capsys)
    assert rc == 0 and "--plot ignored" in out and not (tmp_path / "p.png").exists()


def test_not_a_shard_dir_fails_clearly(tmp_path, capsys):
    rc, _, err = run([str(tmp_path / "missing")], capsys)
    assert rc == 2 and "missing" in err and "no shard files" in err
    bad = tmp_path / "bad"
    bad.mkdir()
    pq.write_table(pa.table({"text": ["hello"]}), bad / "train-00000-of-00001.parquet")
    rc, _, err = run([str(bad)], capsys)
    assert rc == 2 and "no manifest.json" in err and len(err.strip().splitlines()) == 1
    rc, _, err = run([str(bad), "--no-manifest-check"], capsys)
    assert rc == 2 and "train-00000-of-00001.parquet" in err and "'id'" in err


def test_a_file_that_is_not_parquet_is_named(tmp_path, capsys):
    notes = tmp_path / "notes.parquet"
    notes.write_text("just some text, not Parquet\n")
    for target in (notes, tmp_path / "notes.txt"):
        target.write_text("just some text, not Parquet\n")
        rc, _, err = run([str(target)], capsys)
        assert rc == 2 and str(target) in err and "not a Parquet file" in err and len(err.strip().splitlines()) == 1


def test_bad_samples_value_is_a_usage_error(shard_dir, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["inspect", shard_dir[0], "--samples", "-1"])
    assert e.value.code == 2 and "-1" in capsys.readouterr().err
