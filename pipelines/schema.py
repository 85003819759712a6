"""The tuple-shard format: the one place that names its columns, types and version."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

import pyarrow as pa

FORMAT_VERSION = "1.0"

# Column names. Every other module imports these instead of spelling them.
ID = "id"
SOURCE = "source"
PAIR_TYPE = "pair_type"
QUERY = "query"
QUERY_ID = "query_id"
POSITIVE = "positive"
POSITIVE_ID = "positive_id"
NEGATIVES = "negatives"
NEGATIVE_IDS = "negative_ids"
POSITIVE_SCORE = "positive_score"
NEGATIVE_SCORES = "negative_scores"
INSTRUCTION = "instruction"
PROVENANCE = "provenance"

SCHEMA = pa.schema(
    [
        pa.field(ID, pa.string(), nullable=False),
        pa.field(SOURCE, pa.string(), nullable=False),
        pa.field(PAIR_TYPE, pa.string(), nullable=False),
        pa.field(QUERY, pa.string(), nullable=False),
        pa.field(QUERY_ID, pa.string()),
        pa.field(POSITIVE, pa.string(), nullable=False),
        pa.field(POSITIVE_ID, pa.string()),
        pa.field(NEGATIVES, pa.list_(pa.string()), nullable=False),
        pa.field(NEGATIVE_IDS, pa.list_(pa.string()), nullable=False),
        pa.field(POSITIVE_SCORE, pa.float32()),
        pa.field(NEGATIVE_SCORES, pa.list_(pa.float32())),
        pa.field(INSTRUCTION, pa.string()),
        pa.field(PROVENANCE, pa.string()),
    ],
    metadata={b"negminer.format_version": FORMAT_VERSION.encode()},
)
COLUMNS: tuple[str, ...] = tuple(SCHEMA.names)
REQUIRED: frozenset[str] = frozenset(f.name for f in SCHEMA if not f.nullable)

# Rejected input: where it was, why, and the raw text (truncated) so it can be fixed and re-run.
REJECT_SOURCE_FILE = "source_file"
REJECT_LINE = "line"
REJECT_OFFSET = "offset"
REJECT_REASON = "reason"
REJECT_RAW = "raw"
REJECT_SCHEMA = pa.schema(
    [
        pa.field(REJECT_SOURCE_FILE, pa.string(), nullable=False),
        pa.field(REJECT_LINE, pa.int64()),
        pa.field(REJECT_OFFSET, pa.int64()),
        pa.field(REJECT_REASON, pa.string(), nullable=False),
        pa.field(REJECT_RAW, pa.string()),
    ]
)
MAX_REJECT_RAW_CHARS = 10_000

SHARD_TEMPLATE = "{split}-{index:05d}-of-{count:05d}.parquet"
SHARD_PATTERN = re.compile(r"^(?P<split>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.parquet$")  # SHARD_TEMPLATE, parsed
SPLIT_PATTERN = re.compile(r"^[A-Za-z0-9_.]+$")  # a split name: no '-' or '/', so shard names parse back
ALL_SPLITS = "all"  # `--split all` (export, inspect): every split of the directory
MANIFEST_NAME = "manifest.json"
REJECTS_DIR = "rejects"
LOCK_NAME = ".negminer.lock"  # present while a command writes the directory


def parse_shard_name(name: str) -> tuple[str, int, int] | None:
    """(split, index, count) of a `{split}-{index:05d}-of-{count:05d}.parquet` file name (a path is fine), or None.

    >>> parse_shard_name("out/dev-00001-of-00004.parquet")
    ('dev', 1, 4)
    """
    m = SHARD_PATTERN.match(name.rsplit("/", 1)[-1])
    return (m["split"], int(m["index"]), int(m["count"])) if m else None


def check_split_name(split: str) -> str:
    """`split` if it can name shard files (letters, digits, `_` and `.`), else a SchemaError naming it."""
    if not SPLIT_PATTERN.match(split or ""):
        raise SchemaError(f"split name {split!r} must be letters, digits, '_' or '.' (like train, dev, test)")
    return split


class SchemaError(ValueError):
    """A file, row or value does not follow the tuple-shard format."""


def make_id(source: str, query: str, positive: str) -> str:
    """Stable content hash of (source, query, positive): the row id.

    >>> make_id("snli", "a", "b") == make_id("snli", "a", "b")
    True
    """
    h = hashlib.blake2b(digest_size=16)
    for part in (source, query, positive):
        data = part.encode("utf-8")
        h.update(len(data).to_bytes(8, "little"))  # length-prefixed: ("ab","c") != ("a","bc")
        h.update(data)
    return h.hexdigest()


def make_ids(source: str, queries: Iterable[str], positives: Iterable[str]) -> list[str]:
    """`make_id(source, q, p)` for many pairs: one hash call a row on the bytes `make_id` feeds in parts."""
    src = source.encode("utf-8")
    head = len(src).to_bytes(8, "little") + src
    out = []
    for q, p in zip(queries, positives, strict=True):
        qb, pb = q.encode("utf-8"), p.encode("utf-8")
        msg = b"".join((head, len(qb).to_bytes(8, "little"), qb, len(pb).to_bytes(8, "little"), pb))
        out.append(hashlib.blake2b(msg, digest_size=16).hexdigest())
    return out


@dataclasses.dataclass(frozen=True)
class TupleRow:
    """One (query, positive, negatives) row of the format."""

    source: str
    pair_type: str
    query: str
    positive: str
    query_id: str | None = None
    positive_id: str | None = None
    negatives: tuple[str, ...] = ()
    negative_ids: tuple[str | None, ...] = ()
    positive_score: float | None = None
    negative_scores: tuple[float, ...] | None = None
    instruction: str | None = None
    provenance: str | None = None
    id: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "negatives", tuple(self.negatives))
        ids = tuple(self.negative_ids) if self.negative_ids else (None,) * len(self.negatives)
        object.__setattr__(self, "negative_ids", ids)
        if self.negative_scores is not None:
            object.__setattr__(self, "negative_scores", tuple(float(s) for s in self.negative_scores))
        if not self.id:
            object.__setattr__(self, "id", make_id(self.source, self.query, self.positive))
        problems = row_problems(self.to_dict())
        if problems:
            raise SchemaError(f"invalid row {self.id}: {'; '.join(problems)}")

    def to_dict(self) -> dict[str, Any]:
        """The row as a plain dict keyed by column name (lists, not tuples), in schema order."""
        # Field by field, not dataclasses.asdict: its recursive deep copy was the main per-row cost of a build.
        out = {c: getattr(self, c) for c in COLUMNS}
        out[NEGATIVES] = list(self.negatives)
        out[NEGATIVE_IDS] = list(self.negative_ids)
        out[NEGATIVE_SCORES] = None if self.negative_scores is None else list(self.negative_scores)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TupleRow:
        unknown = set(d) - set(COLUMNS)
        if unknown:
            raise SchemaError(f"unknown columns {sorted(unknown)}")
        kwargs = {k: v for k, v in d.items() if v is not None or k in (POSITIVE_SCORE, NEGATIVE_SCORES)}
        return cls(**kwargs)


def provenance_json(**fields: Any) -> str:
    """Provenance as compact JSON with sorted keys (stable bytes for stable shards)."""
    return json.dumps({k: v for k, v in fields.items() if v is not None}, sort_keys=True, ensure_ascii=False)


def row_problems(row: Mapping[str, Any]) -> list[str]:
    """Every way a row dict breaks the format (empty list when it is valid)."""
    problems = []
    for col in REQUIRED:
        if row.get(col) is None:
            problems.append(f"missing {col}")
    for col in (SOURCE, PAIR_TYPE, QUERY, POSITIVE):
        if isinstance(row.get(col), str) and not row[col].strip():
            problems.append(f"empty {col}")
    negs = row.get(NEGATIVES) or []
    neg_ids = row.get(NEGATIVE_IDS) or []
    if len(neg_ids) != len(negs):
        problems.append(f"{NEGATIVE_IDS} has {len(neg_ids)} entries for {len(negs)} {NEGATIVES}")
    scores = row.get(NEGATIVE_SCORES)
    if scores is not None and len(scores) != len(negs):
        problems.append(f"{NEGATIVE_SCORES} has {len(scores)} entries for {len(negs)} {NEGATIVES}")
    return problems


def rows_to_table(rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    """Row dicts (as from `TupleRow.to_dict`) to a table of exactly `SCHEMA`."""
    rows = list(rows)
    columns = {c: [r.get(c) for r in rows] for c in COLUMNS}
    columns[NEGATIVES] = [list(v or []) for v in columns[NEGATIVES]]
    columns[NEGATIVE_IDS] = [
        list(ids) if ids is not None else [None] * len(n)
        for ids, n in zip(columns[NEGATIVE_IDS], columns[NEGATIVES], strict=True)
    ]
    return pa.Table.from_pydict(columns, schema=SCHEMA)


def check_schema(schema: pa.Schema, where: str) -> None:
    """Raise `SchemaError` naming `where` and the offending column if `schema` is not our format.

    Extra columns are an error too: the format is a contract, and silently dropping data is worse.
    """
    for field in SCHEMA:
        idx = schema.get_field_index(field.name)
        if idx < 0:
            if field.nullable:
                continue  # optional columns may be absent in shards written by others
            raise SchemaError(f"{where}: missing required column {field.name!r} (has {schema.names})")
        got = schema.field(idx).type
        if not _type_compatible(got, field.type):
            raise SchemaError(f"{where}: column {field.name!r} has type {got}, expected {field.type}")
    extra = [n for n in schema.names if n not in COLUMNS]
    if extra:
        raise SchemaError(f"{where}: unknown column(s) {extra}; the tuple-shard format has {list(COLUMNS)}")


def _type_compatible(got: pa.DataType, want: pa.DataType) -> bool:
    if got.equals(want):
        return True
    if pa.types.is_string(want):
        return pa.types.is_string(got) or pa.types.is_large_string(got) or pa.types.is_null(got)
    if pa.types.is_floating(want):
        return pa.types.is_floating(got) or pa.types.is_null(got)
    if pa.types.is_list(want):
        if pa.types.is_null(got):
            return True
        if not (pa.types.is_list(got) or pa.types.is_large_list(got)):
            return False
        return _type_compatible(got.value_type, want.value_type)
    return False


def conform(table: pa.Table, where: str) -> pa.Table:
    """Check a table written by anyone and cast it to exactly `SCHEMA` (absent optional columns become null)."""
    check_schema(table.schema, where)
    n = table.num_rows
    cols = []
    for field in SCHEMA:
        if field.name in table.column_names:
            cols.append(table.column(field.name).cast(field.type))
        else:
            cols.append(pa.nulls(n, type=field.type))
    return pa.Table.from_arrays(cols, schema=SCHEMA)
