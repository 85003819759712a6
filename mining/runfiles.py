"""The Beam miner's hand-off files (numpy arrays, Arrow tables, JSON) on local disk or any Beam file system.

On local disk (a directory every worker mounts) arrays and tables are memory-mapped: a task touches only the pages
it reads. Under a URL (`gs://...`) they go through Beam's `FileSystems`: written atomically, read whole once per
worker process (the files of a run never change once written, so the cache is safe).
"""

from __future__ import annotations

import functools
import io as _io
import json
import os
import shutil

import numpy as np
import pyarrow as pa
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from negminer.pipelines import io

CACHED_FILES = 64  # whole files kept per worker process under a URL


def is_local(path: str) -> bool:
    return FileSystems.get_scheme(path) is None


@functools.lru_cache(maxsize=CACHED_FILES)
def _read_bytes(path: str) -> bytes:
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
        return fh.read()


def save_npy(path: str, arr: np.ndarray) -> None:
    buf = _io.BytesIO()
    np.save(buf, np.asarray(arr), allow_pickle=False)
    io.write_bytes_atomic(path, buf.getvalue())


def load_npy(path: str) -> np.ndarray:
    """The array at `path`: memory-mapped on local disk, read (once per process) elsewhere."""
    if is_local(path):
        return np.load(path, mmap_mode="r")
    return np.load(_io.BytesIO(_read_bytes(path)), allow_pickle=False)


def save_json(path: str, obj) -> None:
    io.write_bytes_atomic(path, json.dumps(obj).encode("utf-8"))


def load_json(path: str):
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
        return json.loads(fh.read().decode("utf-8"))


def save_table(path: str, table: pa.Table) -> None:
    with io.atomic_create(path) as fh, pa.ipc.new_file(fh, table.schema) as w:
        w.write_table(table)


def load_table(path: str) -> pa.Table:
    """The Arrow IPC file at `path`: memory-mapped on local disk (pages, not objects), read whole elsewhere."""
    source = pa.memory_map(path, "r") if is_local(path) else pa.BufferReader(_read_bytes(path))
    return pa.ipc.open_file(source).read_all()


def list_names(folder: str, suffix: str) -> list[str]:
    """Sorted names of the files in `folder` ending with `suffix` (none when the folder does not exist)."""
    if is_local(folder):
        return sorted(f for f in os.listdir(folder) if f.endswith(suffix)) if os.path.isdir(folder) else []
    found = FileSystems.match([io.join(folder, "*" + suffix)])[0].metadata_list
    return sorted(m.path.rsplit("/", 1)[-1] for m in found)


def makedirs(folder: str) -> None:
    if is_local(folder):
        os.makedirs(folder, exist_ok=True)  # object stores have no folders to make


def remove_tree(folder: str) -> None:
    if is_local(folder):
        shutil.rmtree(folder, ignore_errors=True)
        return
    found = FileSystems.match([io.join(folder, "**")])[0].metadata_list
    if found:
        FileSystems.delete([m.path for m in found])
