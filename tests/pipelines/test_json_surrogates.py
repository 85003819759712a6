"""Lone surrogate escapes in JSON-lines input (`"\\ud800"`: valid JSON, not a character, not writable as UTF-8)."""

from __future__ import annotations

import json

import pytest

from negminer.pipelines import io
from negminer.pipelines import schema as S
from negminer.pipelines.beir import BeirConfig, build
from negminer.pipelines.source import Record, parse_json_line, without_lone_surrogates


def record(line: str) -> Record:
    return Record("f.jsonl", 1, line)


def test_parse_json_line_replaces_only_lone_surrogates():
    line = r'{"a": "x\ud800y", "b\udc00": ["\ud83d\ude00", "\uDBFF"], "c": 1, "d": "caf\u00e9"}'
    assert json.loads(line)["a"] == "x\ud800y"  # what json keeps, and pyarrow/UTF-8 cannot hold
    got = parse_json_line(record(line))
    assert got == {"a": "x\ufffdy", "b\ufffd": ["\U0001f600", "\ufffd"], "c": 1, "d": "caf\u00e9"}
    for text in json.dumps(got, ensure_ascii=False), *got:
        text.encode("utf-8")  # writable now


def test_parse_json_line_without_surrogates_is_json_loads():
    for line in (r'{"a": "\\ud800 is an escaped backslash"}', '{"a": "plain", "n": [1, 2.5, null]}'):
        assert parse_json_line(record(line)) == json.loads(line)
    assert parse_json_line(record("[1]")) == "json_not_an_object"
    assert parse_json_line(record("{oops")) == "malformed_json"


def test_without_lone_surrogates_by_hand():
    assert without_lone_surrogates("\ud800\udc00") == "\ufffd\ufffd"  # two lone ones (json would have paired them)
    assert without_lone_surrogates({"k": [1, None, {"\udfff": "ok"}]}) == {"k": [1, None, {"\ufffd": "ok"}]}


@pytest.mark.parametrize("clean", [False, True])
def test_beir_build_with_lone_surrogates(tmp_path, clean):
    """Before: `--no-clean` stopped the build at the write ("surrogates not allowed"); now U+FFFD in both modes."""
    corpus = ['{"_id": "d1", "title": "", "text": "bad \\ud800 half"}', '{"_id": "d2", "title": "t", "text": "fine"}']
    queries = ['{"_id": "q1", "text": "query \\udc00 x"}', '{"_id": "q2", "text": "q two"}']
    (tmp_path / "corpus.jsonl").write_text("\n".join(corpus) + "\n")
    (tmp_path / "queries.jsonl").write_text("\n".join(queries) + "\n")
    (tmp_path / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\n")
    out = tmp_path / "out"
    files = {k: (str(tmp_path / f"{k}.jsonl"),) for k in ("corpus", "queries")}
    config = BeirConfig(**files, qrels=(str(tmp_path / "qrels.tsv"),), name="t", output=str(out), clean=clean)
    build(config, [])
    rows = {r[S.QUERY_ID]: r for r in io.iter_rows(str(out))}
    assert (rows["q1"][S.QUERY], rows["q1"][S.POSITIVE]) == ("query \ufffd x", "bad \ufffd half")
    assert rows["q2"][S.POSITIVE] == "t fine"
