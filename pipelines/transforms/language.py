"""Language id of page samples: py3langid's classifier, its byte automaton walked for a batch of texts at once."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

LANGID_CHARS = 2000  # characters of a document that language id reads
# The batched walk advances every text still being read by one byte per NumPy step (a few microseconds a step,
# whatever the number of texts); py3langid's own Python loop costs ~0.1 microsecond a byte. Past the point where
# fewer texts than this are left (the long tail of a few long non-ASCII samples), the rest is walked per text.
MIN_LIVE = 32


def detect_language(text: str) -> str:
    """ISO 639-1 code of `text` by py3langid (offline model shipped in the package)."""
    import py3langid  # imported here: its model loads on first use, not on module import

    return py3langid.classify(text[:LANGID_CHARS])[0]


def detect_languages(texts: Sequence[str], min_live: int = MIN_LIVE) -> list[str]:
    """`detect_language` of every text, the same codes, with py3langid's byte automaton walked for all at once.

    py3langid walks a DFA over each text's UTF-8 bytes in a Python loop (most of its cost); here one NumPy step
    advances every text by one byte while at least `min_live` texts are being read (`_visits`). The features are
    collected in the same order as py3langid's own walk and scored by its own `_sparse_score`, so each result equals
    `py3langid.classify` (tested on real pages).
    """
    import numpy as np
    from py3langid import langid

    ident = langid._get_identifier()
    if ident._norm_probs or ident.min_confidence is not None or not texts:
        return [detect_language(t) for t in texts]
    encoded = [ident._encode(t[:LANGID_CHARS]) for t in texts]
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))  # longest first: a shrinking prefix is live
    keys, at = _visits(ident, [encoded[i] for i in order], min_live)
    n_feat, width = len(ident.nb_ptc), max(1, len(encoded[order[0]]))
    # Each text's distinct features by first appearance (py3langid's Counter order) with their counts: one sort of
    # (key, position) packed in an int64 groups the keys with their first position first, a second orders them by
    # that position (text-major, so text by text).
    shift = (len(order) * width).bit_length()
    packed = np.sort((keys << shift) | at)
    key = packed >> shift
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    first = packed[starts] & ((1 << shift) - 1)
    counts = np.diff(np.r_[starts, len(packed)]).astype(np.float32)
    by_first = np.argsort(first)  # positions are distinct
    ids, counts = (key[starts] % n_feat)[by_first].astype(np.intp), counts[by_first]
    bounds = np.searchsorted(first[by_first] // width, np.arange(len(order) + 1))
    table = _float32_table(ident, ids)
    out = [""] * len(texts)
    for row, i in enumerate(order):
        a, b = bounds[row], bounds[row + 1]
        out[i] = _classify_visits(ident, table, ids[a:b], counts[a:b])
    return out


def _visits(ident: Any, encoded: list[bytes], min_live: int) -> tuple[Any, Any]:
    """(text row x features + feature, text row x width + byte position) of every feature the automaton emits
    while reading `encoded` (sorted longest first), in text-major order for the batched part.

    Bytes before the position where fewer than `min_live` texts are left are walked by NumPy, all texts at once;
    the rest of the longer texts continues per text from its state there, in py3langid's own loop.
    """
    import numpy as np

    n_feat, n = len(ident.nb_ptc), len(encoded)
    lens = np.array([len(e) for e in encoded], dtype=np.int64)
    width = int(lens[0])
    cut = int(lens[min_live - 1]) if n >= min_live else 0  # positions < cut: >= min_live texts still live
    data = np.zeros((cut, n), dtype=np.int64)  # (L, B) bytes, zero-padded
    for row, e in enumerate(encoded):
        data[: min(len(e), cut), row] = np.frombuffer(e[:cut], dtype=np.uint8)
    nextmove, rowbase, output = _langid_tables(ident)
    states = np.zeros((cut, n), dtype=np.int64)  # (L, B) DFA state after each byte
    state = np.zeros(n, dtype=np.int64)
    live = n
    for pos in range(cut):
        while live and lens[live - 1] <= pos:
            live -= 1
        state = states[pos, :live] = nextmove[rowbase[state[:live]] + data[pos, :live]]
    feats = np.where(np.arange(cut)[:, None] < lens[None, :], output[states], -1)  # (L, B) feature per byte
    rows, pos = np.nonzero(feats.T >= 0)  # C order over (B, L): text by text, bytes in order
    keys, at = [rows * n_feat + feats[pos, rows]], [rows * width + pos]
    nm, rb = ident.tk_nextmove, ident._rowbase
    for row in range(min(n, min_live)):
        if lens[row] <= cut:
            break
        s, tail = (int(states[cut - 1, row]) if cut else 0), []
        append = tail.append
        for byte in encoded[row][cut:]:  # py3langid's visit_counts loop, from position `cut`
            s = nm[rb[s] + byte]
            append(s)
        tail_feats = output[np.array(tail, dtype=np.int64)]
        (tail_pos,) = np.nonzero(tail_feats >= 0)
        keys.append(row * n_feat + tail_feats[tail_pos])
        at.append(row * width + cut + tail_pos)
    return np.concatenate(keys), np.concatenate(at)


@functools.lru_cache(maxsize=1)
def _langid_tables(ident: Any) -> tuple[Any, Any, Any]:
    """py3langid's DFA as NumPy arrays: next state per (row base + byte), row base per state, feature per state."""
    import numpy as np

    return (
        np.frombuffer(ident.tk_nextmove, dtype=np.dtype(ident.tk_nextmove.typecode)),  # a view: 40 MB, not copied
        np.asarray(ident._rowbase, dtype=np.int64),
        np.asarray(ident.tk_output, dtype=np.int64),
    )


_FLOAT32: list[Any] = []  # [py3langid's float16 table, its float32 twin, mask of the rows filled in]


def _float32_table(ident: Any, ids: Any) -> Any:
    """A float32 twin of py3langid's float16 feature table with (at least) the rows `ids` filled in, each row
    converted once per process.

    `float32 @ float16` makes NumPy cast the gathered rows on every call (~5x the product itself); the cast is
    exact, so rows converted once give the same operands and the same product. The twin starts as an empty
    array: rows never seen stay unallocated pages (English pages touch a small part of its 57 MB).
    """
    import numpy as np

    if not _FLOAT32 or _FLOAT32[0] is not ident.nb_ptc:  # first call, or py3langid's set_languages swapped it
        _FLOAT32[:] = [ident.nb_ptc, np.empty(ident.nb_ptc.shape, np.float32), np.zeros(len(ident.nb_ptc), bool)]
    _, table, filled = _FLOAT32
    new = np.unique(ids[~filled[ids]])
    if len(new):
        table[new] = ident.nb_ptc[new]
        filled[new] = True
    return table


def _classify_visits(ident: Any, table: Any, ids: Any, counts: Any) -> str:
    """py3langid's `classify` from one text's features (ids in first-appearance order, float32 counts, `table` the
    float32 twin holding their rows): its `_sparse_score` (`log1p(counts) @ table[ids] + prior`), the floor for a
    text without features, and `_decide`'s alias folding (unnormalised scores), so the same floats and argmax."""
    import numpy as np
    from py3langid import langid

    if len(ids):
        scores = np.log1p(counts) @ table[ids] + ident.nb_pc
    else:
        scores = np.full(len(ident.nb_classes), langid.RAW_FLOOR, dtype=np.float32)
    for i, j in ident._alias_pairs:
        scores[i] = max(scores[i], scores[j])
        scores[j] = langid.RAW_FLOOR
    return ident.nb_classes[int(scores.argmax())]
