"""`negminer build msmarco`: parse units, the DL19 excerpt per relevance threshold, triples, HF layout, rejects."""

from __future__ import annotations

import json
from collections import Counter

import ftfy
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from negminer import cli
from negminer.pipelines import io
from negminer.pipelines import schema as S
from negminer.pipelines.msmarco import MsMarcoConfig, build, match_key, parse_hf_row, parse_triple
from negminer.pipelines.source import Record
from negminer.pipelines.transforms.tabular import Skip, parse_id_text, parse_qrel
from tests.conftest import shared_file

MS = "msmarco"


def ws(text: str) -> str:
    return " ".join(text.split())


def norm(text: str) -> str:
    """What the clean-up may merge: whitespace runs and curly quotes (ftfy uncurls them)."""
    return ws(text).translate(str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"'}))


def outputs(out) -> tuple[list[dict], Counter, dict]:
    rows = list(io.iter_rows(str(out)))
    reasons = Counter(io.read_rejects(str(out)).column(S.REJECT_REASON).to_pylist())
    return rows, reasons, io.read_manifest(str(out))


# ---------------------------------------------------------------- pure parsing


@pytest.mark.parametrize(
    "line, expected",
    [
        ("19335 Q0 1017759 2", ("19335", "1017759", 2.0)),
        ("300674\t0\t7067032\t1", ("300674", "7067032", 1.0)),
        ("300674 0 7067032 1", ("300674", "7067032", 1.0)),
        ("q1\td1\t3", ("q1", "d1", 3.0)),
    ],
)
def test_parse_qrel_layouts(line, expected):
    key, qrel = parse_qrel(Record("f", 1, line))
    assert key == expected[0]
    assert (qrel.qid, qrel.doc_id, qrel.score) == expected


def test_parse_qrel_header_and_malformed():
    assert parse_qrel(Record("f", 1, "query-id\tcorpus-id\tscore")) == Skip("qrels_header")
    assert parse_qrel(Record("f", 2, "1 0")) == "malformed_qrel"
    assert parse_qrel(Record("f", 2, "1 Q0 7 1 run")) == "malformed_qrel"
    assert parse_qrel(Record("f", 3, "1 0 7 high")) == "malformed_qrel"


def test_parse_id_text():
    assert parse_id_text(Record("f", 1, "7\t  don\u00e2\u0080\u0099t  stop ")) == ("7", ("7", "don't stop", "f", 1))
    assert (
        parse_id_text(
            Record(
                "f",
                1,
                "7\t x ",
            ),
            clean=False,
        )[1].text
        == " x "
    )
    assert parse_id_text(Record("f", 2, "no tab here")) == "malformed_line"
    assert parse_id_text(Record("f", 3, "8\t   ")) == "empty_text"


def test_parse_triple_and_match_key():
    key, triple = parse_triple(Record("t", 4, "What is X\tX is  a thing.\tY is not."))
    assert key == match_key("what is x", "X is a thing.")
    assert triple.negative == "Y is not." and triple.line == 4
    assert parse_triple(Record("t", 5, "only\ttwo")) == "malformed_line"
    assert parse_triple(Record("t", 6, "q\t \tn")) == "empty_text"


def test_parse_hf_row_dict_of_lists_and_list_of_dicts():
    obj = {
        "query_id": 5,
        "query": "what is a cat",
        "passages": {
            "is_selected": [0, 1, 0],
            "passage_text": ["dogs bark", "a cat is a pet", "dogs bark"],
            "url": ["u0", "u1", "u2"],
        },
    }
    (row,) = parse_hf_row(obj, "f.jsonl", 3)
    assert (row[S.QUERY], row[S.QUERY_ID], row[S.POSITIVE]) == ("what is a cat", "5", "a cat is a pet")
    assert row[S.NEGATIVES] == ["dogs bark"]
    assert json.loads(row[S.PROVENANCE])["url"] == "u1"
    listed = dict(obj, passages=[{"is_selected": 1, "passage_text": "a cat is a pet", "url": "u1"}])
    assert parse_hf_row(listed)[0][S.NEGATIVES] == []
    assert parse_hf_row(dict(obj, passages={"is_selected": [1], "passage_text": ["a", "b"]})) == "malformed_passages"
    assert parse_hf_row({"query": "q"}) == "missing_field:passages"


def test_config_validation():
    with pytest.raises(ValueError, match="missing"):
        MsMarcoConfig(output="o", collection=("c",), queries=("q",))
    with pytest.raises(ValueError, match="--hf cannot"):
        MsMarcoConfig(output="o", hf=("h",), triples=("t",))
    with pytest.raises(ValueError, match="num-shards"):
        MsMarcoConfig(output="o", hf=("h",), num_shards=0)


# ---------------------------------------------------------------- the real DL19 excerpt


def dl19_expected(threshold: float) -> dict:
    """Rows, unknown-passage rejects and skips for a threshold, from the raw files in plain Python."""
    topics = dict(
        line.rstrip("\n").split("\t", 1) for line in open(shared_file(MS, "anserini-tools_topics.dl19-passage.txt"))
    )
    passages = {}
    for line in open(shared_file(MS, "nos-irv3_dl19-judged_collection.tsv"), encoding="utf-8"):
        pid, text = line.rstrip("\n").split("\t", 1)
        passages[pid] = text
    pairs, keys, unknown_passage, unknown_query, below = set(), set(), 0, 0, 0
    for line in open(shared_file(MS, "anserini-tools_qrels.dl19-passage.txt")):
        qid, _, pid, rel = line.split()
        if int(rel) < threshold:
            below += 1
        elif qid not in topics:
            unknown_query += 1
        elif pid not in passages:
            unknown_passage += 1
        else:
            pairs.add((qid, pid))
            keys.add((norm(topics[qid]), norm(passages[pid])))  # rows are deduplicated by (query, positive) text
    return {
        "pairs": pairs,
        "rows": len(keys),
        "unknown_passage": unknown_passage,
        "unknown_query": unknown_query,
        "below": below,
    }


def dl19_args(out, threshold) -> list[str]:
    return [
        "build",
        "msmarco",
        "--collection",
        str(shared_file(MS, "nos-irv3_dl19-judged_collection.tsv")),
        "--queries",
        str(shared_file(MS, "anserini-tools_topics.dl19-passage.txt")),
        "--qrels",
        str(shared_file(MS, "anserini-tools_qrels.dl19-passage.txt")),
        "--min-relevance",
        str(threshold),
        "--output",
        str(out),
    ]


@pytest.fixture(scope="module")
def dl19_rel1(tmp_path_factory):
    out = tmp_path_factory.mktemp("dl19_rel1")
    assert cli.main(dl19_args(out, 1)) == 0
    return out


@pytest.mark.parametrize("threshold", [0, 1, 2, 3])
def test_dl19_counts_per_threshold(threshold, dl19_rel1, tmp_path):
    out = dl19_rel1 if threshold == 1 else tmp_path
    if threshold != 1:
        assert cli.main(dl19_args(out, threshold)) == 0
    want = dl19_expected(threshold)
    rows, reasons, manifest = outputs(out)
    assert len(rows) == want["rows"] == manifest["rows"]
    assert {(r[S.QUERY_ID], r[S.POSITIVE_ID]) for r in rows} <= want["pairs"]
    assert reasons.get("unknown_passage", 0) == want["unknown_passage"]
    assert reasons.get("unknown_query", 0) == want["unknown_query"]
    assert sum(reasons.values()) == want["unknown_passage"] + want["unknown_query"]
    assert manifest["skipped"].get("below_min_relevance", 0) == want["below"]
    assert all(r[S.SOURCE] == "msmarco" and r[S.PAIR_TYPE] == "qa" for r in rows)
    if threshold == 0:
        assert want["unknown_passage"] > 0  # rel-0 judgements point at passages outside the judged collection


def test_dl19_multi_processing_matches_in_process(dl19_rel1, tmp_path):
    args = dl19_args(tmp_path, 1) + ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]
    assert cli.main(args) == 0
    name = io.shard_name("train", 0, 1)
    assert (tmp_path / name).read_bytes() == (dl19_rel1 / name).read_bytes()
    assert io.read_manifest(str(tmp_path))["skipped"] == io.read_manifest(str(dl19_rel1))["skipped"]


