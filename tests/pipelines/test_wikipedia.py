"""Wikipedia pipeline on the real excerpts: pages in, redirects out, no markup, counts computed from the raw files."""

from __future__ import annotations

import bz2
import collections
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from negminer.pipelines import io, wikidump, wikipedia
from negminer.pipelines import schema as S
from negminer.pipelines.transforms.dedup import DedupConfig
from negminer.pipelines.transforms.quality import QualityConfig
from tests.conftest import shared_file

DUMP = ("wikipedia", "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2")
TABLES = ("wikipedia", "enwiki-table-markup.xml.bz2")
EXTRACTOR = ("wikipedia", "wikiextractor_wiki_00")
# Wiki markup or HTML that must not survive into any text.
MARKUP = re.compile(
    r"\[\[|\]\]|\{\{|\}\}|\{\||\|\}|\|-|''|<[a-zA-Z/!][^>]*>|&[a-z]+;|__[A-Z]+__|^=+|=+$|thumb\||\bref\b\s*="
)
DISAMBIG = re.compile(r"\{\{\s*(disambiguation|disambig|dab|hndis|geodis|surname|given name)\s*[|}]", re.IGNORECASE)
HEADING = re.compile(r"(?m)^(={2,6})(.+?)\1\s*$")


def raw_pages(path: Path) -> list[dict]:
    """Every <page> of a dump with plain ElementTree over the whole (small) file."""
    root = ET.fromstring(bz2.decompress(path.read_bytes()))
    ns = {"m": root.tag[1:].split("}")[0]}
    return [
        {
            "id": pg.findtext("m:id", namespaces=ns),
            "title": pg.findtext("m:title", namespaces=ns),
            "ns": pg.findtext("m:ns", namespaces=ns),
            "redirect": pg.find("m:redirect", ns) is not None,
            "revision": pg.findtext("m:revision/m:id", namespaces=ns),
            "text": pg.findtext("m:revision/m:text", namespaces=ns) or "",
            "file": path.name,
        }
        for pg in root.findall("m:page", ns)
    ]


def is_article(p: dict) -> bool:
    return (
        p["ns"] == "0"
        and not p["redirect"]
        and not p["title"].endswith("(disambiguation)")
        and not DISAMBIG.search(p["text"])
    )


def run(tmp: Path, inputs: list[Path], name: str = "out", **kw) -> tuple[dict, list[dict]]:
    kw.setdefault("quality", QualityConfig.off())
    kw.setdefault("dedup", DedupConfig(near=False))
    cfg = wikipedia.WikipediaConfig(inputs=tuple(str(p) for p in inputs), output=str(tmp / name), **kw)
    manifest = wikipedia.build(cfg, [])
    return manifest, list(io.iter_rows(str(tmp / name)))


def prov(row: dict) -> dict:
    return json.loads(row[S.PROVENANCE])


@pytest.fixture(scope="module")
def dump_run(tmp_path_factory):
    dump, tables = shared_file(*DUMP), shared_file(*TABLES)
    manifest, rows = run(tmp_path_factory.mktemp("wiki"), [dump, tables])
    return raw_pages(dump) + raw_pages(tables), manifest, rows


def test_expected_pages_in_redirects_and_disambiguation_out(dump_run):
    pages, manifest, rows = dump_run
    articles = {(p["file"], p["id"]) for p in pages if is_article(p)}
    redirects = {(p["file"], p["id"]) for p in pages if p["ns"] == "0" and p["redirect"]}
    seen = {(Path(prov(r)["file"]).name, prov(r)["page_id"]) for r in rows}
    assert seen <= articles
    assert len(articles - seen) == manifest["skipped"].get("page:no_pairs", 0) <= 2
    assert not seen & redirects
    skipped = manifest["skipped"]
    assert skipped["page:redirect"] == len(redirects)
    assert skipped.get("page:namespace", 0) == sum(p["ns"] != "0" for p in pages)
    assert skipped["page:disambiguation"] == sum(
        p["ns"] == "0" and not p["redirect"] and not is_article(p) for p in pages
    )
    assert manifest["rejects_total"] == 0
    # keep-rates per pair type and filter are in the manifest: rows kept + every filter/dedup drop = candidates
    for pt, rate in manifest["keep_rates"].items():
        assert rate["rows"] == manifest["counts"]["pair_type"].get(pt, 0)
        drops = sum(n for k, n in skipped.items() if k.startswith(("filter:", "dedup:")) and k.endswith(":" + pt))
        assert rate["candidates"] == rate["rows"] + drops


def test_no_markup_left_in_any_text(dump_run):
    _, _, rows = dump_run
    bad = [t for r in rows for t in (r[S.QUERY], r[S.POSITIVE]) if MARKUP.search(t)]
    assert not bad, bad[:5]
    table_rows = [r for r in rows if prov(r)["file"].endswith(TABLES[1])]
    assert table_rows and not any("|" in r[S.POSITIVE] for r in table_rows)


