"""The mining job: corpus -> cached embeddings -> FAISS top-k -> selection (+ reranker) -> shards and manifest."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow.compute as pc

from negminer.mining import extsort
from negminer.mining import index as ix
from negminer.mining.config import MineConfig
from negminer.mining.corpus import Corpus, CorpusBuilder, hash64, take
from negminer.mining.corpus_disk import DiskCorpusBuilder
from negminer.mining.encode import (
    Embedder,
    dtype_reason,
    encode_missing,
    on_all_gpus,
    resolve_device,
    resolve_dtype,
)
from negminer.mining.groups import Groups, build_groups, padded
from negminer.mining.output import write_output
from negminer.mining.remote import EndpointEncoder, is_endpoint
from negminer.mining.rerank import Reranker, rescore
from negminer.mining.select import (
    Rules,
    choose,
    eligible,
    lexical_ratio,
    lowest_positive,
    positive_rank,
    positive_side_gap,
    triangle_gap,
)
from negminer.mining.sources import corpus_documents, shard_documents
from negminer.mining.store import EmbeddingStore
from negminer.pipelines import io
from negminer.training.model import check_model_ref

log = logging.getLogger("negminer.mining")
GROUP_BATCH = 512
RERANKER_RELEVANT = "reranker_relevant"  # removal count: candidates the reranker judged relevant
SEARCH_SHARD_CPU = 65_536  # documents per flat search: bounds float32 vectors in memory (x dim x 4 bytes)
SEARCH_SHARD_GPU = 1 << 20
QUERY_BLOCK = 8192  # queries searched at once: bounds query vectors, top-k lists and merge buffers in memory
# (a multiple of FAISS's 4096-query BLAS block that divides the Beam driver's query block: the same FAISS calls)


@dataclasses.dataclass
class Mined:
    """Per query group: the chosen negatives and scores; per positive (CSR order of `Groups.pos_docs`): scores."""

    neg_doc: np.ndarray  # (G, N) int64, -1 padded
    neg_score: np.ndarray  # (G, N) float32 teacher scores (reranker when given, else retriever)
    neg_retriever: np.ndarray  # (G, N) float32 retriever scores
    found: np.ndarray  # (G,)
    pos_score: np.ndarray  # (len(pos_docs),) teacher
    pos_retriever: np.ndarray  # (len(pos_docs),)
    removed: dict[str, int]
    relabel: dict[int, list[tuple[int, float]]] = dataclasses.field(default_factory=dict)  # group -> judged positives


def verdict_threshold(cfg: MineConfig) -> float | None:
    """`--reranker-threshold` (a logit) in the space of the stored reranker scores (its sigmoid for probabilities)."""
    t = cfg.reranker_threshold
    if t is None or cfg.reranker_scores == "logit":
        return t
    return float(1.0 / (1.0 + np.exp(-t)))


def load_encoder(cfg: MineConfig):
    """The local encoder, or for an endpoint URL the `EndpointEncoder`, checked (one-line error if unreachable)."""
    if is_endpoint(cfg.model):
        enc = EndpointEncoder(cfg.model, cfg.api_model or "", cfg.api_concurrency, cfg.api_batch_size)
        enc.check()
        return enc
    from negminer.training.model import Encoder

    return Encoder.from_pretrained(
        cfg.model, pooling=cfg.pooling, max_length=cfg.max_length, trust_remote_code=cfg.trust_remote_code
    )


def build_corpus(cfg: MineConfig, rejects: list[dict], files: list[str], path: str | None = None) -> Corpus:
    """The deduplicated corpus of the input `files` and `--corpus`; with `path`, its texts live in a memory-mapped
    Arrow file there."""
    builder = DiskCorpusBuilder(path) if path else CorpusBuilder()
    for ids, texts in shard_documents(files):
        builder.add(ids, texts)
    for path in io.expand_patterns(cfg.corpus) if cfg.corpus else []:
        for ids, texts in corpus_documents(path, rejects):
            builder.add(ids, texts)
    corpus = builder.build()
    log.info("corpus: %d documents (%d read, %d empty skipped)", len(corpus), corpus.raw_count, builder.skipped_empty)
    return corpus


@dataclasses.dataclass
class Embedded:
    """The two caches after encoding, and what this run had to encode."""

    docs: EmbeddingStore
    queries: EmbeddingStore
    query_keys: np.ndarray  # (G,) uint64 exact-text hashes of the group queries
    fingerprint: str
    encoded: dict[str, int]


def embedders(cfg: MineConfig, encoder: Any) -> tuple[Any, Any, int]:
    """The document (`--doc-prompt`) and query (`--query-prompt`) embedders over one encoder, and the batch size."""
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    fingerprint = encoder.fingerprint()  # of the weights as loaded, before the dtype conversion
    if isinstance(encoder, EndpointEncoder):  # an endpoint: same interface, batches sized to fill its concurrency
        return (
            encoder.embedder(cfg.doc_prompt),
            encoder.embedder(cfg.query_prompt),
            cfg.api_batch_size * cfg.api_concurrency,
        )
    return (
        Embedder(encoder, cfg.doc_prompt, device, dtype, fingerprint),
        Embedder(encoder, cfg.query_prompt, device, dtype, fingerprint),
        cfg.batch_size,
    )


def query_keys(groups: Groups) -> tuple[np.ndarray, np.ndarray]:
    """(exact-text hash, length in characters) of the text encoded for each group: its query, with the instruction
    template filled when the rows have an instruction (so the instruction is part of the cache key)."""
    qkeys = np.array([hash64(q) for q in groups.encoded.to_pylist()], dtype=np.uint64)
    return qkeys, pc.utf8_length(groups.encoded).to_numpy(zero_copy_only=False).astype(np.int64)


def encode_all(cfg: MineConfig, corpus: Corpus, groups: Groups, encoder: Any, on_chunk=None) -> Embedded:
    """Encode whatever the caches lack: documents with `--doc-prompt`, queries with `--query-prompt`."""
    docs_e, query_e, bs = embedders(cfg, encoder)
    docs_on, query_on = on_all_gpus([docs_e, query_e])  # one worker per visible GPU
    docs, queries = (
        EmbeddingStore(cfg.work_dir, docs_e.cache_fields()),
        EmbeddingStore(cfg.work_dir, query_e.cache_fields()),
    )
    cs = cfg.chunk_size
    n_docs = encode_missing(docs, corpus.texts, corpus.text_key, corpus.lengths(), docs_on, bs, cs, on_chunk)
    qkeys, qlen = query_keys(groups)
    n_queries = encode_missing(queries, groups.encoded, qkeys, qlen, query_on, bs, cs, desc="encode queries")
    return Embedded(docs, queries, qkeys, encoder.fingerprint(), {"documents": n_docs, "queries": n_queries})


def mine(
    cfg: MineConfig, encoder: Any = None, on_chunk: Callable[[int], None] | None = None, beam: dict | None = None
) -> dict[str, Any]:
    """Run the whole job; returns the manifest written to `cfg.output`. `encoder` overrides `--model` (tests).

    `beam`: set by the Beam driver, whose pipeline has filled the caches; recorded in the manifest. The output
    directory is locked for the whole run: a second command writing it refuses at once.
    """
    resolve_device(cfg.device)  # settings first, then the input (refused when incomplete), then the output
    if "://" in cfg.work_dir:  # its search cache and scratch are memory-mapped
        raise ValueError(
            f"--work-dir {cfg.work_dir}: the in-process miner needs a local directory (a URL works with --runner)"
        )
    files = cfg.input_files()
    if encoder is None:
        check_model_ref(cfg.model)  # a missing model: one line, before anything loads
    if cfg.reranker:
        check_model_ref(cfg.reranker, "--reranker")
    clock = _Clock()
    if encoder is None and is_endpoint(cfg.model):
        encoder = load_encoder(cfg)  # an unreachable endpoint fails here, before the corpus is read
    spill = os.path.join(cfg.work_dir, "spill", uuid.uuid4().hex)
    try:
        with io.output_lock(cfg.output, "mine"):
            manifest = _mine(cfg, files, encoder, on_chunk, clock, spill, beam)
    finally:
        shutil.rmtree(spill, ignore_errors=True)
    return manifest


def _mine(  # noqa: PLR0913 — the job's inner driver: cfg plus what the two public entry points resolved
    cfg: MineConfig, files: list[str], encoder: Any, on_chunk, clock: _Clock, spill: str, beam: dict | None
) -> dict[str, Any]:
    rules, device = cfg.rules(), resolve_device(cfg.device)
    judge = make_judge(cfg)  # an unreachable judge endpoint fails here, before the corpus is read
    rejects: list[dict] = []
    corpus = build_corpus(cfg, rejects, files, os.path.join(spill, "corpus.arrow"))
    groups = build_groups(files, corpus, cfg.instruction_template)
    clock.lap("corpus")
    encoder = encoder if encoder is not None else load_encoder(cfg)
    clock.lap("load_model")
    emb = encode_all(cfg, corpus, groups, encoder, on_chunk)
    clock.lap("encode")
    doc_loc = emb.docs.locate(corpus.text_key)
    queries = QueryVectors(emb.queries, emb.query_keys)
    k = min(rules.range_max + groups.max_excluded(), len(corpus))
    gpu = device == "cuda" and ix.gpu_available()
    if device == "cuda" and not gpu:
        log.warning("--device cuda, but this FAISS build has no GPU support: searching on CPU")
    cand_s, cand = search(
        cfg, emb.docs, doc_loc, queries, k, gpu, search_base(cfg, emb.docs, emb.queries, corpus, emb.query_keys)
    )
    clock.lap("search")
    reranker = None
    if cfg.reranker:
        dtype = resolve_dtype(cfg.dtype, device)
        reranker = Reranker.from_pretrained(
            cfg.reranker,
            device,
            dtype,
            max_length=cfg.reranker_max_length,
            batch_size=cfg.batch_size,
            probabilities=cfg.reranker_scores == "probability",
        )
    lexical = None
    if rules.lexical is not None:
        from negminer.mining.lexical import LexicalIndex

        lexical = LexicalIndex(corpus.texts.to_pylist())
        clock.lap("lexical_index")
    coverage = make_coverage(cfg, encoder)
    mined = select_all(
        rules,
        groups,
        corpus,
        emb.docs,
        doc_loc,
        queries,
        cand,
        cand_s,
        reranker,
        lexical,
        judge,
        verdict_threshold(cfg),
        coverage,
    )
    clock.lap("select")
    info = {
        "model": cfg.model,
        "fingerprint": emb.fingerprint,
        "pooling": encoder.pooling,
        "max_length": int(encoder.max_length),
        "device": device,
        "dtype": emb.docs.fields["dtype"],
        "dtype_reason": dtype_reason(cfg.dtype, device),
        "index": cfg.index,
        "faiss_gpu": gpu,
        "k": k,
        "reranker": reranker.name() if reranker else None,
        "judge": judge.summary() if judge else None,
        "work_dir": cfg.work_dir,
        "cache": {"documents": emb.docs.key, "queries": emb.queries.key},
        "encoded": beam["encoded"] if beam else emb.encoded,
        "runner": beam["runner"] if beam else "in-process",
        "corpus": {
            "documents": len(corpus),
            "read": corpus.raw_count,
            "rejects": len(rejects),
            "empty_skipped": corpus.empty_skipped,
        },
        "groups": len(groups),
    }
    return write_output(cfg, files, corpus, groups, mined, rejects, info, clock.laps)


class QueryVectors:
    """The query embeddings in the store, read a block at a time: `queries[rows]` -> float32 (len(rows), D)."""

    def __init__(self, store: EmbeddingStore, keys: np.ndarray):
        self.store, (self.chunk, self.row) = store, store.locate(keys)

    def __len__(self) -> int:
        return len(self.chunk)

    def __getitem__(self, rows: np.ndarray | slice) -> np.ndarray:
        return self.store.gather(self.chunk[rows], self.row[rows])


class _Clock:
    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._t = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name], self._t = now - self._t, now


def search_base(cfg: MineConfig, docs: EmbeddingStore, queries: EmbeddingStore, corpus: Corpus, qkeys) -> str:
    """Path stem of the cached top-k for this corpus, these queries and encoder settings (both drivers use it)."""
    h = hashlib.sha256()
    for part in [docs.key, queries.key, corpus.text_key, qkeys]:
        if isinstance(part, str):
            h.update(part.encode())
            continue
        for a, b in extsort.blocks(len(part)):  # block by block: no copy of a corpus-sized array
            h.update(np.ascontiguousarray(part[a:b]))
    h.update(cfg.index.encode())
    return os.path.join(cfg.work_dir, "search", h.hexdigest()[:24])


def search(cfg, store: EmbeddingStore, loc, queries: QueryVectors, k: int, gpu: bool, base: str) -> tuple:  # noqa: PLR0913 — one search's arrays and cache base; cfg carries the settings
    """Top-k candidates of every query group, `QUERY_BLOCK` queries at a time, into memory-mapped arrays cached in
    the work dir at `base` (a re-run with other thresholds skips the search; the Beam driver fills it)."""
    if os.path.exists(base + ".idx.npy") and os.path.exists(base + ".scores.npy"):
        idx, scores = np.load(base + ".idx.npy", mmap_mode="r"), np.load(base + ".scores.npy", mmap_mode="r")
        if idx.shape[1] >= k:
            log.info("search: cached top-%d reused from %s", idx.shape[1], base)
            return scores[:, :k], idx[:, :k]
    chunk, row = loc
    cache = SearchCache(base, len(queries), k)
    index = ids = None
    if cfg.index != "flat":
        rng = np.random.default_rng(0)

        def sample(n: int) -> np.ndarray:
            pick = np.sort(rng.choice(len(chunk), size=n, replace=False))
            return store.gather(chunk[pick], row[pick])

        index, ids = ix.build_ann(cfg.index, store.shards(chunk, row), sample, len(chunk), store.dim(), gpu)
    for lo in range(0, len(queries), QUERY_BLOCK):
        block = slice(lo, min(lo + QUERY_BLOCK, len(queries)))
        q = queries[block]  # (B, D) float32
        if index is None:
            shards = ix.coalesce(store.shards(chunk, row), SEARCH_SHARD_GPU if gpu else SEARCH_SHARD_CPU)
            cache.scores[block], cache.idx[block] = ix.search_sharded(q, shards, k, gpu=gpu, total=len(chunk))
        else:
            cache.scores[block], cache.idx[block] = ix.search_ann(index, ids, q, k)
    return cache.commit()


class SearchCache:
    """(n, k) scores and candidates written into memory-mapped temp files, renamed into place by `commit()`."""

    def __init__(self, base: str, n: int, k: int):
        os.makedirs(os.path.dirname(base), exist_ok=True)
        self.base, self.tmp = base, f"{base}.tmp-{uuid.uuid4().hex}"
        self.scores = np.lib.format.open_memmap(self.tmp + ".scores.npy", "w+", np.float32, (n, k))
        self.idx = np.lib.format.open_memmap(self.tmp + ".idx.npy", "w+", np.int64, (n, k))

    def commit(self) -> tuple[np.ndarray, np.ndarray]:
        self.scores.flush()
        self.idx.flush()
        del self.scores, self.idx
        for part in (".scores.npy", ".idx.npy"):  # idx last: both exist only once both are whole
            os.replace(self.tmp + part, self.base + part)
        return np.load(self.base + ".scores.npy", mmap_mode="r"), np.load(self.base + ".idx.npy", mmap_mode="r")


def _picker(args: tuple, signals: dict, coverage, queries, corpus: Corpus) -> Callable:
    """`pick(judged)` -> one batch's Selection; with the coverage rule, through `coverage_rounds` (the picks' token
    coverage measured as needed, kept across the judge's rounds)."""
    if coverage is None:
        return lambda judged=None: choose(*args, **signals, judged=judged)
    from negminer.mining.coverage import coverage_rounds

    c = args[0]
    known = np.full(c.shape, np.nan)

    def measure(g: np.ndarray, k: np.ndarray) -> np.ndarray:
        return coverage.pairs(take(queries, g).to_pylist(), take(corpus.texts, c[g, k]).to_pylist())

    def pick(judged=None):
        sel, _ = coverage_rounds(measure, lambda cov: choose(*args, **signals, coverage=cov, judged=judged), c, known)
        return sel

    return pick


