"""`negminer mine --runner ...`: the miner as a Beam pipeline, encoding, search, selection and writing spread over workers.

Prepare (one worker: corpus, query groups and encode plans, built by the in-process code, saved as memory-mappable
files of the run) -> Encode (each planned chunk through RunInference into the content-addressed store) -> Search
((corpus block x query block) tasks whose partial top-k merge in a combine) -> Select (one task per batch of query
groups, `beam_select`) -> rows joined to their group's pick -> shards, then the manifest. Both drivers cut the same
chunks, batches and group batches and make the same FAISS calls, so they write the same bytes. A rerun encodes
only what the store lacks.

Usage: negminer mine --input shards/msmarco --output mined --model M --runner DirectRunner --direct_num_workers=2
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.ml.inference.base import ModelHandler, RunInference
from apache_beam.options.pipeline_options import StandardOptions, TestOptions

from negminer.mining import beam_run as br
from negminer.mining import beam_select as sel
from negminer.mining import index as ix
from negminer.mining import mine as core
from negminer.mining import runfiles as rf
from negminer.mining.beam_corpus import ReadAndDedup, load_corpus
from negminer.mining.beam_run import KINDS, RunFiles
from negminer.mining.beam_search import SearchBlocks
from negminer.mining.config import MineConfig
from negminer.mining.corpus import take
from negminer.mining.encode import dtype_reason, encode_chunk, plan_missing, resolve_device
from negminer.mining.groups import Groups, build_groups
from negminer.mining.output import row_positive_slot, shard_count
from negminer.mining.remote import is_endpoint
from negminer.mining.sources import detect_format
from negminer.mining.store import EmbeddingStore
from negminer.pipelines import io
from negminer.pipelines import runner as R
from negminer.pipelines import schema as S
from negminer.training.model import check_model_ref


class PrepareFn(beam.DoFn):
    """Builds the corpus and query groups as the in-process miner does and saves them for the later stages;
    yields the encode plan's chunks."""

    def __init__(self, run: RunFiles):
        self.run = run

    def process(self, _, parts: list[int]):
        run, cfg = self.run, self.run.cfg
        rf.makedirs(run.dir)
        meta = run.sources()
        files = meta["files"]
        rejects: list[dict] = []
        corpus = load_corpus(run.dir, len(meta["sources"]), rejects)
        groups = build_groups(files, corpus, cfg.instruction_template)
        encoder = core.load_encoder(cfg)
        docs_e, query_e, _ = core.embedders(cfg, encoder)
        qkeys, qlen = core.query_keys(groups)
        for name, column, values in (("queries", "text", groups.encoded), ("groups", "query", groups.query)):
            table = pa.table({column: pa.array(values, pa.string())})
            rf.save_table(run.path(f"{name}.arrow"), table)
        rf.save_npy(run.path("documents.keys.npy"), corpus.text_key)
        rf.save_npy(run.path("queries.keys.npy"), qkeys)
        _save_groups(run, groups)
        io.write_bytes_atomic(run.path("rejects.json"), json.dumps(rejects).encode("utf-8"))
        stores = {
            k: EmbeddingStore(cfg.work_dir, e.cache_fields()) for k, e in zip(KINDS, (docs_e, query_e), strict=True)
        }
        k = min(cfg.rules().range_max + groups.max_excluded(), len(corpus))
        meta = {
            "k": k,
            "fields": {kind: s.fields for kind, s in stores.items()},
            "search": core.search_base(cfg, stores["documents"], stores["queries"], corpus, qkeys),
            "queries": len(groups),
            "files": files,
            "file_rows": _row_offsets(files),
            "info": _info(cfg, encoder, stores, k, corpus, rejects, len(groups), run.gpu()),
        }
        io.write_bytes_atomic(run.path("meta.json"), json.dumps(meta).encode("utf-8"))
        lengths = {"documents": corpus.lengths(), "queries": qlen}
        keys = {"documents": corpus.text_key, "queries": qkeys}
        for kind in KINDS:
            order = plan_missing(stores[kind], keys[kind], lengths[kind])
            for lo in range(0, len(order), cfg.chunk_size):
                yield kind, order[lo : lo + cfg.chunk_size]