def test_provenance_titles_headings_and_revisions_match_the_raw_dump(dump_run):
    pages, _, rows = dump_run
    by_id = {(p["file"], p["id"]): p for p in pages}
    titles = collections.Counter()
    matched = total = 0
    for r in rows:
        pv = prov(r)
        page = by_id[(Path(pv["file"]).name, pv["page_id"])]
        assert pv["revision_id"] == page["revision"] and pv["title"] == page["title"]
        if r[S.PAIR_TYPE] == "title-lead":
            titles[(pv["file"], pv["page_id"])] += 1
            assert r[S.QUERY] == page["title"] and "section" not in pv
        if r[S.PAIR_TYPE] == "heading-paragraph":
            raw_headings = {re.sub(r"\W+", "", h).casefold() for _, h in HEADING.findall(page["text"])}
            path = r[S.QUERY].split(" › ")
            assert path[0] == page["title"] and " › ".join(path[1:]) == pv["section"]
            total += len(path) - 1
            matched += sum(re.sub(r"\W+", "", h).casefold() in raw_headings for h in path[1:])
    assert max(titles.values()) == 1
    assert matched >= 0.95 * total > 0


def test_heading_pairs_bounded_by_raw_headings(dump_run):
    pages, manifest, rows = dump_run
    raw = {(p["file"], p["id"]): len(HEADING.findall(p["text"])) for p in pages if is_article(p)}
    got = collections.Counter(
        (Path(prov(r)["file"]).name, prov(r)["page_id"]) for r in rows if r[S.PAIR_TYPE] == "heading-paragraph"
    )
    assert all(n <= raw[pid] for pid, n in got.items())
    # Sections that are only lists (references, external links, see also) give no pair; most others do.
    assert sum(got.values()) >= 0.4 * sum(raw[pid] for pid in got)
    assert manifest["counts"]["pair_type"]["heading-paragraph"] == sum(got.values())


def extractor_docs(path: Path) -> list[tuple[str, str, list[str]]]:
    """(id, title, paragraphs) per <doc>, read with plain string handling: one paragraph per line.

    WikiExtractor leaves some markup: tags are removed, and a line still holding wiki markup is not text.
    """
    docs = []
    for block in path.read_text(encoding="utf-8").split("<doc ")[1:]:
        head, _, body = block.partition(">\n")
        attrs = dict(re.findall(r'(\w+)="([^"]*)"', head))
        lines = [re.sub(r"<[^>]+>", "", ln).strip() for ln in body.split("</doc>")[0].split("\n")]
        if lines and lines[0] == attrs["title"]:
            lines = lines[1:]
        lines = [ln for ln in lines if ln and not re.search(r"\[\[|\]\]|\{\{|\}\}|\{\||\|\}", ln)]
        docs.append((attrs["id"], attrs["title"], lines))
    return docs


def test_wikiextractor_pair_counts(tmp_path):
    path = shared_file(*EXTRACTOR)
    docs = [d for d in extractor_docs(path) if not d[1].endswith("(disambiguation)")]
    manifest, rows = run(tmp_path, [path])
    expected = collections.Counter()
    unique = set()
    for _, _, paras in docs:
        if paras:
            unique.add(("title-lead", " ".join(paras[0].split()).casefold()))
        for p in paras[1:]:
            unique.add(("adjacent-paragraph", " ".join(p.split()).casefold()))
    for pt, _ in unique:
        expected[pt] += 1
    assert manifest["counts"]["pair_type"] == dict(expected)
    assert {prov(r)["page_id"] for r in rows} == {d[0] for d in docs if d[2]}
    assert not any(MARKUP.search(r[S.POSITIVE]) for r in rows)


def make_dump(pages_xml: list[bytes], header: bytes, per_stream: int) -> tuple[bytes, bytes]:
    """(single-stream, multistream) .bz2 of the same XML: header, streams of `per_stream` pages, footer."""
    chunks = [header] + [b"".join(pages_xml[i : i + per_stream]) for i in range(0, len(pages_xml), per_stream)]
    chunks.append(b"</mediawiki>\n")
    return bz2.compress(b"".join(chunks)), b"".join(bz2.compress(c) for c in chunks)


@pytest.fixture(scope="module")
def small_dumps(tmp_path_factory):
    xml = bz2.decompress(shared_file(*DUMP).read_bytes())
    starts = [m.start() for m in re.finditer(rb"  <page>", xml)]
    header = xml[: starts[0]]
    pages = [xml[a:b] for a, b in zip(starts[:40], starts[1:41], strict=True)]
    single, multi = make_dump(pages, header, per_stream=8)
    d = tmp_path_factory.mktemp("dumps")
    (d / "single.xml.bz2").write_bytes(single)
    (d / "multi.xml.bz2").write_bytes(multi)
    return d / "single.xml.bz2", d / "multi.xml.bz2", multi


def test_multistream_splits_into_units_with_the_same_pages(small_dumps):
    single, multi, _ = small_dumps
    units = wikidump.dump_units(str(multi), min_unit_bytes=1)
    assert len(units) == 1 + 5 + 1  # header, 40 pages / 8, footer
    assert units[-1].last and not any(u.last for u in units[:-1])
    per_unit = [[p.page_id for p in wikidump.read_unit(u)] for u in units]
    whole = [p.page_id for p in wikidump.read_unit(wikidump.dump_units(str(single), 1)[0])]
    assert [pid for ids in per_unit for pid in ids] == whole and len(whole) == 40
    assert [len(ids) for ids in per_unit] == [0, 8, 8, 8, 8, 8, 0]
    assert len(wikidump.dump_units(str(multi), min_unit_bytes=10**9)) == 1