def _judged(judge, select, c, score, pos, gb, groups: Groups, corpus: Corpus, out: Mined):  # noqa: PLR0913 — one batch's aligned arrays for the judge
    """The LLM judge's rounds over one batch; with `--judge-relabel` its relevant picks become extra positives."""
    from negminer.mining.judge import RELEVANT, judge_rounds

    text = lambda d: corpus.texts[int(d)].as_py()  # noqa: E731
    triple = lambda g, d: (groups.query[int(gb[g])].as_py(), text(pos[g, 0]), text(d))  # noqa: E731
    sel, judged = judge_rounds(judge, select, c, triple)
    if judge.cfg.relabel:
        for g, k in zip(*np.nonzero(judged == RELEVANT), strict=True):
            out.relabel.setdefault(int(gb[g]), []).append((int(c[g, k]), float(score[g, k])))
    return sel


def make_coverage(cfg: MineConfig, encoder: Any = None):
    """The `--coverage` rule's token coverage over the mining encoder (loaded when not given) on the run's device
    and dtype, as the embeddings were made; None when the rule is off."""
    if cfg.coverage is None:
        return None
    from negminer.mining.coverage import TokenCoverage

    encoder = encoder if encoder is not None else load_encoder(cfg)
    device = resolve_device(cfg.device)
    return TokenCoverage(encoder.to(device=device, dtype=resolve_dtype(cfg.dtype, device)).eval(), cfg.batch_size)


