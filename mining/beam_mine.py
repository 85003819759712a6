"""`negminer mine --runner ...`: the miner as a Beam pipeline, encoding and exact search spread over workers.

Prepare (one worker: corpus, query groups and encode plans, built by the in-process code) -> Encode (each planned
chunk through RunInference into the content-addressed store) -> Search ((corpus block x query block) tasks whose
partial top-k merge in a combine, into the search cache) -> Finish (one worker: the in-process miner, which finds
both caches full, then selects, reranks and writes the shards). Both drivers cut the same chunks and batches and
make the same FAISS calls, so they write the same bytes. A rerun encodes only what the store lacks.

Usage: negminer mine --input shards/msmarco --output mined --model M --runner DirectRunner --direct_num_workers=2
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.ml.inference.base import ModelHandler, RunInference
from apache_beam.options.pipeline_options import StandardOptions, TestOptions

from negminer.mining import index as ix
from negminer.mining import mine as core
from negminer.mining.beam_search import SearchBlocks
from negminer.mining.config import MineConfig
from negminer.mining.encode import encode_chunk, plan_missing, resolve_device
from negminer.mining.groups import build_groups
from negminer.mining.store import EmbeddingStore
from negminer.pipelines import io
from negminer.pipelines import runner as R

KINDS = ("documents", "queries")
QUERY_BLOCK = 16384  # queries per search task: the query batch of one FAISS call in `index.search_sharded`


class _Run:
    """The files one pipeline run shares between its stages, under `<work_dir>/beam/<run id>/`."""

    def __init__(self, cfg: MineConfig, run_dir: str):
        self.cfg, self.dir = cfg, run_dir
        self._meta: dict | None = None

    def path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def meta(self) -> dict:
        if self._meta is None:
            with open(self.path("meta.json"), encoding="utf-8") as fh:
                self._meta = json.load(fh)
        return self._meta

    def store(self, kind: str) -> EmbeddingStore:
        return EmbeddingStore(self.cfg.work_dir, self.meta()["fields"][kind])

    def keys(self, kind: str) -> np.ndarray:
        return np.load(self.path(f"{kind}.keys.npy"))

    def texts(self, kind: str) -> pa.ChunkedArray:
        return pa.ipc.open_file(pa.memory_map(self.path(f"{kind}.arrow"), "r")).read_all().column("text")

    def gpu(self) -> bool:
        return resolve_device(self.cfg.device) == "cuda" and ix.gpu_available()


class PrepareFn(beam.DoFn):
    """Builds the corpus and query groups as the in-process miner does; yields the encode plan's chunks."""

    def __init__(self, run: _Run):
        self.run = run

    def process(self, _):
        run, cfg = self.run, self.run.cfg
        os.makedirs(run.dir, exist_ok=True)
        files = cfg.input_files()  # the split, checked against the input's manifest
        corpus = core.build_corpus(cfg, [], files, run.path("documents.arrow"))
        groups = build_groups(files, corpus, cfg.instruction_template)
        docs_e, query_e, _ = core.embedders(cfg, core.load_encoder(cfg))
        qkeys, qlen = core.query_keys(groups)
        with pa.ipc.new_file(run.path("queries.arrow"), pa.schema([("text", pa.string())])) as w:
            w.write_table(pa.table({"text": groups.encoded}))
        np.save(run.path("documents.keys.npy"), corpus.text_key)
        np.save(run.path("queries.keys.npy"), qkeys)
        stores = {
            k: EmbeddingStore(cfg.work_dir, e.cache_fields()) for k, e in zip(KINDS, (docs_e, query_e), strict=True)
        }
        meta = {
            "k": min(cfg.rules().range_max + groups.max_excluded(), len(corpus)),
            "fields": {k: s.fields for k, s in stores.items()},
            "search": core.search_base(cfg, stores["documents"], stores["queries"], corpus, qkeys),
            "queries": len(groups),
        }
        io.write_bytes_atomic(run.path("meta.json"), json.dumps(meta).encode("utf-8"))
        lengths = {"documents": corpus.lengths(), "queries": qlen}
        keys = {"documents": corpus.text_key, "queries": qkeys}
        for kind in KINDS:
            order = plan_missing(stores[kind], keys[kind], lengths[kind])
            for lo in range(0, len(order), cfg.chunk_size):
                yield kind, order[lo : lo + cfg.chunk_size]


class _Embedders(dict):
    """kind -> Embedder (a dict subclass: RunInference keeps the model through a weak reference)."""


class PlannedChunkHandler(ModelHandler):
    """(kind, planned positions) -> (kind, keys, float32 (n, D)): one planned chunk, in its planned batches."""

    def __init__(self, run: _Run):
        super().__init__(max_batch_size=1)  # an element is already a chunk of length-sorted batches
        self.run = run

    def load_model(self):
        docs_e, query_e, batch_size = core.embedders(self.run.cfg, core.load_encoder(self.run.cfg))
        model = _Embedders(zip(KINDS, (docs_e, query_e), strict=True))
        model.batch_size = batch_size
        return model

    def run_inference(self, batch: Sequence[tuple[str, np.ndarray]], model, inference_args=None) -> Iterable[Any]:
        out = []
        for kind, pos in batch:
            texts = self.run.texts(kind).take(pa.array(pos)).to_pylist()
            out.append((kind, self.run.keys(kind)[pos], encode_chunk(texts, model[kind], model.batch_size)))
        return out


