"""`build msmarco --hf` on Arrow record batches against `parse_hf_row` record by record (the oracle)."""

from __future__ import annotations

import json
import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from negminer.pipelines import doc_columns, io, msmarco
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
    (tmp_path / "e.jsonl").write_text("".join(json.dumps(r) + "\n" for r in main[:10] + ODD[:3]) + "{broken\n[1]\n")
    return [str(tmp_path / n) for n in ("a.parquet", "b.parquet", "c.parquet", "d.parquet", "e.jsonl")]


@pytest.mark.parametrize("clean", [True, False])
def test_columnar_hf_build_equals_the_per_record_build(tmp_path, monkeypatch, clean):
    """Whole builds, both paths: the same shards (bytes), rejects and counts on odd records, several batches."""
    files = _write(tmp_path)
    monkeypatch.setattr(doc_columns, "BATCH_ROWS", 16)
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
    assert {"unreadable_file", "malformed_passages", "missing_field:query", "empty_text"} <= set(outs[True][2])


def test_most_records_take_the_columnar_path(tmp_path):
    """Only records of another layout, with a null text or a query blank once cleaned go to `parse_hf_row`
    (non-ASCII text is cleaned one string at a time inside the columnar path)."""
    batch = pq.read_table(_write(tmp_path)[0]).combine_chunks().to_batches()[0]
    plain = H.plain_records(batch)
    assert plain.sum() == batch.num_rows - 8  # a null query, lists of other lengths or null (6), a null text
    _, _, left = H.hf_rows_table(batch.filter(pa.array(plain)), np.arange(int(plain.sum())), "f", clean=True)
    assert len(left) == 2  # the blank queries (ASCII spaces, NBSP + ideographic space)
