"""Streaming MediaWiki XML dumps: bz2 multistream files cut into independent work units, pages by pull parsing."""

from __future__ import annotations

import bz2
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import NamedTuple

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

# A bz2 stream starts byte-aligned with "BZh" + block size, then a block header (pi) or the end-of-stream
# magic (sqrt(pi)) of an empty stream. Multistream dumps concatenate one stream per 100 pages.
_STREAM_START = re.compile(rb"BZh[1-9](?:1AY&SY|\x17rE8P\x90)")
_READ_CHUNK = 1 << 22
_OPEN_ROOT = b"<mediawiki>"  # units after the first lack the dump's root element: give them one


class DumpUnit(NamedTuple):
    """Bytes [start, end) of a dump file that decode to whole pages on their own."""

    path: str
    start: int
    end: int
    last: bool  # the unit that ends the file: its XML must close properly


class RawPage(NamedTuple):
    path: str
    offset: int  # start of the unit (compressed bytes) that holds the page
    page_id: str | None
    title: str | None
    ns: str | None
    redirect: bool
    revision_id: str | None
    timestamp: str | None
    text: str | None


class DumpError(NamedTuple):
    """A unit that could not be read to its end: where, why, and the last page read before it."""

    path: str
    offset: int
    reason: str
    detail: str


def is_bz2(path: str) -> bool:
    return path.lower().endswith(".bz2")


def file_size(path: str) -> int:
    return FileSystems.match([path])[0].metadata_list[0].size_in_bytes


def stream_starts(path: str) -> list[int]:
    """Byte offsets of every bz2 stream in a (multistream) .bz2 file, found by scanning compressed bytes.

    A false match inside compressed data is possible in principle (a 10-byte pattern); it would make the
    unit before it fail with a `truncated_bz2` reject rather than produce wrong pages.
    """
    starts, pos, tail = [], 0, b""
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        while block := f.read(_READ_CHUNK):
            data = tail + block
            base = pos - len(tail)
            starts.extend(base + m.start() for m in _STREAM_START.finditer(data))
            tail = data[-9:]
            pos += len(block)
    return sorted(set(starts)) or [0]


def dump_units(path: str, min_unit_bytes: int) -> list[DumpUnit]:
    """Work units of a dump: runs of whole bz2 streams of >= `min_unit_bytes` each; one unit if not bz2."""
    size = file_size(path)
    if not is_bz2(path):
        return [DumpUnit(path, 0, size, True)]
    starts = stream_starts(path)
    if starts[0] != 0:
        starts = [0, *starts]
    cuts = [0]
    for s in starts[1:]:
        if s - cuts[-1] >= min_unit_bytes:
            cuts.append(s)
    bounds = [*cuts, size]
    return [DumpUnit(path, a, b, b == size) for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


def _decompressed(unit: DumpUnit) -> Iterator[bytes]:
    """The unit's bytes decompressed, stream after stream; raises EOFError if the last stream is cut short."""
    if not is_bz2(unit.path):
        with FileSystems.open(unit.path, compression_type=CompressionTypes.AUTO) as f:
            while block := f.read(_READ_CHUNK):
                yield block
        return
    with FileSystems.open(unit.path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        f.seek(unit.start)
        left = unit.end - unit.start
        dec = bz2.BZ2Decompressor()
        while left > 0 and (block := f.read(min(_READ_CHUNK, left))):
            left -= len(block)
            while block:
                if dec.eof:
                    dec = bz2.BZ2Decompressor()
                yield dec.decompress(block)
                block = dec.unused_data if dec.eof else b""
        if not dec.eof:
            raise EOFError(f"bz2 stream cut short at byte {unit.end}")


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child(elem: ET.Element, name: str) -> ET.Element | None:
    for c in elem:
        if _local(c.tag) == name:
            return c
    return None


def _page(elem: ET.Element, unit: DumpUnit) -> RawPage:
    rev = _child(elem, "revision")

    def text(parent: ET.Element | None, name: str) -> str | None:
        c = None if parent is None else _child(parent, name)
        return None if c is None else (c.text or "")

    return RawPage(
        unit.path,
        unit.start,
        text(elem, "id"),
        text(elem, "title"),
        text(elem, "ns"),
        _child(elem, "redirect") is not None,
        text(rev, "id"),
        text(rev, "timestamp"),
        text(rev, "text"),
    )


def read_unit(unit: DumpUnit) -> Iterator[RawPage | DumpError]:
    """Every <page> of a unit, streamed (one page in memory at a time); a DumpError if the unit is broken."""
    parser = ET.XMLPullParser(events=("start", "end"))
    if unit.start > 0:
        parser.feed(_OPEN_ROOT)
    root: ET.Element | None = None
    last_title = ""
    try:
        for data in _decompressed(unit):
            parser.feed(data)
            for event, elem in parser.read_events():
                if root is None and event == "start":
                    root = elem
                elif event == "end" and _local(elem.tag) == "page":
                    page = _page(elem, unit)
                    last_title = page.title or last_title
                    yield page
                    root.clear()  # drop the page (and siteinfo) from the tree: memory stays flat
        if unit.last:
            parser.close()
    except (OSError, EOFError) as e:
        yield DumpError(unit.path, unit.start, "truncated_bz2" if isinstance(e, EOFError) else "bz2_error", f"{e}")
    except ET.ParseError as e:
        reason = "truncated_xml" if "no element found" in str(e) else "malformed_xml"
        yield DumpError(unit.path, unit.start, reason, f"{e}; last page read: {last_title!r}")
