"""`build snli`: pure parsers and grouping, the PTransform on inline rows, and end to end on real SNLI lines."""

from __future__ import annotations

import gzip
import itertools
import json
import os
import unicodedata
from collections import Counter, defaultdict

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline  # aliased: pytest collects Test*
from apache_beam.testing.util import assert_that, equal_to
from hypothesis import given, settings
from hypothesis import strategies as st

from negminer.pipelines import io, snli
from negminer.pipelines import schema as S
from tests.conftest import shared_file

SNLI_SAMPLE = ("nli", "jack_1000_samples_snli_1.0_train.jsonl")


def official(premise, hypothesis, label, pair="p1", caption="c1", **extra) -> dict:
    return {
        "sentence1": premise,
        "sentence2": hypothesis,
        "gold_label": label,
        "pairID": pair,
        "captionID": caption,
        **extra,
    }


def ex(premise: str, hypothesis: str, label: str, pair: str | None = None, line: int = 1) -> snli.NliExample:
    return snli.NliExample(premise, hypothesis, label, pair, None, None, "f.jsonl", line)


# ------------------------------------------------------------------ parse_nli


def test_parse_official_layout():
    got = snli.parse_nli(official("  A man  plays.\n", "A person plays.", "entailment", "7r1e", "7#1"), "f", 3)
    assert got == snli.NliExample("A man plays.", "A person plays.", "entailment", "7r1e", "7#1", None, "f", 3)


def test_parse_mnli_keeps_prompt_id_and_genre():
    obj = {
        "sentence1": "P.",
        "sentence2": "H.",
        "gold_label": "neutral",
        "pairID": 5,
        "promptID": 9,
        "genre": "fiction",
    }
    got = snli.parse_nli(obj)
    assert (got.pair_id, got.premise_id, got.genre, got.label) == ("5", "9", "fiction", "neutral")


@pytest.mark.parametrize("label, name", [(0, "entailment"), (1, "neutral"), (2, "contradiction")])
def test_parse_hf_layout(label, name):
    got = snli.parse_nli({"premise": "A dog runs.", "hypothesis": "A cat sleeps.", "label": label})
    assert (got.premise, got.hypothesis, got.label) == ("A dog runs.", "A cat sleeps.", name)


def test_parse_repairs_mojibake_and_normalises_unicode():
    got = snli.parse_nli(official("Un cafÃ© au lait.", "Cafe\u0301 noir.", "contradiction"))
    assert got.premise == "Un café au lait."
    assert got.hypothesis == unicodedata.normalize("NFC", "Cafe\u0301 noir.") == "Café noir."


@pytest.mark.parametrize(
    "obj, reason",
    [
        (official("P.", "H.", "-"), "no_gold_label"),
        ({"premise": "P.", "hypothesis": "H.", "label": -1}, "no_gold_label"),
        (official("P.", "H.", "maybe"), "unknown_label"),
        ({"premise": "P.", "hypothesis": "H.", "label": 3}, "unknown_label"),
        ({"premise": "P.", "hypothesis": "H.", "label": "0"}, "unknown_label"),
        ({"premise": "P.", "hypothesis": "H.", "label": True}, "unknown_label"),
        ({"premise": "P.", "hypothesis": "H.", "label": 0.0}, "unknown_label"),
        ({"sentence1": "P.", "gold_label": "entailment"}, "missing_field:sentence2"),
        ({"sentence2": "H.", "gold_label": "entailment"}, "missing_field:sentence1"),
        ({"sentence1": "P.", "sentence2": "H."}, "missing_field:gold_label"),
        ({"premise": "P.", "label": 0}, "missing_field:hypothesis"),
        ({"hypothesis": "H.", "label": 0}, "missing_field:premise"),
        ({"premise": "P.", "hypothesis": "H."}, "missing_field:label"),
        ({"text": "unrelated layout"}, "missing_field:premise"),
        (official("", "H.", "entailment"), "empty_field:sentence1"),
        (official("P.", " \t ", "entailment"), "empty_field:sentence2"),
        (official("P.", "H.", ""), "empty_field:gold_label"),
        ({"premise": "P.", "hypothesis": "", "label": 0}, "empty_field:hypothesis"),
        (official(42, "H.", "entailment"), "not_a_string:sentence1"),
        (official("P.", "\ufeff", "entailment"), "empty_after_cleaning"),  # ftfy drops a lone BOM
    ],
)
def test_parse_reject_reasons(obj, reason):
    assert snli.parse_nli(obj) == reason


