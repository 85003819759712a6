"""`build fever` on Arrow tables (fever_columns.py) against the keyed-batch path: same shard bytes, same rejects."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from negminer.pipelines import doc_columns, fever, io, lines
from negminer.pipelines import schema as S
from negminer.pipelines.fever import FeverConfig, page_fields, page_positive, parse_wiki_lines
from negminer.pipelines.fever_columns import decided_pages
from negminer.pipelines.fever_sentences import page_positives, positives_of, sentence_table, untokenize_ascii
from negminer.pipelines.source import Record
from negminer.pipelines.transforms.tabular import Skip, tidy, untokenize_ptb
from tests.conftest import shared_file

NFD_BEYONCE = "Beyonce\u0301"  # the NFD spelling of `Beyoncé`

# Pages that take every branch of page_fields / parse_wiki_lines / the sentence clean-up.
ODD_PAGES = [
    {
        "id": "Plain",
        "text": "Plain page .",
        "lines": "0\tZero .\tanchor\tLink\n1\tOne  two\t\nnewline anchor\tX\n99\t",
    },
    {"id": "Tokens_-LRB-x-RRB-", "text": "t", "lines": "0\tA -LRB- b -RRB- c -COLON- d\n1\tx -RRB-LRB- y\n2\t -RRB- "},
    {"id": NFD_BEYONCE, "text": "Beyonce\u0301 sings .", "lines": "0\tBeyonce\u0301 sings .\n1\tcafÃ© donÃ¢Â€Â™t"},
    {"id": "Beyoncé", "text": "A duplicate by NFC .", "lines": "0\tDuplicate ."},
    {"id": "Plain", "text": "A duplicate .", "lines": "0\tDuplicate ."},
    {"id": "Filler_1", "text": "A duplicate no evidence names .", "lines": "0\tU ."},
    {
        "id": "Numbers",
        "text": "n",
        "lines": "007\tSeven .\n1\tfirst\n1\tsecond\n2\tkept\n2\t  \n99999999999999999999999\tHuge .",
    },
    {"id": "Digits", "text": "d", "lines": "\u0661\tArabic one .\n\u00b2\tsquared\n3\tThree \u00a0 spaced ."},
    {"id": "Sentences_only", "text": "  ", "lines": "1\tSecond -LRB- b -RRB- .\n0\tFirst ."},
    {"id": "Null_text", "text": None, "lines": "0\tFrom lines ."},
    {"id": "Empty", "text": "", "lines": ""},
    {"id": "Blank", "text": "   ", "lines": ""},
    {"id": "Wide_blank", "text": " \u3000 ", "lines": ""},
    {"id": "Blank_lines", "text": "", "lines": "0\t \n1\t"},
    {"id": "", "text": "No id .", "lines": "0\tx"},
    {"id": "   ", "text": "Blank id .", "lines": "0\tx"},
    {"text": "Missing id .", "lines": "0\tx"},
    {"id": 'Quote_"_and_\\', "text": "Odd id .", "lines": "0\tQuoted  id ."},
    {"id": "Tabs", "text": "Tab\there", "lines": "0\tTab\x0bvertical\x1cfile ."},
    {"id": "Only_token", "text": "x", "lines": "0\t-COLON-"},
]
BAD_TYPES = [  # values the JSON reader cannot type as strings: their run goes line by line
    {"id": 5, "text": "Number id .", "lines": "0\tx"},
    {"id": "Text_number", "text": 7, "lines": ""},
    {"id": "Lines_list", "text": "x", "lines": [1]},
]
ODD_LINES = [
    "{broken json",
    "[1, 2]",
    "",
    "   ",
    '{"id": "Surrogate", "text": "bad \\ud800 half", "lines": "0\\tS ."}',
    '{"id": "Twice", "id": "Twice_b", "text": "Key twice .", "lines": "0\\tT ."}',
    '{"id": "Crlf", "text": "Windows .", "lines": "0\\tW ."}\r',
]


def claim(cid, evidence, label="SUPPORTS", text=None) -> str:
    return json.dumps(
        {
            "id": cid,
            "label": label,
            "claim": text or f"Claim {cid} .",
            "evidence": [[[0, 0, p, n]] for p, n in evidence],
        }
    )


ODD_CLAIMS = [
    claim(1, [("Plain", 0), ("Plain", 1), ("Plain", 2), ("Plain", 99)]),
    claim(2, [("Tokens_-LRB-x-RRB-", 0), ("Tokens_-LRB-x-RRB-", 1), ("Tokens_-LRB-x-RRB-", 2)]),
    claim(3, [("Beyoncé", 0), ("Beyoncé", 1), (NFD_BEYONCE, 0)]),
    claim(4, [("Numbers", 7), ("Numbers", 1), ("Numbers", 2), ("Numbers", 99999999999999999999999), ("Numbers", -1)]),
    claim(5, [("Digits", 1), ("Digits", 3), ("Digits", 2)]),
    claim(6, [("Sentences_only", 0), ("Null_text", 0), ("Empty", 0), ("Blank_lines", 0), ("Nowhere", 0)]),
    claim(7, [('Quote_"_and_\\', 0), ("Tabs", 0), ("Only_token", 0), ("Surrogate", 0), ("Crlf", 0)]),
    claim("abc", [("Plain", 0)], label="REFUTES", text="  donÃ¢Â€Â™t   mojibake  "),
    claim(None, [("Twice_b", 0), ("Twice", 0)], text="Null id ."),
    claim(1.5, [("Plain", 0)], label="NOT ENOUGH INFO"),
    claim(8, [("Plain", 0)], label="MAYBE"),
    claim(9, []),
    claim(1, [("Plain", 0), ("Plain", 1), ("Plain", 2), ("Plain", 99)]),  # the same claim again
    json.dumps({"id": 10, "label": "SUPPORTS", "claim": "Bad evidence .", "evidence": [[[0, 0, "Plain", True]]]}),
]
FILLER = 150  # plain pages around the odd ones: runs longer than lines.MIN_RUN reach pyarrow's JSON reader


def write_inputs(tmp_path: Path) -> tuple[Path, Path, Path]:
    """claims.jsonl, wiki-001.jsonl (filler, odd pages and lines), wiki-002.jsonl (a third `Plain`, bad bytes)."""
    filler = [
        {"id": f"Filler_{i}", "text": f"Filler {i} .", "lines": f"0\tFiller {i} zero .\n1\tOne"} for i in range(FILLER)
    ]
    pages = [json.dumps(p) for p in filler[:60] + ODD_PAGES + filler[60:] + BAD_TYPES] + ODD_LINES
    wiki = tmp_path / "wiki-001.jsonl"
    wiki.write_text("\n".join(pages) + "\n")
    wiki2 = tmp_path / "wiki-002.jsonl"  # a block that is not UTF-8 goes line by line
    third = json.dumps({"id": "Plain", "text": "Third copy .", "lines": "0\tThird ."})
    wiki2.write_bytes(third.encode() + b'\n{"id": "Bytes \xff"}\n')
    claims = tmp_path / "claims.jsonl"
    filler_claims = [claim(100 + i, [(f"Filler_{i}", 0), (f"Filler_{i}", 1)]) for i in range(0, FILLER, 7)]
    claims.write_text("\n".join(ODD_CLAIMS + filler_claims + ["{oops"]) + "\n")
    return claims, wiki, wiki2


def digest(out: Path) -> dict:
    shards = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.glob("*.parquet"))}
    rejects = sorted(json.dumps(r, sort_keys=True) for r in io.read_rejects(str(out)).to_pylist())
    manifest = io.read_manifest(str(out))
    return {"shards": shards, "rejects": rejects, "skipped": manifest["skipped"], "rows": manifest["rows"]}


@pytest.mark.parametrize(
    ("positive", "clean"), [("sentence", True), ("page", True), ("sentence", False), ("page", False)]
)
def test_columnar_build_equals_keyed_batches_on_odd_input(positive, clean, tmp_path, monkeypatch):
    claims, wiki, wiki2 = write_inputs(tmp_path)
    monkeypatch.setattr(lines, "BLOCK_BYTES", 4096)  # several blocks per file
    got = {}
    for columnar in (False, True):
        monkeypatch.setattr(fever, "COLUMNAR", columnar)
        out = tmp_path / f"out-{columnar}"
        config = FeverConfig(
            claims=(str(claims),),
            wiki_pages=(str(wiki), str(wiki2)),
            output=str(out),
            positive=positive,
            clean=clean,
            num_shards=2,
        )
        fever.build(config, [])
        got[columnar] = digest(out)
    assert got[True] == got[False]
    reasons = {json.loads(r)[S.REJECT_REASON] for r in got[True]["rejects"]}
    assert {"missing_page", "duplicate_page_id", "empty_page_id", "not_a_string:text", "malformed_json"} <= reasons
    assert {"json_not_an_object", "unknown_label", "no_evidence", "malformed_evidence"} <= reasons
    assert any(r.startswith("undecodable_bytes") for r in reasons)
    assert ("missing_line" in reasons) == (positive == "sentence")
    assert got[True]["skipped"] == {"not_enough_info": 1, "empty_page": 4}
    assert got[True]["rows"] > FILLER // 7


def test_lone_surrogate_becomes_replacement_character(tmp_path):
    """A lone surrogate escape kept by --no-clean: U+FFFD (what the clean-up makes of it), not a failed write."""
    claims, wiki, wiki2 = write_inputs(tmp_path)
    out = tmp_path / "out"
    config = FeverConfig(claims=(str(claims),), wiki_pages=(str(wiki),), output=str(out), positive="page", clean=False)
    fever.build(config, [])
    rows = [r for r in io.iter_rows(str(out)) if r[S.POSITIVE_ID] == "Surrogate"]
    assert [r[S.POSITIVE] for r in rows] == ["Surrogate bad \ufffd half"]


def test_columnar_build_equals_keyed_batches_on_paper_dev(tmp_path, monkeypatch):
    """The real paper_dev claims with test-written pages of its evidence and the real wiki segment."""
    from tests.pipelines.test_fever import write_fixture

    claims, extra, wiki, _ = write_fixture(tmp_path)
    segment = shared_file("fever", "anserini_fever_wiki-pages_segment1.jsonl")
    got = {}
    for columnar in (False, True):
        monkeypatch.setattr(fever, "COLUMNAR", columnar)
        out = tmp_path / f"out-{columnar}"
        config = FeverConfig(claims=(str(claims), str(extra)), wiki_pages=(str(wiki), str(segment)), output=str(out))
        fever.build(config, [])
        got[columnar] = digest(out)
    assert got[True] == got[False] and got[True]["rows"] > 0


def test_parquet_wiki_pages_as_on_the_keyed_batch_path(tmp_path, monkeypatch):
    """Wiki pages in Parquet (`id`, `text`, `lines` columns, as the Hub's FEVER `wiki_pages`): the keyed-batch path
    reads them as records (`source.ReadRecordsFn`), so the Arrow path must too: the same rows, rejects and skips,
    string columns decided in Arrow, a batch of other types row by row, a broken file one reject."""
    from negminer.pipelines.fever_columns import PAGE_JSON

    monkeypatch.setattr(doc_columns, "BATCH_ROWS", 16)  # several batches per file
    filler = [
        {"id": f"Filler_{i}", "text": f"Filler {i} .", "lines": f"0\tFiller {i} zero .\n1\tOne"} for i in range(40)
    ]
    pq.write_table(
        pa.Table.from_pylist(filler[:20] + ODD_PAGES + filler[20:], schema=PAGE_JSON), tmp_path / "a.parquet"
    )
    large = pa.schema([(f.name, pa.large_string()) for f in PAGE_JSON])
    third = [
        {"id": "Plain", "text": "Third copy .", "lines": "0\tThird ."},
        {"id": "Twice", "text": "", "lines": "0\tT ."},
    ]
    pq.write_table(pa.Table.from_pylist(third, schema=large), tmp_path / "b.parquet")
    pq.write_table(pa.table({"id": [5, 6], "text": ["Number id .", "x"]}), tmp_path / "c.parquet")
    (tmp_path / "d.parquet").write_bytes(b"PAR1 not really")
    claims = tmp_path / "claims.jsonl"
    more = [claim(100 + i, [(f"Filler_{i}", 0), (f"Filler_{i}", 1)]) for i in range(0, 40, 3)]
    claims.write_text("\n".join([*ODD_CLAIMS, *more, claim(200, [("Twice", 0)])]) + "\n")
    got = {}
    for columnar in (False, True):
        monkeypatch.setattr(fever, "COLUMNAR", columnar)
        out = tmp_path / f"out-{columnar}"
        pages = tuple(str(tmp_path / f"{k}.parquet") for k in "abcd")
        fever.build(FeverConfig(claims=(str(claims),), wiki_pages=pages, output=str(out), num_shards=2), [])
        got[columnar] = digest(out)
    assert got[True] == got[False]
    reasons = {json.loads(r)[S.REJECT_REASON] for r in got[True]["rejects"]}
    assert {"duplicate_page_id", "empty_page_id", "unreadable_file", "missing_line", "missing_page"} <= reasons
    assert got[True]["rows"] > 40 // 3 * 2 and got[True]["skipped"]["empty_page"] == 4
    from negminer.pipelines import fever_columns

    calls = []
    monkeypatch.setattr(fever_columns, "page_fields", lambda r: calls.append(r.line) or page_fields(r))
    list(fever_columns.parquet_pages(str(tmp_path / "a.parquet"), {}))
    assert 0 < len(calls) < len(ODD_PAGES) // 2  # the filler and the plain odd pages are decided in Arrow


# ---------------------------------------------------------------- the columnar pieces against the Python functions


def _random_lines(rng: random.Random) -> str:
    alphabet = ["0", "1", "7", "00", "12", "\t", "\n", " ", "a", "-LRB-", "-RRB-", "\u00e9", "\u0661", "\x0b", "  "]
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))


def test_sentence_table_is_parse_wiki_lines():
    rng = random.Random(0)
    texts = [_random_lines(rng) for _ in range(3000)] + ["0\ta\n0\tb\n00\tc", "5\tx\n05\t \n", "\u00b2\tsquared"]
    table = sentence_table(pa.table({"index": list(range(len(texts))), "lines": texts}))
    got = {(i, n, s) for i, n, s in zip(*(table[c].to_pylist() for c in ("index", "sentence", "raw")), strict=True)}
    want = {(i, str(n), s) for i, t in enumerate(texts) for n, s in parse_wiki_lines(t).items()}
    assert got == want and table.num_rows == len(want)
    assert any(t.isascii() for t in texts) and any(not t.isascii() for t in texts)


TOKEN_BITS = ["a", " ", "  ", "\t", "\n", "\r", "\x0b", "\x1c", "\x1f", ".", "-", "\u00e9", "Ã©", "\u00a0"]
TOKEN_BITS += ["-LRB-", "-RRB-", "-LSB-", "-RSB-", "-LCB-", "-RCB-", "-COLON-", "LRB-", "RRB-", "COLON-", "-L", "B-"]


def _random_tokens(rng: random.Random) -> str:
    return "".join(rng.choice(TOKEN_BITS) for _ in range(rng.randint(0, 12)))


def test_untokenize_ascii_is_untokenize_ptb_where_exact():
    rng = random.Random(2)
    raw = [_random_tokens(rng) for _ in range(5000)] + ["-RRB-LRB-", "x -RRB- -LRB- y", "-LRB-  -RRB-", "a\x1c-RRB-"]
    got, exact = untokenize_ascii(pa.array(raw, pa.string()))
    got = got.to_pylist()
    assert [g for g, e in zip(got, exact, strict=True) if e] == [
        untokenize_ptb(s) for s, e in zip(raw, exact, strict=True) if e
    ]
    assert not exact[-4] and exact[-3:].all() and got[-1] == "a)"
    tokens = [i for i, s in enumerate(raw) if untokenize_ptb(s) != s and s.isascii()]
    assert exact[tokens].mean() > 0.8  # most ASCII strings with tokens are done by pyarrow


@pytest.mark.parametrize("clean", [True, False])
def test_page_positives_are_page_positive(clean):
    rng = random.Random(3)
    n = 3000
    titles = [_random_tokens(rng) if i % 3 else f"Title {i} -LRB-x-RRB-" for i in range(n)]
    texts = [_random_tokens(rng) for _ in range(n)]
    page_lines = [_random_lines(rng) for _ in range(n)]
    pages = pa.table({"index": list(range(n)), "title": titles, "text": texts, "lines": page_lines})
    got = page_positives(pages, clean)["positive"].to_pylist()
    want = []
    for title, text, ls in zip(titles, texts, page_lines, strict=True):
        p = page_positive(title, text, {} if text.strip() else parse_wiki_lines(ls), clean)
        want.append(p if p.strip() else "")
    assert got == want and "" in got


@pytest.mark.parametrize("clean", [True, False])
def test_positives_of_is_tidy_of_untokenized(clean):
    rng = random.Random(1)
    raw = [_random_tokens(rng) for _ in range(3000)]
    got = positives_of(pa.array(raw, pa.string()), clean).to_pylist()
    want = [tidy(untokenize_ptb(s), clean) for s in raw]
    assert got == [w if w.strip() else "" for w in want]
    assert "" in got and any(w != s for w, s in zip(want, raw, strict=True))


def test_decided_pages_agree_with_page_fields():
    """The pages the columnar reader decides get the key, id, text and lines that `page_fields` gives; the surely
    empty ones are `Skip("empty_page")` there."""
    objs = ODD_PAGES
    table = pa.Table.from_pylist(objs, schema=fever_schema())
    pages, keep, empty = decided_pages(table)
    kept = iter(pages.to_pylist())
    for i, obj in enumerate(objs):
        want = page_fields(Record("w", i + 1, json.dumps(obj)))
        if keep[i]:
            assert tuple(next(kept).values()) == want
        elif empty[i]:
            assert want == Skip("empty_page")
    assert keep.sum() > len(objs) // 2 and empty.sum() == 2


def fever_schema() -> pa.Schema:
    from negminer.pipelines.fever_columns import PAGE_JSON

    return PAGE_JSON


def test_reader_takes_regular_pages_with_pyarrow(tmp_path, monkeypatch):
    """Only the odd lines (and the regular ones in a run of at most lines.MIN_RUN around a line the JSON reader
    refuses) go to the per-line `page_fields`; the reader's output holds every page either way."""
    from negminer.pipelines import fever_columns

    _, wiki, _ = write_inputs(tmp_path)
    calls = []
    monkeypatch.setattr(fever_columns, "page_fields", lambda r: calls.append(r.line) or page_fields(r))
    out = list(fever_columns.ReadPageTablesFn().process(str(wiki)))
    tables = [fever_columns.from_ipc(t) for _, t in (o for o in out if isinstance(o, tuple))]
    ids = pa.concat_tables(tables)["id"].to_pylist()
    kept = [page_fields(Record("w", 1, json.dumps(p))) for p in ODD_PAGES]
    kept = [k for k in kept if isinstance(k, tuple) and not isinstance(k, Skip)]
    assert len(ids) == FILLER + len(kept) + 3  # and Surrogate, Twice_b, Crlf of ODD_LINES
    assert len(calls) <= lines.MIN_RUN + len(ODD_LINES) and len(ids) - len(calls) >= FILLER // 2
    table = pa.Table.from_pylist(ODD_PAGES, schema=fever_schema())
    _, keep, empty = decided_pages(table)
    assert keep.sum() > len(ODD_PAGES) // 2
    assert not set(calls) & {61 + i for i in range(len(ODD_PAGES)) if keep[i] or empty[i]}  # line 61: ODD_PAGES[0]


def test_pages_no_evidence_names_travel_as_stubs():
    from negminer.pipelines.fever_columns import PAGE, evidence_keys, stubs_unless
    from negminer.pipelines.qrel_columns import Judged
    from negminer.pipelines.tables import to_ipc

    pages = pa.Table.from_pylist(
        [
            {"key": k, "id": k, "text": f"{k} text", "lines": f"0\t{k}", "path": "w", "line": i}
            for i, k in enumerate("abcd")
        ],
        schema=PAGE,
    )
    evidence = pa.table({"key": ["b", "d", "b", "z"]})
    named = Judged([evidence_keys((0, to_ipc(evidence)))])
    got = {r["key"]: (r["text"], r["lines"], r["line"]) for r in stubs_unless(pages, named).to_pylist()}
    assert got == {"a": (None, None, 0), "b": ("b text", "0\tb", 1), "c": (None, None, 2), "d": ("d text", "0\td", 3)}


def test_has_graphic_is_an_ascii_printable_other_than_space():
    from negminer.pipelines.fever_columns import has_graphic

    rng = random.Random(4)
    bits = ["", " ", "\t", "a", "~", "!", "\u00e9", "\u3000", "\x7f", "\x1f", "\u00a0"]
    strings = [None] + ["".join(rng.choice(bits) for _ in range(rng.randint(0, 4))) for _ in range(2000)]
    arr = pa.array(strings, pa.string()).slice(1)  # an offset into the buffers
    want = [any("!" <= c <= "~" for c in s) for s in strings[1:]]
    assert has_graphic(arr).tolist() == want and any(want) and not all(want)
    assert has_graphic(pa.array([None, "x"], pa.string())).tolist() == [False, True]