def _save_groups(run: RunFiles, groups: Groups) -> None:
    arrays = {
        "group_key": groups.key,
        "pos_indptr": groups.pos_indptr,
        "pos_docs": groups.pos_docs,
        "excl_indptr": groups.excl_indptr,
        "excl_docs": groups.excl_docs,
        "row_group": groups.row_group,
        "row_slot": row_positive_slot(groups),
    }
    for name, arr in arrays.items():
        rf.save_npy(run.path(f"{name}.npy"), arr)


def _row_offsets(files: list[str]) -> list[tuple[str, int]]:
    """(input file, number of its first row): rows are numbered across the files in order, as `build_groups` does."""
    out, r = [], 0
    for path in files:
        out.append((path, r))
        r += sum(b.num_rows for b in io.read_shards([path], columns=[S.ID]))
    return out


def _info(cfg: MineConfig, encoder, stores: dict, k: int, corpus, rejects, n_groups: int, gpu: bool) -> dict:  # noqa: PLR0913 — the facts the in-process manifest records, in its order
    """The manifest's run facts, keys in the in-process miner's order (`reranker`, `encoded`, `runner` are filled
    at the end)."""
    device = resolve_device(cfg.device)
    return {
        "model": cfg.model,
        "fingerprint": encoder.fingerprint(),
        "pooling": encoder.pooling,
        "max_length": int(encoder.max_length),
        "device": device,
        "dtype": stores["documents"].fields["dtype"],
        "dtype_reason": dtype_reason(cfg.dtype, device),
        "index": cfg.index,
        "faiss_gpu": gpu,
        "k": k,
        "reranker": None,
        "judge": None,
        "work_dir": cfg.work_dir,
        "cache": {kind: stores[kind].key for kind in KINDS},
        "encoded": None,
        "runner": None,
        "corpus": {
            "documents": len(corpus),
            "read": corpus.raw_count,
            "rejects": len(rejects),
            "empty_skipped": corpus.empty_skipped,
        },
        "groups": n_groups,
    }


class _Embedders(dict):
    """kind -> Embedder (a dict subclass: RunInference keeps the model through a weak reference)."""


class PlannedChunkHandler(ModelHandler):
    """(kind, planned positions) -> (kind, keys, float32 (n, D)): one planned chunk, in its planned batches."""

    def __init__(self, run: RunFiles):
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
            texts = take(self.run.texts(kind), pos).to_pylist()
            out.append((kind, self.run.keys(kind)[pos], encode_chunk(texts, model[kind], model.batch_size)))
        return out


class WriteChunkFn(beam.DoFn):
    """(kind, keys, vectors) -> the chunk stored atomically; yields (kind, texts encoded)."""

    def __init__(self, run: RunFiles):
        self.run = run

    def process(self, element):
        kind, keys, vecs = element
        self.run.store(kind).write_chunk(keys, vecs)
        beam.metrics.Metrics.counter("negminer.mine", f"encoded_{kind}").inc(len(keys))
        yield kind, len(keys)


class CorpusBlocksFn(beam.DoFn):
    """After encoding: the corpus cut into the blocks the in-process search uses, as (doc numbers, vectors); saves
    where each document's vector is, for the select tasks."""

    def __init__(self, run: RunFiles):
        self.run = run

    def process(self, _, encoded: dict):
        store = self.run.store("documents")
        chunk, row = store.locate(self.run.keys("documents"))
        self.run.save_located("documents", store, chunk, row)
        size = core.SEARCH_SHARD_GPU if self.run.gpu() else core.SEARCH_SHARD_CPU
        yield from ix.coalesce(store.shards(chunk, row), size)


class QueryBlocksFn(beam.DoFn):
    """After encoding: (block id, float32 query vectors) in the blocks of one in-process FAISS call; saves where
    each query's vector is."""

    def __init__(self, run: RunFiles, block: int):
        self.run, self.block = run, block

    def process(self, _, encoded: dict):
        queries = core.QueryVectors(self.run.store("queries"), self.run.keys("queries"))
        self.run.save_located("queries", queries.store, queries.chunk, queries.row)
        for lo in range(0, len(queries), self.block):
            yield lo // self.block, queries[slice(lo, min(lo + self.block, len(queries)))]


class SaveTopFn(beam.DoFn):
    def __init__(self, run: RunFiles):
        self.run = run

    def process(self, element):
        qid, (scores, idx) = element
        rf.save_npy(self.run.path(f"top-{qid}.scores.npy"), scores)
        rf.save_npy(self.run.path(f"top-{qid}.idx.npy"), idx)
        yield qid