# ------------------------------------------------------------------ rows_for_premise

P = "A man plays a guitar on stage."


def test_rows_for_premise_pairs_each_entailment_with_all_contradictions():
    exs = [
        ex(P, "A man makes music.", "entailment", "e1", 1),
        ex(P, "Someone performs.", "entailment", "e2", 2),
        ex(P, "The man is asleep at home.", "contradiction", "c1", 3),
        ex(P, "A woman reads a book.", "contradiction", "c2", 4),
        ex(P, "The man is famous.", "neutral", "n1", 5),
    ]
    rows, unused = snli.rows_for_premise(exs, "snli")
    assert unused == {"neutral_hypothesis": 1}
    assert {r[S.POSITIVE] for r in rows} == {"A man makes music.", "Someone performs."}
    for r in rows:
        assert r[S.QUERY] == P and r[S.SOURCE] == "snli" and r[S.PAIR_TYPE] == "nli"
        assert r[S.ID] == S.make_id("snli", P, r[S.POSITIVE])
        # negatives in sorted text order (stable bytes), ids aligned with them
        assert r[S.NEGATIVES] == ["A woman reads a book.", "The man is asleep at home."]
        assert r[S.NEGATIVE_IDS] == ["c2", "c1"]
    assert json.loads(rows[0][S.PROVENANCE])["file"] == "f.jsonl"


def test_rows_for_premise_ignores_input_order():
    exs = [
        ex(P, "A man makes music.", "entailment", "e1", 1),
        ex(P, "Someone performs.", "entailment", "e2", 2),
        ex(P, "The man is asleep.", "contradiction", "c1", 3),
        ex(P, "A woman reads.", "contradiction", "c2", 4),
        ex(P, "A man makes music.", "entailment", "e3", 5),
        ex(P, "He is famous.", "neutral", "n1", 6),
    ]
    results = {
        json.dumps(snli.rows_for_premise(list(perm), "snli"), sort_keys=True) for perm in itertools.permutations(exs)
    }
    assert len(results) == 1


def test_rows_for_premise_counts_duplicates_once():
    exs = [
        ex(P, "A man makes music.", "entailment", "e1", 1),
        ex(P, "A man makes music.", "entailment", "e1b", 2),
        ex(P, "Nobody plays.", "contradiction", "c1", 3),
        ex(P, "Nobody plays.", "contradiction", "c1b", 4),
        ex(P, "Nobody plays.", "contradiction", "c1c", 5),
    ]
    rows, unused = snli.rows_for_premise(exs, "mnli")
    assert len(rows) == 1 and rows[0][S.NEGATIVES] == ["Nobody plays."] and rows[0][S.SOURCE] == "mnli"
    assert unused == {"duplicate_entailment": 1, "duplicate_contradiction": 2}


def test_rows_for_premise_without_entailment_or_negatives():
    only_c = [ex(P, "Nobody plays.", "contradiction"), ex(P, "It is silent.", "contradiction"), ex(P, "x", "neutral")]
    assert snli.rows_for_premise(only_c, "snli") == (
        [],
        {"neutral_hypothesis": 1, "contradiction_without_entailment": 2},
    )
    only_e = [ex(P, "A man makes music.", "entailment"), ex(P, "Music plays.", "entailment")]
    rows, unused = snli.rows_for_premise(only_e, "snli")
    assert len(rows) == 2 and all(r[S.NEGATIVES] == [] for r in rows) and unused == {}
    assert snli.rows_for_premise(only_e, "snli", drop_without_negatives=True) == ([], {"no_negatives": 2})


