"""Text files as blocks of whole lines (bytes + 1-based line numbers) for columnar parsing with pyarrow.

pyarrow's readers give no line numbers, which provenance and rejects need: the line offsets are found here
(numpy over the block's bytes) and the readers run on runs of lines that look regular. Anything irregular is
handed back line by line, for the exact per-line Python path (`source.line_record`), so the result is the same.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import posixpath
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.json as pj
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from negminer.pipelines.source import (
    BOM,
    TRUNCATED_FILE,
    UNREADABLE_FILE_ERRORS,
    Record,
    TruncatedFileError,
    read_text_lines,
    reject,
)

BLOCK_BYTES = 8 << 20  # bytes of a block read from a plain file
BLOCK_LINES = 20_000  # lines of a block read from a compressed file (line by line: exact truncation handling)
MIN_RUN = 64  # a run of lines that fails to parse is halved down to this size, then taken line by line
NL, CR = 10, 13

ASCII_WHITESPACE = "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f "  # what str.strip() strips, for ASCII (pc.utf8_trim's set)


@dataclasses.dataclass
class LineBlock:
    """Consecutive lines of a file: `data` holds them each ending in b"\\n"; line i spans starts[i]:starts[i+1]-1."""

    path: str
    data: bytes
    first: int  # line number of the first line
    starts: np.ndarray  # (n + 1,) byte offset of each line, then len(data)

    @property
    def count(self) -> int:
        return len(self.starts) - 1

    def raw(self, i: int) -> bytes:
        """Line i as `source.read_text_lines` gives it (without its newline and trailing CRs)."""
        return self.data[self.starts[i] : self.starts[i + 1] - 1].rstrip(b"\r\n")


def _block(path: str, data: bytes, first: int) -> LineBlock:
    nl = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == NL)
    return LineBlock(path, data, first, np.r_[0, nl + 1].astype(np.int64))


def line_blocks(path: str, block_bytes: int | None = None) -> Iterator[LineBlock]:
    """The lines of a plain or compressed text file in blocks; read errors propagate after the lines before them.

    Compressed files go through `read_text_lines` (which notices a truncated stream at the same line as the
    per-line reader); plain files are read in `block_bytes` chunks cut at the last newline.
    """
    if posixpath.splitext(path.lower())[1] in (".gz", ".bz2"):
        yield from _compressed_blocks(path)
        return
    first, block_bytes = 1, block_bytes or BLOCK_BYTES
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        rest = f.read(len(BOM))
        if rest == BOM:  # a byte order mark is not part of line 1 (as in `read_text_lines`)
            rest = b""
        while chunk := f.read(block_bytes):
            data = rest + chunk
            cut = data.rfind(b"\n") + 1
            if cut == 0:
                rest = data
                continue
            block, rest = _block(path, data[:cut], first), data[cut:]
            first += block.count
            yield block
    if rest:
        yield _block(path, rest + b"\n", first)


def read_blocks(path: str) -> Iterator[LineBlock | Any]:
    """`line_blocks`, then one reject if the file cannot be read on: at the line `ReadRecordsFn` names."""
    blocks, line = line_blocks(path), 0
    while True:
        try:
            block = next(blocks, None)
        except TruncatedFileError as e:
            yield reject(Record(path, line + 1, str(e)), TRUNCATED_FILE)
            return
        except UNREADABLE_FILE_ERRORS as e:
            yield reject(Record(path, line + 1, f"{type(e).__name__}: {e}"), "unreadable_file")
            return
        if block is None:
            return
        yield block
        line = last_record_line(block, line)


def _compressed_blocks(path: str) -> Iterator[LineBlock]:
    lines: list[bytes] = []
    first = 1
    try:
        for n, raw in read_text_lines(path):
            if not lines:
                first = n
            lines.append(raw)
            if len(lines) >= BLOCK_LINES:
                yield _block(path, b"\n".join(lines) + b"\n", first)
                lines = []
    except Exception:
        if lines:  # the lines before a read error still count, as in the per-line reader
            yield _block(path, b"\n".join(lines) + b"\n", first)
        raise
    if lines:
        yield _block(path, b"\n".join(lines) + b"\n", first)


def last_record_line(block: LineBlock, line: int) -> int:
    """`ReadRecordsFn`'s line count after a block (the line a read error is reported at, minus one): the last
    non-blank line, plus one per undecodable line after it (each reject counts one line there)."""
    k = 0
    for i in range(block.count - 1, -1, -1):
        raw = block.raw(i)
        try:
            blank = not raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            k += 1
            continue
        if not blank:
            return block.first + i + k
    return line + k


def line_strings(block: LineBlock) -> pa.Array:
    """Every line of a block (valid UTF-8) as a string array, newline included: zero-copy over the block."""
    offsets = pa.py_buffer(block.starts.astype(np.int32 if len(block.data) < 2**31 else np.int64))
    kind = pa.string() if len(block.data) < 2**31 else pa.large_string()
    return pa.Array.from_buffers(kind, block.count, [None, offsets, pa.py_buffer(block.data)])


def regular_lines(block: LineBlock, first_byte: int = ord("{")) -> np.ndarray:
    """Per line: 1 when it starts with `first_byte` and holds no CR, 0 when empty, -1 otherwise (per-line path).

    The block's bytes must be valid UTF-8 for any line to count as regular (else all are -1).
    """
    n = block.count
    starts, ends = block.starts[:-1], block.starts[1:] - 1
    out = np.full(n, -1, dtype=np.int8)
    try:
        block.data.decode("utf-8")
    except UnicodeDecodeError:
        return out
    buf = np.frombuffer(block.data, dtype=np.uint8)
    empty = starts == ends
    out[empty] = 0
    nonempty = ~empty
    out[nonempty & (buf[np.minimum(starts, len(buf) - 1)] == first_byte)] = 1
    cr = np.flatnonzero(buf == CR)
    if len(cr):
        out[np.searchsorted(starts, cr, side="right") - 1] = -1
    return out


def first_object(block: LineBlock, kinds: np.ndarray) -> dict | None:
    """The first of a block's first 100 regular lines (`regular_lines`) that is a JSON object: it types a file's
    columns for the JSON reader."""
    for i in np.flatnonzero(kinds == 1)[:100]:
        with contextlib.suppress(ValueError):
            obj = json.loads(block.raw(int(i)))
            if isinstance(obj, dict):
                return obj
    return None


def json_runs(
    block: LineBlock, schema: pa.Schema, kinds: np.ndarray, on_line: Callable[[int], None]
) -> Iterator[tuple[pa.Table, np.ndarray]]:
    """(table, line numbers of its rows) for runs of regular lines parsed by pyarrow's JSON reader with `schema`
    (other fields ignored); `on_line(i)` for every line the reader cannot take (irregular, or in a run that fails
    to parse even at `MIN_RUN` lines, or that yields more rows than lines)."""
    n = block.count
    i = 0
    while i < n:
        if kinds[i] < 0:
            on_line(i)
            i += 1
            continue
        j = i
        while j < n and kinds[j] >= 0:
            j += 1
        yield from _parse_run(block, schema, kinds, i, j, on_line)
        i = j


def _parse_run(block, schema, kinds, lo: int, hi: int, on_line) -> Iterator[tuple[pa.Table, np.ndarray]]:
    rows = np.flatnonzero(kinds[lo:hi] == 1) + lo
    if not len(rows):
        return
    start, end = int(block.starts[lo]), int(block.starts[hi])
    try:
        table = pj.read_json(
            pa.BufferReader(memoryview(block.data)[start:end]),
            read_options=pj.ReadOptions(use_threads=False, block_size=max(end - start, 1 << 16)),
            parse_options=pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore"),
        )
        if table.num_rows == len(rows):
            yield table, block.first + rows
            return
    except pa.ArrowInvalid:
        pass
    if hi - lo <= MIN_RUN:
        for i in rows:
            on_line(int(i))
        return
    mid = (lo + hi) // 2
    yield from _parse_run(block, schema, kinds, lo, mid, on_line)
    yield from _parse_run(block, schema, kinds, mid, hi, on_line)
