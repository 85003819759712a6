"""The columnar NLI path against the per-line one (the oracle): same examples, rejects, rows and counts."""

from __future__ import annotations

import gzip
import json
import random

import pyarrow as pa
import pytest
from apache_beam.pvalue import TaggedOutput
from hypothesis import given, settings
from hypothesis import strategies as st

from negminer.pipelines import lines, snli, tables
from negminer.pipelines import nli_columns as C
from negminer.pipelines import schema as S
from negminer.pipelines.source import ReadRecordsFn


def _official(i: int, label: str = "entailment", **extra) -> dict:
    return {
        "annotator_labels": [label],
        "captionID": f"{i // 3}.jpg#1",
        "gold_label": label,
        "pairID": f"{i}r",
        "sentence1": f"A man number {i // 3} plays.",
        "sentence1_parse": "(ROOT (S (NP (DT A)) (. .)))",
        "sentence2": f"Someone {i} is here.",
        **extra,
    }


ODD_LINES = [
    b"",
    b"   ",
    b"\t",
    json.dumps(_official(1, sentence2="  Spaces   and\ttabs  ")).encode(),
    json.dumps(_official(2, sentence2="A\x1cB unit separator")).encode(),
    json.dumps(_official(3, sentence2="Caf\u00c3\u00a9 mojibake")).encode(),
    json.dumps(_official(4, sentence2="Caf\u00e9 raw"), ensure_ascii=False).encode(),
    json.dumps(_official(5, sentence2="   ")).encode(),
    json.dumps(_official(6, gold_label="-")).encode(),
    json.dumps(_official(7, gold_label="Entailed")).encode(),
    json.dumps(_official(8, captionID="", promptID="p8")).encode(),
    json.dumps(_official(9, genre="fiction")).encode(),
    json.dumps(_official(10, genre=7)).encode(),
    json.dumps(_official(11, pairID=11)).encode(),
    json.dumps(_official(12, sentence2=None)).encode(),
    json.dumps(_official(13, extra=float("nan"))).encode(),
    json.dumps(_official(14)).encode() + b"\r",
    b"\xef\xbb\xbf" + json.dumps(_official(15)).encode(),
    json.dumps(_official(16)).encode() + json.dumps(_official(17)).encode(),
    b'{"sentence1": "P.", "sentence1": "Q.", "sentence2": "H.", "gold_label": "entailment"}',
    b'{"sentence1": "P.", "sentence2": "H\\ud800.", "gold_label": "entailment"}',
    b'{"sentence1": "P\\u0041.", "sentence2": "H.", "gold_label": "entailment"}',
    b'{"sentence1": "Caf\xe9", "sentence2": "x", "gold_label": "entailment"}',
    b'{"sentence1": "A cut',
    b"{",
    b"[1, 2]",
    json.dumps({"premise": "Birds fly.", "hypothesis": "Birds move.", "label": 0}).encode(),
    json.dumps({"premise": "Birds fly.", "hypothesis": "Birds sit.", "label": 2, "sentence1": None}).encode(),
    json.dumps({"premise": "Birds fly.", "hypothesis": "Odd.", "label": 1.0}).encode(),
    json.dumps({"premise": "Birds fly.", "hypothesis": "Odd.", "label": True}).encode(),
    json.dumps({"premise": "Birds fly.", "hypothesis": "Who knows.", "label": -1}).encode(),
]


def _hf(i: int, label: int, **extra) -> dict:
    return {"premise": f"Premise {i // 3}.", "hypothesis": f"Hypothesis {i}.", "label": label, **extra}


HF_ODD = [
    json.dumps(_hf(1, 0, sentence1=None)).encode(),
    json.dumps(_hf(2, 0, gold_label=None)).encode(),
    json.dumps(_hf(3, 5)).encode(),
    json.dumps(_hf(4, None)).encode(),
    json.dumps(_hf(5, 2, premise="P\u00e9.")).encode(),
    b'{"premise": "P\\u0041.", "hypothesis": "H.", "label": 0}',
    json.dumps(_hf(6, 1, promptID=0, pairID=3)).encode(),
    json.dumps(_hf(7, 1, promptID="x", pairID="y")).encode(),
    json.dumps(_official(8)).encode(),
]


def _oracle(path: str) -> tuple[set, list]:
    examples, rejects = set(), []
    for item in ReadRecordsFn().process(path):
        got = snli.example_or_reject(item)
        if isinstance(got, TaggedOutput):
            rejects.append(tuple(sorted(got.value.items())))
        else:
            genre = None if got.genre is None else json.dumps(got.genre, ensure_ascii=False)
            examples.add(tuple(got._replace(genre=genre)))
    return examples, sorted(rejects, key=repr)


def _columnar(path: str) -> tuple[set, list]:
    examples, rejects = set(), []
    for item in snli.ParseNliFileFn().process(path):
        if isinstance(item, TaggedOutput):
            rejects.append(tuple(sorted(item.value.items())))
        else:
            part, table = item[0], tables.from_ipc(item[1])
            assert table.schema.equals(C.EXAMPLE)
            rows = [tuple(r.values()) for r in table.to_pylist()]
            assert tables.string_partitions(table["premise"], snli.PARTITIONS).tolist() == [part] * len(rows)
            examples |= set(rows)
    return examples, sorted(rejects, key=repr)


