"""SNLI / MultiNLI on Arrow tables: the columnar twins of `snli.parse_nli` (regular JSON lines) and
`snli.rows_for_premise` (every premise of a table at once), giving the same examples, rows and counts.

Only rows whose outcome is plain are decided here (every text field a non-empty ASCII string, a known label);
the others go back to the per-line Python path (`irregular`), which decides them exactly as before.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from negminer.pipelines import schema as S
from negminer.pipelines.tables import partitioned, row_ids, string_buffers, string_partitions, take_rows

ENTAILMENT, NEUTRAL, CONTRADICTION = "entailment", "neutral", "contradiction"
LABELS = (ENTAILMENT, NEUTRAL, CONTRADICTION)  # also the Hugging Face label ids 0, 1, 2
EXAMPLE = pa.schema(
    [
        ("premise", pa.string()),
        ("hypothesis", pa.string()),
        ("label", pa.string()),
        ("pair_id", pa.string()),
        ("premise_id", pa.string()),
        ("genre", pa.string()),  # as JSON text (null: no genre), for the provenance
        ("path", pa.string()),
        ("line", pa.int64()),
    ]
)  # the fields of snli.NliExample, in its order
ID_FIELDS = ("captionID", "promptID", "pairID")
_SPACE = "[\\t\\n\\x0b\\x0c\\r\\x1c-\\x1f ]+"  # what str.split() splits on, for ASCII text


def is_official(obj: dict[str, Any]) -> bool:
    return "sentence1" in obj or "gold_label" in obj


def json_schema(first: dict[str, Any]) -> pa.Schema:
    """The fields the JSON reader takes from a file, typed as in its first record (other types go per line)."""
    if is_official(first):
        fields = [("sentence1", pa.string()), ("sentence2", pa.string()), ("gold_label", pa.string())]
    else:
        fields = [("premise", pa.string()), ("hypothesis", pa.string()), ("label", pa.int64())]
    for f in ID_FIELDS:
        v = first.get(f)
        fields.append((f, pa.int64() if isinstance(v, int) and not isinstance(v, bool) else pa.string()))
    return pa.schema([*fields, ("genre", pa.string())])


def clean_ascii(texts: pa.Array) -> pa.Array:
    """`clean.clean_text` of ASCII strings: whitespace runs to one space, ends stripped (no ftfy, no NFC needed).

    The regular expression runs only on the strings a cheap test finds may change (a control character, two
    spaces, a space at either end)."""
    change = pc.or_(
        pc.or_(pc.invert(pc.ascii_is_printable(texts)), pa.array(double_spaced(texts))),
        pc.or_(pc.starts_with(texts, " "), pc.ends_with(texts, " ")),
    )
    change = pc.fill_null(change, False)
    if not pc.any(change).as_py():
        return texts
    fixed = pc.utf8_trim(pc.replace_substring_regex(texts.filter(change), _SPACE, " "), " ")
    return pc.replace_with_mask(texts, change, fixed)


def double_spaced(texts: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Per string: True when it holds two spaces in a row (`pc.match_substring(texts, "  ")`, ~15x faster)."""
    offsets, data = string_buffers(texts)
    space = data == 32
    at = np.flatnonzero(space[:-1] & space[1:])  # a pair starting here, maybe across two strings
    out = np.zeros(len(offsets) - 1, dtype=bool)
    if len(at):
        row = np.searchsorted(offsets, at, side="right") - 1
        out[row[at + 1 < offsets[row + 1]]] = True
    return out


def _truthy(col: pa.ChunkedArray) -> pa.ChunkedArray:
    """Python's truth value of each optional id (None, "" and 0 are false)."""
    empty = "" if pa.types.is_string(col.type) else 0
    return pc.fill_null(pc.not_equal(col, empty), False)


