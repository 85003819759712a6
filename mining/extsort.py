"""Arrays larger than memory: scratch arrays in unlinked memory-mapped files, and a stable argsort that holds at most
a few `BLOCK`s of rows in memory (a radix partition of the keys into memory-mapped buckets, each sorted alone).

Scratch files are unlinked as soon as they are mapped: nothing is left behind, even by a killed run, and their pages
are file pages the OS can write back and drop, not the process's anonymous memory.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pyarrow as pa

BLOCK = 1 << 16  # rows held in memory at once by the block loops below (512 KiB of uint64)


def scratch(work: str, dtype, n: int | tuple[int, ...], fill=None) -> np.ndarray:
    """An array of `dtype` and shape `n` in memory when it has at most BLOCK rows, else in an unlinked
    memory-mapped file under `work`."""
    shape = (n,) if isinstance(n, int | np.integer) else tuple(n)
    if shape[0] <= BLOCK:
        return np.empty(shape, dtype) if fill is None else np.full(shape, fill, dtype)
    os.makedirs(work, exist_ok=True)
    fd, path = tempfile.mkstemp(suffix=".npy", dir=work)
    os.close(fd)
    try:
        arr = np.lib.format.open_memmap(path, "w+", dtype, shape)
    finally:
        os.remove(path)
    if fill is not None:
        for lo in range(0, shape[0], BLOCK):
            arr[lo : lo + BLOCK] = fill
    return arr


def spill(work: str, arr: np.ndarray) -> np.ndarray:
    """`arr` itself when it has at most BLOCK rows, else a copy in a scratch file (the caller drops `arr`)."""
    if len(arr) <= BLOCK:
        return arr
    out = scratch(work, arr.dtype, arr.shape)
    for a, b in blocks(len(arr)):
        out[a:b] = arr[a:b]
    return out


def spill_texts(work: str, texts: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """`texts` itself when short, else the same strings memory-mapped from an unlinked Arrow file under `work`."""
    if len(texts) <= BLOCK:
        return texts
    os.makedirs(work, exist_ok=True)
    fd, path = tempfile.mkstemp(suffix=".arrow", dir=work)
    os.close(fd)
    try:
        table = pa.table({"text": texts})
        with pa.ipc.new_file(path, table.schema) as w:
            w.write_table(table, max_chunksize=BLOCK)
        return pa.ipc.open_file(pa.memory_map(path, "r")).read_all().column(0)
    finally:
        os.remove(path)


def blocks(n: int, block: int | None = None):
    """(lo, hi) bounds of consecutive blocks (of `BLOCK` rows by default) covering range(n)."""
    block = block or BLOCK
    return ((lo, min(lo + block, n)) for lo in range(0, n, block))


def argsort(keys: np.ndarray, work: str, then: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(order, keys[order]) with order = np.argsort(keys, kind="stable"), or with `then` np.lexsort((then, keys)):
    non-negative integer keys, any length. Above `block` rows the work goes through scratch files under `work`.

    Keys go to buckets by their top bits (one pass counts, one scatters block by block, stably), then each bucket is
    sorted in memory: memory holds a block and the largest bucket (about 2 blocks for hash keys; for skewed keys,
    the most rows sharing one bucket).
    """
    n, block = len(keys), BLOCK
    if n <= block:
        k = np.asarray(keys).astype(np.uint64)
        order = np.argsort(k, kind="stable") if then is None else np.lexsort((np.asarray(then), k))
        return order.astype(np.int64), k[order]
    lo_key = min(int(np.asarray(keys[a:b]).min()) for a, b in blocks(n, block))
    hi_key = max(int(np.asarray(keys[a:b]).max()) for a, b in blocks(n, block))
    if lo_key < 0:
        raise ValueError(f"argsort takes non-negative integer keys, got {lo_key}")
    want = 2 * -(-n // block)  # about half-full buckets for evenly spread keys
    shift = max(0, (hi_key - lo_key).bit_length() - want.bit_length())
    n_buckets = ((hi_key - lo_key) >> shift) + 1

    def bucket(a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
        k = np.asarray(keys[a:b]).astype(np.uint64)
        return k, ((k - np.uint64(lo_key)) >> np.uint64(shift)).astype(np.int64)

    counts = np.zeros(n_buckets, np.int64)
    for a, b in blocks(n, block):
        counts += np.bincount(bucket(a, b)[1], minlength=n_buckets)
    starts = np.concatenate([[0], np.cumsum(counts)])
    cursor = starts[:-1].copy()
    out_key, out_pos = scratch(work, np.uint64, n), scratch(work, np.int64, n)
    out_then = scratch(work, np.asarray(then[:1]).dtype, n) if then is not None else None
    for a, b in blocks(n, block):
        k, bk = bucket(a, b)
        o = np.argsort(bk, kind="stable")
        sb = bk[o]
        dest = cursor[sb] + np.arange(len(o)) - np.searchsorted(sb, sb, "left")  # stable within each bucket
        out_key[dest], out_pos[dest] = k[o], a + o
        if out_then is not None:
            out_then[dest] = np.asarray(then[a:b])[o]
        cursor += np.bincount(bk, minlength=n_buckets)
    for i in np.flatnonzero(counts > 1):
        s, e = starts[i], starts[i + 1]
        k = np.array(out_key[s:e])
        o = np.argsort(k, kind="stable") if out_then is None else np.lexsort((np.array(out_then[s:e]), k))
        out_key[s:e], out_pos[s:e] = k[o], np.array(out_pos[s:e])[o]
    return out_pos, out_key


def run_starts(sorted_keys: np.ndarray, work: str) -> np.ndarray:
    """Where a new key starts in `sorted_keys`: a bool array, True at the first of each run of equal keys."""
    n, block = len(sorted_keys), BLOCK
    out = scratch(work, bool, n)
    prev = None
    for a, b in blocks(n, block):
        k = np.asarray(sorted_keys[a:b])
        first = np.empty(len(k), bool)
        first[0] = prev is None or k[0] != prev
        first[1:] = k[1:] != k[:-1]
        out[a:b], prev = first, k[-1]
    return out
