"""Encoding texts into the embedding cache: length-sorted batches, no grad, only what the cache lacks."""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from tqdm.auto import tqdm

from negminer.mining import extsort
from negminer.mining.corpus import take
from negminer.mining.store import EmbeddingStore

DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "float32", "bfloat16", "float16")

log = logging.getLogger("negminer.mining")


def resolve_device(spec: str) -> str:
    """`auto` -> cuda when torch sees a GPU, else cpu; `cuda` without a GPU is an error."""
    if spec not in DEVICES:
        raise ValueError(f"--device must be one of {DEVICES}, got {spec!r}")
    if spec == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda, but torch sees no CUDA GPU")
    if spec == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return spec


def cpu_bf16_native() -> tuple[bool, str]:
    """Whether this CPU computes bfloat16 matmuls natively (AMX or AVX512-BF16), and the evidence.

    Without them torch emulates bf16 and a matmul runs ~100x slower than float32 (measured on an AVX2-only CPU).
    """
    cpu = getattr(torch._C, "_cpu", None)
    checks = {"amx_bf16": "_is_amx_tile_supported", "avx512_bf16": "_is_avx512_bf16_supported"}
    if cpu is not None and all(hasattr(cpu, f) for f in checks.values()):
        found = [name for name, f in checks.items() if getattr(cpu, f)()]
    else:  # older torch: read the kernel's flags (Linux only; elsewhere assume no native bf16)
        try:
            with open("/proc/cpuinfo", encoding="utf-8") as fh:
                flags = next((ln.split(":", 1)[1].split() for ln in fh if ln.startswith("flags")), [])
        except OSError:
            flags = []
        found = [name for name in checks if name in flags]
    if found:
        return True, "CPU has " + " and ".join(found)
    return False, "CPU has neither AMX nor AVX512-BF16 (bf16 would be emulated)"


def resolve_dtype(spec: str, device: str) -> torch.dtype:
    """`auto` -> bfloat16 on GPU and on CPUs with native bf16, else float32 (see `dtype_reason`)."""
    return _resolve_dtype(spec, device)[0]


def dtype_reason(spec: str, device: str) -> str:
    """One line for the manifest: which dtype `spec` became on `device`, and why."""
    return _resolve_dtype(spec, device)[1]


def _resolve_dtype(spec: str, device: str) -> tuple[torch.dtype, str]:
    if spec not in DTYPES:
        raise ValueError(f"--dtype must be one of {DTYPES}, got {spec!r}")
    if spec != "auto":
        return getattr(torch, spec), "asked for"
    if device == "cuda":
        return torch.bfloat16, "auto: GPU"
    native, why = cpu_bf16_native()
    return (torch.bfloat16 if native else torch.float32), f"auto: {why}"


class Embedder:
    """texts -> (n, D) float32 L2-normalised embeddings, with an encoder following the training/model.py contract."""

    def __init__(self, encoder: Any, prompt: str | None, device: str, dtype: torch.dtype, fingerprint: str):
        self.encoder = encoder.to(device=device, dtype=dtype).eval()
        self.prompt, self.device, self.dtype, self.fingerprint = prompt or None, device, dtype, fingerprint

    def cache_fields(self) -> dict[str, Any]:
        """What the embeddings depend on besides the text: the cache directory is keyed by it."""
        e = self.encoder
        return {
            "fingerprint": self.fingerprint,  # of the weights as loaded, before any dtype conversion
            "pooling": e.pooling,
            "max_length": int(e.max_length),
            "prompt": self.prompt or "",
            "dtype": str(self.dtype).removeprefix("torch."),
        }

    @torch.inference_mode()
    def __call__(self, texts: list[str]) -> np.ndarray:
        batch = self.encoder.tokenize(texts, prompt=self.prompt)
        batch = {k: v.to(self.device) for k, v in batch.items()}
        emb = self.encoder(**batch).float()  # (B, D)
        emb = torch.nn.functional.normalize(emb, dim=-1)  # again in float32: bf16 output is normalised coarsely
        return emb.cpu().numpy()


def length_order(lengths: np.ndarray) -> np.ndarray:
    """Longest first (padding waste is lowest, and an out-of-memory batch shows up at once); ties by position."""
    return np.lexsort((np.arange(len(lengths)), -np.asarray(lengths, dtype=np.int64)))


