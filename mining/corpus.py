"""The candidate corpus: documents from shards and corpus files, deduplicated by normalised text, in arrow/numpy."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from negminer.pipelines.transforms.clean import normalize_for_match

DOC_ID = "doc_id"
TEXT = "text"


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
    _sorter: np.ndarray | None = dataclasses.field(default=None, init=False, repr=False)

    def __len__(self) -> int:
        return self.table.num_rows

    @property
    def texts(self) -> pa.ChunkedArray:
        return self.table.column(TEXT)

    @property
    def doc_ids(self) -> pa.ChunkedArray:
        return self.table.column(DOC_ID)

    def lengths(self) -> np.ndarray:
        """Characters per document (the encoder sorts batches by it)."""
        return pc.utf8_length(self.texts).to_numpy(zero_copy_only=False).astype(np.int64)

    def find_texts(self, norm_keys: np.ndarray) -> np.ndarray:
        """Document index of each normalised-text key, -1 where absent."""
        order = self._order()
        pos = np.minimum(np.searchsorted(self.norm_key, norm_keys, sorter=order), len(order) - 1)
        hit = self.norm_key[order[pos]] == norm_keys
        return np.where(hit, order[pos], -1).astype(np.int64)

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

    def _order(self) -> np.ndarray:
        if self._sorter is None:
            self._sorter = np.argsort(self.norm_key, kind="stable")
        return self._sorter


class CorpusBuilder:
    """Collects (ids, texts) batches, keeping the first document per normalised text as they arrive.

    With `path`, kept documents go straight to an Arrow IPC file that `build()` memory-maps: the texts never sit
    in Python memory all at once, only numpy keys (about 50 bytes a document) do.
    """

    def __init__(self, path: str | None = None) -> None:
        self.path = path
        self._writer = None
        self._batches: list[pa.RecordBatch] = []  # without `path`
        self._seen = np.zeros(0, np.uint64)  # sorted normalised-text keys of the kept documents ...
        self._seen_doc = np.zeros(0, np.int64)  # ... and their document numbers
        self._norm: list[np.ndarray] = []
        self._exact: list[np.ndarray] = []
        self._alias_key: list[np.ndarray] = []
        self._alias_doc: list[np.ndarray] = []
        self.n_docs = self.raw_count = self.skipped_empty = 0

    def add(self, ids: Sequence[str | None] | pa.Array, texts: Sequence[str] | pa.Array) -> None:
        ids = pa.array(ids, pa.string()) if not isinstance(ids, pa.Array) else ids.cast(pa.string())
        texts = pa.array(texts, pa.string()) if not isinstance(texts, pa.Array) else texts.cast(pa.string())
        if len(ids) != len(texts):
            raise ValueError(f"{len(ids)} ids for {len(texts)} texts")
        nonempty = pc.fill_null(pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(texts)), 0), False)
        self.skipped_empty += len(texts) - pc.sum(nonempty).as_py() if len(texts) else 0
        ids, texts = ids.filter(nonempty), texts.filter(nonempty)
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
        self._write(_fill_missing_ids(ids.take(pa.array(keep)), norm[keep]), texts.take(pa.array(keep)))
        idk = id_keys(ids.to_pylist())
        has = idk != 0
        self._alias_key.append(idk[has])
        self._alias_doc.append(doc[inverse][has])
        self.n_docs += len(keep)
        self.raw_count += len(norm)

    def _write(self, ids: pa.Array, texts: pa.Array) -> None:
        batch = pa.record_batch([ids, texts], names=[DOC_ID, TEXT])
        if self.path is None:
            self._batches.append(batch)
            return
        if self._writer is None:
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            self._writer = pa.ipc.new_file(self.path, batch.schema)
        self._writer.write_batch(batch)

    def build(self) -> Corpus:
        if not self.n_docs:
            raise ValueError("the corpus is empty: no positives, negatives or --corpus documents were read")
        if self.path is None:
            table = pa.Table.from_batches(self._batches)
        else:
            self._writer.close()
            table = pa.ipc.open_file(pa.memory_map(self.path, "r")).read_all()  # zero-copy: pages, not objects
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
        corpus._sorter = self._seen_doc  # document numbers in key order: the sorted index `find_texts` needs
        return corpus


def _fill_missing_ids(ids: pa.Array, norm: np.ndarray) -> pa.Array:
    """A document without a source id gets `h` + its normalised-text hash: stable across runs."""
    if ids.null_count == 0:
        return ids
    mask = pc.is_null(ids)
    missing = np.flatnonzero(mask.to_numpy(zero_copy_only=False))
    fallback = pa.array([f"h{k:016x}" for k in norm[missing].tolist()], pa.string())
    return pc.replace_with_mask(ids, mask, fallback)
