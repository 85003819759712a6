"""FAISS search: exact inner product over corpus shards with a running top-k, or one IVF / HNSW index."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Iterator

import numpy as np
from tqdm.auto import tqdm

INDEX_KINDS = ("flat", "ivf", "hnsw")
GPU_MAX_K = 2048  # faiss-gpu cannot return more neighbours per query
HNSW_M = 32
IVF_NPROBE = 32

log = logging.getLogger("negminer.mining")


def _faiss():
    try:
        import faiss
    except ImportError as e:
        raise ImportError("mining needs FAISS: pip install 'negminer[cpu]' (faiss-cpu) or 'negminer[gpu]'") from e
    return faiss


def gpu_available() -> bool:
    """True when this FAISS build has GPU support and sees a GPU."""
    faiss = _faiss()
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def check_vectors(x: np.ndarray, name: str, dim: int | None = None) -> np.ndarray:
    """A (n, D) float32 C-contiguous copy/view of `x`, or a ValueError naming what is wrong (FAISS would crash)."""
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D (n, dim) array, got shape {x.shape}")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"{name}: dimension {x.shape[1]} does not match the index dimension {dim}")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{name}: expected floating point vectors, got dtype {x.dtype}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        raise ValueError(f"{name}: {int((~np.isfinite(x)).any(axis=1).sum())} vectors contain nan/inf")
    return x


def merge_topk(
    s1: np.ndarray, i1: np.ndarray, s2: np.ndarray, i2: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Merge two (Q, *) score/index lists into the best `k`: score descending, lower index first on ties."""
    s = np.concatenate([s1, s2], axis=1)
    i = np.concatenate([i1, i2], axis=1)
    s = np.where(i < 0, -np.inf, s)
    order = np.lexsort((np.where(i < 0, np.iinfo(np.int64).max, i), -s.astype(np.float64)), axis=-1)[:, :k]
    return np.take_along_axis(s, order, axis=1), np.take_along_axis(i, order, axis=1)


_GPU_RESOURCES = None


def _gpu_resources():
    """One StandardGpuResources per process (each one reserves GPU scratch memory)."""
    global _GPU_RESOURCES
    if _GPU_RESOURCES is None:
        _GPU_RESOURCES = _faiss().StandardGpuResources()
    return _GPU_RESOURCES


def _flat(dim: int, gpu: bool):
    faiss = _faiss()
    return faiss.GpuIndexFlatIP(_gpu_resources(), dim) if gpu else faiss.IndexFlatIP(dim)


def coalesce(
    shards: Iterable[tuple[np.ndarray, np.ndarray]], min_rows: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Join consecutive (ids, vectors) shards until each holds >= `min_rows` rows (fewer, larger FAISS calls)."""
    ids, vecs, n = [], [], 0
    for i, v in shards:
        ids.append(i)
        vecs.append(v)
        n += len(i)
        if n >= min_rows:
            yield np.concatenate(ids), np.concatenate(vecs)
            ids, vecs, n = [], [], 0
    if ids:
        yield np.concatenate(ids), np.concatenate(vecs)


def search_sharded(
    queries: np.ndarray,
    shards: Iterable[tuple[np.ndarray, np.ndarray]],
    k: int,
    gpu: bool = False,
    query_batch: int = 16384,
    total: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k inner product of `queries` over corpus `shards` (doc indices, vectors), merged shard by shard.

    Only one shard's float32 vectors are in memory at a time. Returns (Q, k) scores and corpus indices (-1 pad).
    """
    queries = check_vectors(queries, "query embeddings")
    q, dim = queries.shape
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if gpu and k > GPU_MAX_K:
        raise ValueError(f"faiss-gpu returns at most {GPU_MAX_K} neighbours; range_max + positives asks for {k}")
    best_s = np.full((q, k), -np.inf, np.float32)
    best_i = np.full((q, k), -1, np.int64)
    bar = tqdm(total=total, unit="doc", desc="search (flat)", leave=False)
    for doc_idx, vecs in shards:
        vecs = check_vectors(vecs, "corpus embeddings", dim)
        index = _flat(dim, gpu)
        index.add(vecs)
        kk = min(k, len(vecs))
        for lo in range(0, q, query_batch):
            s, lab = index.search(queries[lo : lo + query_batch], kk)
            gi = np.where(lab >= 0, doc_idx[np.maximum(lab, 0)], -1)
            best_s[lo : lo + query_batch], best_i[lo : lo + query_batch] = merge_topk(
                best_s[lo : lo + query_batch], best_i[lo : lo + query_batch], s, gi, k
            )
        bar.update(len(vecs))
        del index
    bar.close()
    return best_s, best_i


def build_ann(
    kind: str,
    shards: Iterable[tuple[np.ndarray, np.ndarray]],
    sample: Callable[[int], np.ndarray],
    n_total: int,
    dim: int,
    gpu: bool = False,
):
    """An IVF (nlist ~ 4 sqrt(n), trained on a sample) or HNSW (M=32) inner-product index over every shard.

    Returns (index, ids): `ids[label]` is the corpus index of FAISS label `label`. These indexes hold all vectors.
    """
    faiss = _faiss()
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
    elif kind == "ivf":
        nlist = max(1, min(int(4 * math.sqrt(n_total)), n_total // 39))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        train = check_vectors(sample(min(n_total, max(nlist * 64, 10_000))), "training sample", dim)
        index.train(train)
        index.nprobe = min(IVF_NPROBE, nlist)
    else:
        raise ValueError(f"index must be one of {INDEX_KINDS}, got {kind!r}")
    if gpu and kind == "ivf":
        index = faiss.index_cpu_to_gpu(_gpu_resources(), 0, index)
    ids = []
    for doc_idx, vecs in tqdm(shards, desc=f"index ({kind})", leave=False):
        index.add(check_vectors(vecs, "corpus embeddings", dim))
        ids.append(doc_idx)
    return index, np.concatenate(ids) if ids else np.zeros(0, np.int64)


def search_ann(index, ids: np.ndarray, queries: np.ndarray, k: int, query_batch: int = 16384):
    """Top-k of an index from `build_ann`, labels mapped back to corpus indices."""
    faiss = _faiss()
    queries = check_vectors(queries, "query embeddings", index.d)
    if isinstance(index, faiss.IndexHNSW):
        index.hnsw.efSearch = max(index.hnsw.efSearch, 2 * k)
    out_s, out_i = [], []
    for lo in tqdm(range(0, len(queries), query_batch), desc="search", leave=False):
        s, lab = index.search(queries[lo : lo + query_batch], k)
        out_s.append(s)
        out_i.append(np.where(lab >= 0, ids[np.maximum(lab, 0)], -1))
    return np.concatenate(out_s).astype(np.float32), np.concatenate(out_i).astype(np.int64)
