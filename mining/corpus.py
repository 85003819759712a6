"""The candidate corpus: documents from shards and corpus files, deduplicated by normalised text, in arrow/numpy."""

from __future__ import annotations

import dataclasses
import hashlib
import tempfile
from collections.abc import Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from negminer.mining import extsort
from negminer.pipelines.transforms.clean import normalize_for_match

DOC_ID = "doc_id"
TEXT = "text"


def take(column: pa.Array | pa.ChunkedArray, indices) -> pa.Array:
    """`column.take(indices)` chunk by chunk: Arrow's take on a chunked array first concatenates every chunk (a copy
    of the whole memory-mapped corpus text in the heap, measured with pyarrow 25); this copies only what it takes."""
    idx = np.asarray(indices, dtype=np.int64)
    if isinstance(column, pa.Array):
        return column.take(pa.array(idx))
    if not len(idx):
        return pa.array([], column.type)
    if column.num_chunks == 1:
        return column.chunk(0).take(pa.array(idx))
    bounds = np.cumsum([0] + [len(c) for c in column.chunks])
    where = np.searchsorted(bounds, idx, "right") - 1
    order = np.argsort(where, kind="stable")
    parts, cut = [], np.flatnonzero(np.diff(where[order])) + 1
    for sel in np.split(order, cut):
        c = int(where[sel[0]])
        parts.append(column.chunk(c).take(pa.array(idx[sel] - bounds[c])))
    back = np.empty(len(idx), np.int64)
    back[order] = np.arange(len(idx))
    return pa.concat_arrays(parts).take(pa.array(back))


