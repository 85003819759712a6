"""FEVER sentences and tuple rows on Arrow: `parse_wiki_lines` of a table of pages, the sentence clean-up, the rows.

Each function gives what the per-page Python of `fever.py` gives; `pyarrow.compute` does the work where the outcome
is plain (ASCII `lines`; ASCII sentences without Penn-Treebank bracket tokens), Python the rest, value by value.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from negminer.pipelines import lines
from negminer.pipelines import schema as S
from negminer.pipelines.fever import PAIR_TYPE, SOURCE, page_positive, parse_wiki_lines
from negminer.pipelines.nli_columns import clean_ascii
from negminer.pipelines.tables import row_ids
from negminer.pipelines.transforms.tabular import tidy, untokenize_ptb

SENTENCES = pa.schema([("index", pa.int64()), ("sentence", pa.string()), ("raw", pa.string())])
_PTB_TOKEN = "-[LR][RSC]B-|-COLON-"  # a string without these is left as is by `untokenize_ptb`


def _mask(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return pc.fill_null(arr, False).to_numpy(zero_copy_only=False).astype(bool)


def sentence_table(pages: pa.Table) -> pa.Table:
    """(index, sentence number as decimal text, raw sentence) of every sentence `parse_wiki_lines` gives for each
    page (`index`, `lines` columns): a numbered piece with a non-blank sentence, the last one of a number winning."""
    index, text = pages["index"].combine_chunks(), pages["lines"].combine_chunks()
    plain = _mask(pc.string_is_ascii(text))
    parts = [_ascii_sentences(index.filter(pa.array(plain)), text.filter(pa.array(plain)))]
    rows = [
        (i, str(n), s)
        for i, t in zip(
            index.filter(pa.array(~plain)).to_pylist(), text.filter(pa.array(~plain)).to_pylist(), strict=True
        )
        for n, s in parse_wiki_lines(t).items()
    ]
    cols = list(zip(*rows, strict=True)) or [(), (), ()]
    parts.append(
        pa.Table.from_arrays([pa.array(c, f.type) for c, f in zip(cols, SENTENCES, strict=True)], schema=SENTENCES)
    )
    return pa.concat_tables(parts)


def _ascii_sentences(index: pa.Array, text: pa.Array) -> pa.Table:
    """`sentence_table` of pages whose `lines` are ASCII (where `isdecimal` is `[0-9]` and `strip` trims
    `ASCII_WHITESPACE`)."""
    pieces = pc.split_pattern(text, "\n")
    parent = pc.list_parent_indices(pieces)
    fields = pc.split_pattern(pc.list_flatten(pieces), "\t", max_splits=2)
    tabbed = pa.array(_mask(pc.greater_equal(pc.list_value_length(fields), 2)))
    fields, parent = fields.filter(tabbed), parent.filter(tabbed)
    head, raw = pc.list_element(fields, 0), pc.list_element(fields, 1)
    ok = pc.and_(
        pc.match_substring_regex(head, "^[0-9]+$"),
        pc.greater(pc.binary_length(pc.utf8_trim(raw, lines.ASCII_WHITESPACE)), 0),
    )
    ok = pa.array(_mask(ok))
    number = pc.replace_substring_regex(head.filter(ok), "^0+([0-9])", "\\1")  # as str(int(head))
    table = pa.table(
        {
            "index": index.take(parent.filter(ok)),
            "sentence": number,
            "raw": raw.filter(ok),
            "at": pa.array(np.arange(len(number), dtype=np.int64)),
        }
    )
    if not len(number):
        return table.drop_columns(["at"]).cast(SENTENCES)
    last = table.group_by(["index", "sentence"], use_threads=False).aggregate([("at", "max")])
    if last.num_rows < table.num_rows:  # a number given twice in a page: the last one wins (a dict's assignment)
        table = table.take(last["at_max"])
    return table.drop_columns(["at"]).cast(SENTENCES)


_TOKENS = "LRB|LSB|LCB|RRB|RSB|RCB|COLON"
_OVERLAP = f"-({_TOKENS})-({_TOKENS})-"  # two tokens sharing a `-`: one pass and several passes may differ
_WS = "[\\t\\n\\x0b\\x0c\\r\\x1c-\\x1f ]*"  # Python's \\s* on ASCII (RE2's \\s lacks \\x0b, \\x1c-\\x1f)
_PASSES = [(f"-L{k}B-{_WS}", c) for k, c in zip("RSC", "([{", strict=True)]
_PASSES += [(f"{_WS}-R{k}B-", c) for k, c in zip("RSC", ")]}", strict=True)] + [("-COLON-", ":")]


def untokenize_ascii(values: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """(`untokenize_ptb` of each ASCII string by `pyarrow.compute`, mask of the strings it is exact for).

    `untokenize_ptb` is one regex pass over all seven tokens; passes token by token give the same text when no two
    tokens overlap (an opening token eats the whitespace after it before a closing one looks for the whitespace
    before it, as in the one pass), so strings with overlapping tokens (`-RRB-LRB-`) and non-ASCII ones are left
    out of the mask."""
    exact = _mask(pc.and_(pc.string_is_ascii(values), pc.invert(pc.match_substring_regex(values, _OVERLAP))))
    has = _mask(pc.match_substring_regex(values, _PTB_TOKEN)) & exact
    if not has.any():
        return values, exact
    some = values.filter(pa.array(has))
    for pattern, char in _PASSES:
        some = pc.replace_substring_regex(some, pattern, char)
    return pc.replace_with_mask(values, pa.array(has), some), exact


def positives_of(raw: pa.Array, clean: bool) -> pa.Array:
    """`tidy(untokenize_ptb(s), clean)` of every raw sentence, "" for one that is blank after it (`missing_line`)."""
    enc = pc.dictionary_encode(raw)
    values, plain = untokenize_ascii(enc.dictionary)
    done = pc.utf8_trim(values, lines.ASCII_WHITESPACE) if not clean else clean_ascii(values)
    # clean_ascii trims; without clean the text stays as is unless it is blank
    done = pc.if_else(pc.equal(done, ""), "", values if not clean else done)
    other = np.flatnonzero(~plain)
    if len(other):
        fixed = [tidy(untokenize_ptb(v), clean) for v in enc.dictionary.take(pa.array(other)).to_pylist()]
        fixed = pa.array([v if v.strip() else "" for v in fixed], pa.string())
        done = pc.replace_with_mask(done, pa.array(~plain), fixed)
    return done.take(enc.indices)


def page_positives(pages: pa.Table, clean: bool) -> pa.Table:
    """(index, positive) of `--positive page` per page (`index`, `title`, `text`, `lines`): `fever.page_positive`,
    "" for a blank one. By `pyarrow.compute` for an ASCII title and text with a printable character (the text is
    the body) that `untokenize_ascii` does exactly; by `page_positive` for the others."""
    title, text = pages["title"].combine_chunks(), pages["text"].combine_chunks()
    body, plain = untokenize_ascii(text)
    plain &= _mask(pc.and_(pc.string_is_ascii(title), pc.match_substring_regex(text, "[!-~]")))
    head, body = pc.utf8_trim(title, lines.ASCII_WHITESPACE), pc.utf8_trim(body, lines.ASCII_WHITESPACE)
    done = pc.if_else(pc.greater(pc.binary_length(head), 0), pc.binary_join_element_wise(head, body, " "), body)
    done = clean_ascii(done) if clean else done
    other = np.flatnonzero(~plain)
    if len(other):
        rows = pages.select(["title", "text", "lines"]).take(pa.array(other)).to_pylist()
        fixed = []
        for r in rows:
            sentences = {} if r["text"].strip() else parse_wiki_lines(r["lines"])
            positive = page_positive(r["title"], r["text"], sentences, clean)
            fixed.append(positive if positive.strip() else "")
        done = pc.replace_with_mask(done, pa.array(~plain), pa.array(fixed, pa.string()))
    return pa.table({"index": pages["index"], "positive": done})


def _quoted(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """`json.dumps(v, ensure_ascii=False)` of every string, computed once per distinct value."""
    enc = pc.dictionary_encode(values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values)
    quoted = pa.array([json.dumps(v, ensure_ascii=False) for v in enc.dictionary.to_pylist()], pa.string())
    return quoted.take(enc.indices)


def rows_table(joined: pa.Table, positive: str) -> pa.Table:
    """Tuple rows of joined evidence (claim columns + page `id`, `title`, `positive`), as `fever.evidence_row`."""
    n = joined.num_rows
    sentence = positive == "sentence"
    page_id = joined["id"].combine_chunks()
    parts = ['{"file": ', _quoted(joined["path"]), ', "label": ', _quoted(joined["label"]), ', "line": ']
    parts += [pc.cast(joined["line"].combine_chunks(), pa.string()), ', "page": ', _quoted(page_id)]
    if sentence:
        parts += [', "sentence": ', joined["sentence"].combine_chunks()]
    parts += [', "title": ', _quoted(joined["title"]), "}"]
    empty = pa.ListArray.from_arrays(pa.array(np.zeros(n + 1, dtype=np.int32)), pa.array([], pa.string()))
    query, positives = joined["claim"].combine_chunks(), joined["positive"].combine_chunks()
    columns = {
        S.ID: row_ids(SOURCE, query, positives),
        S.SOURCE: pa.array([SOURCE] * n, pa.string()),
        S.PAIR_TYPE: pa.array([PAIR_TYPE] * n, pa.string()),
        S.QUERY: query,
        S.QUERY_ID: joined["claim_id"].combine_chunks(),
        S.POSITIVE: positives,
        S.POSITIVE_ID: pc.binary_join_element_wise(page_id, joined["sentence"].combine_chunks(), ":")
        if sentence
        else page_id,
        S.NEGATIVES: empty,
        S.NEGATIVE_IDS: empty,
        S.PROVENANCE: pc.binary_join_element_wise(*parts, ""),
    }
    return pa.Table.from_arrays([columns.get(f.name, pa.nulls(n, f.type)) for f in S.SCHEMA], schema=S.SCHEMA)
