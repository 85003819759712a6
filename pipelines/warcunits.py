"""Work units of a large WARC file: byte ranges starting at a WARC record (a gzip member that holds one, or a record
of a plain file), read in parallel."""

from __future__ import annotations

import zlib
from typing import NamedTuple

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

_GZIP_MAGIC = b"\x1f\x8b\x08"  # gzip id + deflate method
_WARC_HEAD = b"WARC/1."  # the first bytes of every WARC record
_SCAN = 1 << 20  # bytes read at a time while looking for the next record's gzip member


class WarcUnit(NamedTuple):
    """Bytes [start, end) of a WARC file: records starting in the range (end None: to the end of the file)."""

    path: str
    start: int
    end: int | None


def _starts_record(f, offset: int) -> bool:
    """Whether a gzip member starting at `offset` decompresses to the start of a WARC record (`WARC/1.`)."""
    f.seek(offset)
    try:
        head = zlib.decompressobj(wbits=31).decompress(f.read(1 << 16), 16)
    except zlib.error:
        return False
    return head.startswith(_WARC_HEAD)


def _next_record_member(f, pos: int, size: int) -> int | None:
    """The first offset >= pos where a gzip member holding a WARC record starts, or None before the end."""
    while pos < size:
        f.seek(pos)
        chunk = f.read(_SCAN + len(_GZIP_MAGIC) - 1)
        i = chunk.find(_GZIP_MAGIC)
        while i >= 0:
            if _starts_record(f, pos + i):
                return pos + i
            i = chunk.find(_GZIP_MAGIC, i + 1)
        pos += _SCAN
    return None


def _plain_record_cuts(f, unit_bytes: int) -> list[int]:
    """Offsets of a plain WARC's records where units start: the first record at or after each `unit_bytes` step.

    The records are walked by FastWARC itself (headers parsed, blocks skipped unread), so a cut is exactly where
    it starts a record. A header it cannot parse ends the walk: the rest of the file stays in the last unit, which
    reports it as a one-unit read would.
    """
    from fastwarc.warc import ArchiveIterator

    cuts = [0]
    records = ArchiveIterator(f, parse_http=False)
    while True:
        try:
            rec = next(records)
        except (StopIteration, OSError):
            return cuts
        if rec.stream_pos >= cuts[-1] + unit_bytes:
            cuts.append(rec.stream_pos)


def warc_units(path: str, unit_bytes: int) -> list[WarcUnit]:
    """Independent work units of >= `unit_bytes` (stored bytes) each; one unit when the file is no larger.

    Common Crawl (and every WARC writer that follows the standard's advice) compresses each record as its own
    gzip member, so a member that decompresses to `WARC/1.` is a place where a reader can start. A cut is the
    first such member at or after each multiple of `unit_bytes`; a unit reads the records that start before its
    end. The three bytes of the gzip magic can occur inside compressed data: a candidate counts only when it
    inflates to a WARC header. A plain (uncompressed) WARC is cut at record starts found by walking its record
    headers: one sequential pass over the file on one worker, with no parsing of the blocks. zstd/lz4 WARC files
    and single-member gzip files stay one unit.
    """
    size = FileSystems.match([path])[0].metadata_list[0].size_in_bytes
    if size <= unit_bytes:
        return [WarcUnit(path, 0, None)]
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        head = f.read(len(_WARC_HEAD))
        f.seek(0)
        if head == _WARC_HEAD:
            cuts = _plain_record_cuts(f, unit_bytes)
        elif head.startswith(_GZIP_MAGIC):
            cuts = [0]
            while (target := cuts[-1] + unit_bytes) < size:
                cut = _next_record_member(f, target, size)
                if cut is None:
                    break
                cuts.append(cut)
        else:
            cuts = [0]
    ends: list[int | None] = [*cuts[1:], None]
    return [WarcUnit(path, a, b) for a, b in zip(cuts, ends, strict=True)]
