"""The corpus built on disk: the same documents, keys and aliases as `CorpusBuilder`, in bounded memory.

Reading appends every non-empty document to a raw Arrow file and its three keys (normalised text, exact text, id)
to raw key files. `build()` then sorts the normalised keys with `extsort` (stable: the first occurrence of a text
comes first), numbers the first occurrences in reading order, copies those documents into the corpus Arrow file
and derives the sorted text index and the (id -> document) aliases, block by block. The corpus' arrays are
scratch arrays (`extsort.scratch`): file pages, not the process's heap.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from negminer.mining import extsort
from negminer.mining.corpus import DOC_ID, TEXT, Corpus, doc_batch, id_keys, nonempty_docs, text_keys

KEYS = ("norm", "exact", "id")


class DiskCorpusBuilder:
    """Collects (ids, texts) batches into files next to `path` (the corpus Arrow file `build()` writes)."""

    def __init__(self, path: str) -> None:
        self.path, self.work = path, os.path.dirname(path) or "."
        os.makedirs(self.work, exist_ok=True)
        self._raw_path = path + ".raw"
        self._raw = None
        self._keys = {k: open(f"{path}.{k}.keys", "wb") for k in KEYS}  # noqa: SIM115 — closed in build()
        self.raw_count = self.skipped_empty = 0

    def add(self, ids: Sequence[str | None] | pa.Array, texts: Sequence[str] | pa.Array) -> None:
        ids, texts, empty = nonempty_docs(ids, texts)
        self.skipped_empty += empty
        if not len(texts):
            return
        norm, exact = text_keys(texts.to_pylist())
        for name, keys in zip(KEYS, (norm, exact, id_keys(ids.to_pylist())), strict=True):
            self._keys[name].write(keys.tobytes())
        batch = pa.record_batch([ids, texts], names=["id", "text"])
        if self._raw is None:
            self._raw = pa.ipc.new_file(self._raw_path, batch.schema)
        self._raw.write_batch(batch)
        self.raw_count += len(texts)

    def build(self) -> Corpus:
        for fh in self._keys.values():
            fh.close()
        if not self.raw_count:
            raise ValueError("the corpus is empty: no positives, negatives or --corpus documents were read")
        self._raw.close()
        n, work = self.raw_count, self.work
        norm, exact, idk = (np.memmap(f"{self.path}.{k}.keys", np.uint64, "r", shape=(n,)) for k in KEYS)
        order, sorted_norm = extsort.argsort(norm, work)  # equal texts in reading order: the first one leads
        starts = extsort.run_starts(sorted_norm, work)
        keep, first = extsort.scratch(work, bool, n, fill=False), extsort.scratch(work, np.int64, n)
        carry = 0  # sorted position 0 always starts a run
        for a, b in extsort.blocks(n):
            o, s = np.asarray(order[a:b]), np.asarray(starts[a:b])
            lead = np.maximum.accumulate(np.where(s, np.arange(a, b), carry))  # where each one's run starts
            carry = int(lead[-1])
            first[o] = np.asarray(order[lead])  # the raw position of the text's first occurrence
            keep[o[s]] = True
        doc = extsort.scratch(work, np.int64, n)  # the document of each raw position's first occurrence
        before = 0
        for a, b in extsort.blocks(n):
            counts = np.cumsum(np.asarray(keep[a:b]), dtype=np.int64) + before
            doc[a:b], before = counts - 1, int(counts[-1]) if len(counts) else before
        for a, b in extsort.blocks(n):
            doc[a:b] = np.asarray(doc[np.asarray(first[a:b])])
        n_docs = before
        corpus_keys = self._write_documents(norm, exact, keep, n_docs)
        index_keys, index_docs = self._text_index(sorted_norm, order, starts, doc, n_docs)
        alias_key, alias_doc = self._aliases(idk, doc)
        for k in KEYS:
            os.remove(f"{self.path}.{k}.keys")  # mapped arrays stay readable until dropped
        table = pa.ipc.open_file(pa.memory_map(self.path, "r")).read_all()  # zero-copy: pages, not objects
        corpus = Corpus(
            table,
            *corpus_keys,
            alias_key,
            alias_doc,
            raw_count=n,
            empty_skipped=self.skipped_empty,
            scratch_dir=work,
        )
        corpus._index = (index_keys, index_docs)
        return corpus

    def _write_documents(self, norm, exact, keep, n_docs: int) -> tuple[np.ndarray, np.ndarray]:
        """The kept documents into the corpus Arrow file, in reading order; their (normalised, exact) keys."""
        norm_key, text_key = (extsort.scratch(self.work, np.uint64, n_docs) for _ in range(2))
        raw = pa.ipc.open_file(pa.memory_map(self._raw_path, "r"))
        lo = at = 0
        with pa.ipc.new_file(self.path, pa.schema([(DOC_ID, pa.string()), (TEXT, pa.string())])) as out:
            for i in range(raw.num_record_batches):
                batch = raw.get_batch(i)
                hi = lo + batch.num_rows
                mask = np.asarray(keep[lo:hi])
                kept_norm = np.asarray(norm[lo:hi])[mask]
                if len(kept_norm):
                    rows = pa.array(np.flatnonzero(mask))
                    out.write_batch(doc_batch(batch.column(0).take(rows), batch.column(1).take(rows), kept_norm))
                    norm_key[at : at + len(kept_norm)] = kept_norm
                    text_key[at : at + len(kept_norm)] = np.asarray(exact[lo:hi])[mask]
                    at += len(kept_norm)
                lo = hi
        del raw
        os.remove(self._raw_path)
        return norm_key, text_key

    def _text_index(self, sorted_norm, order, starts, doc, n_docs: int) -> tuple[np.ndarray, np.ndarray]:
        """(the distinct normalised keys sorted, the document of each): the first of each run of the sort."""
        keys, docs = extsort.scratch(self.work, np.uint64, n_docs), extsort.scratch(self.work, np.int64, n_docs)
        at = 0
        for a, b in extsort.blocks(len(order)):
            s = np.asarray(starts[a:b])
            m = int(s.sum())
            keys[at : at + m] = np.asarray(sorted_norm[a:b])[s]
            docs[at : at + m] = np.asarray(doc[np.asarray(order[a:b])[s]])
            at += m
        return keys, docs

    def _aliases(self, idk, doc) -> tuple[np.ndarray, np.ndarray]:
        """Every distinct (source id key, document) pair, sorted: the by-id positive check searches them."""
        n = len(idk)
        m = sum(int((np.asarray(idk[a:b]) != 0).sum()) for a, b in extsort.blocks(n))
        key, kdoc = extsort.scratch(self.work, np.uint64, m), extsort.scratch(self.work, np.int64, m)
        at = 0
        for a, b in extsort.blocks(n):
            k = np.asarray(idk[a:b])
            has = k != 0
            c = int(has.sum())
            key[at : at + c], kdoc[at : at + c] = k[has], np.asarray(doc[a:b])[has]
            at += c
        order, sorted_key = extsort.argsort(key, self.work, then=kdoc)
        out_key, out_doc = extsort.scratch(self.work, np.uint64, m), extsort.scratch(self.work, np.int64, m)
        at, prev = 0, None
        for a, b in extsort.blocks(m):
            k, d = np.asarray(sorted_key[a:b]), np.asarray(kdoc[np.asarray(order[a:b])])
            new = np.ones(len(k), bool)
            new[1:] = (k[1:] != k[:-1]) | (d[1:] != d[:-1])
            if prev is not None:
                new[0] = (k[0], d[0]) != prev
            c = int(new.sum())
            out_key[at : at + c], out_doc[at : at + c] = k[new], d[new]
            at, prev = at + c, (k[-1], d[-1])
        return out_key[:at], out_doc[:at]
