"""Webcrawl pipeline on real WARC/WET files: records counted by a plain parser, charsets, no HTML left, rejects."""

from __future__ import annotations

import collections
import gzip
import html as htmllib
import json
import re
from pathlib import Path

import pytest

from negminer.pipelines import html, io, webcrawl
from negminer.pipelines import schema as S
from negminer.pipelines.transforms.dedup import DedupConfig
from negminer.pipelines.transforms.quality import QualityConfig
from tests.conftest import shared_file

CC = "commoncrawl"
WARCS = (
    "resiliparse-warcfile.warc.gz",
    "whirlwind.warc.gz",
    "whirlwind.warc.wet.gz",
    "dolma_wget_sample-0000.warc.gz",
    "warcio-example.warc.gz",
    "warcio-example-iana.org-chunked.warc",
)
HTML_LEFT = re.compile(r"<[a-zA-Z/!][^>]*>|&(?:[a-z]+|#\d+);")


def warc_records(path: Path) -> list[tuple[int, dict[str, str], bytes]]:
    """(offset in the uncompressed stream, lower-cased WARC headers, block) of every record, by hand."""
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)  # concatenated members decompress as one stream
    out, pos = [], 0
    while pos < len(data):
        end = data.index(b"\r\n\r\n", pos)
        lines = data[pos:end].decode("utf-8").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
        n = int(headers["content-length"])
        out.append((pos, headers, data[end + 4 : end + 4 + n]))
        pos = end + 4 + n
        while data[pos : pos + 2] == b"\r\n":
            pos += 2
    return out


def http_parts(block: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = block.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:] if ":" in ln)}
    return int(lines[0].split()[1]), headers, body


def usable(headers: dict[str, str], block: bytes) -> bool:
    """A record the pipeline should turn into a document: a WET conversion or a 200 HTML response."""
    if headers["warc-type"] == "conversion":
        return True
    if headers["warc-type"] != "response":
        return False
    status, http, _ = http_parts(block)
    return status == 200 and http.get("content-type", "").split(";")[0].strip().lower() in html.HTML_TYPES


def run(tmp: Path, inputs: list[Path], name: str = "out", **kw) -> tuple[dict, list[dict]]:
    kw.setdefault("quality", QualityConfig.off())
    kw.setdefault("dedup", DedupConfig(near=False))
    cfg = webcrawl.WebcrawlConfig(inputs=tuple(str(p) for p in inputs), output=str(tmp / name), **kw)
    manifest = webcrawl.build(cfg, [])
    return manifest, list(io.iter_rows(str(tmp / name)))


def prov(row: dict) -> dict:
    return json.loads(row[S.PROVENANCE])


@pytest.fixture(scope="module")
def crawl_run(tmp_path_factory):
    files = [shared_file(CC, f) for f in WARCS]
    manifest, rows = run(tmp_path_factory.mktemp("crawl"), files)
    return {f.name: warc_records(f) for f in files}, manifest, rows


def test_every_record_counted_and_usable_pages_in(crawl_run):
    records, manifest, rows = crawl_run
    all_records = [r for recs in records.values() for r in recs]
    types = collections.Counter(h["warc-type"] for _, h, _ in all_records)
    skipped = manifest["skipped"]
    for t in ("warcinfo", "request", "metadata", "revisit", "resource"):
        assert skipped.get(f"record:{t}", 0) == types[t], t
    expected = {h["warc-record-id"] for _, h, b in all_records if usable(h, b)}
    seen = {prov(r)["record_id"] for r in rows}
    not_html = sum(h["warc-type"] == "response" and not usable(h, b) for _, h, b in all_records)
    assert seen <= expected
    assert len(expected - seen) == skipped.get("record:no_text", 0) + skipped.get("page:no_pairs", 0)
    assert len(seen) >= 0.8 * len(expected)
    assert (
        sum(v for k, v in skipped.items() if k.startswith("record:http_status") or k == "record:not_html") == not_html
    )
    assert manifest["rejects_total"] == 0


def test_provenance_urls_dates_and_titles(crawl_run):
    records, _, rows = crawl_run
    by_id = {h["warc-record-id"]: (h, b) for recs in records.values() for _, h, b in recs}
    for r in rows:
        pv = prov(r)
        headers, block = by_id[pv["record_id"]]
        assert pv["url"] == headers["warc-target-uri"].strip("<>") and pv["crawl_date"] == headers["warc-date"]
        if r[S.PAIR_TYPE] == "title-body" and headers["warc-type"] == "conversion":
            assert r[S.QUERY] == " ".join(block.decode("utf-8").split("\n")[0].split())
    titles = [
        r for r in rows if r[S.PAIR_TYPE] == "title-body" and prov(r)["url"].startswith("https://maria-antoniak")
    ]
    for r in titles:  # the <title> element, read with a regex on the raw bytes
        _, _, body = http_parts(by_id[prov(r)["record_id"]][1])
        raw_title = re.search(rb"<title>(.*?)</title>", body, re.DOTALL).group(1).decode("utf-8")
        assert r[S.QUERY] == " ".join(htmllib.unescape(raw_title).split())
    assert titles


