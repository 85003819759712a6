"""The columnar MS MARCO readers against the per-line parse functions (the oracle): same values, rejects, skips."""

from __future__ import annotations

import functools
import gzip
import json
import random

import pyarrow as pa
import pytest
from apache_beam.pvalue import TaggedOutput

from negminer.pipelines import lines, tables
from negminer.pipelines import msmarco_columns as M
from negminer.pipelines import qrel_columns as R
from negminer.pipelines.source import ReadRecordsFn, reject
from negminer.pipelines.transforms.partition import SKIPPED_COUNTS
from negminer.pipelines.transforms.tabular import Skip, parse_id_text, parse_qrel

TEXT_ODD = [
    b"",
    b"   ",
    b"\t",
    b"7\t",
    b"\tno id",
    b"  8  \t  spaced   text  ",
    b"9 no tab at all",
    b"10\ttext\twith\ttabs",
    b"11\tcaf\xc3\x83\xc2\xa9 mojibake",
    b"12\tcaf\xe9 undecodable",
    b"13\ttext with a CR\r",
    b"14\tunit\x1cseparator",
    b"15\tdel\x7fchar",
    b"1\tduplicate id",
]
QREL_ODD = [
    b"query-id\tcorpus-id\tscore",
    b"qid 0 pid rel",
    b"20 0 200 1",
    b"21\t0\t201\t2",
    b"  22   Q0   202   0  ",
    b"23\t203\t1",
    b"24 204 3",
    b"25 0 205 1.5",
    b"26 0 206 1e1",
    b"27 0 207 .5",
    b"28 0 208 1_0",
    b"29 0 209 x",
    b"30 0 210",
    b"31 0 211 1 extra",
    b" 32 \t 0 \t 212 \t 1 ",
    b"33 0 213 -1",
    b"34 0 214 1\r",
    b"35 0 2\xc3\xa915 1",
    b"",
]


def _oracle(path: str, parse, keep=None) -> tuple[set, list, dict]:
    values, rejects, skipped = set(), [], {}
    for item in ReadRecordsFn().process(path):
        if isinstance(item, TaggedOutput):
            rejects.append(tuple(sorted(item.value.items())))
            continue
        out = parse(item)
        if isinstance(out, Skip):
            skipped[out.reason] = skipped.get(out.reason, 0) + 1
        elif isinstance(out, str):
            rejects.append(tuple(sorted(reject(item, out).value.items())))
        elif keep and not keep(out[1]):
            skipped["below_min_relevance"] = skipped.get("below_min_relevance", 0) + 1
        else:
            values.add(tuple(out[1]))
    return values, sorted(rejects, key=repr), skipped


def _columnar(path: str, fn, key: str) -> tuple[set, list, dict]:
    values, rejects, skipped = set(), [], {}
    for item in fn.process(path):
        if isinstance(item, TaggedOutput) and item.tag == SKIPPED_COUNTS:
            skipped = item.value
        elif isinstance(item, TaggedOutput):
            rejects.append(tuple(sorted(item.value.items())))
        else:
            table = tables.from_ipc(item[1])
            assert set(tables.string_partitions(table[key], R.PARTITIONS).tolist()) == {item[0]}
            values |= {tuple(r.values()) for r in table.to_pylist()}
    return values, sorted(rejects, key=repr), skipped


