"""BEIR Parquet corpora and queries on Arrow record batches against `parse_json_doc` row by row (the oracle)."""

from __future__ import annotations

import functools

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from negminer.pipelines import beir, doc_columns
from negminer.pipelines import qrel_columns as R
from negminer.pipelines.transforms.tabular import parse_json_doc
from tests.pipelines.test_msmarco_columns import _columnar, _oracle
from tests.pipelines.test_triple_columns import _digest

ODD = [
    ("a1", "Title", "body  text "),
    ("a2", None, "no title"),
    ("a3", "  ", "  "),
    ("a4", "only title", ""),
    (" a5 ", "t", "spaced id"),
    ("  ", None, "blank id"),
    (None, None, "null id"),
    ("a6", None, None),
    ("a7", "caf\u00c3\u00a9", "mojibake title"),
    ("a8", None, "na\u00efve text"),
    ("\u00e9", None, "non-ASCII id"),
    ("a9", "tab\there", "new\nline"),
    ("a10", "\u00a0", "\u3000"),
    ("a1", None, "duplicate id"),
]


def _files(tmp_path) -> dict[str, str]:
    """Parquet files of several layouts: string ids with odd rows, integer ids, no title, float ids, a number
    title, large strings, a null-typed title, and a file that is not Parquet."""
    docs = [(f"d{i}", f"T {i}" if i % 3 else "", f"doc {i}  text") for i in range(50)] + ODD
    ids, titles, texts = map(list, zip(*docs, strict=True))
    out = {}

    def write(name: str, table: pa.Table, **kw) -> None:
        pq.write_table(table, tmp_path / name, **kw)
        out[name] = str(tmp_path / name)

    write("str.parquet", pa.table({"_id": ids, "title": titles, "text": texts}), row_group_size=7)
    write("int.parquet", pa.table({"_id": pa.array(range(20), pa.int32()), "text": [f"t {i}" for i in range(20)]}))
    write("float.parquet", pa.table({"_id": [1.0, 2.5], "text": ["x", "y"]}))
    write("numtitle.parquet", pa.table({"_id": ["n1", "n2"], "title": [7, 0], "text": ["x", "y"]}))
    large = pa.table({"_id": pa.array(ids[:20], pa.large_string()), "text": pa.array(texts[:20], pa.large_string())})
    write("large.parquet", large)
    write("nulltitle.parquet", pa.table({"_id": ["z1", "z2"], "title": pa.nulls(2), "text": ["x", " y "]}))
    write("notext.parquet", pa.table({"_id": ["m1"], "title": ["t"]}))
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    out["broken.parquet"] = str(tmp_path / "broken.parquet")
    return out


@pytest.mark.parametrize("clean", [True, False])
def test_parquet_doc_tables_equal_the_per_row_parse(tmp_path, monkeypatch, clean):
    monkeypatch.setattr(doc_columns, "BATCH_ROWS", 16)
    for name, path in _files(tmp_path).items():
        want = _oracle(path, functools.partial(parse_json_doc, clean=clean))
        got = _columnar(path, R.ReadTextTablesFn(clean, json_docs=True), "id")
        assert got == want, name
        if name == "str.parquet":
            assert len(want[0]) > 50 and len(want[1]) >= 5


def test_plain_rows_take_the_columnar_path(tmp_path):
    batch = pq.read_table(_files(tmp_path)["str.parquet"]).combine_chunks().to_batches()[0]
    _, _, taken = doc_columns.parquet_doc_rows(batch, clean=True)
    # the 50 regular documents and a1, a2, a4 (title only), ' a5 ', a9 (tab, newline), the second a1
    assert taken.tolist() == [*range(50), 50, 51, 53, 54, 61, 63]


def test_beir_parquet_build_equals_the_row_by_row_build(tmp_path, monkeypatch):
    files = _files(tmp_path)
    (tmp_path / "qrels.tsv").write_text(
        "query-id\tcorpus-id\tscore\n"
        + "".join(f"q{i}\td{i}\t{i % 3}\n" for i in range(50))
        + "q1\ta8\t1\nq2\tzz\t1\n"
    )
    queries = pa.table({"_id": [f"q{i}" for i in range(40)], "text": [f"query {i}" for i in range(39)] + [" "]})
    pq.write_table(queries, tmp_path / "queries.parquet")
    outs = {}
    for flag in (False, True):
        monkeypatch.setattr(R, "COLUMNAR_PARQUET", flag)
        config = beir.BeirConfig(
            corpus=(files["str.parquet"], files["int.parquet"], files["broken.parquet"]),
            queries=(str(tmp_path / "queries.parquet"),),
            qrels=(str(tmp_path / "qrels.tsv"),),
            name="odd",
            output=str(tmp_path / f"out{flag}"),
            num_shards=2,
        )
        beir.build(config, [])
        outs[flag] = _digest(tmp_path / f"out{flag}")
    assert outs[True] == outs[False]
    assert outs[True][4] > 20 and {"unreadable_file", "duplicate_doc_id", "empty_text"} <= set(outs[True][2])