def encode_missing(  # noqa: C901, PLR0913 — one resumable cache loop over aligned arrays (texts, keys, lengths); split, its chunk/resume logic would be harder to follow
    store: EmbeddingStore,
    texts: pa.Array | pa.ChunkedArray,
    keys: np.ndarray,
    lengths: np.ndarray,
    embed: Callable[[list[str]], np.ndarray] | Sequence[Callable[[list[str]], np.ndarray]],
    batch_size: int = 64,
    chunk_size: int = 16384,
    on_chunk: Callable[[int], None] | None = None,
    desc: str = "encode",
) -> int:
    """Encode every text whose hash the cache lacks, `chunk_size` at a time, each chunk stored atomically.

    `embed` may be a list of embedders (one per GPU): each then takes the next planned chunk in its own thread
    (torch releases the GIL while it computes). Returns how many texts were encoded (0 when everything was cached).
    `on_chunk(i)` runs after chunk i is stored.
    """
    if not len(keys) == len(texts) == len(lengths):
        raise ValueError(f"{len(texts)} texts, {len(keys)} keys, {len(lengths)} lengths")
    order = plan_missing(store, keys, lengths)
    if not len(order):
        return 0
    log.info("%s: %d of %d texts not cached, encoding into %s", desc, len(order), len(keys), store.dir)
    bar = tqdm(total=len(order), unit="text", desc=desc)
    chunks = [order[lo : lo + chunk_size] for lo in range(0, len(order), chunk_size)]
    workers = list(embed) if isinstance(embed, Sequence) else [embed]
    lock = threading.Lock()

    def encode_one(c: int, e: Callable[[list[str]], np.ndarray]) -> None:
        part = chunks[c]
        vecs = encode_chunk(take(texts, part).to_pylist(), e, batch_size, bar.update)
        store.write_chunk(keys[part], vecs)
        if on_chunk is not None:
            with lock:
                on_chunk(c)

    if len(workers) == 1:
        for c in range(len(chunks)):
            encode_one(c, workers[0])
    else:
        log.info("%s: %d chunks over %d devices", desc, len(chunks), len(workers))
        next_chunk = iter(range(len(chunks)))

        def worker(e) -> None:
            while True:
                with lock:
                    c = next(next_chunk, None)
                if c is None:
                    return
                encode_one(c, e)

        with ThreadPoolExecutor(len(workers)) as pool:
            for f in [pool.submit(worker, e) for e in workers]:
                f.result()  # re-raises a worker's error
    bar.close()
    return len(order)


def on_all_gpus(embedders: Sequence[Embedder]) -> list[list[Embedder]]:
    """For each embedder, one copy per visible GPU (encoder copies shared between the embedders, one per device);
    on CPU or with one GPU, the embedders as they are."""
    if (
        not embedders
        or not str(getattr(embedders[0], "device", "")).startswith("cuda")
        or torch.cuda.device_count() < 2
    ):
        return [[e] for e in embedders]
    copies = {0: embedders[0].encoder}
    for i in range(1, torch.cuda.device_count()):
        copies[i] = copy.deepcopy(embedders[0].encoder)
    out = []
    for e in embedders:
        same = [e] + [Embedder(copies[i], e.prompt, f"cuda:{i}", e.dtype, e.fingerprint) for i in sorted(copies)[1:]]
        out.append(same)
    return out


def plan_missing(store: EmbeddingStore, keys: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Positions of the texts the cache lacks (each key once), longest first, in the order they get encoded.

    Both drivers cut this order into the same chunks and batches: a text's embedding depends (in its last bits)
    on the batch it is encoded in, so the same plan is what makes their outputs byte-identical. Corpus-sized
    arrays are scratch arrays and sorts go through `extsort`: memory holds a few blocks of rows.
    """
    work, n = store.scratch_dir, len(keys)
    chunk, _ = store.locate(keys)
    order, sorted_keys = extsort.argsort(keys, work)  # stable: a text repeated in the input is encoded once
    starts = extsort.run_starts(sorted_keys, work)
    first = extsort.scratch(work, bool, n, fill=False)
    for a, b in extsort.blocks(n):
        first[np.asarray(order[a:b])[np.asarray(starts[a:b])]] = True
    del order, sorted_keys, starts
    m = sum(int(((np.asarray(chunk[a:b]) < 0) & np.asarray(first[a:b])).sum()) for a, b in extsort.blocks(n))
    missing, longest = extsort.scratch(work, np.int64, m), extsort.scratch(work, np.uint64, m)
    top = max((int(np.asarray(lengths[a:b]).max()) for a, b in extsort.blocks(n)), default=0)
    at = 0
    for a, b in extsort.blocks(n):
        pos = np.flatnonzero((np.asarray(chunk[a:b]) < 0) & np.asarray(first[a:b])) + a
        missing[at : at + len(pos)] = pos
        longest[at : at + len(pos)] = top - np.asarray(lengths[a:b])[pos - a]  # ascending = longest first
        at += len(pos)
    by_length, _ = extsort.argsort(longest, work)  # ties keep their position order
    plan = extsort.scratch(work, np.int64, m)
    for a, b in extsort.blocks(m):
        plan[a:b] = np.asarray(missing[np.asarray(by_length[a:b])])
    return plan


def encode_chunk(texts: list[str], embed: Callable[[list[str]], np.ndarray], batch_size: int, progress=None):
    """(n, D) embeddings of one planned chunk, `batch_size` texts per encoder call in the given order."""
    out = []
    for b in range(0, len(texts), batch_size):
        out.append(embed(texts[b : b + batch_size]))
        if progress is not None:
            progress(len(out[-1]))
    return np.concatenate(out)