# ---------------------------------------------------------------- the real triples (mojibake)


def test_real_triples_give_negatives_and_mojibake_is_repaired(tmp_path):
    raw = [
        line.rstrip("\n").split("\t")
        for line in open(shared_file(MS, "splade-toy_triples.train.small.head100.tsv"), encoding="utf-8")
    ]
    queries = sorted({q for q, _, _ in raw})
    positives = sorted({p for _, p, _ in raw})
    qid = {q: f"q{i}" for i, q in enumerate(queries)}
    pid = {p: f"p{i}" for i, p in enumerate(positives)}
    (tmp_path / "queries.tsv").write_text("".join(f"{qid[q]}\t{q}\n" for q in queries), encoding="utf-8")
    (tmp_path / "collection.tsv").write_text("".join(f"{pid[p]}\t{p}\n" for p in positives), encoding="utf-8")
    pairs = sorted({(q, p) for q, p, _ in raw})
    (tmp_path / "qrels.tsv").write_text("".join(f"{qid[q]}\t0\t{pid[p]}\t1\n" for q, p in pairs))
    config = MsMarcoConfig(
        output=str(tmp_path / "out"),
        collection=(str(tmp_path / "collection.tsv"),),
        queries=(str(tmp_path / "queries.tsv"),),
        qrels=(str(tmp_path / "qrels.tsv"),),
        triples=(str(shared_file(MS, "splade-toy_triples.train.small.head100.tsv")),),
    )
    build(config, [])
    rows, reasons, manifest = outputs(tmp_path / "out")
    assert not reasons and "triple_without_pair" not in manifest["skipped"]
    assert len(rows) == len(pairs)
    assert sum("\u00e2\u0080" in "".join(raw_triple) for raw_triple in raw) > 0  # the input really has mojibake
    texts = [t for r in rows for t in (r[S.QUERY], r[S.POSITIVE], *r[S.NEGATIVES])]
    assert not any("\u00e2\u0080" in t or "\u00e2" in t for t in texts)
    assert any("We don't know a lot about the effects of caffeine" in t for t in texts)
    # every pair gets the distinct negatives of its triples in file order, repaired (ftfy as the reference)
    want = {}
    for q, p, n in raw:
        want.setdefault((qid[q], pid[p]), []).append(n)
    for r in rows:
        negs = want[(r[S.QUERY_ID], r[S.POSITIVE_ID])]
        assert r[S.NEGATIVES] == [ws(ftfy.fix_text(n)) for n in dict.fromkeys(negs)]