def test_rows_for_premise_drops_a_hypothesis_labelled_both_ways():
    exs = [
        ex(P, "A man makes music.", "entailment"),
        ex(P, "He plays.", "entailment"),
        ex(P, "He plays.", "contradiction"),
        ex(P, "Nobody plays.", "contradiction"),
    ]
    rows, unused = snli.rows_for_premise(exs, "snli")
    assert [(r[S.POSITIVE], r[S.NEGATIVES]) for r in rows] == [("A man makes music.", ["Nobody plays."])]
    assert unused == {"conflicting_labels": 2}


# ------------------------------------------------------------------ BuildNliTuples through TestPipeline


def test_build_nli_tuples_transform(tmp_path):
    path = tmp_path / "mini.jsonl"
    lines = [
        json.dumps(official(P, "A man makes music.", "entailment", "e1", "c1")),
        json.dumps(official(P, "Nobody plays.", "contradiction", "c1", "c1")),
        json.dumps(official(P, "He is famous.", "neutral", "n1", "c1")),
        json.dumps(official("Two dogs run.", "Animals move.", "entailment", "e2", "c2")),
        json.dumps(official("Two dogs run.", "Dogs rest.", "-", "x2", "c2")),
        "{not json",
    ]
    path.write_text("\n".join(lines) + "\n")
    f = str(path)
    expected_rows = [
        S.TupleRow(
            source="snli",
            pair_type="nli",
            query=P,
            query_id="c1",
            positive="A man makes music.",
            positive_id="e1",
            negatives=("Nobody plays.",),
            negative_ids=("c1",),
            provenance=S.provenance_json(file=f, line=1),
        ).to_dict(),
        S.TupleRow(
            source="snli",
            pair_type="nli",
            query="Two dogs run.",
            query_id="c2",
            positive="Animals move.",
            positive_id="e2",
            provenance=S.provenance_json(file=f, line=4),
        ).to_dict(),
    ]
    p = BeamTestPipeline()
    out = p | snli.BuildNliTuples([f])
    rows = out["row_tables"] | "Unbatch" >> beam.FlatMap(lambda table: table.to_pylist())
    assert_that(rows, equal_to(expected_rows), label="Rows")
    reasons = out["rejects"] | beam.Map(lambda r: (r[S.REJECT_LINE], r[S.REJECT_REASON], r[S.REJECT_SOURCE_FILE]))
    assert_that(reasons, equal_to([(5, "no_gold_label", f), (6, "malformed_json", f)]), label="Rejects")
    assert_that(out["skipped_counts"], equal_to([{"neutral_hypothesis": 1}]), label="Skipped")
    result = p.run()
    result.wait_until_finish()
    counters = {c.key.metric.name: c.committed for c in result.metrics().query(MetricsFilter())["counters"]}
    assert counters == {"rejected_no_gold_label": 1, "rejected_malformed_json": 1, "skipped_neutral_hypothesis": 1}


# ------------------------------------------------------------------ end to end on the real SNLI excerpt


def independent_counts(path) -> dict:
    """Counts from the raw JSON in plain Python, without the pipeline's code."""
    groups: dict[str, dict[str, set]] = defaultdict(lambda: {"entailment": set(), "contradiction": set()})
    rejects, neutral = Counter(), 0
    for line in open(path, encoding="utf-8"):
        if not line.strip():
            continue
        obj = json.loads(line)
        if obj["gold_label"] == "-":
            rejects["no_gold_label"] += 1
            continue
        norm = lambda s: " ".join(unicodedata.normalize("NFC", s).split())  # noqa: E731
        if obj["gold_label"] == "neutral":
            neutral += 1
            continue
        groups[norm(obj["sentence1"])][obj["gold_label"]].add(norm(obj["sentence2"]))
    pairs, negatives = set(), {}
    for premise, g in groups.items():
        ent, con = g["entailment"] - g["contradiction"], g["contradiction"] - g["entailment"]
        for h in ent:
            pairs.add((premise, h))
            negatives[(premise, h)] = sorted(con)
    return {"pairs": pairs, "negatives": negatives, "rejects": dict(rejects), "neutral": neutral}


