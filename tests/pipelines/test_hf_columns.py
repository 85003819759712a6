"""`build msmarco --hf` on Arrow record batches against `parse_hf_row` record by record (the oracle)."""

from __future__ import annotations

import gzip
import json
import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from negminer.pipelines import doc_columns, io, lines, msmarco
from negminer.pipelines import hf_columns as H
from negminer.pipelines import schema as S
from tests.pipelines.test_triple_columns import _digest

STRUCT = pa.struct(
    [
        ("is_selected", pa.list_(pa.int32())),
        ("passage_text", pa.list_(pa.string())),
        ("url", pa.list_(pa.string())),
    ]
)
HF = pa.schema([("passages", STRUCT), ("query", pa.string()), ("query_id", pa.int32()), ("query_type", pa.string())])


def _record(i: int, query: str | None = None, passages: dict | None = None) -> dict:
    k = 3 + i % 4
    texts = [f"passage {(i * 7 + j) % 13}  text {j % 2}" for j in range(k)]
    sel = [int(j == i % k) for j in range(k)]
    return {
        "passages": passages
        or {"is_selected": sel, "passage_text": texts, "url": [f"http://e.x/{i}/{j}" for j in range(k)]},
        "query": f"query {i % 17}" if query is None else query,
        "query_id": i,
        "query_type": "DESCRIPTION",
    }


def _p(sel, texts, url=None) -> dict:
    return {"is_selected": sel, "passage_text": texts, "url": url}


ODD = [
    _record(100, "caf\u00c3\u00a9 mojibake query"),
    _record(101, "  spaced   query "),
    _record(102, "   "),
    _record(103, "\u00a0\u3000"),
    {**_record(104), "query": None},
    _record(105, passages=_p([1, 0, 0], ["same", "neg", "neg"], ["u1", "u2", "u3"])),
    _record(106, passages=_p([1, 0, 1], ["a  b", "same", "a b"], ["u", None, 'q"uote\\'])),
    _record(107, passages=_p([0, 0], ["x", "y"], ["u", "u"])),
    _record(108, passages=_p([1, 0], ["x", "   "], ["u", "v"])),
    _record(109, passages=_p([1, 0], ["   ", "y"], ["u", "v"])),
    _record(110, passages=_p([1], ["x", "y"], ["u", "v"])),
    _record(111, passages=_p([1, 0], ["x", "y"], ["u"])),
    _record(112, passages=_p([1, 0], ["x", "y"], None)),
    _record(113, passages=_p([1, 0], ["x", None], ["u", "v"])),
    _record(114, passages=_p([1, None], ["x", "y"], ["u", "v"])),
    _record(115, passages=_p(None, ["x", "y"], ["u", "v"])),
    _record(116, passages=_p([1, 0], None, ["u", "v"])),
    {**_record(117), "passages": None},
    _record(118, passages=_p([1, 0], ["caf\u00c3\u00a9", "y"], ["u", "v"])),
    _record(119, passages=_p([1, 0], ["x", "na\u00efve"], ["u", "caf\u00e9/\u00fcrl"])),
    _record(120, passages=_p([2, 0], ["x", "tab\there"], ["u\x01ctl", "v"])),
    _record(121, passages=_p([], [], [])),
    _record(122, passages=_p([1, 1, 0], ["dup", "dup", "n"], ["u", "v", "w"])),
    {**_record(123), "query_id": None},
]