def test_multistream_and_single_stream_give_identical_bytes_twice(small_dumps, tmp_path):
    single, multi, _ = small_dumps
    cfg = {"quality": QualityConfig(), "dedup": DedupConfig(), "unit_mb": 1e-6}
    _, rows_single = run(tmp_path, [single], "single", **cfg)
    run(tmp_path, [multi], "a", **cfg)
    run(tmp_path, [multi], "b", **cfg)
    shard = "train-00000-of-00001.parquet"
    assert (tmp_path / "a" / shard).read_bytes() == (tmp_path / "b" / shard).read_bytes()
    rows_multi = list(io.iter_rows(str(tmp_path / "a")))
    strip = [(r[S.ID], json.loads(r[S.PROVENANCE])["page_id"]) for r in rows_multi]
    assert strip == [(r[S.ID], json.loads(r[S.PROVENANCE])["page_id"]) for r in rows_single] and strip


def test_truncated_and_malformed_dumps_go_to_rejects(small_dumps, tmp_path):
    _, multi_path, multi = small_dumps
    units = wikidump.dump_units(str(multi_path), min_unit_bytes=1)
    cut = units[3].start + (units[3].end - units[3].start) // 2
    (tmp_path / "cut.xml.bz2").write_bytes(multi[:cut])
    broken = bz2.compress(bz2.decompress(multi[units[0].start : units[2].end]).replace(b"<ns>", b"<ns x=>", 3))
    (tmp_path / "bad.xml.bz2").write_bytes(broken)
    manifest, rows = run(tmp_path, [tmp_path / "cut.xml.bz2", tmp_path / "bad.xml.bz2"], unit_mb=1e-6)
    rejects = io.read_rejects(str(tmp_path / "out")).to_pylist()
    reasons = {(Path(r["source_file"]).name, r["reason"], r["offset"]) for r in rejects}
    assert reasons == {("cut.xml.bz2", "truncated_bz2", units[3].start), ("bad.xml.bz2", "malformed_xml", 0)}
    pages_before_cut = {p.page_id for u in units[:3] for p in wikidump.read_unit(u)}
    seen = {prov(r)["page_id"] for r in rows if prov(r)["file"].endswith("cut.xml.bz2")}
    assert seen and seen <= pages_before_cut


def test_hugging_face_layout_parquet_and_jsonl(tmp_path):
    docs = extractor_docs(shared_file(*EXTRACTOR))[:10]
    records = [
        {"id": i, "url": f"https://en.wikipedia.org/wiki?curid={i}", "title": t, "text": "\n\n".join([t, *p])}
        for i, t, p in docs
    ]
    pq.write_table(pa.Table.from_pylist(records[:5]), tmp_path / "part-0.parquet")
    lines = [json.dumps(r) for r in records[5:]] + [json.dumps({"id": "x", "title": "No text"}), "{not json"]
    (tmp_path / "part-1.jsonl").write_text("\n".join(lines) + "\n")
    manifest, rows = run(tmp_path, [tmp_path / "part-0.parquet", tmp_path / "part-1.jsonl"])
    leads = {prov(r)["page_id"]: r for r in rows if r[S.PAIR_TYPE] == "title-lead"}
    assert set(leads) == {i for i, _, p in docs if p}
    for i, title, paras in docs:
        if paras:
            assert leads[i][S.QUERY] == title and leads[i][S.POSITIVE] == " ".join(paras[0].split())
    assert manifest["rejects"] == {"malformed_json": 1, "missing_field:text": 1}


def test_config_validation():
    with pytest.raises(ValueError, match="pair types"):
        wikipedia.WikipediaConfig(inputs=("x",), output="o", pair_types=("title-body",))
    with pytest.raises(ValueError, match="--format"):
        wikipedia.WikipediaConfig(inputs=("x",), output="o", input_format="html")


def test_cli_flags_reach_the_pipeline(tmp_path, capsys):
    from negminer import cli

    path = shared_file(*EXTRACTOR)
    out = tmp_path / "cli"
    argv = ["build", "wikipedia", "--input", str(path), "--output", str(out), "--pair-types", "title-lead"]
    assert cli.main([*argv, "--languages", "", "--min-positive-chars", "200", "--no-near-dedup"]) == 0
    manifest = io.read_manifest(str(out))
    assert set(manifest["counts"]["pair_type"]) == {"title-lead"}
    assert manifest["config"]["quality"]["min_positive_chars"] == 200 and not manifest["config"]["dedup"]["near"]
    assert all(len(r[S.POSITIVE]) >= 200 for r in io.iter_rows(str(out)))
    assert cli.main([*argv[:-1], "title-body"]) == 2  # not a Wikipedia pair type: one clear error line
    assert "pair types" in capsys.readouterr().err