@pytest.fixture(scope="module")
def real_builds(tmp_path_factory):
    """The real excerpt built four ways: in-process twice, multi-processing, and in 3 shards twice."""
    src = str(shared_file(*SNLI_SAMPLE))
    base = tmp_path_factory.mktemp("snli")
    runs = {
        "a": (1, []),
        "b": (1, []),
        "mp": (1, ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]),
        "s3a": (3, []),
        "s3b": (3, []),
    }
    out = {}
    for name, (shards, beam_args) in runs.items():
        cfg = snli.SnliConfig(inputs=(src,), output=str(base / name), num_shards=shards)
        out[name] = (str(base / name), snli.build(cfg, beam_args))
    return src, out


def _check_against_raw(src: str, out_dir: str, manifest: dict) -> None:
    want = independent_counts(src)
    rows = list(io.iter_rows(out_dir))
    got_pairs = {(r[S.QUERY], r[S.POSITIVE]) for r in rows}
    assert len(rows) == len(want["pairs"]) == manifest["rows"]
    assert got_pairs == want["pairs"]
    n_neg = sum(len(v) for v in want["negatives"].values())
    assert sum(len(r[S.NEGATIVES]) for r in rows) == n_neg == manifest["negatives"]
    assert all(r[S.NEGATIVES] == want["negatives"][(r[S.QUERY], r[S.POSITIVE])] for r in rows)
    assert manifest["rejects"] == want["rejects"]
    assert io.read_rejects(out_dir).num_rows == sum(want["rejects"].values())
    assert manifest["skipped"].get("neutral_hypothesis", 0) == want["neutral"]


def test_real_snli_counts_match_the_raw_file(real_builds):
    src, out = real_builds
    _check_against_raw(src, *out["a"])
    manifest = out["a"][1]
    assert manifest["format_version"] == S.FORMAT_VERSION
    assert manifest["inputs"][0]["sha256"] == io.fingerprint(src)["sha256"]
    assert manifest["counts"]["source"] == {"snli": manifest["rows"]}


def test_real_snli_multi_processing_gives_the_same_bytes(real_builds):
    src, out = real_builds
    _check_against_raw(src, *out["mp"])
    assert _shard_bytes(out["mp"][0]) == _shard_bytes(out["a"][0])


def _shard_bytes(d: str) -> dict[str, bytes]:
    files = sorted(f for f in os.listdir(d) if f.endswith(".parquet"))
    files += [os.path.join(S.REJECTS_DIR, f) for f in sorted(os.listdir(os.path.join(d, S.REJECTS_DIR)))]
    return {f: open(os.path.join(d, f), "rb").read() for f in files}


def test_two_runs_give_identical_bytes(real_builds):
    _, out = real_builds
    assert _shard_bytes(out["a"][0]) == _shard_bytes(out["b"][0])
    three = _shard_bytes(out["s3a"][0])
    assert [f for f in three if not f.startswith(S.REJECTS_DIR)] == [io.shard_name("train", i, 3) for i in range(3)]
    assert three == _shard_bytes(out["s3b"][0])
    one = sorted(io.iter_rows(out["a"][0]), key=lambda r: r[S.ID])
    assert sorted(io.iter_rows(out["s3a"][0]), key=lambda r: r[S.ID]) == one


def test_shards_load_in_hf_datasets_with_every_column(real_builds, tmp_path):
    datasets = pytest.importorskip("datasets")
    _, out = real_builds
    out_dir = out["s3a"][0]
    files = io.shard_files(out_dir)
    ds = datasets.load_dataset("parquet", data_files={"train": files}, cache_dir=str(tmp_path / "hf"))["train"]
    assert ds.column_names == list(S.COLUMNS)
    assert ds.to_list() == list(io.iter_rows(out_dir))


