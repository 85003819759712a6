"""A UTF-8 byte order mark at the start of a text file is not part of its first line, on every reader."""

from __future__ import annotations

import bz2
import gzip

import pytest

from negminer.pipelines import io, lines
from negminer.pipelines import schema as S
from negminer.pipelines.beir import BeirConfig
from negminer.pipelines.beir import build as build_beir
from negminer.pipelines.msmarco import MsMarcoConfig
from negminer.pipelines.msmarco import build as build_msmarco
from negminer.pipelines.source import BOM, read_text_lines
from tests.pipelines.test_fever_columns import digest

TEXT = "first\tline\r\n\ufeffsecond keeps its mark\nthird\n".encode()  # a BOM inside the file is text


@pytest.mark.parametrize("suffix", ["", ".gz", ".bz2"])
@pytest.mark.parametrize("block_bytes", [1, 2, 4, 1 << 20])
def test_readers_drop_a_leading_bom_only(tmp_path, suffix, block_bytes):
    pack = {"": bytes, ".gz": gzip.compress, ".bz2": bz2.compress}[suffix]
    plain, marked = tmp_path / f"plain.txt{suffix}", tmp_path / f"marked.txt{suffix}"
    plain.write_bytes(pack(TEXT))
    marked.write_bytes(pack(BOM + TEXT))
    expected = [(1, b"first\tline"), (2, "\ufeffsecond keeps its mark".encode()), (3, b"third")]
    assert list(read_text_lines(str(plain))) == list(read_text_lines(str(marked))) == expected
    for path in (plain, marked):
        blocks = list(lines.line_blocks(str(path), block_bytes))
        got = [(b.first + i, b.raw(i)) for b in blocks for i in range(b.count)]
        assert got == expected


@pytest.mark.parametrize("data", [BOM, BOM + b"x", b"\xef\xbb", b"ab"])
def test_tiny_files(tmp_path, data):
    path = tmp_path / "t.txt"
    path.write_bytes(data)
    via_lines = [b.raw(i) for b in lines.line_blocks(str(path), 1) for i in range(b.count)]
    assert via_lines == [raw for _, raw in read_text_lines(str(path)) if raw]  # a lone BOM: one blank line there
    assert b"".join(via_lines) == data.removeprefix(BOM)


def write(path, text: str, bom: bool) -> str:
    path.write_bytes((BOM if bom else b"") + text.encode())
    return str(path)


def test_beir_and_msmarco_builds_ignore_a_bom(tmp_path):
    """Before: the BOM made line 1 a `malformed_json` reject (JSON lines) or glued itself to the first id
    (`\\ufeffq1`: an `unknown_query` for its qrel)."""
    corpus = '{"_id": "d1", "title": "", "text": "one"}\n{"_id": "d2", "title": "t", "text": "two"}\n'
    queries = '{"_id": "q1", "text": "first query"}\n{"_id": "q2", "text": "second"}\n'
    qrels = "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\n"
    collection, tsv_queries, tsv_qrels = (
        "d1\tone\nd2\ttwo\n",
        "q1\tfirst query\nq2\tsecond\n",
        "q1 0 d1 1\nq2 0 d2 1\n",
    )
    got = {}
    d = tmp_path  # the same input paths both times: provenance names the files
    for bom in (False, True):
        files = {k: (write(d / f"{k}.jsonl", v, bom),) for k, v in (("corpus", corpus), ("queries", queries))}
        qrels_file = (write(d / "qrels.tsv", qrels, bom),)
        build_beir(BeirConfig(**files, qrels=qrels_file, name="t", output=str(d / f"beir-{bom}")), [])
        tsv = {
            "collection": (write(d / "collection.tsv", collection, bom),),
            "queries": (write(d / "queries.tsv", tsv_queries, bom),),
            "qrels": (write(d / "qrels.txt", tsv_qrels, bom),),
        }
        build_msmarco(MsMarcoConfig(**tsv, output=str(d / f"msmarco-{bom}")), [])
        got[bom] = [digest(d / f"beir-{bom}"), digest(d / f"msmarco-{bom}")]
    assert got[True] == got[False]
    for built in got[True]:
        assert built["rows"] == 2 and built["rejects"] == []
    rows = sorted(r[S.QUERY_ID] for r in io.iter_rows(str(tmp_path / "msmarco-True")))
    assert rows == ["q1", "q2"]
