"""Query groups: rows sharing a query (and instruction) share candidates and every one of their positives."""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa

from negminer.mining import extsort
from negminer.mining.corpus import Corpus, hash64, id_keys, text_keys
from negminer.pipelines import io
from negminer.pipelines import schema as S
from negminer.pipelines.transforms.clean import normalize_for_match


@dataclasses.dataclass
class Groups:
    """G query groups over R input rows (in input order), as arrays."""

    query: pa.Array  # (G,) query text (first occurrence) that gets encoded
    key: np.ndarray  # (G,) uint64 hash of (instruction, normalised query)
    row_group: np.ndarray  # (R,) int64 group of each row
    row_pos_doc: np.ndarray  # (R,) int64 corpus document of each row's positive
    pos_indptr: np.ndarray  # (G+1,) CSR: the positives (by text) of each group ...
    pos_docs: np.ndarray  # ... as corpus documents
    excl_indptr: np.ndarray  # (G+1,) CSR: documents never emitted for the group: positives by text and by id
    excl_docs: np.ndarray
    encoded: pa.Array | None = None  # (G,) the text the encoder sees: the query, or the instruction template filled

    def __post_init__(self) -> None:
        if self.encoded is None:
            self.encoded = self.query

    def __len__(self) -> int:
        return len(self.key)

    def max_excluded(self) -> int:
        return int(np.diff(self.excl_indptr).max(initial=0))


DEFAULT_INSTRUCTION_TEMPLATE = "Instruct: {instruction}\nQuery: {query}"  # E5-mistral / Qwen3-Embedding style


def instructed(query: str, instruction: str | None, template: str = DEFAULT_INSTRUCTION_TEMPLATE) -> str:
    """The query as an instruction-following encoder expects it: `template` filled when the row has an instruction.

    >>> instructed("capital of France?", "Retrieve a passage that answers the question")
    'Instruct: Retrieve a passage that answers the question\nQuery: capital of France?'
    >>> instructed("capital of France?", None)
    'capital of France?'
    """
    return template.format(instruction=instruction, query=query) if instruction else query


def check_template(template: str, flag: str = "--instruction-template") -> str:
    """`template` if it has `{instruction}` and `{query}` and nothing else to fill, else a ValueError naming it."""
    try:
        filled = template.format(instruction="\x00i", query="\x00q")
    except (KeyError, IndexError, ValueError) as e:
        raise ValueError(f"{flag} {template!r}: only {{instruction}} and {{query}} may be filled ({e})") from None
    if "\x00i" not in filled or "\x00q" not in filled:
        raise ValueError(f"{flag} {template!r} must contain {{instruction}} and {{query}}")
    return template


def query_key(query: str, instruction: str | None) -> int:
    return hash64(f"{instruction or ''}\x1f{normalize_for_match(query)}")


def build_groups(input_files: str | list[str], corpus: Corpus, template: str = DEFAULT_INSTRUCTION_TEMPLATE) -> Groups:
    """Read the input shards' queries and positives and group the rows (the corpus must hold every positive).

    A row's `instruction` is part of its group key and of the text encoded for the group (`instructed`).
    """
    queries, encoded, qkeys, pos_doc, excl_rows, excl_docs = [], [], [], [], [], []
    n_rows = 0
    cols = [S.QUERY, S.INSTRUCTION, S.POSITIVE, S.POSITIVE_ID]
    for batch in io.read_shards(input_files, columns=cols):
        q = batch.column(S.QUERY)
        instr = batch.column(S.INSTRUCTION).to_pylist()
        queries.append(q)
        encoded.append(pa.array([instructed(t, i, template) for t, i in zip(q.to_pylist(), instr, strict=True)]))
        qkeys.append(np.array([query_key(t, i) for t, i in zip(q.to_pylist(), instr, strict=True)], dtype=np.uint64))
        norm, _ = text_keys(batch.column(S.POSITIVE).to_pylist())
        docs = corpus.find_texts(norm)
        if (docs < 0).any():
            raise ValueError("a positive is missing from the corpus; build the corpus from the same input shards")
        pos_doc.append(docs)
        indptr, by_id = corpus.find_ids(id_keys(batch.column(S.POSITIVE_ID).to_pylist()))
        rows = np.arange(batch.num_rows) + n_rows
        excl_rows += [rows, np.repeat(rows, np.diff(indptr))]
        excl_docs += [docs, by_id]
        n_rows += batch.num_rows
    if not n_rows:
        raise ValueError(f"no rows in the input shards {input_files}")
    qk = np.concatenate(qkeys)
    uniq, first, inverse = np.unique(qk, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")  # groups in first-occurrence order
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    row_group = rank[inverse].astype(np.int64)
    row_pos_doc = np.concatenate(pos_doc).astype(np.int64)
    query = pa.chunked_array(queries).combine_chunks().take(pa.array(first[order]))
    to_encode = pa.chunked_array(encoded, type=pa.string()).combine_chunks().take(pa.array(first[order]))
    pos_indptr, pos_docs = _csr(row_group, row_pos_doc, len(uniq))
    ex_rows = np.concatenate(excl_rows).astype(np.int64)
    ex_indptr, ex_docs = _csr(row_group[ex_rows], np.concatenate(excl_docs).astype(np.int64), len(uniq))
    groups = Groups(query, uniq[order], row_group, row_pos_doc, pos_indptr, pos_docs, ex_indptr, ex_docs, to_encode)
    return spilled(groups, corpus.scratch_dir) if corpus.scratch_dir else groups


def spilled(groups: Groups, work: str) -> Groups:
    """The same groups with their large arrays and texts in scratch files under `work` (`extsort.spill`)."""
    parts = {}
    for f in dataclasses.fields(groups):
        v = getattr(groups, f.name)
        parts[f.name] = extsort.spill(work, v) if isinstance(v, np.ndarray) else extsort.spill_texts(work, v)
    return Groups(**parts)


def _csr(group: np.ndarray, doc: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Unique (group, doc) pairs -> (indptr, docs) with each group's docs in first-seen order."""
    pairs = np.stack([group, doc], axis=1)
    _, first = np.unique(pairs, axis=0, return_index=True)
    first = np.sort(first)
    g, d = group[first], doc[first]
    order = np.argsort(g, kind="stable")
    counts = np.bincount(g, minlength=n_groups)
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64), d[order]


def padded(indptr: np.ndarray, docs: np.ndarray, groups: np.ndarray, fill: int = -1) -> np.ndarray:
    """CSR rows `groups` -> (len(groups), widest) int64 matrix padded with `fill`."""
    counts = indptr[groups + 1] - indptr[groups]
    width = int(counts.max(initial=0))
    out = np.full((len(groups), max(width, 1)), fill, dtype=np.int64)
    for j in range(width):
        has = counts > j
        out[has, j] = docs[indptr[groups[has]] + j]
    return out