# ---------------------------------------------------------------- every reject reason, and the HF layout


def test_every_reject_reason_with_good_rows_kept(tmp_path):
    (tmp_path / "collection.tsv").write_bytes(
        b"1\tParis is the capital of France.\n"
        b"2\tBerlin is the capital of Germany.\n"
        b"3 no tab so malformed\n"
        b"4\t    \n"
        b"5\tbad bytes \xff\xfe here\n"
        b"1\tA second passage with id 1.\n"
    )
    (tmp_path / "queries.tsv").write_text("10\tcapital of france\n20\tcapital of germany\n30\t \n10\tsame id again\n")
    (tmp_path / "qrels.tsv").write_text("10 0 1 1\n20\tQ0\t2\t2\n10 0 99 1\n77 0 1 1\n20 0 1 0\nbroken qrel\n")
    (tmp_path / "triples.tsv").write_text(
        "capital of france\tParis is the capital of France.\tLyon is a city in France.\n"
        "capital of france\tParis is the capital of France.\n"
        "some query\tsome positive\tsome negative\n"
    )
    config = MsMarcoConfig(
        output=str(tmp_path / "out"),
        collection=(str(tmp_path / "collection.tsv"),),
        queries=(str(tmp_path / "queries.tsv"),),
        qrels=(str(tmp_path / "qrels.tsv"),),
        triples=(str(tmp_path / "triples.tsv"),),
    )
    build(config, [])
    rows, reasons, manifest = outputs(tmp_path / "out")
    by_q = {r[S.QUERY_ID]: r for r in rows}
    assert set(by_q) == {"10", "20"}
    assert by_q["10"][S.NEGATIVES] == ["Lyon is a city in France."]
    assert by_q["20"][S.POSITIVE] == "Berlin is the capital of Germany." and by_q["20"][S.NEGATIVES] == []
    undecodable = [r for r in reasons if r.startswith("undecodable_bytes")]
    assert len(undecodable) == 1
    assert reasons == Counter(
        {
            "malformed_line": 2,  # collection line 3, triples line 2
            "empty_text": 2,  # passage 4, query 30
            undecodable[0]: 1,
            "duplicate_doc_id": 1,
            "duplicate_query_id": 1,
            "unknown_passage": 1,
            "unknown_query": 1,
            "malformed_qrel": 1,
        }
    )
    assert manifest["skipped"] == {"below_min_relevance": 1, "triple_without_pair": 1}


def test_hf_layout_parquet_and_jsonl(tmp_path):
    rows_in = [
        {
            "query_id": 1,
            "query": "what is rust",
            "passages": {
                "is_selected": [1, 0],
                "passage_text": ["Rust is a language.", "Rust is iron oxide."],
                "url": ["a", "b"],
            },
        },
        {
            "query_id": 2,
            "query": "no answer",
            "passages": {"is_selected": [0], "passage_text": ["nothing"], "url": ["c"]},
        },
    ]
    pq.write_table(pa.Table.from_pylist(rows_in), tmp_path / "train.parquet")
    jl = [dict(rows_in[0], query_id=3, query="what is rust?"), {"query_id": 4, "query": "q"}]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in jl) + "{not json\n")
    config = MsMarcoConfig(
        output=str(tmp_path / "out"), hf=(str(tmp_path / "train.parquet"), str(tmp_path / "train.jsonl"))
    )
    build(config, [])
    rows, reasons, manifest = outputs(tmp_path / "out")
    assert sorted(r[S.QUERY_ID] for r in rows) == ["1", "3"]
    assert all(r[S.POSITIVE] == "Rust is a language." and r[S.NEGATIVES] == ["Rust is iron oxide."] for r in rows)
    assert reasons == Counter({"missing_field:passages": 1, "malformed_json": 1})
    assert manifest["skipped"] == {"no_selected_passage": 1}