# ------------------------------------------------------------------ broken input of every kind


def test_broken_lines_are_rejected_with_reason_and_line(tmp_path):
    good = [
        official("A boy kicks a ball.", "A child plays.", "entailment", "g1"),
        official("A boy kicks a ball.", "The boy sleeps.", "contradiction", "g2"),
        official("A boy kicks a ball.", "It is a sunny day.", "neutral", "g3"),
    ]
    text_lines: list[tuple[bytes, str | None]] = [(json.dumps(o).encode(), None) for o in good] + [
        (b'{"sentence1": "A cut', "malformed_json"),
        (b"[1, 2, 3]", "json_not_an_object"),
        (b'"just a string"', "json_not_an_object"),
        (json.dumps({"sentence1": "P.", "gold_label": "entailment"}).encode(), "missing_field:sentence2"),
        (json.dumps(official("P.", "  ", "entailment")).encode(), "empty_field:sentence2"),
        (json.dumps(official("P.", "H.", "-")).encode(), "no_gold_label"),
        (json.dumps({"premise": "P.", "hypothesis": "H.", "label": -1}).encode(), "no_gold_label"),
        (json.dumps(official("P.", "H.", "Entailed")).encode(), "unknown_label"),
        (b'{"sentence1": "Caf\xe9", "sentence2": "x", "gold_label": "entailment"}', "undecodable_bytes"),
        (json.dumps({"premise": "Two cats nap.", "hypothesis": "Cats rest.", "label": 0}).encode(), None),
    ]
    plain = tmp_path / "broken.jsonl"
    plain.write_bytes(b"\n".join(line for line, _ in text_lines) + b"\n")
    gz_lines = [
        (json.dumps(official("A girl sings.", "Someone sings.", "entailment", "z1")).encode(), None),
        (b"{oops", "malformed_json"),
        (json.dumps(official("A girl sings.", "Nobody makes a sound.", "contradiction", "z2")).encode(), None),
    ]
    gz = tmp_path / "more.jsonl.gz"
    gz.write_bytes(gzip.compress(b"\n".join(line for line, _ in gz_lines) + b"\n"))
    hf = [
        ("Birds fly south.", "Birds migrate.", 0, None),
        ("Birds fly south.", "Birds stay put.", 2, None),
        ("Birds fly south.", "It is winter.", 1, None),
        ("Birds fly south.", "Who knows.", -1, "no_gold_label"),
        ("Birds fly south.", None, 0, "missing_field:hypothesis"),
        ("", "Empty premise.", 0, "empty_field:premise"),
        ("Birds fly south.", "Odd label.", 5, "unknown_label"),
    ]
    pq_path = tmp_path / "hf-train.parquet"
    pq.write_table(
        pa.table(
            {
                "premise": [r[0] for r in hf],
                "hypothesis": [r[1] for r in hf],
                "label": pa.array([r[2] for r in hf], pa.int64()),
            }
        ),
        pq_path,
    )
    out = tmp_path / "out"
    manifest = snli.build(snli.SnliConfig(inputs=(str(tmp_path / "*"),), output=str(out)), [])

    expected = {(str(plain), i, r) for i, (_, r) in enumerate(text_lines, 1) if r}
    expected |= {(str(gz), i, r) for i, (_, r) in enumerate(gz_lines, 1) if r}
    expected |= {(str(pq_path), i, r[3]) for i, r in enumerate(hf, 1) if r[3]}
    t = io.read_rejects(str(out))
    got = {
        (f, line, "undecodable_bytes" if reason.startswith("undecodable_bytes") else reason)
        for f, line, reason in zip(
            t.column(S.REJECT_SOURCE_FILE).to_pylist(),
            t.column(S.REJECT_LINE).to_pylist(),
            t.column(S.REJECT_REASON).to_pylist(),
            strict=True,
        )
    }
    assert got == expected and t.num_rows == len(expected)
    assert sum(manifest["rejects"].values()) == len(expected)
    rows = {(r[S.QUERY], r[S.POSITIVE], tuple(r[S.NEGATIVES])) for r in io.iter_rows(str(out))}
    assert rows == {
        ("A boy kicks a ball.", "A child plays.", ("The boy sleeps.",)),
        ("Two cats nap.", "Cats rest.", ()),
        ("A girl sings.", "Someone sings.", ("Nobody makes a sound.",)),
        ("Birds fly south.", "Birds migrate.", ("Birds stay put.",)),
    }
    assert manifest["skipped"] == {"neutral_hypothesis": 2}
    # the raw text is kept so the line can be fixed and re-run
    raw = dict(zip(t.column(S.REJECT_REASON).to_pylist(), t.column(S.REJECT_RAW).to_pylist(), strict=True))
    assert raw["malformed_json"] in ('{"sentence1": "A cut', "{oops")