@pytest.mark.parametrize("layout", ["official", "hf"])
@pytest.mark.parametrize("block_bytes", [300, 1 << 20])
def test_columnar_parse_equals_the_per_line_path(tmp_path, monkeypatch, layout, block_bytes):
    monkeypatch.setattr(lines, "BLOCK_BYTES", block_bytes)
    monkeypatch.setattr(lines, "BLOCK_LINES", 7)
    monkeypatch.setattr(lines, "MIN_RUN", 2)
    rng = random.Random(block_bytes)
    if layout == "official":
        good = [json.dumps(_official(i, rng.choice(C.LABELS))).encode() for i in range(120)]
        odd = ODD_LINES
    else:
        good = [json.dumps(_hf(i, rng.randrange(3), promptID=i // 3, pairID=f"{i}p")).encode() for i in range(120)]
        odd = HF_ODD + ODD_LINES
    body = good[:3] + odd + good[3:]
    rng.shuffle(body[3:])
    data = b"\n".join(body)  # no final newline: the last line still counts
    plain = tmp_path / "a.jsonl"
    plain.write_bytes(data)
    gz = tmp_path / "a.jsonl.gz"
    gz.write_bytes(gzip.compress(data))
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(gzip.compress(data)[: len(gzip.compress(data)) * 2 // 3])
    for path in (plain, gz, cut):
        want, got = _oracle(str(path)), _columnar(str(path))
        assert got[1] == want[1], path
        assert got[0] == want[0], path
        assert len(want[0]) > 60
    assert any("truncated_file" in repr(r) for r in _oracle(str(cut))[1])


def test_clean_ascii_is_clean_text_on_ascii():
    from negminer.pipelines.transforms.clean import clean_text

    texts = ["a  b", " a", "a ", "a\tb\nc", "a\x1c\x1db", "\x0b", "plain text.", "", "a \x0c b  "]
    assert C.clean_ascii(pa.array(texts)).to_pylist() == [clean_text(t) for t in texts]


def test_provenance_is_schema_provenance_json():
    got = C.provenance(["a/b.jsonl", 'q"x.jsonl'], [3, 4], [None, json.dumps("fïction", ensure_ascii=False)])
    assert got == [
        S.provenance_json(file="a/b.jsonl", line=3),
        S.provenance_json(file='q"x.jsonl', line=4, genre="fïction"),
    ]


def test_make_ids_is_make_id():
    qs, ps = ["a", "ünï", "", "ab"], ["b", "çødé", "x", "c"]
    assert S.make_ids("snli", qs, ps) == [S.make_id("snli", q, p) for q, p in zip(qs, ps, strict=True)]


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["P1.", "P2.", "P3."]),
            st.sampled_from(["h1", "h2", "h3", "h4"]),
            st.sampled_from(C.LABELS),
            st.sampled_from([None, "id1", "id2"]),
            st.sampled_from([None, "fiction"]),
        ),
        max_size=30,
    ),
    st.booleans(),
)
def test_rows_table_is_rows_for_premise(items, drop):
    exs = [snli.NliExample(p, h, lab, pid, "c", g, "f.jsonl", i) for i, (p, h, lab, pid, g) in enumerate(items)]
    want_rows, want_unused = [], {}
    for premise in sorted({e.premise for e in exs}):
        rows, unused = snli.rows_for_premise([e for e in exs if e.premise == premise], "snli", drop)
        want_rows += rows
        for k, v in unused.items():
            want_unused[k] = want_unused.get(k, 0) + v
    table, unused = C.rows_table(C.examples_table(reversed(exs)), "snli", drop)
    assert table.schema.equals(S.SCHEMA)
    assert sorted(table.to_pylist(), key=lambda r: r[S.ID]) == sorted(want_rows, key=lambda r: r[S.ID])
    assert unused == want_unused


@pytest.mark.parametrize("layout", ["official", "hf", "hf_bool_label", "odd_genre"])
def test_columnar_parquet_equals_the_per_row_path(tmp_path, layout):
    import pyarrow.parquet as pq

    rng = random.Random(1)
    if layout == "official":
        rows = [_official(i, rng.choice(C.LABELS)) for i in range(60)]
        rows += [
            _official(60, sentence2="  Spaces   here "),
            _official(61, gold_label="-"),
            _official(62, sentence2=""),
        ]
        rows += [
            _official(63, sentence2="Caf\u00c3\u00a9"),
            _official(64, sentence1=None),
            _official(65, captionID=""),
        ]
        for r in rows:
            r.pop("annotator_labels")
            r.setdefault("promptID", None)
    else:
        rows = [_hf(i, rng.randrange(3), promptID=i // 3, genre="fiction") for i in range(60)]
        rows += [_hf(60, -1), _hf(61, None), _hf(62, 5), _hf(63, 0, premise="Caf\u00e9."), _hf(64, 1, hypothesis="")]
        rows += [_hf(65, 0, promptID=0, pairID=None)]
        for r in rows:
            r.setdefault("promptID", 7)
            r.setdefault("genre", None)
            r.setdefault("pairID", "p")
    table = pa.Table.from_pylist(rows)
    if layout == "hf_bool_label":
        table = table.set_column(
            2, "label", pa.array([bool(x) if x is not None else None for x in table["label"].to_pylist()])
        )
    if layout == "odd_genre":
        table = table.set_column(table.schema.get_field_index("genre"), "genre", pa.array([3] * table.num_rows))
    path = tmp_path / "train.parquet"
    pq.write_table(table, path)
    assert (C.parquet_view(table) is None) == (layout in ("hf_bool_label", "odd_genre"))  # odd types: per row
    want, got = _oracle(str(path)), _columnar(str(path))
    assert got == want
    assert len(want[0]) > 20 or layout == "hf_bool_label"


def test_double_spaced_is_match_substring():
    import pyarrow.compute as pc

    words = ["", " ", "  ", "a  b", "a b", "a ", " a", "ab  ", "x", "a \t b", "  "]
    arr = pa.chunked_array([pa.array(words[:4]), pa.array(words[4:] + [None])]).combine_chunks().slice(1)
    want = pc.fill_null(pc.match_substring(arr, "  "), False).to_pylist()
    assert C.double_spaced(arr).tolist() == want