def test_no_html_left_and_non_utf8_pages_decoded(crawl_run):
    records, _, rows = crawl_run
    bad = [t for r in rows for t in (r[S.QUERY], r[S.POSITIVE]) if HTML_LEFT.search(t) or "\ufffd" in t]
    assert not bad, bad[:5]
    by_url = collections.defaultdict(list)
    for r in rows:
        by_url[prov(r)["url"]].append(r)
    # 01spb.ru is served as windows-1251: its text must come out as Cyrillic found in the cp1251-decoded body.
    (block,) = [
        b
        for _, h, b in records["resiliparse-warcfile.warc.gz"]
        if h.get("warc-target-uri") == "http://01spb.ru/company/" and h["warc-type"] == "response"
    ]
    _, headers, body = http_parts(block)
    assert "windows-1251" in headers["content-type"].lower()
    page = " ".join(htmllib.unescape(body.decode("cp1251")).split())
    rows_ru = by_url["http://01spb.ru/company/"]
    assert rows_ru and all(prov(r)["charset"] == "cp1251" for r in rows_ru)
    for r in rows_ru:
        assert re.search("[а-яА-Я]", r[S.POSITIVE])
        assert " ".join(r[S.POSITIVE].split()[:4]) in page
    # A GBK page without a declared charset: detected, and its Chinese text is in the gb18030-decoded body.
    gbk = [r for r in rows if prov(r).get("charset") in ("gbk", "gb18030")]
    assert gbk and any(re.search("[\u4e00-\u9fff]", r[S.POSITIVE]) for r in gbk)


def test_default_filters_keep_english_only(tmp_path):
    manifest, rows = run(tmp_path, [shared_file(CC, "resiliparse-warcfile.warc.gz"), shared_file(CC, WARCS[3])],
                         quality=QualityConfig(), dedup=DedupConfig())  # fmt: skip
    assert rows and manifest["skipped"]["filter:language:adjacent-paragraph"] > 0
    import py3langid

    pages = collections.defaultdict(list)
    for r in rows:
        pages[prov(r)["url"]].append(r[S.POSITIVE])
    # language is decided per page (a French quotation inside an English page stays)
    assert all(py3langid.classify(" ".join(texts))[0] == "en" for texts in pages.values())


def test_deterministic_shards(crawl_run, tmp_path):
    files = [shared_file(CC, f) for f in WARCS[:4]]
    run(tmp_path, files, "a", quality=QualityConfig(languages=()), dedup=DedupConfig())
    run(tmp_path, list(reversed(files)), "b", quality=QualityConfig(languages=()), dedup=DedupConfig())
    shard = "train-00000-of-00001.parquet"
    assert (tmp_path / "a" / shard).read_bytes() == (tmp_path / "b" / shard).read_bytes()


