"""`negminer build beir`: a BEIR-format fixture (JSONL and Parquet corpus), scores <= 0, every reject reason."""

from __future__ import annotations

import json
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from negminer import cli
from negminer.pipelines import io
from negminer.pipelines import schema as S
from negminer.pipelines.beir import BeirConfig, build
from negminer.pipelines.source import Record
from negminer.pipelines.transforms.tabular import parse_json_doc, title_and_text


def jsonl(path, objs) -> None:
    path.write_text("".join(o if isinstance(o, str) else json.dumps(o) + "\n" for o in objs), encoding="utf-8")


def test_parse_json_doc():
    key, text = parse_json_doc(Record("c", 1, json.dumps({"_id": 5, "title": "Cats", "text": "  Cats purr. "})))
    assert (key, text.text) == ("5", "Cats Cats purr.")
    assert parse_json_doc(Record("c", 2, json.dumps({"title": "t", "text": "x"}))) == "missing_field:_id"
    assert parse_json_doc(Record("c", 3, json.dumps({"_id": "a", "title": "", "text": " "}))) == "empty_text"
    assert parse_json_doc(Record("c", 4, "[1, 2]")) == "json_not_an_object"
    assert title_and_text("", "body") == "body" and title_and_text("T", "") == "T"


def test_config_validation():
    with pytest.raises(ValueError, match="--name"):
        BeirConfig(corpus=("c",), queries=("q",), qrels=("r",), name="bad/name", output="o")


def test_beir_fixture_rows_rejects_and_skips(tmp_path):
    corpus = [
        {"_id": "d1", "title": "Aspirin", "text": "Aspirin reduces fever."},
        {"_id": "d2", "title": "", "text": "Ibuprofen is an NSAID."},
        {"_id": "d3", "title": "Caf\u00c3\u00a9", "text": "A caf\u00c3\u00a9 sells coffee."},  # mojibake, repaired
        {"title": "no id", "text": "x"},
        {"_id": "d5", "title": " ", "text": "  "},
        "{not json\n",
    ]
    jsonl(tmp_path / "corpus.jsonl", corpus)
    pq.write_table(
        pa.Table.from_pylist([{"_id": "d4", "title": "Paracetamol", "text": "Also for fever."}]),
        tmp_path / "corpus2.parquet",
    )
    jsonl(
        tmp_path / "queries.jsonl",
        [
            {"_id": "q1", "text": "what reduces fever"},
            {"_id": "q2", "text": "what is a cafe"},
            {"_id": "q3", "text": ""},
        ],
    )
    (tmp_path / "qrels.tsv").write_text(
        "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td4\t2\nq1\td2\t0\nq2\td3\t1\nq9\td1\t1\nq2\tzz\t1\nq1\td1\n"
    )
    out = tmp_path / "out"
    args = ["build", "beir", "--name", "tiny-med", "--output", str(out), "--qrels", str(tmp_path / "qrels.tsv")]
    args += [
        "--corpus",
        str(tmp_path / "corpus.jsonl"),
        str(tmp_path / "corpus2.parquet"),
        "--queries",
        str(tmp_path / "queries.jsonl"),
    ]
    assert cli.main(args) == 0
    rows = list(io.iter_rows(str(out)))
    got = sorted((r[S.QUERY_ID], r[S.POSITIVE_ID], r[S.POSITIVE]) for r in rows)
    assert got == [
        ("q1", "d1", "Aspirin Aspirin reduces fever."),
        ("q1", "d4", "Paracetamol Also for fever."),
        ("q2", "d3", "Café A café sells coffee."),
    ]
    assert {r[S.SOURCE] for r in rows} == {"beir/tiny-med"}
    reasons = Counter(io.read_rejects(str(out)).column(S.REJECT_REASON).to_pylist())
    assert reasons == Counter(
        {
            "missing_field:_id": 1,
            "empty_text": 2,  # d5 and q3
            "malformed_json": 1,
            "unknown_query": 1,
            "unknown_document": 1,
            "malformed_qrel": 1,
        }
    )
    assert io.read_manifest(str(out))["skipped"] == {"non_positive_score": 1, "qrels_header": 1}


def test_duplicate_ids_and_undecodable_bytes(tmp_path):
    (tmp_path / "corpus.jsonl").write_bytes(
        b'{"_id": "d1", "title": "", "text": "First."}\n'
        b'{"_id": "d1", "title": "", "text": "Same id."}\n'
        b'{"_id": "d2", "title": "T", "text": 5}\n'
        b'{"_id": "d3", "title": "", "text": "bad \xc3\x28 bytes"}\n'
    )
    jsonl(tmp_path / "queries.jsonl", [{"_id": "q1", "text": "first"}, {"_id": "q1", "text": "again"}])
    (tmp_path / "qrels.tsv").write_text("query-id corpus-id score\nq1 d1 1\n")  # spaces, not tabs
    config = BeirConfig(
        corpus=(str(tmp_path / "corpus.jsonl"),),
        queries=(str(tmp_path / "queries.jsonl"),),
        qrels=(str(tmp_path / "qrels.tsv"),),
        name="dups",
        output=str(tmp_path / "out"),
    )
    build(config, [])
    rows = [(r[S.QUERY], r[S.POSITIVE]) for r in io.iter_rows(str(tmp_path / "out"))]
    assert rows == [("first", "First.")]  # the first line of each duplicated id wins
    reasons = Counter(io.read_rejects(str(tmp_path / "out")).column(S.REJECT_REASON).to_pylist())
    undecodable = [r for r in reasons if r.startswith("undecodable_bytes")]
    assert len(undecodable) == 1
    assert reasons == Counter(
        {"duplicate_doc_id": 1, "duplicate_query_id": 1, "not_a_string:text": 1, undecodable[0]: 1}
    )