def test_config_validation_names_the_value():
    with pytest.raises(ValueError, match="'xnli'"):
        snli.SnliConfig(inputs=("a",), output="o", source="xnli")
    with pytest.raises(ValueError, match="0"):
        snli.SnliConfig(inputs=("a",), output="o", num_shards=0)
    with pytest.raises(ValueError, match="--input"):
        snli.SnliConfig(inputs=(), output="o")


def test_real_mnli_sample_keeps_prompt_ids_and_genres(tmp_path):
    src = str(shared_file("nli", "bert-shortcuts_sample_mnli.jsonl"))
    manifest = snli.build(snli.SnliConfig(inputs=(src,), output=str(tmp_path), source="mnli"), [])
    _check_against_raw(src, str(tmp_path), manifest)
    raw = [json.loads(line) for line in open(src, encoding="utf-8") if line.strip()]
    by_pair = {str(o["pairID"]): o for o in raw}
    rows = list(io.iter_rows(str(tmp_path)))
    assert rows and all(r[S.SOURCE] == "mnli" for r in rows)
    for r in rows:
        o = by_pair[r[S.POSITIVE_ID]]
        assert r[S.QUERY_ID] == str(o["promptID"]) and json.loads(r[S.PROVENANCE])["genre"] == o["genre"]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["h1", "h2", "h3", "h4"]), st.sampled_from(["entailment", "neutral", "contradiction"])
        ),
        max_size=12,
    ),
    st.booleans(),
)
def test_rows_for_premise_accounts_for_every_example(items, drop):
    exs = [ex(P, h, label, f"id{i}", i) for i, (h, label) in enumerate(items)]
    rows, unused = snli.rows_for_premise(exs, "snli", drop)
    used_negatives = len(rows[0][S.NEGATIVES]) if rows else 0
    assert len(rows) + used_negatives + sum(unused.values()) == len(exs)
    for r in rows:
        assert r[S.POSITIVE] not in r[S.NEGATIVES]
        assert r[S.NEGATIVES] == sorted(set(r[S.NEGATIVES]))


def test_unreadable_files_are_one_reject_each_and_the_rest_goes_on(tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps(official("A cat naps.", "An animal rests.", "entailment")) + "\n")
    (tmp_path / "fake.jsonl.gz").write_bytes(b"this was never gzip\n")
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really parquet")
    out = tmp_path / "out"
    manifest = snli.build(snli.SnliConfig(inputs=(str(tmp_path / "*.*"),), output=str(out)), [])
    assert [r[S.POSITIVE] for r in io.iter_rows(str(out))] == ["An animal rests."]
    t = io.read_rejects(str(out))
    got = sorted(zip(t.column(S.REJECT_SOURCE_FILE).to_pylist(), t.column(S.REJECT_REASON).to_pylist(), strict=True))
    assert got == [
        (str(tmp_path / "broken.parquet"), "unreadable_file"),
        (str(tmp_path / "fake.jsonl.gz"), "unreadable_file"),
    ]
    assert manifest["rejects"] == {"unreadable_file": 2}
