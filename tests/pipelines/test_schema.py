"""The tuple-shard format: typed rows, table round trip, schema checks naming file and column, stable ids."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from negminer.pipelines import io
from negminer.pipelines import schema as S
from tests.conftest import PROJECT_ROOT


def _row(**kw) -> S.TupleRow:
    base = dict(source="snli", pair_type="nli", query="A dog runs.", positive="An animal moves.")
    return S.TupleRow(**{**base, **kw})


def test_columns_match_the_design_table():
    # The public contract of DESIGN.md, spelled out here on purpose (the one place outside schema.py that may).
    assert list(S.COLUMNS) == [
        "id",
        "source",
        "pair_type",
        "query",
        "query_id",
        "positive",
        "positive_id",
        "negatives",
        "negative_ids",
        "positive_score",
        "negative_scores",
        "instruction",
        "provenance",
    ]
    assert S.SCHEMA.metadata[b"negminer.format_version"].decode() == S.FORMAT_VERSION


def test_make_id_is_the_documented_length_prefixed_blake2b():
    def by_hand(*parts: str) -> str:
        h = hashlib.blake2b(digest_size=16)
        for p in parts:
            b = p.encode("utf-8")
            h.update(len(b).to_bytes(8, "little") + b)
        return h.hexdigest()

    assert S.make_id("snli", "A dog runs.", "An animal moves.") == by_hand("snli", "A dog runs.", "An animal moves.")
    assert S.make_id("snli", "ünï", "çødé") == by_hand("snli", "ünï", "çødé")


def test_make_id_separates_fields_and_sources():
    assert S.make_id("snli", "ab", "c") != S.make_id("snli", "a", "bc")
    assert S.make_id("snli", "q", "p") != S.make_id("mnli", "q", "p")
    assert S.make_id("snli", "q", "p") != S.make_id("snli", "p", "q")
    assert len(S.make_id("x", "y", "z")) == 32


def test_make_id_is_stable_across_processes():
    # Python's str hash is salted per process; the id must not be.
    code = "from pipelines import schema as S; print(S.make_id('snli', 'A dog runs.', 'An animal moves.'))"
    outs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": seed, "PYTHONPATH": str(PROJECT_ROOT)},
        ).stdout.strip()
        for seed in ("1", "2")
    }
    assert outs == {S.make_id("snli", "A dog runs.", "An animal moves.")}


def test_tuple_row_fills_id_and_negative_ids():
    r = _row(negatives=["A cat sleeps.", "Nobody moves."])
    assert r.id == S.make_id("snli", "A dog runs.", "An animal moves.")
    assert r.negative_ids == (None, None)
    d = r.to_dict()
    assert list(d) == list(S.COLUMNS)
    assert d[S.NEGATIVES] == ["A cat sleeps.", "Nobody moves."]
    assert S.TupleRow.from_dict(d) == r


@pytest.mark.parametrize(
    "kw, problem",
    [
        (dict(query="   "), "empty query"),
        (dict(positive=""), "empty positive"),
        (dict(source=""), "empty source"),
        (dict(negatives=["a", "b"], negative_ids=["1"]), "negative_ids has 1 entries for 2 negatives"),
        (dict(negatives=["a"], negative_scores=[0.1, 0.2]), "negative_scores has 2 entries for 1 negatives"),
    ],
)
def test_tuple_row_rejects_invalid_rows(kw, problem):
    with pytest.raises(S.SchemaError, match=problem):
        _row(**kw)


def test_from_dict_rejects_unknown_columns():
    d = _row().to_dict()
    d["label"] = "entailment"
    with pytest.raises(S.SchemaError, match="label"):
        S.TupleRow.from_dict(d)


def test_provenance_json_is_sorted_and_drops_none():
    assert S.provenance_json(line=3, file="a.jsonl", genre=None) == '{"file": "a.jsonl", "line": 3}'
    assert json.loads(S.provenance_json(file="ü")) == {"file": "ü"}


def test_row_round_trip_through_a_parquet_file(tmp_path):
    rows = [
        _row(negatives=["A cat sleeps."], negative_ids=["n1"], query_id="q1", positive_id="p1").to_dict(),
        _row(
            query="Où est la gare ?",
            positive="La gare est là.",
            negatives=["x", "y"],
            positive_score=0.75,
            negative_scores=[0.5, 0.25],
            instruction="Given a question, retrieve passages",
            provenance=S.provenance_json(url="https://example.org", line=1),
        ).to_dict(),
        _row(query="Nothing against it.", positive="No negatives here.").to_dict(),
    ]
    table = S.rows_to_table(rows)
    assert table.schema.equals(S.SCHEMA, check_metadata=True)
    path = tmp_path / "train-00000-of-00001.parquet"
    pq.write_table(table, path)
    back = [b.to_pylist() for b in io.read_shards(str(path))]
    back = [r for batch in back for r in batch]
    # float32 columns: the chosen values are exact in float32.
    assert sorted(back, key=lambda r: r[S.ID]) == sorted(rows, key=lambda r: r[S.ID])


def _write(tmp_path, table: pa.Table, name: str = "train-00000-of-00001.parquet") -> str:
    path = str(tmp_path / name)
    pq.write_table(table, path)
    return path


def test_check_schema_names_file_and_missing_column(tmp_path):
    table = S.rows_to_table([_row().to_dict()]).drop_columns([S.POSITIVE])
    path = _write(tmp_path, table)
    with pytest.raises(S.SchemaError) as err:
        list(io.read_shards(path))
    assert path in str(err.value) and repr(S.POSITIVE) in str(err.value)


def test_check_schema_names_file_and_mistyped_column(tmp_path):
    table = S.rows_to_table([_row().to_dict()])
    table = table.set_column(table.schema.get_field_index(S.NEGATIVES), S.NEGATIVES, pa.array(["not a list"]))
    path = _write(tmp_path, table)
    with pytest.raises(S.SchemaError) as err:
        list(io.read_shards(path))
    assert path in str(err.value) and repr(S.NEGATIVES) in str(err.value)


def test_check_schema_names_file_and_unknown_column(tmp_path):
    table = S.rows_to_table([_row().to_dict()]).append_column("label", pa.array(["entailment"]))
    path = _write(tmp_path, table)
    with pytest.raises(S.SchemaError) as err:
        list(io.read_shards(path))
    assert path in str(err.value) and "label" in str(err.value)


def test_conform_accepts_others_shards_with_only_required_columns(tmp_path):
    # A shard written by someone else: large strings, no optional columns.
    table = pa.table(
        {
            S.ID: pa.array(["i1"], pa.large_string()),
            S.SOURCE: ["msmarco"],
            S.PAIR_TYPE: ["qa"],
            S.QUERY: ["what is x"],
            S.POSITIVE: ["x is y"],
            S.NEGATIVES: pa.array([["z"]], pa.large_list(pa.large_string())),
            S.NEGATIVE_IDS: pa.array([[None]], pa.list_(pa.string())),
        }
    )
    out = S.conform(table, "theirs.parquet")
    assert out.schema.equals(S.SCHEMA)
    row = out.to_pylist()[0]
    assert row[S.QUERY] == "what is x" and row[S.NEGATIVES] == ["z"]
    assert row[S.POSITIVE_SCORE] is None and row[S.PROVENANCE] is None
