"""`mem://`: an in-memory Beam file system for tests (Beam 2.77 ships none), registered by being imported.

Beam finds a file system by scheme among `FileSystem` subclasses, so importing this module makes `mem://...` paths
work with `FileSystems` like `gs://` ones: objects in a flat namespace, no directories, rename = copy + delete.
Every instance shares one process-wide dict, so it serves the in-process DirectRunner, not worker processes.
"""

from __future__ import annotations

import io
import posixpath
import time

from apache_beam.io.filesystem import BeamIOError, CompressedFile, CompressionTypes, FileMetadata, FileSystem

FILES: dict[str, bytes] = {}


class _Writer(io.BytesIO):
    """Bytes written here become the object at `path` on close (as an object store's upload does)."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def close(self) -> None:
        if not self.closed:
            FILES[self.path] = self.getvalue()
        super().close()


class MemoryFileSystem(FileSystem):
    @classmethod
    def scheme(cls) -> str:
        return "mem"

    def join(self, basepath: str, *paths: str) -> str:
        return posixpath.join(basepath.rstrip("/"), *paths)

    def split(self, path: str) -> tuple[str, str]:
        head, _, tail = path.rstrip("/").rpartition("/")
        return head, tail

    def mkdirs(self, path: str) -> None:
        pass

    def has_dirs(self) -> bool:
        return False

    def _list(self, dir_or_prefix: str):
        for path, data in list(FILES.items()):
            if path.startswith(dir_or_prefix):
                yield FileMetadata(path, len(data), 0.0)

    def create(self, path, mime_type="application/octet-stream", compression_type=CompressionTypes.AUTO):
        raw = _Writer(path)
        kind = CompressionTypes.detect_compression_type(path) if compression_type == CompressionTypes.AUTO else None
        kind = kind or compression_type
        return raw if kind == CompressionTypes.UNCOMPRESSED else CompressedFile(raw, kind)

    def open(self, path, mime_type="application/octet-stream", compression_type=CompressionTypes.AUTO):
        if path not in FILES:
            raise BeamIOError(f"no such object {path}", {path: FileNotFoundError(path)})
        raw = io.BytesIO(FILES[path])
        kind = CompressionTypes.detect_compression_type(path) if compression_type == CompressionTypes.AUTO else None
        kind = kind or compression_type
        return raw if kind == CompressionTypes.UNCOMPRESSED else CompressedFile(raw, kind)

    def copy(self, source_file_names, destination_file_names) -> None:
        for src, dst in zip(source_file_names, destination_file_names, strict=True):
            FILES[dst] = FILES[src]

    def rename(self, source_file_names, destination_file_names) -> None:
        for src, dst in zip(source_file_names, destination_file_names, strict=True):
            FILES[dst] = FILES.pop(src)

    def exists(self, path: str) -> bool:
        return path in FILES or any(p.startswith(path.rstrip("/") + "/") for p in FILES)

    def size(self, path: str) -> int:
        return len(FILES[path])

    def last_updated(self, path: str) -> float:
        return time.time()

    def checksum(self, path: str) -> str:
        return str(hash(FILES[path]))

    def metadata(self, path: str) -> FileMetadata:
        return FileMetadata(path, len(FILES[path]), 0.0)

    def delete(self, paths) -> None:
        for path in paths:
            FILES.pop(path, None)
            for p in [p for p in FILES if p.startswith(path.rstrip("/") + "/")]:
                del FILES[p]