def _write(tmp_path) -> list[str]:
    rng = random.Random(0)
    main = [_record(i) for i in range(60)] + ODD
    rng.shuffle(main)
    pq.write_table(pa.Table.from_pylist(main, schema=HF), tmp_path / "a.parquet", row_group_size=17)
    bools = pa.schema(
        [
            ("query_id", pa.string()),
            ("query", pa.string()),
            ("passages", pa.struct([("passage_text", pa.list_(pa.string())), ("is_selected", pa.list_(pa.bool_()))])),
        ]
    )
    rows = [
        {
            "query_id": f"s{i}",
            "query": f"q {i}",
            "passages": {"passage_text": ["p", f"n {i}"], "is_selected": [True, False]},
        }
        for i in range(5)
    ]
    pq.write_table(pa.Table.from_pylist(rows, schema=bools), tmp_path / "b.parquet")
    listed = [
        {"query": f"l {i}", "passages": [{"is_selected": 1, "passage_text": f"lp {i}", "url": "u"}]} for i in range(3)
    ]
    pq.write_table(pa.Table.from_pylist(listed), tmp_path / "c.parquet")
    (tmp_path / "d.parquet").write_bytes(b"not a parquet file")
    jl = "".join(json.dumps(r) + "\n" for r in main[:20] + ODD) + "\n".join(JSON_ODD) + "\n"
    (tmp_path / "e.jsonl").write_text(jl, encoding="utf-8")
    packed = gzip.compress(jl.encode())
    (tmp_path / "f.jsonl.gz").write_bytes(packed[: len(packed) * 2 // 3])  # a truncated download
    listed_first = [json.dumps(r) for r in listed] + [json.dumps(r) for r in main[:5]]
    (tmp_path / "g.jsonl").write_text("\n".join(listed_first) + "\n")
    bools_first = [json.dumps(r) for r in rows] + [json.dumps(r) for r in main[:5]]
    (tmp_path / "h.jsonl").write_text("\n".join(bools_first) + "\n")
    names = ("a.parquet", "b.parquet", "c.parquet", "d.parquet", "e.jsonl", "f.jsonl.gz", "g.jsonl", "h.jsonl")
    return [str(tmp_path / n) for n in names]


JSON_ODD = [
    "",
    "   ",
    "{broken",
    "[1]",
    '{"query": "q dup", "query_id": 900, "passages": {"is_selected": [1], "passage_text": ["a"], "passage_text": ["b"], "url": ["u"]}}',
    '{"query": "q bool", "query_id": 901, "passages": {"is_selected": [true, false], "passage_text": ["a", "b"], "url": ["u", "v"]}}',
    '{"query": "q float id", "query_id": 902.0, "passages": {"is_selected": [1], "passage_text": ["a"], "url": ["u"]}}',
    '{"query": "q str id", "query_id": "s903", "passages": {"is_selected": [1], "passage_text": ["a"], "url": ["u"]}}',
    '{"query": "q surrogate", "query_id": 904, "passages": {"is_selected": [1], "passage_text": ["a\\ud800"], "url": ["u"]}}',
    '{"query": "q no url", "query_id": 905, "passages": {"is_selected": [1, 0], "passage_text": ["a", "b"]}}',
    '{"query": "caf\\u00e9 escaped", "query_id": 906, "passages": {"is_selected": [1], "passage_text": ["a"], "url": ["u"]}}',
    '{"query": "q crlf", "query_id": 907, "passages": {"is_selected": [1], "passage_text": ["a"], "url": ["u"]}}\r',
    '{"query": "q extra", "query_id": 908, "answers": ["x"], "passages": {"is_selected": [0, 1], "passage_text": ["a", "b"], "url": ["u", "v"], "extra": 1}}',
    '{"query": 7, "query_id": 909, "passages": {"is_selected": [1], "passage_text": ["a"], "url": ["u"]}}',
    '{"query": "q list", "query_id": 910, "passages": [{"is_selected": 1, "passage_text": "a", "url": "u"}]}',
    '{"query_id": 911, "passages": {"is_selected": [1], "passage_text": ["a"], "url": ["u"]}}',
]


@pytest.mark.parametrize("clean", [True, False])
def test_columnar_hf_build_equals_the_per_record_build(tmp_path, monkeypatch, clean):
    """Whole builds, both paths: the same shards (bytes), rejects and counts on odd records, several batches."""
    files = _write(tmp_path)  # a lone surrogate too, with and without clean-up (U+FFFD: source.parse_json_line)
    monkeypatch.setattr(doc_columns, "BATCH_ROWS", 16)
    monkeypatch.setattr(lines, "MIN_RUN", 1)  # a JSON run that fails is halved down to single lines
    outs = {}
    for flag in (False, True):
        monkeypatch.setattr(msmarco, "COLUMNAR_HF", flag)
        config = msmarco.MsMarcoConfig(output=str(tmp_path / f"out{flag}"), hf=tuple(files), clean=clean, num_shards=2)
        msmarco.build(config, [])
        outs[flag] = _digest(tmp_path / f"out{flag}")
    assert outs[True] == outs[False]
    rows = list(io.iter_rows(str(tmp_path / "outTrue")))
    assert len(rows) > 60 and sum(len(r[S.NEGATIVES]) for r in rows) > 100
    assert outs[True][3]["no_selected_passage"] >= 3
    reasons = {"unreadable_file", "malformed_passages", "missing_field:query", "empty_text", "malformed_json"}
    assert reasons | {"truncated_file", "json_not_an_object"} <= set(outs[True][2])


def test_most_records_take_the_columnar_path(tmp_path):
    """Only records of another layout, with a null text or a query blank once cleaned go to `parse_hf_row`
    (non-ASCII text is cleaned one string at a time inside the columnar path)."""
    batch = pq.read_table(_write(tmp_path)[0]).combine_chunks().to_batches()[0]
    plain = H.plain_records(batch)
    assert plain.sum() == batch.num_rows - 8  # a null query, lists of other lengths or null (6), a null text
    _, _, left = H.hf_rows_table(batch.filter(pa.array(plain)), np.arange(int(plain.sum())), "f", clean=True)
    assert len(left) == 2  # the blank queries (ASCII spaces, NBSP + ideographic space)


def test_json_lines_take_the_columnar_path_but_odd_lines(tmp_path, monkeypatch):
    """In a JSON-lines file only the odd lines go to `parse_hf_row`: the odd records that Parquet also sends there
    (blank or null query, lists of other lengths or null, a null text) and 12 of JSON_ODD (not an object, a key
    twice, other types than the first record's, a surrogate, no url, a CR, a list of passages, no query)."""
    monkeypatch.setattr(lines, "MIN_RUN", 1)
    calls = []
    slow = H._slow_record

    def counted(record, *args):
        calls.append(record)
        yield from slow(record, *args)

    monkeypatch.setattr(H, "_slow_record", counted)
    out = list(H.ReadHfTablesFn(clean=True).process(_write(tmp_path)[4]))
    ids = []
    for c in calls:
        try:
            ids.append(json.loads(c.value).get("query_id"))
        except (ValueError, AttributeError):
            ids.append(None)
    assert {i for i in ids if isinstance(i, int) and i < 900} == {102, 103, 104, 110, 111, 112, 113, 115, 116, 117}
    assert len([i for i in ids if not isinstance(i, int) or i >= 900]) == 12
    assert sum(t.num_rows for t in out if isinstance(t, pa.Table)) > 40


def test_unsigned_is_selected_beyond_int64(tmp_path, monkeypatch):
    """An unsigned `is_selected` above int64's range is selected (`bool(v)`, as `parse_hf_row` has it) on the Arrow
    path too, not a failed cast to int64 in the worker."""
    struct = pa.struct([("is_selected", pa.list_(pa.uint64())), ("passage_text", pa.list_(pa.string()))])
    schema = pa.schema([("query", pa.string()), ("query_id", pa.uint64()), ("passages", struct)])
    records = [
        {
            "query": "q one",
            "query_id": 2**64 - 1,
            "passages": {"is_selected": [2**64 - 1, 0, None], "passage_text": ["a", "b", "c"]},
        },
        {"query": "q two", "query_id": 2, "passages": {"is_selected": [0, 2**63], "passage_text": ["x", "y"]}},
    ]
    table = pa.Table.from_pylist(records, schema=schema)
    pq.write_table(table, tmp_path / "u.parquet")
    assert H.plain_records(table.to_batches()[0]).all()  # decided in Arrow
    outs = {}
    for flag in (False, True):
        monkeypatch.setattr(msmarco, "COLUMNAR_HF", flag)
        config = msmarco.MsMarcoConfig(output=str(tmp_path / f"out{flag}"), hf=(str(tmp_path / "u.parquet"),))
        msmarco.build(config, [])
        outs[flag] = _digest(tmp_path / f"out{flag}")
    assert outs[True] == outs[False] and outs[True][4] == 2