def make_judge(cfg: MineConfig):
    """The LLM judge of `--judge`, checked (one-line error when its endpoint is unreachable), or None."""
    if not cfg.judge:
        return None
    from negminer.mining.judge import Judge, JudgeConfig

    jc = JudgeConfig(
        model=cfg.judge,
        base_url=cfg.judge_url,
        relabel=cfg.judge_relabel,
        rounds=cfg.judge_rounds,
        concurrency=cfg.judge_concurrency,
        cache_dir=os.path.join(cfg.work_dir, "judge"),
    )
    judge = Judge(jc)
    if jc.base_url:
        judge.check()
    return judge


def empty_mined(n_groups: int, n: int, n_pos: int, work: str | None) -> Mined:
    """Unfilled results; with `work` (a corpus on disk) large ones are scratch arrays (`extsort.scratch`)."""

    def array(shape, dtype, fill) -> np.ndarray:
        return np.full(shape, fill, dtype) if work is None else extsort.scratch(work, dtype, shape, fill)

    return Mined(
        neg_doc=array((n_groups, n), np.int64, -1),
        neg_score=array((n_groups, n), np.float32, np.nan),
        neg_retriever=array((n_groups, n), np.float32, np.nan),
        found=array(n_groups, np.int64, 0),
        pos_score=array(n_pos, np.float32, np.nan),
        pos_retriever=array(n_pos, np.float32, np.nan),
        removed={},
    )