def test_truncated_and_malformed_records_go_to_rejects(tmp_path):
    src = shared_file(CC, "dolma_wget_sample-0000.warc.gz")
    data = gzip.decompress(src.read_bytes())
    recs = warc_records(src)
    responses = [(off, h, b) for off, h, b in recs if h["warc-type"] == "response"]
    # 1. cut in the middle of the 3rd response
    off3, _, block3 = responses[2]
    (tmp_path / "cut.warc").write_bytes(data[: off3 + 600 + len(block3) // 2])
    # 2. a broken HTTP status line (same length) in the 2nd response; 3. an unparsable WARC header later on
    off2, h2, block2 = responses[1]
    status_line = block2.split(b"\r\n", 1)[0]
    bad = data.replace(block2, block2.replace(status_line, b"X" * len(status_line), 1), 1)
    off5 = responses[4][0]
    head5 = bad[off5 : bad.index(b"\r\n\r\n", off5)]
    bad = bad[:off5] + head5.replace(b"Content-Length: ", b"Content-Length: x") + bad[off5 + len(head5) :]
    (tmp_path / "bad.warc").write_bytes(bad)
    manifest, rows = run(tmp_path, [tmp_path / "cut.warc", tmp_path / "bad.warc"])
    rejects = {
        (Path(r["source_file"]).name, r["reason"], r["offset"])
        for r in io.read_rejects(str(tmp_path / "out")).to_pylist()
    }
    # FastWARC reads the record with the bad Content-Length as empty (no HTTP status line), then cannot
    # parse what follows as a header: both are reported at that record, and the file ends there.
    assert rejects == {
        ("cut.warc", "truncated_record", off3),
        ("bad.warc", "malformed_http:no_status_line", off2),
        ("bad.warc", "malformed_http:no_status_line", off5),
        ("bad.warc", "malformed_warc_header", off5),
    }
    got = {prov(r)["record_id"] for r in rows if prov(r)["file"].endswith("bad.warc")}
    assert h2["warc-record-id"] not in got and responses[0][1]["warc-record-id"] in got
    assert not got & {h["warc-record-id"] for off, h, _ in recs if off >= off5}
    # cut into units of a few records each (plain files are split at records): the same rows and rejects
    from negminer.pipelines.warcunits import warc_units

    assert len(warc_units(str(tmp_path / "bad.warc"), 20_000)) > 2
    split_manifest, split_rows = run(tmp_path, [tmp_path / "cut.warc", tmp_path / "bad.warc"], "split", unit_mb=0.02)
    split_rejects = io.read_rejects(str(tmp_path / "split")).to_pylist()
    assert {(Path(r["source_file"]).name, r["reason"], r["offset"]) for r in split_rejects} == rejects
    assert split_rows == rows and split_manifest["rejects"] == manifest["rejects"]


def test_record_doc_pure_pieces():
    assert html.decode_html("Grüße".encode("cp1252"), "windows-1252") == ("Grüße", "cp1252")
    assert html.decode_html("Grüße".encode(), None) == ("Grüße", "utf-8")
    text, enc = html.decode_html('<meta charset="koi8-r"><p>Привет</p>'.encode("koi8-r"), None)
    assert "Привет" in text and enc == "koi8-r"
    title, sections = html.html_sections(
        "<html><head><title>T &amp; U</title></head><body><article><h2>Intro</h2><p>First para here.</p>"
        "<p>Second para.</p><ul><li>item</li></ul><p>After list.</p></article></body></html>"
    )
    assert title == "T & U"
    # main-content extraction drops the short list as boilerplate; the paragraphs around it stay in order
    assert [tuple(s) for s in sections] == [(("Intro",), ("First para here.", "Second para.", "After list."))]
    # a list that survives extraction ends the run of paragraphs under its heading
    lines = ["Intro", "", "First.", "  • item", "After."]
    assert [tuple(s) for s in html._lines_to_sections(lines, {"Intro"})] == [
        (("Intro",), ("First.",)),
        ((), ("After.",)),
    ]


def test_cli_runs_with_filter_flags(tmp_path):
    from negminer import cli

    out = tmp_path / "cli"
    argv = ["build", "webcrawl", "--input", str(shared_file(CC, WARCS[3])), "--output", str(out)]
    assert cli.main([*argv, "--pair-types", "title-body", "--no-quality-filters"]) == 0
    manifest = io.read_manifest(str(out))
    assert set(manifest["counts"]["pair_type"]) == {"title-body"} and manifest["config"]["quality"]["languages"] == []


def one_member_per_record(src: Path, out: Path, copies: int, compress: bool = True) -> list[int]:
    """A .warc.gz of the source's records repeated `copies` times, each record its own gzip member (a plain .warc
    when not `compress`); their offsets."""
    data = src.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    records = []
    for offset, _, block in warc_records(src):
        end = data.index(b"\r\n\r\n", offset) + 4 + len(block)
        records.append(data[offset:end] + b"\r\n\r\n")
    offsets, blob = [], b""
    for i in range(copies):
        for r in records:
            offsets.append(len(blob))
            r = r.replace(b"WARC-Record-ID: <urn:uuid:", f"WARC-Record-ID: <urn:uuid:{i}".encode())
            blob += gzip.compress(r) if compress else r
    out.write_bytes(blob)
    return offsets


@pytest.mark.parametrize("compress", [True, False], ids=["gzip-members", "plain"])
def test_warc_split_into_units_at_records_same_output(tmp_path, compress):
    from negminer.pipelines.warcunits import warc_units

    big = tmp_path / ("big.warc.gz" if compress else "big.warc")
    offsets = one_member_per_record(shared_file(CC, "resiliparse-warcfile.warc.gz"), big, 3, compress)
    step = 40_000 if compress else 150_000
    units = warc_units(str(big), step)
    assert len(units) >= 4
    assert [u.start for u in units][0] == 0 and all(u.start in offsets for u in units)
    assert [u.end for u in units] == [u.start for u in units[1:]] + [None]
    assert all(u.end - u.start >= step for u in units[:-1])
    assert warc_units(str(big), 10**9) == [(str(big), 0, None)]
    one_gzip_member = tmp_path / "one-member.warc.gz"
    one_gzip_member.write_bytes(gzip.compress(gzip.decompress(big.read_bytes()) if compress else big.read_bytes()))
    assert len(warc_units(str(one_gzip_member), 10)) == 1

    def build(name: str, unit_mb: float) -> tuple[dict, dict]:
        manifest, _ = run(tmp_path, [big], name, quality=QualityConfig(), dedup=DedupConfig(), unit_mb=unit_mb)
        shards = {p.name: p.read_bytes() for p in sorted((tmp_path / name).glob("*.parquet"))}
        return shards, {k: manifest.get(k) for k in ("rows", "rejects", "skipped")}

    whole, split = build("whole", 64.0), build("split", step / 2**20)
    assert whole == split and whole[1]["rows"] > 0