def json_examples(table: pa.Table, raw: pa.Array | None, path: str, lines: np.ndarray) -> tuple[pa.Table, np.ndarray]:
    """A table from the JSON reader (schema from `json_schema`), the raw lines of its rows and their numbers ->
    (the examples `parse_nli` gives for its plain rows, a bool mask of the rows it leaves to the per-line path).

    `raw` None: the rows' keys are known to be the table's columns (a Parquet file), no raw-line test is needed."""
    official = "sentence1" in table.column_names
    if official:
        premise, hypothesis, label = table["sentence1"], table["sentence2"], table["gold_label"]
        ok = pc.is_in(label, pa.array([ENTAILMENT, NEUTRAL, CONTRADICTION]))
    else:
        premise, hypothesis, codes = table["premise"], table["hypothesis"], table["label"]
        ok = pc.is_in(codes, pa.array([0, 1, 2]))
        # a null in the reader may be a key present with null in the line, which makes it the official layout
        for needle in ('"sentence1"', '"gold_label"', "\\u") if raw is not None else ():
            ok = pc.and_(ok, pc.invert(pc.match_substring(raw, needle)))
        label = pc.take(pa.array(LABELS), pc.if_else(pc.fill_null(ok, False), codes, 0))
    premise, hypothesis = premise.combine_chunks(), hypothesis.combine_chunks()
    ok = pc.and_(ok, pc.and_(pc.string_is_ascii(premise), pc.string_is_ascii(hypothesis)))
    premise, hypothesis = clean_ascii(premise), clean_ascii(hypothesis)
    ok = pc.and_(ok, pc.and_(pc.greater(pc.utf8_length(premise), 0), pc.greater(pc.utf8_length(hypothesis), 0)))
    ok = pc.fill_null(ok, False)
    caption, prompt = table["captionID"], table["promptID"]
    premise_id = pc.if_else(_truthy(caption), caption.cast(pa.string()), prompt.cast(pa.string()))
    out = pa.Table.from_arrays(
        [
            premise,
            hypothesis,
            label,
            table["pairID"].cast(pa.string()),
            premise_id,
            _json_texts(table["genre"]),
            pa.array([path] * table.num_rows, pa.string()),
            pa.array(lines, pa.int64()),
        ],
        schema=EXAMPLE,
    )
    ok = ok.combine_chunks() if isinstance(ok, pa.ChunkedArray) else ok
    return out.filter(ok), ~ok.to_numpy(zero_copy_only=False).astype(bool)


def parquet_view(table: pa.Table) -> pa.Table | None:
    """A Parquet file's table as `json_examples` takes it (the `json_schema` fields, absent ones null), or None when
    a column's type is not one the columnar path decides like `parse_nli` (then every row goes the per-row path)."""
    names = table.column_names
    official = "sentence1" in names or "gold_label" in names
    texts = ("sentence1", "sentence2", "gold_label") if official else ("premise", "hypothesis")
    cols, fields = [], []
    for name in (*texts, *([] if official else ["label"]), *ID_FIELDS, "genre"):
        col = table[name] if name in names and not pa.types.is_null(table.schema.field(name).type) else None
        is_int = col is not None and pa.types.is_integer(col.type)
        is_str = col is not None and (pa.types.is_string(col.type) or pa.types.is_large_string(col.type))
        if col is None:
            col = pa.nulls(table.num_rows, pa.int64() if name == "label" else pa.string())
        elif name == "label" and is_int or name in ID_FIELDS and is_int:
            col = col.cast(pa.int64())
        elif is_str:
            col = col.cast(pa.string())
        else:
            return None
        cols.append(col)
        fields.append((name, col.type))
    return pa.Table.from_arrays(cols, schema=pa.schema(fields))


def _json_texts(values: pa.ChunkedArray) -> pa.Array:
    """JSON text of each value (null stays null), encoded once per distinct value."""
    distinct = pc.unique(values)
    texts = [None if v is None else json.dumps(v, ensure_ascii=False) for v in distinct.to_pylist()]
    return pc.take(pa.array(texts, pa.string()), pc.index_in(values, value_set=distinct)).combine_chunks()


def examples_table(examples: Iterable[tuple]) -> pa.Table:
    """NliExample tuples (from the per-line path) as a table of `EXAMPLE`."""
    examples = [e[:5] + (None if e[5] is None else json.dumps(e[5], ensure_ascii=False),) + e[6:] for e in examples]
    cols = list(zip(*examples, strict=True)) or [()] * len(EXAMPLE)
    return pa.Table.from_arrays([pa.array(c, f.type) for c, f in zip(cols, EXAMPLE, strict=True)], schema=EXAMPLE)


def by_partition(examples: pa.Table, n: int, spill: str | None = None) -> Iterator[tuple[int, bytes | str]]:
    """(partition, its examples as `tables.ship` sends them): premises hash-partitioned (`tables.string_partitions`)."""
    if examples.num_rows:
        yield from partitioned(examples, string_partitions(examples["premise"], n), spill)


def _starts(table: pa.Table, columns: list[str]) -> np.ndarray:
    """Per row of a sorted table: True where its values in `columns` differ from the previous row's."""
    n = table.num_rows
    out = np.zeros(n, dtype=bool)
    if n:
        out[0] = True
    for c in columns:
        col = table[c].combine_chunks()
        if n > 1:
            out[1:] |= pc.fill_null(pc.not_equal(col.slice(1), col.slice(0, n - 1)), True).to_numpy(False)
    return out


def _sorted(table: pa.Table, columns: list[str]) -> pa.Table:
    return take_rows(table, pc.sort_indices(table, sort_keys=[(c, "ascending") for c in columns]))


