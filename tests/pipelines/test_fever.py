"""`negminer build fever`: parse units, paper_dev with a written wiki-pages fixture, the real wiki segment, rejects."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from negminer.pipelines import io
from negminer.pipelines import schema as S
from negminer.pipelines.fever import FeverConfig, build, page_title, parse_claim, parse_page, parse_wiki_lines
from negminer.pipelines.source import Record
from negminer.pipelines.transforms.tabular import Skip
from tests.conftest import shared_file

# A few evidence pages of paper_dev; the test writes its own sentences for them (never the real page text).
FIXTURE_PAGES = ("Soul_Food_-LRB-film-RRB-", "Telemundo", "Damon_Albarn", "Hispanic_and_Latino_Americans")
DROPPED_LINE = ("Telemundo", 4)  # referenced by paper_dev, left out of the fixture to provoke `missing_line`


def ws(text: str) -> str:
    return " ".join(text.split())


def sentence(page: str, n: int) -> str:
    return f"Test sentence {n} about {page_title(page)} -LRB- written for negminer -RRB- ."


def readable(page: str, n: int) -> str:
    return f"Test sentence {n} about {page_title(page)} (written for negminer) ."


def claims_of(path) -> list[tuple[int, dict]]:
    out = []
    for n, line in enumerate(open(path, encoding="utf-8"), start=1):
        try:
            out.append((n, json.loads(line)))
        except json.JSONDecodeError:
            continue  # the one broken line of the fixture
    return out


def referenced_lines(claims_path) -> dict[str, set[int]]:
    refs: dict[str, set[int]] = {}
    for _, c in claims_of(claims_path):
        for s in c["evidence"]:
            for _, _, page, line in s:
                if page in FIXTURE_PAGES:
                    refs.setdefault(page, set()).add(line)
    return refs


def write_fixture(tmp_path) -> tuple:
    claims = shared_file("fever", "paper_dev.jsonl")
    refs = referenced_lines(claims)
    assert set(refs) == set(FIXTURE_PAGES) and DROPPED_LINE[1] in refs[DROPPED_LINE[0]]
    pages = {p: sorted(refs[p] - ({DROPPED_LINE[1]} if p == DROPPED_LINE[0] else set())) for p in FIXTURE_PAGES}
    wiki = tmp_path / "wiki"
    wiki.mkdir()
    with open(wiki / "wiki-001.jsonl", "w", encoding="utf-8") as f:
        for page, lines in pages.items():
            # anchors after the sentence, and one anchor with a newline inside, as in the real dump
            body = (
                "\n".join(f"{n}\t{sentence(page, n)}\tanchor\tLink_{n}" for n in lines) + "\nnewline anchor\tX\n99\t"
            )
            f.write(json.dumps({"id": page, "text": " ".join(sentence(page, n) for n in lines), "lines": body}) + "\n")
    extra = tmp_path / "claims_extra.jsonl"
    extra.write_text(
        json.dumps(
            {
                "id": 1,
                "label": "SUPPORTS",
                "claim": "A claim written for the test.",
                "evidence": [[[0, 0, "Telemundo", 0]]],
            }
        )
        + "\n{broken json\n"
        + json.dumps({"id": 2, "label": "SUPPORTS", "claim": "Odd evidence.", "evidence": [[[0, 0, None, 3]]]})
        + "\n"
        + json.dumps({"id": 3, "label": "MAYBE", "claim": "Unknown label.", "evidence": []})
        + "\n"
    )
    return claims, extra, wiki, pages


def expected(claim_files, pages: dict[str, list[int]], positive: str) -> dict:
    """Rows and evidence rejects computed from the raw claims in plain Python."""
    keys, missing_page, missing_line, nei = set(), 0, 0, 0
    for path in claim_files:
        for _, c in claims_of(path):
            if c.get("label") == "NOT ENOUGH INFO":
                nei += 1
                continue
            entries = [e for s in c.get("evidence", []) for e in s]
            if c.get("label") not in ("SUPPORTS", "REFUTES") or any(e[2] is None for e in entries):
                continue
            distinct = {(e[2], e[3] if positive == "sentence" else None) for e in entries}
            for page, line in distinct:
                if page not in pages:
                    missing_page += 1
                elif positive == "sentence" and line not in pages[page]:
                    missing_line += 1
                else:
                    pos = readable(page, line) if positive == "sentence" else page
                    keys.add((ws(c["claim"]), pos))
    return {"rows": len(keys), "missing_page": missing_page, "missing_line": missing_line, "nei": nei, "keys": keys}


def segment_expected() -> tuple[int, int]:
    empty_id = empty_text = 0
    for line in open(shared_file("fever", "anserini_fever_wiki-pages_segment1.jsonl"), encoding="utf-8"):
        page = json.loads(line)
        if not page["id"]:
            empty_id += 1
        elif not page["text"].strip():
            empty_text += 1
    return empty_id, empty_text


# ---------------------------------------------------------------- pure parsing


def test_page_title():
    assert page_title("Soul_Food_-LRB-film-RRB-") == "Soul Food (film)"
    assert page_title("Hispanic_and_Latino_Americans") == "Hispanic and Latino Americans"


def test_parse_wiki_lines_of_the_real_segment():
    pages = [json.loads(line) for line in open(shared_file("fever", "anserini_fever_wiki-pages_segment1.jsonl"))]
    cumberland = next(p for p in pages if p["id"] == "Cumberland_Bandits")
    lines = parse_wiki_lines(cumberland["lines"])
    assert sorted(lines) == [0, 1]  # the anchor continued on a new line is not a line; line 2 is empty
    assert lines[1] == "They play in the National Capital Junior Hockey League ."


def test_parse_claim_and_page():
    nei = json.dumps({"id": 9, "label": "NOT ENOUGH INFO", "claim": "x", "evidence": [[[1, None, None, None]]]})
    assert parse_claim(Record("c", 1, nei)) == Skip("not_enough_info")
    assert parse_claim(Record("c", 2, "{oops")) == "malformed_json"
    ok = json.dumps(
        {"id": 7, "label": "REFUTES", "claim": "c", "evidence": [[[1, 2, "P", 0]], [[3, 4, "P", 0], [5, 6, "Q", 2]]]}
    )
    assert sorted((k, e.line) for k, e in parse_claim(Record("c", 3, ok))) == [("P", 0), ("Q", 2)]
    assert [k for k, _ in parse_claim(Record("c", 3, ok), positive="page")] == ["P", "Q"]
    assert parse_page(Record("w", 1, json.dumps({"id": "", "text": "", "lines": ""}))) == "empty_page_id"
    assert parse_page(Record("w", 2, json.dumps({"id": "E", "text": "", "lines": ""}))) == Skip("empty_page")


def test_config_validation():
    with pytest.raises(ValueError, match="--positive"):
        FeverConfig(claims=("c",), wiki_pages=("w",), output="o", positive="para")
    with pytest.raises(ValueError, match="required"):
        FeverConfig(claims=(), wiki_pages=("w",), output="o")


# ---------------------------------------------------------------- paper_dev + fixture pages + the real segment


@pytest.mark.parametrize("positive", ["sentence", "page"])
def test_paper_dev_with_fixture_pages_and_real_segment(positive, tmp_path):
    claims, extra, wiki, pages = write_fixture(tmp_path)
    segment = shared_file("fever", "anserini_fever_wiki-pages_segment1.jsonl")
    config = FeverConfig(
        claims=(str(claims), str(extra)),
        wiki_pages=(str(wiki), str(segment)),
        output=str(tmp_path / "out"),
        positive=positive,
    )
    build(config, [])
    rows = list(io.iter_rows(str(tmp_path / "out")))
    reasons = Counter(io.read_rejects(str(tmp_path / "out")).column(S.REJECT_REASON).to_pylist())
    manifest = io.read_manifest(str(tmp_path / "out"))
    want = expected([claims, extra], pages, positive)
    empty_id, empty_text = segment_expected()
    assert len(rows) == want["rows"] == manifest["rows"] > 0
    if positive == "sentence":
        assert {(r[S.QUERY], r[S.POSITIVE]) for r in rows} == want["keys"]
        assert want["missing_line"] > 0
        soul = next(r for r in rows if json.loads(r[S.PROVENANCE])["page"] == "Soul_Food_-LRB-film-RRB-")
        assert json.loads(soul[S.PROVENANCE])["title"] == "Soul Food (film)"
        assert "(written for negminer)" in soul[S.POSITIVE]  # bracket tokens in the sentence became brackets
    else:
        assert {(r[S.QUERY], json.loads(r[S.PROVENANCE])["page"]) for r in rows} == want["keys"]
        soul = next(r for r in rows if r[S.POSITIVE_ID] == "Soul_Food_-LRB-film-RRB-")
        assert soul[S.POSITIVE].startswith("Soul Food (film) Test sentence 0 about Soul Food (film)")
    assert reasons == Counter(
        {
            "missing_page": want["missing_page"],
            **({"missing_line": want["missing_line"]} if want["missing_line"] else {}),
            "empty_page_id": empty_id,
            "malformed_json": 1,
            "malformed_evidence": 1,
            "unknown_label": 1,
        }
    )
    assert manifest["skipped"] == {"not_enough_info": want["nei"], "empty_page": empty_text}
    assert all(r[S.SOURCE] == "fever" and r[S.PAIR_TYPE] == "fact" for r in rows)
    assert any(r[S.QUERY] == "A claim written for the test." for r in rows)


def test_remaining_reject_reasons_with_good_rows_kept(tmp_path):
    def claim(cid, **kw) -> str:
        return json.dumps(
            {"id": cid, "label": "SUPPORTS", "claim": f"Claim {cid}.", "evidence": [[[0, 0, "A", 0]]], **kw}
        )

    (tmp_path / "claims.jsonl").write_bytes(
        "\n".join(
            [
                claim(1),
                claim(2, evidence=[[[0, 0, "A_-LRB-x-RRB-", 1]]]),
                claim(3, evidence=[]),  # no_evidence
                claim(4, claim=None),  # missing_field:claim
                claim(5, claim="   "),  # empty_text
                "[1, 2]",  # json_not_an_object
            ]
        ).encode()
        + b'\n{"id": 6, "claim": "bad \xff bytes"}\n'  # undecodable_bytes
    )
    pages = [
        {"id": "A", "text": "Alpha .", "lines": "0\tAlpha is first .\tanchor"},
        {"id": "A", "text": "A second page with the same id .", "lines": "0\tOther ."},  # duplicate_page_id
        {"id": "A_-LRB-x-RRB-", "text": "x", "lines": "0\tZero .\n1\tOne -LRB- 1 -RRB- ."},
        {"id": "B", "text": 7, "lines": ""},  # not_a_string:text
    ]
    (tmp_path / "wiki.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pages))
    config = FeverConfig(
        claims=(str(tmp_path / "claims.jsonl"),),
        wiki_pages=(str(tmp_path / "wiki.jsonl"),),
        output=str(tmp_path / "o"),
    )
    build(config, [])
    rows = sorted((r[S.QUERY_ID], r[S.POSITIVE_ID], r[S.POSITIVE]) for r in io.iter_rows(str(tmp_path / "o")))
    assert rows == [("1", "A:0", "Alpha is first ."), ("2", "A_-LRB-x-RRB-:1", "One (1) .")]
    reasons = Counter(io.read_rejects(str(tmp_path / "o")).column(S.REJECT_REASON).to_pylist())
    undecodable = [r for r in reasons if r.startswith("undecodable_bytes")]
    assert (
        reasons
        == Counter(
            {
                "no_evidence": 1,
                "missing_field:claim": 1,
                "empty_text": 1,
                "json_not_an_object": 1,
                "duplicate_page_id": 1,
                "not_a_string:text": 1,
                **{u: 1 for u in undecodable},
            }
        )
        and len(undecodable) == 1
    )
