"""BEIR documents no qrel judges cross the shuffle as id stubs (text null): whole builds with and without stubs give
the same shards, rejects and counts; the rejects of stubbed duplicates carry their text, read again from the file."""

from __future__ import annotations

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from negminer.pipelines import beir, doc_columns, tables
from negminer.pipelines import msmarco_columns as M
from negminer.pipelines import qrel_columns as R
from negminer.pipelines.transforms.tabular import parse_json_doc
from tests.pipelines.test_msmarco_columns import _columnar
from tests.pipelines.test_triple_columns import _digest

# (id, title, text): judged ids are j*, 7 and the ids the qrels below name
FIRST = [
    ("j1", "Judged", "one"),
    ("u1", None, "unjudged plain"),
    ("u2", "caf\u00c3\u00a9", "unjudged mojibake, duplicated in the second file"),
    ("u3", None, "unjudged duplicate in this file"),
    ("u3", None, "second u3, unjudged: rejected with this text"),
    ("u4", None, "na\u00efve non-ASCII"),
    ("u5", "  ", "\u00a0\u3000"),  # empty once cleaned (a reject either way)
    ("u6", None, ""),
    ("j2", None, "judged, duplicated in the second file"),
    ("\u00e9", None, "non-ASCII unjudged id"),
    ("j3", "\u00a0", "judged caf\u00c3\u00a9"),
]
SECOND = [
    ("u2", None, "second u2: caf\u00c3\u00a9 \u00e9t\u00e9"),
    ("j2", None, "second j2"),
    ("u7", "t", "x" * 300),
    ("u3", "third", "u3 in \u00e9 another file"),
    ("j4", None, "judged in the second file"),
]
QRELS = "query-id\tcorpus-id\tscore\nq1\tj1\t1\nq2\tj2\t2\nq1\tj3\t1\nq2\tj4\t1\nq1\tmissing\t1\nq2\tu1\t0\n"


def _jsonl(docs: list[tuple], int_ids: bool = False) -> bytes:
    rows = []
    for i, (doc_id, title, text) in enumerate(docs):
        obj = {"_id": 1000 + i if int_ids else doc_id, "text": text}
        if title is not None:
            obj["title"] = title
        rows.append(json.dumps(obj, ensure_ascii=i % 2 == 0))
    return ("\n".join(rows) + "\n\n").encode()


def _parquet(path, docs: list[tuple]) -> str:
    ids, titles, texts = map(list, zip(*docs, strict=True))
    pq.write_table(pa.table({"_id": ids, "title": titles, "text": texts}), path)
    return str(path)


def _build(
    tmp_path, monkeypatch, corpus: tuple[str, ...], clean: bool, qrels: str = QRELS, queries: str | None = None
) -> dict:
    (tmp_path / "qrels.tsv").write_text(qrels, encoding="utf-8")
    queries = queries or '{"_id": "q1", "text": "one?"}\n{"_id": "q2", "text": "two?"}\n'
    (tmp_path / "queries.jsonl").write_text(queries, encoding="utf-8")
    outs = {}
    for flag in (False, True):
        monkeypatch.setattr(M, "FILTER_UNJUDGED", flag)
        config = beir.BeirConfig(
            corpus=corpus,
            queries=(str(tmp_path / "queries.jsonl"),),
            qrels=(str(tmp_path / "qrels.tsv"),),
            name="stubs",
            output=str(tmp_path / f"out{flag}{clean}"),
            clean=clean,
            num_shards=2,
        )
        beir.build(config, [])
        outs[flag] = _digest(tmp_path / f"out{flag}{clean}")
    assert outs[True] == outs[False]
    return outs[True]


def _duplicates(got) -> dict[tuple, str]:
    return {
        (r["source_file"].rsplit("/", 1)[1], r["line"]): r["raw"]
        for r in map(json.loads, got[1])
        if r["reason"] == "duplicate_doc_id"
    }