def _files(tmp_path, name: str, body: list[bytes]) -> list[str]:
    data = b"\n".join(body)
    (tmp_path / name).write_bytes(data)
    (tmp_path / f"{name}.gz").write_bytes(gzip.compress(data))
    (tmp_path / f"cut.{name}.gz").write_bytes(gzip.compress(data)[: len(gzip.compress(data)) * 2 // 3])
    return [str(tmp_path / n) for n in (name, f"{name}.gz", f"cut.{name}.gz")]


@pytest.mark.parametrize("clean", [True, False])
@pytest.mark.parametrize("block_bytes", [64, 1 << 20])
def test_text_tables_equal_the_per_line_parse(tmp_path, monkeypatch, clean, block_bytes):
    monkeypatch.setattr(lines, "BLOCK_BYTES", block_bytes)
    monkeypatch.setattr(lines, "BLOCK_LINES", 5)
    rng = random.Random(block_bytes)
    body = [f"{i}\tpassage {i} text".encode() for i in range(40)] + TEXT_ODD
    rng.shuffle(body)
    for path in _files(tmp_path, "collection.tsv", body):
        want = _oracle(path, functools.partial(parse_id_text, clean=clean))
        got = _columnar(path, R.ReadTextTablesFn(clean), "id")
        assert got == want, path
        assert len(want[0]) > 10


@pytest.mark.parametrize("block_bytes", [64, 1 << 20])
def test_qrel_tables_equal_the_per_line_parse(tmp_path, monkeypatch, block_bytes):
    monkeypatch.setattr(lines, "BLOCK_BYTES", block_bytes)
    monkeypatch.setattr(lines, "BLOCK_LINES", 5)
    rng = random.Random(block_bytes)
    body = [f"{i} 0 {i * 7} {i % 3}".encode() for i in range(40)] + QREL_ODD
    rng.shuffle(body)
    for path in _files(tmp_path, "qrels.txt", body):
        want = _oracle(path, parse_qrel, keep=lambda q: q.score >= 1)
        got = _columnar(path, R.ReadQrelTablesFn(1.0), "qid")
        assert got == want, path
        assert len(want[0]) > 10
    assert _oracle(path.replace("cut.", "").removesuffix(".gz"), parse_qrel)[2]["qrels_header"] == 2


def test_rows_table_provenance_matches_pair_row():
    from negminer.pipelines import msmarco
    from negminer.pipelines.transforms.join import Pair
    from negminer.pipelines.transforms.tabular import Qrel, Text

    pairs = pa.table(
        {
            "qid": ["q1", "q2", "q3", "q4", "q5", "q6"],
            "doc_id": ["d1", "d2", "d3", "d4", "d5", "d6"],
            "score": [1.0, 2.5, 1.0, 1e20, 3.0000000000000004, float("inf")],
            "path": ["a/qrels.tsv", 'b"x.tsv', "a/qrels.tsv", "é/\\q.tsv", 'b"x.tsv', "c"],
            "line": [3, 4, 10**12, 0, 7, 8],
            "query": ["what is x", "who", "é", "q", "q", "q"],
            "positive": ["x is y", "me", "日本", "p", "p", "p"],
        }
    )
    pairs = pa.concat_tables([pairs.slice(0, 2), pairs.slice(2)])  # two chunks
    want = [
        msmarco.pair_row(Pair(Text(q, qt, "", 0), Text(d, dt, "", 0), Qrel(q, d, s, p, n)), [])
        for q, d, s, p, n, qt, dt in zip(*pairs.to_pydict().values(), strict=True)
    ]
    assert M.rows_table(pairs, "msmarco", "qa").to_pylist() == want


def test_regular_lines_take_the_columnar_path():
    text = lines._block("c.tsv", b"".join(f"{i}\tpassage {i}\n".encode() for i in range(50)) + b"\n", 1)
    table, slow = R.id_text_table(text, clean=True)
    assert table.num_rows == 50 and len(slow) == 0
    qrels = lines._block("q.txt", b"".join(f"{i} 0 {i} 1\n{i}\t{i}\t2\n".encode() for i in range(50)), 1)
    table, slow = R.qrel_table(qrels)
    assert table.num_rows == 100 and len(slow) == 0
    assert table["score"].to_pylist()[:2] in ([1.0, 1.0], [2.0, 2.0], [1.0, 2.0], [2.0, 1.0])


def _dir_digest(out) -> tuple:
    from negminer.pipelines import io
    from tests.pipelines.test_io import _files

    m = io.read_manifest(str(out))
    return _files(out), io.read_rejects(str(out)).to_pylist(), m["rejects"], m["skipped"], m["rows"]


def test_unjudged_passages_as_stubs_give_the_same_output(tmp_path, monkeypatch):
    """Passages no qrel judges cross the shuffle without text: same shards, rejects and counts as with all texts."""
    from negminer.pipelines import msmarco

    collection = [
        "1\tjudged passage one",
        "2\tjudged caf\u00c3\u00a9 mojibake",
        "3\tunjudged plain",
        "3\tunjudged duplicate of 3",
        "4\tunjudged caf\u00c3\u00a9 first",
        "4\tunjudged caf\u00c3\u00a9 duplicate",
        "5\t\u00a0\u3000",  # non-ASCII whitespace only: empty after cleaning
        "6\t&nbsp;\u3000",  # an entity and a wide space: empty after cleaning, though it has ASCII letters
        "7\t\x1b[1m\u3000",  # a terminal escape: the same
        "8\t  \u00e9  ",
        "9\tno\u00a0break",
        "1\tjudged duplicate of 1",
        "10\t",
        "10",
        "  \t no id",
        "11\tcaf\u00e9\r",
    ]
    (tmp_path / "collection.tsv").write_text("\n".join(collection) + "\n", encoding="utf-8")
    (tmp_path / "queries.tsv").write_text("q1\twhat is one\nq2\twhat is two\n", encoding="utf-8")
    (tmp_path / "qrels.tsv").write_text("q1 0 1 1\nq2 0 2 1\nq2 0 12 1\nq1 0 3 0\n", encoding="utf-8")
    outs = {}
    for flag in (False, True):
        monkeypatch.setattr(M, "FILTER_UNJUDGED", flag)
        config = msmarco.MsMarcoConfig(
            output=str(tmp_path / f"out{flag}"),
            collection=(str(tmp_path / "collection.tsv"),),
            queries=(str(tmp_path / "queries.tsv"),),
            qrels=(str(tmp_path / "qrels.tsv"),),
            num_shards=1,
        )
        msmarco.build(config, [])
        outs[flag] = _dir_digest(tmp_path / f"out{flag}")
    assert outs[True] == outs[False]
    reasons = sorted(r["reason"] for r in outs[True][1])
    assert reasons.count("duplicate_doc_id") == 3 and reasons.count("empty_text") == 4
    assert outs[True][4] == 2


def test_unjudged_stub_needs_no_ftfy_only_when_the_text_is_surely_kept():
    judged = R.Judged([tables.to_ipc(pa.table({"doc_id": ["1"]}))])
    rec = functools.partial(__import__("negminer.pipelines.source", fromlist=["Record"]).Record, "c.tsv", 1)
    assert R.unjudged_stub(rec("2\tcaf\u00c3\u00a9 x"), True, judged) == ("2", ("2", None, "c.tsv", 1))
    assert R.unjudged_stub(rec("1\tjudged"), True, judged) is None
    for text in ("\u00a0\u3000", "&nbsp;\u3000", "\x1b[1m\u3000", "   "):
        assert R.unjudged_stub(rec(f"2\t{text}"), True, judged) is None
    assert R.unjudged_stub(rec("2\t\u00a0"), False, judged) is None  # str.strip() empties it: a reject
    assert R.unjudged_stub(rec("2\t\u00e9"), False, judged) == ("2", ("2", None, "c.tsv", 1))


def test_judged_may_hold_every_judged_id_and_few_others():
    judged_ids = [str(i) for i in range(0, 3000, 3)] + ["doc-" + "x" * 80, ""]
    judged = R.Judged(
        [
            tables.to_ipc(pa.table({"doc_id": judged_ids[:500]})),
            tables.to_ipc(pa.table({"doc_id": judged_ids[300:]})),  # ids judged in two query partitions
        ]
    )
    probe = pa.chunked_array(
        [pa.array([str(i) for i in range(3000)]), pa.array(["doc-" + "x" * 80, "doc-" + "x" * 79, ""])]
    )
    got = judged.may_hold(probe)
    assert got.tolist() == [p in set(judged_ids) for p in probe.to_pylist()]
    assert [p in judged for p in probe.to_pylist()] == got.tolist()
    assert not R.Judged([]).may_hold(pa.array(["1"])).any()


DOC_ODD = [
    b"",
    b"   ",
    b'{"_id": "a1", "title": "Title", "text": "body  text "}',
    b'{"_id": "a2", "text": "no title"}',
    b'{"_id": "a3", "title": null, "text": "null title"}',
    b'{"_id": "a4", "title": "  ", "text": "  "}',
    b'{"_id": "a5", "title": "only title", "text": ""}',
    b'{"_id": " a6 ", "title": "t", "text": "spaced id"}',
    b'{"_id": "  ", "text": "blank id"}',
    b'{"_id": null, "text": "null id"}',
    b'{"text": "no id"}',
    b'{"_id": "a7", "title": 7, "text": "number title"}',
    b'{"_id": "a8", "title": 0, "text": "falsy title"}',
    b'{"_id": "a9"}',
    b'{"_id": "a10", "text": null}',
    b'{"_id": "a11", "text": ["list"]}',
    b'{"_id": 12, "text": "int id"}',
    b'{"_id": 1.5, "text": "float id"}',
    b'{"_id": true, "text": "bool id"}',
    b'{"_id": "a13", "text": "caf\\u00e9 escaped"}',
    b'{"_id": "a14", "text": "caf\xc3\x83\xc2\xa9 mojibake"}',
    b'{"_id": "a15", "text": "dup", "text": "dup2"}',
    b'{"_id": "a16", "title": "text", "text": "title is the word text"}',
    b'{"_id": "a17", "text": "tab\\tinside\\nand newline"}',
    b'{"_id": "a18", "text": "x"} trailing',
    b'{"_id": "a19", "text": "two"}{"_id": "a20", "text": "objects"}',
    b'["not", "an", "object"]',
    b"{not json",
    b'{"_id": "a21", "text": "cr"}\r',
    b'{"_id": "a22", "text": "\xe9 undecodable"}',
    b'{"_id": "a23", "text": "ok", "metadata": {"url": "u"}}',
    b'{"_id": "\xc3\xa9", "text": "non-ASCII id"}',
]


@pytest.mark.parametrize("clean", [True, False])
@pytest.mark.parametrize("block_bytes", [64, 1 << 20])
@pytest.mark.parametrize("int_ids", [False, True])
def test_json_doc_tables_equal_the_per_line_parse(tmp_path, monkeypatch, clean, block_bytes, int_ids):
    from negminer.pipelines.transforms.tabular import parse_json_doc

    monkeypatch.setattr(lines, "BLOCK_BYTES", block_bytes)
    monkeypatch.setattr(lines, "BLOCK_LINES", 5)
    rng = random.Random(block_bytes)
    ids = [i if int_ids else f"d{i}" for i in range(40)]
    body = [json.dumps({"_id": d, "title": f"T {i}", "text": f"doc {i}  text"}).encode() for i, d in enumerate(ids)]
    body += [json.dumps({"_id": d, "text": f"only text {d}"}).encode() for d in ids[:5]] + DOC_ODD
    first, rest = body[0], body[1:]
    rng.shuffle(rest)
    for path in _files(tmp_path, "corpus.jsonl", [first, *rest]):
        want = _oracle(path, functools.partial(parse_json_doc, clean=clean))
        got = _columnar(path, R.ReadTextTablesFn(clean, json_docs=True), "id")
        assert got == want, path
        assert len(want[0]) > 30