def hash64(text: str) -> int:
    """Stable 64-bit hash of a string (blake2b; Python's hash() changes between processes)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


def text_keys(texts: Iterable[str]) -> tuple[np.ndarray, np.ndarray]:
    """(hash of the normalised text, hash of the exact text) for each text, as uint64 arrays."""
    norm, exact = [], []
    for t in texts:
        norm.append(hash64(normalize_for_match(t)))
        exact.append(hash64(t))
    return np.array(norm, dtype=np.uint64), np.array(exact, dtype=np.uint64)


def id_keys(ids: Iterable[str | None]) -> np.ndarray:
    """Hash of each source id (0 for a missing id; a real id hashing to 0 is a 2^-64 event)."""
    return np.array([hash64(i) if i is not None else 0 for i in ids], dtype=np.uint64)


@dataclasses.dataclass
class Corpus:
    """Unique documents (first occurrence wins), their keys, and every source id seen for each of them."""

    table: pa.Table  # DOC_ID, TEXT: N rows
    norm_key: np.ndarray  # (N,) uint64, unique
    text_key: np.ndarray  # (N,) uint64: hash of the exact text that gets encoded
    alias_key: np.ndarray  # (A,) uint64 sorted: hash of a source id ...
    alias_doc: np.ndarray  # (A,) int64: ... and the document that carried it
    raw_count: int  # documents read before deduplication
    empty_skipped: int = 0  # documents without text, skipped
    scratch_dir: str | None = None  # where corpus-sized arrays go (`extsort.scratch`); None: the system temp dir
    _index: tuple[np.ndarray, np.ndarray] | None = dataclasses.field(default=None, init=False, repr=False)

    def __len__(self) -> int:
        return self.table.num_rows

    @property
    def texts(self) -> pa.ChunkedArray:
        return self.table.column(TEXT)

    @property
    def doc_ids(self) -> pa.ChunkedArray:
        return self.table.column(DOC_ID)

    def lengths(self) -> np.ndarray:
        """Characters per document (the encoder sorts batches by it), filled record batch by record batch."""
        out = extsort.scratch(self.scratch_dir or tempfile.gettempdir(), np.int64, len(self))
        lo = 0
        for part in self.texts.chunks:
            out[lo : lo + len(part)] = pc.utf8_length(part).to_numpy(zero_copy_only=False)
            lo += len(part)
        return out

    def find_texts(self, norm_keys: np.ndarray) -> np.ndarray:
        """Document index of each normalised-text key, -1 where absent."""
        keys, docs = self._text_index()
        pos = np.minimum(np.searchsorted(keys, norm_keys), len(keys) - 1)
        hit = np.asarray(keys[pos]) == norm_keys
        return np.where(hit, np.asarray(docs[pos]), -1).astype(np.int64)

    def find_ids(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """CSR (indptr, docs): every document carrying each id key (an id may name several texts)."""
        lo = np.searchsorted(self.alias_key, keys, side="left")
        hi = np.searchsorted(self.alias_key, keys, side="right")
        hi = np.where(keys == 0, lo, hi)  # 0 = no id
        counts = hi - lo
        indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        docs = (
            np.concatenate([self.alias_doc[a:b] for a, b in zip(lo, hi, strict=True)]) if counts.sum() else np.zeros(0)
        )
        return indptr, docs.astype(np.int64)

    def _text_index(self) -> tuple[np.ndarray, np.ndarray]:
        """(normalised-text keys sorted, their documents)."""
        if self._index is None:
            order = np.argsort(self.norm_key, kind="stable")
            self._index = (self.norm_key[order], order)
        return self._index


class CorpusBuilder:
    """Collects (ids, texts) batches in memory, keeping the first document per normalised text as they arrive.

    `corpus_disk.DiskCorpusBuilder` gives the same corpus with the texts in a memory-mapped file and its memory
    bounded (the miner uses it); this one is its reference.
    """

    def __init__(self) -> None:
        self._batches: list[pa.RecordBatch] = []
        self._seen = np.zeros(0, np.uint64)  # sorted normalised-text keys of the kept documents ...
        self._seen_doc = np.zeros(0, np.int64)  # ... and their document numbers
        self._norm: list[np.ndarray] = []
        self._exact: list[np.ndarray] = []
        self._alias_key: list[np.ndarray] = []
        self._alias_doc: list[np.ndarray] = []
        self.n_docs = self.raw_count = self.skipped_empty = 0

    def add(self, ids: Sequence[str | None] | pa.Array, texts: Sequence[str] | pa.Array) -> None:
        ids, texts, empty = nonempty_docs(ids, texts)
        self.skipped_empty += empty
        if not len(texts):
            return
        norm, exact = text_keys(texts.to_pylist())
        uniq, first, inverse = np.unique(norm, return_index=True, return_inverse=True)
        pos = np.searchsorted(self._seen, uniq)
        hit = self._seen[np.minimum(pos, max(len(self._seen) - 1, 0))] == uniq if len(self._seen) else pos < 0
        doc = np.empty(len(uniq), np.int64)
        doc[hit] = self._seen_doc[pos[hit]]
        new = np.flatnonzero(~hit)
        by_arrival = new[np.argsort(first[new], kind="stable")]  # new texts numbered in reading order
        doc[by_arrival] = self.n_docs + np.arange(len(by_arrival))
        keep = first[by_arrival]
        self._seen = np.insert(self._seen, pos[new], uniq[new])
        self._seen_doc = np.insert(self._seen_doc, pos[new], doc[new])
        self._norm.append(norm[keep])
        self._exact.append(exact[keep])
        self._batches.append(doc_batch(ids.take(pa.array(keep)), texts.take(pa.array(keep)), norm[keep]))
        idk = id_keys(ids.to_pylist())
        has = idk != 0
        self._alias_key.append(idk[has])
        self._alias_doc.append(doc[inverse][has])
        self.n_docs += len(keep)
        self.raw_count += len(norm)

    def build(self) -> Corpus:
        if not self.n_docs:
            raise ValueError("the corpus is empty: no positives, negatives or --corpus documents were read")
        table = pa.Table.from_batches(self._batches)
        # every (source id -> document) pair, duplicates of a text included, for the by-id positive check
        alias_key, alias_doc = np.concatenate(self._alias_key), np.concatenate(self._alias_doc)
        order = np.lexsort((alias_doc, alias_key))
        alias_key, alias_doc = alias_key[order], alias_doc[order]
        uniq = np.ones(len(alias_key), bool)
        uniq[1:] = (alias_key[1:] != alias_key[:-1]) | (alias_doc[1:] != alias_doc[:-1])
        corpus = Corpus(
            table,
            np.concatenate(self._norm),
            np.concatenate(self._exact),
            alias_key[uniq],
            alias_doc[uniq],
            raw_count=self.raw_count,
            empty_skipped=self.skipped_empty,
        )
        corpus._index = (self._seen, self._seen_doc)  # keys sorted, their documents: what `find_texts` searches
        return corpus


def nonempty_docs(
    ids: Sequence[str | None] | pa.Array, texts: Sequence[str] | pa.Array
) -> tuple[pa.Array, pa.Array, int]:
    """(ids, texts) as Arrow strings without the documents that have no text, and how many were dropped."""
    ids = pa.array(ids, pa.string()) if not isinstance(ids, pa.Array) else ids.cast(pa.string())
    texts = pa.array(texts, pa.string()) if not isinstance(texts, pa.Array) else texts.cast(pa.string())
    if len(ids) != len(texts):
        raise ValueError(f"{len(ids)} ids for {len(texts)} texts")
    if not len(texts):
        return ids, texts, 0
    nonempty = pc.fill_null(pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(texts)), 0), False)
    return ids.filter(nonempty), texts.filter(nonempty), len(texts) - pc.sum(nonempty).as_py()


def doc_batch(ids: pa.Array, texts: pa.Array, norm: np.ndarray) -> pa.RecordBatch:
    """Kept documents as a record batch of the corpus table (missing ids filled)."""
    return pa.record_batch([_fill_missing_ids(ids, norm), texts], names=[DOC_ID, TEXT])


def _fill_missing_ids(ids: pa.Array, norm: np.ndarray) -> pa.Array:
    """A document without a source id gets `h` + its normalised-text hash: stable across runs."""
    if ids.null_count == 0:
        return ids
    mask = pc.is_null(ids)
    missing = np.flatnonzero(mask.to_numpy(zero_copy_only=False))
    fallback = pa.array([f"h{k:016x}" for k in norm[missing].tolist()], pa.string())
    return pc.replace_with_mask(ids, mask, fallback)