@pytest.mark.parametrize("clean", [True, False])
def test_jsonl_build_with_stubs_equals_the_build_with_texts(tmp_path, monkeypatch, clean):
    """Two files (one gzip), duplicates across and within files, judged and not, empty and non-ASCII texts, a
    blank line; the second file's documents after the first's by path."""
    (tmp_path / "a.jsonl").write_bytes(_jsonl(FIRST))
    (tmp_path / "b.jsonl.gz").write_bytes(gzip.compress(_jsonl(SECOND)))
    got = _build(tmp_path, monkeypatch, (str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl.gz")), clean)
    assert got[4] == 4  # j1, j2, j3, j4
    dups = _duplicates(got)
    assert set(dups) == {("a.jsonl", 5), ("b.jsonl.gz", 1), ("b.jsonl.gz", 2), ("b.jsonl.gz", 4)}
    assert dups[("a.jsonl", 5)] == "u3\tsecond u3, unjudged: rejected with this text"
    # the texts of stubs, read again, cleaned as the build cleans
    want = "second u2: caf\u00e9 \u00e9t\u00e9" if clean else "second u2: caf\u00c3\u00a9 \u00e9t\u00e9"
    assert dups[("b.jsonl.gz", 1)] == f"u2\t{want}"
    assert dups[("b.jsonl.gz", 4)] == "u3\tthird u3 in \u00e9 another file"
    assert got[2]["empty_text"] == 2 and got[2]["unknown_document"] == 1


def test_jsonl_integer_ids_with_stubs(tmp_path, monkeypatch):
    """Integer `_id`s (the reader's int64 schema), none judged but two: the same output both ways."""
    docs = [("", None, f"doc {i}") for i in range(20)] + [("", None, "doc 3")]
    body = _jsonl(docs, int_ids=True) + b'{"_id": 1003, "text": "dup of 1003 \\u00e9"}\n'
    (tmp_path / "c.jsonl").write_bytes(body)
    qrels = "query-id\tcorpus-id\tscore\nq1\t1001\t1\nq2\t1019\t1\n"
    got = _build(tmp_path, monkeypatch, (str(tmp_path / "c.jsonl"),), True, qrels)
    assert got[4] == 2 and list(_duplicates(got).values()) == ["1003\tdup of 1003 \u00e9"]


@pytest.mark.parametrize("columnar", [True, False])
def test_parquet_build_with_stubs_equals_the_build_with_texts(tmp_path, monkeypatch, columnar):
    """Parquet corpora (batches of 4 rows, so the stubbed duplicates are read again from later batches), both
    the columnar and the row-by-row reader."""
    monkeypatch.setattr(doc_columns, "BATCH_ROWS", 4)
    monkeypatch.setattr(R, "COLUMNAR_PARQUET", columnar)
    corpus = (_parquet(tmp_path / "a.parquet", FIRST), _parquet(tmp_path / "b.parquet", SECOND))
    got = _build(tmp_path, monkeypatch, corpus, True)
    assert got[4] == 4
    dups = _duplicates(got)
    assert dups[("a.parquet", 5)] == "u3\tsecond u3, unjudged: rejected with this text"
    assert dups[("b.parquet", 1)] == "u2\tsecond u2: caf\u00e9 \u00e9t\u00e9"
    assert dups[("b.parquet", 4)] == "u3\tthird u3 in \u00e9 another file"


def test_the_reader_leaves_out_the_texts_of_unjudged_documents_only(tmp_path):
    (tmp_path / "a.jsonl").write_bytes(_jsonl(FIRST))
    pq_path = _parquet(tmp_path / "a.parquet", FIRST)
    judged = [tables.to_ipc(pa.table({"doc_id": ["j1", "j2", "j3", "zz"]}))]
    for path in (str(tmp_path / "a.jsonl"), pq_path):
        full = _columnar(path, R.ReadTextTablesFn(True, json_docs=True), "id")
        fn = R.ReadTextTablesFn(True, json_docs=True)
        stubbed = {"values": set(), "rejects": []}
        for item in fn.process(path, judged):
            if isinstance(item, tuple):
                stubbed["values"] |= {tuple(r.values()) for r in tables.from_ipc(item[1]).to_pylist()}
            else:
                stubbed["rejects"].append(tuple(sorted(item.value.items())))
        want = {(i, t if i.startswith("j") else None, p, n) for i, t, p, n in full[0]}
        assert stubbed["values"] == want, path
        assert sorted(stubbed["rejects"], key=repr) == full[1]
        assert sum(t is None for _, t, _, _ in want) == 6  # u1, u2, u3 twice, u4, é
        again = R.reread_texts(
            [{"path": p, "line": n} for i, _, p, n in full[0] if not i.startswith("j")], True, json_docs=True
        )
        assert again == {(p, n): t for i, t, p, n in full[0] if not i.startswith("j")}


@pytest.mark.parametrize("clean", [True, False])
def test_json_doc_stub_only_for_documents_the_parse_accepts(clean):
    """`json_doc_stub` (no ftfy) against `parse_json_doc`: a stub only where the parse accepts the same id."""
    from negminer.pipelines.source import Record

    judged = R.Judged([tables.to_ipc(pa.table({"doc_id": ["j1", "7"]}))])
    objs = [
        {"_id": "u1", "text": "caf\u00c3\u00a9 mojibake"},
        {"_id": "u2", "title": "\u00a0", "text": "\u3000"},
        {"_id": "u3", "text": "&nbsp;\u3000"},
        {"_id": "u4", "text": "\x1b[1m\u3000"},
        {"_id": "u5", "title": "na\u00efve", "text": ""},
        {"_id": "u6", "title": 3, "text": "number title"},
        {"_id": "u7", "title": 0, "text": "falsy title"},
        {"_id": "u8", "text": None},
        {"_id": "u9"},
        {"_id": " ", "text": "blank id"},
        {"_id": None, "text": "null id"},
        {"_id": 8, "text": "\u00e9t\u00e9 8"},
        {"_id": 7, "text": "judged 7"},
        {"_id": "j1", "text": "judged"},
        {"_id": "u10", "text": "  \u00a0 "},
        {"_id": "u11", "text": "\ud800 lone"},
        {"_id": 1.5, "text": "float id"},
    ]
    raws = [json.dumps(o, ensure_ascii=i % 2 == 0) for i, o in enumerate(objs)] + ["{bad json", "[1]", "{}"]
    stubs = 0
    for n, raw in enumerate(raws, 1):
        rec = Record("c.jsonl", n, raw)
        got, want = R.json_doc_stub(rec, clean, judged), parse_json_doc(rec, clean=clean)
        if got is not None:
            stubs += 1
            assert not isinstance(want, str) and got == (want[0], (want[0], None, "c.jsonl", n)), raw
        elif not isinstance(want, str):
            assert want[0] in judged or not want[1].text.isascii() or not clean, raw
    assert stubs >= 7


def test_real_msmarco_excerpts_as_beir_with_and_without_stubs(tmp_path, monkeypatch):
    """The real DL19 judged collection as BEIR JSON lines (gzip), its first 300 passages again in a second file
    (duplicates, some judged), the splade toy collection as Parquet; DL19 qrels (scores 0-3): same output both ways."""
    from tests.conftest import shared_file

    collection = shared_file("msmarco", "nos-irv3_dl19-judged_collection.tsv").read_text(encoding="utf-8")
    toy = shared_file("msmarco", "splade-toy_collection.head89.tsv").read_text(encoding="utf-8")
    qrels = shared_file("msmarco", "anserini-tools_qrels.dl19-passage.txt").read_text(encoding="utf-8")
    topics = shared_file("msmarco", "anserini-tools_topics.dl19-passage.txt").read_text(encoding="utf-8")
    docs = [line.split("\t", 1) for line in collection.splitlines() if "\t" in line]
    rows = [json.dumps({"_id": i, "title": "", "text": t}, ensure_ascii=False) for i, t in docs]
    (tmp_path / "a.jsonl.gz").write_bytes(gzip.compress(("\n".join(rows) + "\n").encode()))
    (tmp_path / "b.jsonl").write_text("\n".join(rows[:300]) + "\n", encoding="utf-8")
    ids, texts = zip(*(line.split("\t", 1) for line in toy.splitlines()), strict=True)
    pq.write_table(pa.table({"_id": list(ids), "text": list(texts)}), tmp_path / "c.parquet")
    queries = "".join(
        json.dumps({"_id": q, "text": t}) + "\n" for q, t in (line.split("\t", 1) for line in topics.splitlines())
    )
    beir_qrels = "query-id\tcorpus-id\tscore\n" + "".join(
        f"{q}\t{d}\t{s}\n" for q, _, d, s in (line.split() for line in qrels.splitlines())
    )
    corpus = tuple(str(tmp_path / n) for n in ("a.jsonl.gz", "b.jsonl", "c.parquet"))
    got = _build(tmp_path, monkeypatch, corpus, True, beir_qrels, queries)
    assert got[4] > 1000 and got[2]["duplicate_doc_id"] >= 300
