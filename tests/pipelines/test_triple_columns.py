"""`build msmarco --triples` on Arrow tables against the per-line parse and the keyed-batch path (the oracles)."""

from __future__ import annotations

import functools
import gzip
import json
import random

import numpy as np
import pyarrow as pa
import pytest

from negminer.pipelines import io, lines, msmarco
from negminer.pipelines import schema as S
from negminer.pipelines import triple_columns as T
from tests.pipelines.test_msmarco_columns import _columnar, _oracle

TRIPLE_ODD = [
    b"",
    b"  ",
    b"q one\tp one\tn one",
    b"Q  One \t P one\tn two",  # the same key as the line above (case, whitespace)
    b"q one\tp one\tn one",  # a repeated negative
    b"q one\tp one\tp one",  # the positive itself
    b"q one\tp one",
    b"q one\tp one\tn\tfour",
    b"\tp one\tn",
    b"q one\t  \tn",
    b"q one\tp one\t ",
    b"caf\xc3\x83\xc2\xa9\tp one\tmojibake query",
    b"CAF\xc3\x89\tp one\tupper-case accent",
    b"\xef\xbc\xa1\tp one\tfull-width A (NFKC)",
    b"q\x1cone\tp one\tunit separator",
    b"q one\tp one\tn with CR\r",
    b"q one\tp\x7fone\tdel",
    b"q one\tp one\t\xe9 undecodable",
    b"q one\tp one\tspaced   negative  ",
]


def _keyed(record, clean: bool):
    """`msmarco.parse_triple` (no memo) with the key kept in the value, as the readers' tables hold it."""
    out = msmarco.parse_triple(record, clean)
    return out if isinstance(out, str) else (out[0], (out[0], *out[1]))


@pytest.mark.parametrize("clean", [True, False])
@pytest.mark.parametrize("block_bytes", [64, 1 << 20])
def test_triple_tables_equal_the_per_line_parse(tmp_path, monkeypatch, clean, block_bytes):
    from tests.pipelines.test_msmarco_columns import _files

    monkeypatch.setattr(lines, "BLOCK_BYTES", block_bytes)
    monkeypatch.setattr(lines, "BLOCK_LINES", 5)
    rng = random.Random(block_bytes)
    body = [f"query {i % 7}\tpassage {i % 5}\tnegative {i}".encode() for i in range(40)] + TRIPLE_ODD
    rng.shuffle(body)
    sizes = []
    for path in _files(tmp_path, "triples.tsv", body):
        want = _oracle(path, functools.partial(_keyed, clean=clean))
        got = _columnar(path, T.ReadTripleTablesFn(clean), T.KEY)
        assert got == want, path
        sizes.append((len(want[0]), len(want[1])))
    assert sizes[0][0] > 40 and sizes[0][1] == 6  # the whole file: most lines kept, the odd ones rejected


def test_match_keys_equal_match_key():
    texts = ["a", "A b", "  x\t y ", "caf\u00e9", "CAF\u00c9", "\uff21", "x\u00a0y", "\u00df", "q\x1cone", "a\x01 b"]
    queries = [a for a in texts for _ in texts]
    positives = [b for _ in texts for b in texts]
    got = T.match_keys(pa.chunked_array([queries[:30], queries[30:]]), pa.array(positives)).to_pylist()
    assert got == [msmarco.match_key(q, p) for q, p in zip(queries, positives, strict=True)]


def test_negative_lists_equal_dict_fromkeys():
    rng = np.random.default_rng(0)
    row_groups = rng.integers(0, 6, 40)
    positives = [f"t{rng.integers(0, 5)}" for _ in row_groups]
    cand_groups = np.sort(rng.integers(0, 8, 120))
    cand_texts = [f"t{rng.integers(0, 9)}" for _ in cand_groups]
    texts, offsets = T.negative_lists(row_groups, pa.array(positives), cand_groups, pa.array(cand_texts))
    got = pa.ListArray.from_arrays(pa.array(offsets), texts).to_pylist()
    want = []
    for g, pos in zip(row_groups, positives, strict=True):
        cands = [t for cg, t in zip(cand_groups, cand_texts, strict=True) if cg == g]
        want.append([t for t in dict.fromkeys(cands) if t != pos])
    assert got == want and sum(map(len, want)) > 20


def _digest(out) -> tuple:
    from tests.pipelines.test_io import _files

    m = io.read_manifest(str(out))
    rejects = sorted(json.dumps(r, sort_keys=True, default=str) for r in io.read_rejects(str(out)).to_pylist())
    return _files(out), rejects, m["rejects"], m["skipped"], m["rows"]


@pytest.mark.parametrize("clean", [True, False])
def test_columnar_triples_build_equals_the_keyed_batch_build(tmp_path, monkeypatch, clean):
    """Whole builds, both paths: the same shards (bytes), rejects and counts, on odd triples over two files (file
    order decides the negatives' order), gzip and a truncated gzip, pairs sharing a text key, unmatched triples."""
    (tmp_path / "collection.tsv").write_text(
        "1\tp one\n2\tP One\n3\tpassage 3\n4\tcaf\u00c3\u00a9 p\n5\tpassage 5\n", encoding="utf-8"
    )
    (tmp_path / "queries.tsv").write_text(
        "10\tq one\n11\tQ one\n12\tquery 3\n13\tcaf\u00c3\u00a9\n14\t\uff21\n15\tquery 2\n", encoding="utf-8"
    )
    (tmp_path / "qrels.tsv").write_text("10 0 1 1\n11 0 2 1\n12 0 3 1\n13 0 1 1\n14 0 1 1\n15 0 4 1\n15 0 5 1\n")
    body = [f"query {i % 7}\tpassage {i % 6}\tnegative {i % 11}".encode() for i in range(60)] + TRIPLE_ODD
    random.Random(1).shuffle(body)
    data = b"\n".join(body) + b"\n"
    (tmp_path / "b.tsv").write_bytes(data[: len(data) // 2].rsplit(b"\n", 1)[0] + b"\n")
    (tmp_path / "a.tsv.gz").write_bytes(gzip.compress(data[len(data) // 2 :]))
    (tmp_path / "c.tsv.gz").write_bytes(gzip.compress(data)[: len(gzip.compress(data)) // 2])
    outs = {}
    for flag in (False, True):
        monkeypatch.setattr(msmarco, "COLUMNAR_TRIPLES", flag)
        config = msmarco.MsMarcoConfig(
            output=str(tmp_path / f"out{flag}"),
            collection=(str(tmp_path / "collection.tsv"),),
            queries=(str(tmp_path / "queries.tsv"),),
            qrels=(str(tmp_path / "qrels.tsv"),),
            triples=tuple(str(tmp_path / n) for n in ("b.tsv", "a.tsv.gz", "c.tsv.gz")),
            clean=clean,
            num_shards=2,
        )
        msmarco.build(config, [])
        outs[flag] = _digest(tmp_path / f"out{flag}")
    assert outs[True] == outs[False]
    rows = list(io.iter_rows(str(tmp_path / "outTrue")))
    assert sum(len(r[S.NEGATIVES]) for r in rows) > 10 and outs[True][3]["triple_without_pair"] > 10
    assert {"malformed_line", "empty_text", "truncated_file"} <= set(outs[True][2])