def select_all(  # noqa: PLR0913 — the aligned arrays every selection stage reads (numpy core, no config to fold them into)
    rules: Rules,
    groups: Groups,
    corpus: Corpus,
    store,
    doc_loc,
    queries,
    cand,
    cand_s,
    reranker,
    lexical=None,
    judge=None,
    reranker_threshold: float | None = None,
    coverage=None,
) -> Mined:
    """Selection over all groups in batches of `GROUP_BATCH` (bounded memory for the near-duplicate gathers);
    `coverage` a `coverage.TokenCoverage` when the `--coverage` rule is on."""
    n_groups, n = len(groups), rules.num_negatives
    out = empty_mined(n_groups, n, len(groups.pos_docs), getattr(corpus, "scratch_dir", None))
    for lo in range(0, n_groups, GROUP_BATCH):
        gb = np.arange(lo, min(lo + GROUP_BATCH, n_groups))
        c, cs = cand[gb], cand_s[gb]
        keep, removed = eligible(c, padded(groups.excl_indptr, groups.excl_docs, gb), rules)
        pos = padded(groups.pos_indptr, groups.pos_docs, gb)
        by_embedding = any(
            v is not None for v in (rules.near_dup, rules.triangle, rules.positive_side, rules.positive_rank)
        )
        need = np.unique(np.concatenate([pos[pos >= 0], c[keep] if by_embedding else np.zeros(0, np.int64)]))
        emb = store.gather(doc_loc[0][need], doc_loc[1][need])  # (u, D)

        def slot(d: np.ndarray, need: np.ndarray = need) -> np.ndarray:  # rows of `emb`; garbage off `keep`
            return np.minimum(np.searchsorted(need, d), len(need) - 1)

        q = queries[gb]  # (B, D)
        pos_ret = np.where(pos >= 0, np.einsum("bd,bpd->bp", q, emb[slot(pos)]), np.nan).astype(np.float32)
        sim = tri = side = prank = lex = None
        if by_embedding:
            cp = np.einsum("bkd,bpd->bkp", emb[slot(c)], emb[slot(pos)])  # (B, K, P)
            sim = np.where((pos >= 0)[:, None, :], cp, -np.inf).max(axis=2)
            cp = np.where((pos >= 0)[:, None, :], cp, np.nan)
            tri = triangle_gap(cp, pos_ret) if rules.triangle is not None else None
            side = positive_side_gap(cp, cs, pos_ret) if rules.positive_side is not None else None  # retriever
            prank = positive_rank(cp, keep) if rules.positive_rank is not None else None
        qtexts = take(groups.query, gb)  # the batch's query texts (lexical, reranker, coverage)
        if lexical is not None:
            qtext = qtexts.to_pylist()
            lex = lexical_ratio(lexical.pair_scores(qtext, np.where(keep, c, -1)), lexical.pair_scores(qtext, pos))
        score, pos_teacher = cs, pos_ret
        if reranker is not None:
            score, pos_teacher = rescore(reranker, qtexts, corpus.texts, c, keep, pos)
            if reranker_threshold is not None:  # the reranker's own verdict: what it calls relevant is no negative
                relevant = keep & (score >= reranker_threshold)
                removed = {**removed, RERANKER_RELEVANT: int(relevant.sum())}
                keep = keep & ~relevant
        args = (c, score, keep, lowest_positive(pos_teacher), sim, groups.key[gb], rules)
        signals = {"triangle": tri, "side": side, "prank": prank, "lexical": lex}
        pick = _picker(args, signals, coverage if rules.coverage is not None else None, qtexts, corpus)

        sel = pick() if judge is None else _judged(judge, pick, c, score, pos, gb, groups, corpus, out)
        for rule, count in {**removed, **sel.removed}.items():
            out.removed[rule] = out.removed.get(rule, 0) + count
        out.neg_doc[gb], out.neg_score[gb], out.found[gb] = sel.doc, sel.score, sel.found
        at = np.argmax(c[:, :, None] == sel.doc[:, None, :], axis=1)  # where each chosen doc sits in the candidates
        out.neg_retriever[gb] = np.where(sel.doc >= 0, np.take_along_axis(cs, at, axis=1), np.nan)
        for j in range(pos.shape[1]):
            has = pos[:, j] >= 0
            flat = groups.pos_indptr[gb[has]] + j
            out.pos_score[flat], out.pos_retriever[flat] = pos_teacher[has, j], pos_ret[has, j]
    return out