def rows_table(examples: pa.Table, source: str, drop_without_negatives: bool = False) -> tuple[pa.Table, dict]:
    """`snli.rows_for_premise` over every premise of `examples` at once: (rows as a table of `S.SCHEMA`, unused
    counts by reason)."""
    unused: dict[str, int] = {}

    def count(reason: str, n: int) -> None:
        if n:
            unused[reason] = unused.get(reason, 0) + int(n)

    neutral = pc.equal(examples["label"], NEUTRAL)
    count("neutral_hypothesis", pc.sum(neutral).as_py() or 0)
    ex = examples.filter(pc.invert(neutral))
    ex = ex.append_column("_pair", pc.fill_null(ex["pair_id"], ""))
    ex = _sorted(ex, ["premise", "label", "hypothesis", "_pair", "path", "line"])
    first = _starts(ex, ["premise", "label", "hypothesis"])
    labels = np.asarray(ex["label"].to_pylist(), dtype=object)
    for label in (ENTAILMENT, CONTRADICTION):
        count(f"duplicate_{label}", int(((labels == label) & ~first).sum()))
    ex = _sorted(ex.filter(pa.array(first)), ["premise", "hypothesis", "label"])
    again = ~_starts(ex, ["premise", "hypothesis"])  # the same hypothesis under the other label
    conflict = again | np.r_[again[1:], False]
    count("conflicting_labels", int(conflict.sum()))
    ex = ex.filter(pa.array(~conflict))
    is_ent = pc.equal(ex["label"], ENTAILMENT)
    ent, con = ex.filter(is_ent), ex.filter(pc.invert(is_ent))
    with_ent = pc.is_in(con["premise"], value_set=pc.unique(ent["premise"])) if ent.num_rows else None
    if with_ent is None:
        count("contradiction_without_entailment", con.num_rows)
        return S.SCHEMA.empty_table(), unused
    count("contradiction_without_entailment", con.num_rows - (pc.sum(with_ent).as_py() or 0))
    con = con.filter(with_ent)
    starts = np.flatnonzero(_starts(con, ["premise"]))
    offsets = pa.array(np.r_[starts, con.num_rows, con.num_rows].astype(np.int32))  # + one empty list at the end
    negatives = pa.ListArray.from_arrays(offsets, con["hypothesis"].combine_chunks())
    negative_ids = pa.ListArray.from_arrays(offsets, con["pair_id"].combine_chunks())
    group = pc.index_in(ent["premise"], value_set=con["premise"].combine_chunks().take(pa.array(starts)))
    if drop_without_negatives:
        has = pc.is_valid(group)
        count("no_negatives", ent.num_rows - (pc.sum(has).as_py() or 0))
        ent, group = ent.filter(has), group.filter(has)
    group = pc.fill_null(group, len(starts)).combine_chunks()
    return _rows(ent, negatives.take(group), negative_ids.take(group), source), unused


def provenance(paths: list[str], lines: list[int], genres: list[str | None]) -> list[str]:
    """`S.provenance_json(file=, line=, genre=)` of many rows; `genres` are JSON texts (JSON of paths cached)."""
    quoted: dict[str, str] = {}

    def q(v: str) -> str:
        if v not in quoted:
            quoted[v] = json.dumps(v, ensure_ascii=False)
        return quoted[v]

    return [
        f'{{"file": {q(p)}, "line": {n}}}' if g is None else f'{{"file": {q(p)}, "genre": {g}, "line": {n}}}'
        for p, n, g in zip(paths, lines, genres, strict=True)
    ]


def _rows(ent: pa.Table, negatives: pa.Array, negative_ids: pa.Array, source: str) -> pa.Table:
    n = ent.num_rows
    prov = provenance(ent["path"].to_pylist(), ent["line"].to_pylist(), ent["genre"].to_pylist())
    columns = {
        S.ID: row_ids(source, ent["premise"], ent["hypothesis"]),
        S.SOURCE: pa.array([source] * n, pa.string()),
        S.PAIR_TYPE: pa.array(["nli"] * n, pa.string()),
        S.QUERY: ent["premise"].combine_chunks(),
        S.QUERY_ID: ent["premise_id"].combine_chunks(),
        S.POSITIVE: ent["hypothesis"].combine_chunks(),
        S.POSITIVE_ID: ent["pair_id"].combine_chunks(),
        S.NEGATIVES: negatives,
        S.NEGATIVE_IDS: negative_ids,
        S.PROVENANCE: pa.array(prov, pa.string()),
    }
    arrays = [columns[f.name] if f.name in columns else pa.nulls(n, f.type) for f in S.SCHEMA]
    return pa.Table.from_arrays(arrays, schema=S.SCHEMA)
