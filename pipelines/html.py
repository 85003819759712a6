"""Web pages to sections: HTTP payload decoding (FastWARC), charset detection and main-content text (Resiliparse)."""

from __future__ import annotations

import codecs
import unicodedata
from typing import NamedTuple

from fastwarc.warc import WarcRecord
from resiliparse.extract.html2text import extract_plain_text
from resiliparse.parse.encoding import bytes_to_str, detect_encoding, map_encoding_to_html5
from resiliparse.parse.html import HTMLTree

from negminer.pipelines.docpairs import Section
from negminer.pipelines.transforms.clean import clean_text, looks_bad, normalize_whitespace

HTML_TYPES = ("text/html", "application/xhtml+xml")
_BULLET = "•"  # resiliparse's list bullet: list items are navigation or enumerations, not paragraphs
_HEADINGS = "h1, h2, h3, h4, h5, h6"


class HttpPayload(NamedTuple):
    status: int | None
    content_type: str | None
    charset: str | None
    body: bytes


def parse_http(block: bytes) -> HttpPayload:
    """An HTTP response block (status line, headers, body) with chunked transfer and content encoding undone.

    Raises ValueError (with the reason) when the block is not a parsable HTTP response.
    """
    rec = WarcRecord()
    rec.init_headers(content_length=len(block))
    rec.set_bytes_content(block)
    rec.is_http = True
    rec.parse_http(auto_decode="all")  # does not raise on garbage: it leaves the status line unset
    if not rec.is_http_parsed or rec.http_headers.status_code is None:
        raise ValueError("malformed_http:no_status_line")
    content_type = (rec.http_content_type or "").lower() or None
    return HttpPayload(rec.http_headers.status_code, content_type, rec.http_charset, rec.reader.read())


def _known(encoding: str | None) -> str | None:
    if not encoding:
        return None
    mapped = map_encoding_to_html5(encoding, fallback_utf8=False) or encoding
    try:
        return codecs.lookup(mapped).name
    except LookupError:
        return None


def decode_html(body: bytes, http_charset: str | None = None) -> tuple[str, str]:
    """(text, encoding used) of an HTML payload.

    Order: valid UTF-8 wins (detectors mislabel short UTF-8 pages as legacy code pages); then the charset
    of the HTTP header, then the page's <meta charset>, then uchardet's guess; undecodable bytes dropped.
    """
    try:
        return body.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    for enc in (_known(http_charset), _known(detect_encoding(body, from_html_meta=True))):
        if enc and enc != "utf-8":
            try:
                return body.decode(enc), enc
            except UnicodeDecodeError:
                continue
    enc = _known(detect_encoding(body)) or "cp1252"
    return bytes_to_str(body, enc, errors="ignore"), enc


def _lines_to_sections(lines: list[str], headings: set[str], fix_encoding: bool = True) -> tuple[Section, ...]:
    """Sections of cleaned lines (`clean_text`); with `fix_encoding` False the lines must already be NFC (only
    their whitespace is normalised), as `html_sections` makes them."""
    sections: list[Section] = []
    path: tuple[str, ...] = ()
    paras: list[str] = []
    clean = clean_text if fix_encoding else normalize_whitespace
    for raw in lines:
        line = clean(raw)
        if not line:
            continue
        if raw.lstrip().startswith(_BULLET) or "\t" in raw:
            # A list or table ends the run of paragraphs; what follows is no longer "after the heading".
            sections.append(Section(path, tuple(paras)))
            path, paras = (), []
            continue
        if line in headings:
            sections.append(Section(path, tuple(paras)))
            path, paras = (line,), []
            continue
        paras.append(line)
    sections.append(Section(path, tuple(paras)))
    return tuple(s for s in sections if s.paragraphs)


def html_sections(html: str) -> tuple[str, tuple[Section, ...]]:
    """(title, sections) of a page: main content by Resiliparse; a line that is an <h1>-<h6> text starts a section.

    Paragraphs are the lines of the extracted text; list items and table rows are dropped and break
    adjacency (the paragraphs after them form a section without a heading).
    """
    tree = HTMLTree.parse(html)
    # .values(): iterating Resiliparse's node list directly builds a wrapper per earlier item (quadratic).
    raw_headings = [h.text for h in tree.body.query_selector_all(_HEADINGS).values()] if tree.body is not None else []
    text = extract_plain_text(tree, main_content=True, alt_texts=False, comments=False, form_fields=False)
    # ftfy's repair is most of the cost on non-ASCII pages: run it only where its own detector sees mojibake.
    fix = looks_bad(text) or looks_bad(tree.title or "")
    title = clean_text(tree.title or "", fix)
    headings = {clean_text(h, fix) for h in raw_headings} - {""}
    if not fix:  # NFC once for the page, not per line: it never joins characters across a newline (tested)
        text = unicodedata.normalize("NFC", text)
    return title, _lines_to_sections(text.split("\n"), headings, fix)


def wet_sections(text: str) -> tuple[str, tuple[Section, ...]]:
    """(title, sections) of a WET conversion record: Common Crawl writes the page title as its first line."""
    lines = [clean_text(x) for x in text.split("\n")]
    lines = [x for x in lines if x]
    if not lines:
        return "", ()
    return lines[0], (Section((), tuple(lines[1:])),) if len(lines) > 1 else ()
