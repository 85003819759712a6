"""Embedding cache: float16 chunks keyed by text hash, under a directory per encoder setting, on any Beam file system.

Layout: `<work_dir>/embeddings/<setting key>/meta.json` plus, per chunk, `<name>.keys.npy` (uint64 hashes of the
exact texts) and `<name>.f16.npy` (float16 (n, D)). Both are written atomically, keys first: a chunk exists once its
`.f16.npy` does, so a run killed at any moment leaves only whole chunks behind. On local disk chunks are
memory-mapped on read; under a URL (`gs://...`, any scheme Beam's `FileSystems` knows) a chunk is read whole.
"""

from __future__ import annotations

import hashlib
import io as _io
import json
import logging
import os
import tempfile
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from negminer.mining import extsort
from negminer.pipelines.io import join, write_bytes_atomic

KEYS_SUFFIX = ".keys.npy"
EMB_SUFFIX = ".f16.npy"
DIM_NAME = "dim.txt"  # the vectors' dimension, written with the first chunk

log = logging.getLogger("negminer.mining")


def setting_key(fields: Mapping[str, Any]) -> str:
    """Directory name for an encoder setting (model fingerprint, pooling, max length, prompt, dtype)."""
    blob = json.dumps(dict(fields), sort_keys=True, ensure_ascii=False).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:24]


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = _io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def _open(path: str):
    return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)


_HEADERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def _npy_header(path: str) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) of a `.npy` file from its header alone (any file system); a ValueError when the file is
    shorter than its header says (a truncated write)."""
    with _open(path) as fh:
        version = np.lib.format.read_magic(fh)
        if version not in _HEADERS:
            raise ValueError(f"unknown .npy format version {version}")
        shape, _, dtype = _HEADERS[version](fh)
        start = fh.tell()
    want, size = start + int(np.prod(shape)) * dtype.itemsize, FileSystems.get_filesystem(path).size(path)
    if size < want:
        raise ValueError(f"{size} bytes, the header promises {want}")
    return shape, dtype


class EmbeddingStore:
    """Content-addressed float16 embeddings for one encoder setting."""

    def __init__(self, work_dir: str, fields: Mapping[str, Any]):
        self.fields = dict(fields)
        self.key = setting_key(fields)
        self.local = FileSystems.get_scheme(work_dir) is None  # a URL: every file through Beam's FileSystems
        self.dir = join(work_dir, "embeddings", self.key)
        # unlinked scratch files of large sorts (`extsort`): always on local disk
        self.scratch_dir = os.path.join(work_dir if self.local else tempfile.gettempdir(), "scratch")
        if self.local:
            os.makedirs(self.dir, exist_ok=True)
        meta = self._path("meta.json")
        if not FileSystems.exists(meta):
            write_bytes_atomic(meta, json.dumps(self.fields, indent=2, sort_keys=True).encode("utf-8"))
        self._names: list[str] = []
        self._dim: int | None = None
        self.bad_chunks = 0  # malformed chunks found and removed by `locate`

    def _path(self, name: str) -> str:
        return join(self.dir, name)

    def _files(self) -> set[str]:
        """Names of the files in the store's directory (temp files of unfinished writes start with a dot)."""
        if self.local:
            return set(os.listdir(self.dir))
        found = FileSystems.match([self._path("*")])[0].metadata_list
        return {m.path.rsplit("/", 1)[-1] for m in found}

    def chunk_names(self) -> list[str]:
        """Whole chunks in the store, sorted (a chunk counts once its embeddings file exists)."""
        files = self._files()
        names = [f[: -len(EMB_SUFFIX)] for f in files if f.endswith(EMB_SUFFIX) and not f.startswith(".")]
        return sorted(n for n in names if n + KEYS_SUFFIX in files)

    def locate(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(chunk number, row) of each text hash in the cache; -1 where it is not cached yet.

        Malformed chunks (unreadable, keys and vectors disagreeing, another dimension than the rest) are deleted
        first and counted in `bad_chunks`: their texts read as missing, so they are encoded again, never used.
        Where a text is in several chunks, the first (by chunk name) wins. Large inputs and outputs are scratch
        arrays (`extsort`): memory holds a few blocks, not every key.
        """
        self._names, sizes = self._valid_chunks()
        n = len(keys)
        chunk = extsort.scratch(self.scratch_dir, np.int32, n, fill=-1)
        row = extsort.scratch(self.scratch_dir, np.int32, n, fill=-1)
        if not self._names or not n:
            return chunk, row
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        all_keys = extsort.scratch(self.scratch_dir, np.uint64, int(offsets[-1]))
        for i in range(len(self._names)):
            all_keys[offsets[i] : offsets[i + 1]] = self.keys(i)
        order, sorted_keys = extsort.argsort(all_keys, self.scratch_dir)
        del all_keys
        for a, b in extsort.blocks(n):
            k = np.asarray(keys[a:b], dtype=np.uint64)
            pos = np.minimum(np.searchsorted(sorted_keys, k), len(order) - 1)
            hit = np.asarray(sorted_keys[pos]) == k
            at = np.asarray(order[pos[hit]])  # the first of equal keys: lowest chunk, then row
            c = np.searchsorted(offsets, at, "right") - 1
            cb, rb = np.full(b - a, -1, np.int32), np.full(b - a, -1, np.int32)
            cb[hit], rb[hit] = c, at - offsets[c]
            chunk[a:b], row[a:b] = cb, rb
        return chunk, row

    def keys(self, i: int) -> np.ndarray:
        """The text hashes of chunk `i` (as numbered by the last `locate`)."""
        with _open(self._path(self._names[i] + KEYS_SUFFIX)) as fh:
            return np.load(_io.BytesIO(fh.read()), allow_pickle=False)

    def located_chunks(self) -> list[str]:
        """The chunk names as the last `locate` numbered them (to hand its locations to another process)."""
        return list(self._names)

    def use_located_chunks(self, names: list[str]) -> EmbeddingStore:
        """Number the chunks as `located_chunks()` did elsewhere, so its (chunk, row) locations work here."""
        self._names = list(names)
        return self

    def cached_keys(self) -> np.ndarray:
        """Every text hash in the well-formed chunks (malformed ones are removed, as by `locate`)."""
        self._names, _ = self._valid_chunks()
        return (
            np.concatenate([self.keys(i) for i in range(len(self._names))]) if self._names else np.zeros(0, np.uint64)
        )

    def _valid_chunks(self) -> tuple[list[str], list[int]]:
        """Names and sizes of the well-formed chunks; the others are removed (see `locate`)."""
        found: list[tuple[str, int, int]] = []
        for name in self.chunk_names():
            why, keys, dim = self._check(name)
            if why:
                log.warning(
                    "embedding chunk %s is malformed (%s): removed, its texts will be encoded again", name, why
                )
                self._drop(name)
            else:
                found.append((name, len(keys), dim))
        if found:  # the dimension recorded by the first write (else most chunks') is the encoder's
            dims, counts = np.unique([d for _, _, d in found], return_counts=True)
            self._dim = self._recorded_dim() or int(dims[np.argmax(counts)])
            for name, _, d in found:
                if d != self._dim:
                    log.warning("embedding chunk %s has dimension %d, not %d: removed", name, d, self._dim)
                    self._drop(name)
            found = [f for f in found if f[2] == self._dim]
        return [f[0] for f in found], [f[1] for f in found]

    def _check(self, name: str) -> tuple[str, np.ndarray, int]:
        """(what is wrong or '', keys, dimension) of one chunk, reading only the keys and the vectors' header."""
        try:
            with _open(self._path(name + KEYS_SUFFIX)) as fh:
                keys = np.load(_io.BytesIO(fh.read()), allow_pickle=False)
            shape, dtype = _npy_header(self._path(name + EMB_SUFFIX))
        except (OSError, ValueError, EOFError) as e:
            return f"unreadable: {e}", np.zeros(0, np.uint64), 0
        if keys.ndim != 1 or keys.dtype != np.uint64:
            return f"keys of shape {keys.shape} and dtype {keys.dtype}", keys, 0
        if len(shape) != 2 or dtype != np.float16 or shape[0] != len(keys) or not shape[1]:
            return f"{len(keys)} keys but vectors of shape {shape} and dtype {dtype}", keys, 0
        return "", keys, int(shape[1])

    def _recorded_dim(self) -> int | None:
        path = self._path(DIM_NAME)
        if not FileSystems.exists(path):
            return None
        try:
            with _open(path) as fh:
                return int(fh.read().decode("utf-8").strip())
        except ValueError:
            return None

    def _drop(self, name: str) -> None:
        self.bad_chunks += 1
        for suffix in (EMB_SUFFIX, KEYS_SUFFIX):  # the vectors first: a half-removed chunk no longer counts
            path = self._path(name + suffix)
            if FileSystems.exists(path):
                FileSystems.delete([path])

    def write_chunk(self, keys: np.ndarray, emb: np.ndarray) -> str:
        """Store one chunk atomically; returns its name (a hash of its keys)."""
        if emb.ndim != 2 or emb.shape[0] != len(keys):
            raise ValueError(f"chunk of {len(keys)} keys got embeddings of shape {emb.shape}")
        if not np.isfinite(emb).all():
            raise ValueError("refusing to cache non-finite embeddings (nan/inf from the encoder)")
        keys = np.ascontiguousarray(keys, dtype=np.uint64)
        recorded = self._recorded_dim()
        if recorded is None:
            write_bytes_atomic(self._path(DIM_NAME), str(emb.shape[1]).encode())
        elif recorded != emb.shape[1]:
            raise ValueError(f"embeddings of dimension {emb.shape[1]} in a store of dimension {recorded}")
        name = hashlib.sha256(keys.tobytes()).hexdigest()[:24]
        write_bytes_atomic(self._path(name + KEYS_SUFFIX), _npy_bytes(keys))
        write_bytes_atomic(self._path(name + EMB_SUFFIX), _npy_bytes(emb.astype(np.float16)))
        return name

    def chunk(self, i: int) -> np.ndarray:
        """float16 (n, D) embeddings of chunk `i` (as numbered by the last `locate`): memory-mapped on local disk,
        read whole from other file systems.

        Not kept open: pages read through a mapping count as resident while it lives, so callers drop it.
        """
        path = self._path(self._names[i] + EMB_SUFFIX)
        if self.local:
            return np.load(path, mmap_mode="r")
        with _open(path) as fh:
            return np.load(_io.BytesIO(fh.read()), allow_pickle=False)

    def gather(self, chunk: np.ndarray, row: np.ndarray) -> np.ndarray:
        """float32 (n, D) embeddings at (chunk, row) positions, in the given order."""
        if (chunk < 0).any():
            raise ValueError(f"{int((chunk < 0).sum())} requested embeddings are not in the cache")
        if not len(chunk):
            return np.zeros((0, self.dim()), np.float32)
        out = np.empty((len(chunk), self.dim()), np.float32)
        order = np.argsort(chunk, kind="stable")
        bounds = np.flatnonzero(np.diff(chunk[order])) + 1
        for sel in np.split(order, bounds):
            mm = self.chunk(int(chunk[sel[0]]))
            out[sel] = mm[row[sel]]
            del mm
        return out

    def shards(self, chunk: np.ndarray, row: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Per chunk: (document indices, their float32 embeddings); only one chunk is in float32 at a time.

        Documents go by chunk (in chunk order, ascending within a chunk) through a bounded-memory sort.
        """
        counts = np.zeros(len(self._names), np.int64)
        for a, b in extsort.blocks(len(chunk)):
            c = np.asarray(chunk[a:b])
            if (c < 0).any():
                raise ValueError(f"{int((c < 0).sum())} requested embeddings are not in the cache")
            counts += np.bincount(c, minlength=len(counts))
        order, _ = extsort.argsort(chunk, self.scratch_dir)
        bounds = np.concatenate([[0], np.cumsum(counts)])
        for i in np.flatnonzero(counts):
            part = np.asarray(order[bounds[i] : bounds[i + 1]], dtype=np.int64)
            mm = self.chunk(int(i))
            vecs = np.asarray(mm[np.asarray(row[part])], dtype=np.float32)
            del mm  # unmapped: a pass over a large corpus does not keep every page resident
            yield part, vecs

    def dim(self) -> int:
        if not self._names:
            raise ValueError(f"no embeddings cached in {self.dir}")
        if self._dim is None:
            self._dim = int(self.chunk(0).shape[1])
        return self._dim