class WriteChunkFn(beam.DoFn):
    """(kind, keys, vectors) -> the chunk stored atomically; yields (kind, texts encoded)."""

    def __init__(self, run: _Run):
        self.run = run

    def process(self, element):
        kind, keys, vecs = element
        self.run.store(kind).write_chunk(keys, vecs)
        beam.metrics.Metrics.counter("negminer.mine", f"encoded_{kind}").inc(len(keys))
        yield kind, len(keys)


class CorpusBlocksFn(beam.DoFn):
    """After encoding: the corpus cut into the blocks the in-process search uses, as (doc numbers, vectors)."""

    def __init__(self, run: _Run):
        self.run = run

    def process(self, _, encoded: dict):
        store = self.run.store("documents")
        chunk, row = store.locate(self.run.keys("documents"))
        size = core.SEARCH_SHARD_GPU if self.run.gpu() else core.SEARCH_SHARD_CPU
        yield from ix.coalesce(store.shards(chunk, row), size)


class QueryBlocksFn(beam.DoFn):
    """After encoding: (block id, float32 query vectors) in the blocks of one in-process FAISS call."""

    def __init__(self, run: _Run, block: int):
        self.run, self.block = run, block

    def process(self, _, encoded: dict):
        queries = core.QueryVectors(self.run.store("queries"), self.run.keys("queries"))
        for lo in range(0, len(queries), self.block):
            yield lo // self.block, queries[slice(lo, min(lo + self.block, len(queries)))]


class SaveTopFn(beam.DoFn):
    def __init__(self, run: _Run):
        self.run = run

    def process(self, element):
        qid, (scores, idx) = element
        np.save(self.run.path(f"top-{qid}.scores.npy"), scores)
        np.save(self.run.path(f"top-{qid}.idx.npy"), idx)
        yield qid


class FinishFn(beam.DoFn):
    """Assembles the search cache from the blocks, then runs the in-process miner over the full caches."""

    def __init__(self, run: _Run, block: int, runner: str):
        self.run, self.block, self.runner = run, block, runner

    def process(self, _, blocks: list[int], encoded: dict):
        meta = self.run.meta()
        cache = core.SearchCache(meta["search"], meta["queries"], meta["k"])
        for qid in sorted(blocks):
            rows = slice(qid * self.block, min((qid + 1) * self.block, meta["queries"]))
            cache.scores[rows] = np.load(self.run.path(f"top-{qid}.scores.npy"))
            cache.idx[rows] = np.load(self.run.path(f"top-{qid}.idx.npy"))
        cache.commit()
        encoded = {kind: int(encoded.get(kind, 0)) for kind in KINDS}
        yield core.mine(self.run.cfg, beam={"encoded": encoded, "runner": self.runner})["rows"]


def build_pipeline(p: beam.Pipeline, run: _Run, runner: str) -> None:
    """Wire the mining stages into `p` (see the module docstring)."""
    block = QUERY_BLOCK
    plan = p | "Start" >> beam.Create([None]) | "Prepare" >> beam.ParDo(PrepareFn(run))
    encoded = (
        plan
        | "Spread" >> beam.Reshuffle()
        | "Encode" >> RunInference(PlannedChunkHandler(run))
        | "WriteChunks" >> beam.ParDo(WriteChunkFn(run))
        | "CountEncoded" >> beam.CombinePerKey(sum)
    )
    done = beam.pvalue.AsDict(encoded)  # a side input: the stages below start once encoding has finished
    k = beam.pvalue.AsSingleton(plan | "K" >> beam.CombineGlobally(_KFn(run)))
    corpus = p | "StartSearch" >> beam.Create([None]) | "CorpusBlocks" >> beam.ParDo(CorpusBlocksFn(run), done)
    queries = p | "StartQueries" >> beam.Create([None]) | "QueryBlocks" >> beam.ParDo(QueryBlocksFn(run, block), done)
    saved = (corpus, queries) | "Search" >> SearchBlocks(k) | "SaveTop" >> beam.ParDo(SaveTopFn(run))
    _ = (
        p
        | "StartFinish" >> beam.Create([None])
        | "Finish" >> beam.ParDo(FinishFn(run, block, runner), beam.pvalue.AsList(saved), done)
    )


class _KFn(beam.CombineFn):
    """The search depth Prepare worked out (read once Prepare has run: it depends on the plan)."""

    def __init__(self, run: _Run):
        self.run = run

    def create_accumulator(self):
        return None

    def add_input(self, acc, _):
        return acc

    def merge_accumulators(self, accs):
        return None

    def extract_output(self, acc) -> int:
        return int(self.run.meta()["k"])


def mine_beam(cfg: MineConfig, beam_args: list[str]) -> dict[str, Any]:
    """Run the mining pipeline on the runner the Beam flags name; returns the manifest written to `cfg.output`
    (an empty dict for a `--dry_run=True` job graph, which runs nothing)."""
    if cfg.index != "flat":
        raise ValueError(f"--index {cfg.index}: the Beam miner searches exactly (--index flat) only")
    opts = R.pipeline_options(beam_args)
    runner = opts.view_as(StandardOptions).runner or R.DEFAULT_RUNNER
    run = _Run(cfg, os.path.join(cfg.work_dir, "beam", uuid.uuid4().hex))
    try:
        with beam.Pipeline(runner=R.local_runner(opts), options=opts) as p:
            build_pipeline(p, run, runner)
    finally:
        if os.path.isdir(run.dir):
            shutil.rmtree(run.dir, ignore_errors=True)
    return {} if opts.view_as(TestOptions).dry_run else io.read_manifest(cfg.output)
