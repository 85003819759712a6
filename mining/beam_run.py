"""The files a Beam mining run shares between its stages: memory-mapped on a mounted work dir, else via FileSystems."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from negminer.mining import index as ix
from negminer.mining import runfiles as rf
from negminer.mining.beam_corpus import corpus_table
from negminer.mining.config import MineConfig
from negminer.mining.corpus import DOC_ID
from negminer.mining.encode import resolve_device
from negminer.mining.groups import Groups
from negminer.mining.store import EmbeddingStore
from negminer.pipelines import io

KINDS = ("documents", "queries")
QUERY_BLOCK = 16384  # queries per search task: the query batch of one FAISS call in `index.search_sharded`


class RunFiles:
    """The files one pipeline run shares between its stages, under `<work_dir>/beam/<run id>/`."""

    def __init__(self, cfg: MineConfig, run_dir: str):
        self.cfg, self.dir = cfg, run_dir
        self._meta: dict | None = None

    def path(self, name: str) -> str:
        return io.join(self.dir, name)

    def meta(self) -> dict:
        if self._meta is None:
            self._meta = rf.load_json(self.path("meta.json"))
        return self._meta

    def store(self, kind: str) -> EmbeddingStore:
        return EmbeddingStore(self.cfg.work_dir, self.meta()["fields"][kind])

    def keys(self, kind: str) -> np.ndarray:
        return rf.load_npy(self.path(f"{kind}.keys.npy"))  # memory-mapped: an encode task reads only its chunk's

    def texts(self, kind: str) -> pa.ChunkedArray:
        return self._table(kind).column("text")

    def doc_ids(self) -> pa.ChunkedArray:
        return self._table("documents").column(DOC_ID)

    def _table(self, name: str) -> pa.Table:
        if name == "documents":
            return corpus_table(self.dir)  # the corpus stage's parts
        return rf.load_table(self.path(f"{name}.arrow"))

    def array(self, name: str) -> np.ndarray:
        """One of the group arrays Prepare saved, memory-mapped."""
        return rf.load_npy(self.path(f"{name}.npy"))

    def group_batch(self, lo: int, hi: int) -> Groups:
        """Groups lo..hi-1 alone (their CSR rows re-based): what `mine.select_all` reads of them."""
        key, query = self.array("group_key")[lo:hi], self._table("groups").column("query").slice(lo, hi - lo)
        csr = []
        for name in ("pos", "excl"):
            indptr = np.asarray(self.array(f"{name}_indptr")[lo : hi + 1])
            csr += [indptr - indptr[0], np.asarray(self.array(f"{name}_docs")[indptr[0] : indptr[-1]])]
        none = np.zeros(0, np.int64)  # rows are not read by selection
        return Groups(query.combine_chunks(), np.asarray(key), none, none, csr[0], csr[1], csr[2], csr[3])

    def top(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, candidates) of groups lo..hi-1 from the merged top-k of their query block."""
        qid, off = divmod(lo, QUERY_BLOCK)
        if hi - lo + off > QUERY_BLOCK:
            raise ValueError(f"groups {lo}..{hi} span two query blocks")
        scores = rf.load_npy(self.path(f"top-{qid}.scores.npy"))[off : off + hi - lo]
        idx = rf.load_npy(self.path(f"top-{qid}.idx.npy"))[off : off + hi - lo]
        return np.asarray(scores), np.asarray(idx)

    def save_located(self, kind: str, store: EmbeddingStore, chunk: np.ndarray, row: np.ndarray) -> None:
        rf.save_npy(self.path(f"{kind}.chunk.npy"), chunk)
        rf.save_npy(self.path(f"{kind}.row.npy"), row)
        rf.save_json(self.path(f"{kind}.chunks.json"), store.located_chunks())

    def located(self, kind: str) -> tuple[EmbeddingStore, tuple[np.ndarray, np.ndarray]]:
        """The store with its chunks numbered as when the locations were saved, and the (chunk, row) of each text."""
        store = self.store(kind).use_located_chunks(rf.load_json(self.path(f"{kind}.chunks.json")))
        return store, (self.array(f"{kind}.chunk"), self.array(f"{kind}.row"))

    def write_sources(self, files: list[str]) -> list[tuple[int, str, bool]]:
        """Number the corpus sources (input files, then `--corpus` files) and save the list for Prepare."""
        extra = io.expand_patterns(self.cfg.corpus) if self.cfg.corpus else []
        sources = [(i, f, i >= len(files)) for i, f in enumerate(files + extra)]
        rf.save_json(self.path("sources.json"), {"files": files, "sources": sources})
        return sources

    def sources(self) -> dict:
        return rf.load_json(self.path("sources.json"))

    def rejects(self) -> list[dict]:
        return rf.load_json(self.path("rejects.json"))

    def gpu(self) -> bool:
        return resolve_device(self.cfg.device) == "cuda" and ix.gpu_available()