class BatchesFn(beam.DoFn):
    """Once the search is saved: the numbers of the group batches to select."""

    def __init__(self, run: RunFiles):
        self.run = run

    def process(self, _, searched: list[int]):
        n = self.run.meta()["queries"]
        yield from range(-(-n // core.GROUP_BATCH))


class InputFilesFn(beam.DoFn):
    """Once Prepare has run: (input file, number of its first row) for each input file."""

    def __init__(self, run: RunFiles):
        self.run = run

    def process(self, _, searched: list[int]):
        for path, r in self.run.meta()["file_rows"]:
            yield path, int(r)


def build_pipeline(p: beam.Pipeline, run: RunFiles, runner: str, files: list[str] | None = None) -> None:
    """Wire the mining stages into `p` (see the module docstring); `files`: the input split's shard files, which
    give the default number of output shards."""
    block = br.QUERY_BLOCK
    sources = run.write_sources(files) if files else []  # none in a dry run: the graph is the same
    parts = p | "Sources" >> beam.Create(sources) | "Corpus" >> ReadAndDedup(run.dir)
    plan = p | "Start" >> beam.Create([None]) | "Prepare" >> beam.ParDo(PrepareFn(run), beam.pvalue.AsList(parts))
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
    searched = beam.pvalue.AsList(saved)  # a side input: selection starts once the search is saved
    selected = (
        p
        | "StartSelect" >> beam.Create([None])
        | "Batches" >> beam.ParDo(BatchesFn(run), searched)
        | "SpreadBatches" >> beam.Reshuffle()
        | "Select" >> sel.Select(run)
    )
    rows = (
        p
        | "StartRows" >> beam.Create([None])
        | "InputFiles" >> beam.ParDo(InputFilesFn(run), searched)
        | "SpreadFiles" >> beam.Reshuffle()
        | "ReadRows" >> beam.ParDo(sel.ReadRowsFn(run))
    )
    mined = (
        {"rows": rows, "pick": selected.picks}
        | "JoinPicks" >> beam.CoGroupByKey()
        | "MinedRows" >> beam.ParDo(sel.MinedRowsFn(run)).with_outputs(sel.SCORES, main="rows")
    )
    n = run.cfg.num_shards or shard_count(files or [])
    stats = mined.rows | "WriteRows" >> sel.WriteRows(run.cfg.output, run.cfg.split, n)
    _ = (
        p
        | "StartCommit" >> beam.Create([None])
        | "Commit"
        >> beam.ParDo(
            sel.CommitFn(run, runner),
            beam.pvalue.AsSingleton(stats),
            beam.pvalue.AsList(selected[sel.SUMMARY]),
            beam.pvalue.AsList(mined[sel.SCORES]),
            done,
        )
    )


class _KFn(beam.CombineFn):
    """The search depth Prepare worked out (read once Prepare has run: it depends on the plan)."""

    def __init__(self, run: RunFiles):
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
    if cfg.judge is not None:
        raise ValueError("--judge: not on the Beam miner yet; run without --runner")
    opts = R.pipeline_options(beam_args)
    runner = opts.view_as(StandardOptions).runner or R.DEFAULT_RUNNER
    dry = opts.view_as(TestOptions).dry_run
    files: list[str] = []
    if not dry:  # a job graph built to be submitted elsewhere: its input, model and GPU are checked there
        resolve_device(cfg.device)
        files = cfg.input_files()  # an incomplete input is refused before anything starts
        if not is_endpoint(cfg.model):
            check_model_ref(cfg.model)
        if cfg.reranker:
            check_model_ref(cfg.reranker, "--reranker")
        for path in io.expand_patterns(cfg.corpus) if cfg.corpus else []:
            detect_format(path)  # an unknown format: one line here, not an error in a worker
    run = RunFiles(cfg, io.join(cfg.work_dir, "beam", uuid.uuid4().hex))
    try:
        with contextlib.ExitStack() as stack:
            if not dry:  # the workers write the output: the driver holds its lock for the whole job
                stack.enter_context(io.output_lock(cfg.output, "mine"))
                io.begin_split(cfg.output, cfg.split)
            with beam.Pipeline(runner=R.local_runner(opts), options=opts) as p:
                build_pipeline(p, run, runner, files)
    finally:
        rf.remove_tree(run.dir)
    return {} if dry else io.read_manifest(cfg.output)
