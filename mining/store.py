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
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

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
        """
        self._names, have = self._valid_chunks()
        chunk = np.full(len(keys), -1, np.int32)
        row = np.full(len(keys), -1, np.int32)
        if not self._names or not len(keys):
            return chunk, row
        all_keys = np.concatenate(have)
        all_chunk = np.repeat(np.arange(len(have), dtype=np.int32), [len(h) for h in have])
        all_row = np.concatenate([np.arange(len(h), dtype=np.int32) for h in have])
        order = np.argsort(all_keys, kind="stable")
        pos = np.minimum(np.searchsorted(all_keys, keys, sorter=order), len(order) - 1)
        hit = all_keys[order[pos]] == keys
        chunk[hit] = all_chunk[order[pos[hit]]]
        row[hit] = all_row[order[pos[hit]]]
        return chunk, row

    def located_chunks(self) -> list[str]:
        """The chunk names as the last `locate` numbered them (to hand its locations to another process)."""
        return list(self._names)

    def use_located_chunks(self, names: list[str]) -> EmbeddingStore:
        """Number the chunks as `located_chunks()` did elsewhere, so its (chunk, row) locations work here."""
        self._names = list(names)
        return self

    def cached_keys(self) -> np.ndarray:
        """Every text hash in the well-formed chunks (malformed ones are removed, as by `locate`)."""
        self._names, have = self._valid_chunks()
        return np.concatenate(have) if have else np.zeros(0, np.uint64)

    def _valid_chunks(self) -> tuple[list[str], list[np.ndarray]]:
        """Names and keys of the well-formed chunks; the others are removed (see `locate`)."""
        found: list[tuple[str, np.ndarray, int]] = []
        for name in self.chunk_names():
            why, keys, dim = self._check(name)
            if why:
                log.warning(
                    "embedding chunk %s is malformed (%s): removed, its texts will be encoded again", name, why
                )
                self._drop(name)
            else:
                found.append((name, keys, dim))
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
        """Per chunk: (document indices, their float32 embeddings); only one chunk is in float32 at a time."""
        order = np.argsort(chunk, kind="stable")
        bounds = np.flatnonzero(np.diff(chunk[order])) + 1
        for part in np.split(order, bounds):
            if len(part):
                mm = self.chunk(int(chunk[part[0]]))
                vecs = np.asarray(mm[row[part]], dtype=np.float32)
                del mm  # unmapped: a pass over a large corpus does not keep every page resident
                yield part.astype(np.int64), vecs

    def dim(self) -> int:
        if not self._names:
            raise ValueError(f"no embeddings cached in {self.dir}")
        if self._dim is None:
            self._dim = int(self.chunk(0).shape[1])
        return self._dim
