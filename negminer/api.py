"""The Python API: `mine_hard_negatives` (sentence-transformers' arguments) and the jobs as plain functions.

Usage: from negminer import mine_hard_negatives; mined = mine_hard_negatives(dataset, "all-MiniLM-L6-v2")
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import tempfile
from collections.abc import Sequence
from typing import Any

from negminer.mining.config import MineConfig
from negminer.pipelines import io
from negminer.pipelines import schema as S

log = logging.getLogger("negminer.api")
OUTPUT_FORMATS = ("triplet", "n-tuple", "labeled-pair", "labeled-list")
SOURCE = "dataset"  # the `source` column of rows written from a `datasets.Dataset`
_DOC_PROMPT_NAMES = ("document", "passage", "corpus")  # sentence-transformers' encode_document order
_ST_POOLING = {"mean": "mean", "cls": "cls", "lasttoken": "last"}


@dataclasses.dataclass(frozen=True)
class Pairs:
    """The (anchor, positive) pairs to mine for, in input order, and the column names of the result."""

    queries: list[str]
    positives: list[str]
    anchor_column: str = S.QUERY
    positive_column: str = S.POSITIVE

    def max_positives(self) -> int:
        counts = collections.Counter(self.queries)
        return max(counts.values(), default=1)

    def ordered(self) -> dict[str, list[str]]:
        """query -> its distinct positives, queries in first-occurrence order (sentence-transformers' row order)."""
        out: dict[str, list[str]] = {}
        for q, p in zip(self.queries, self.positives, strict=True):
            if p not in out.setdefault(q, []):
                out[q].append(p)
        return out


def mine_hard_negatives(  # noqa: PLR0913 — sentence-transformers' signature, kept so callers can switch unchanged
    dataset: Any,
    model: Any,
    anchor_column_name: str | None = None,
    positive_column_name: str | None = None,
    corpus: Sequence[str] | None = None,
    cross_encoder: Any = None,
    range_min: int = 0,
    range_max: int | None = None,
    max_score: float | None = None,
    min_score: float | None = None,
    absolute_margin: float | None = None,
    relative_margin: float | None = None,
    num_negatives: int = 3,
    sampling_strategy: str = "top",
    query_prompt_name: str | None = None,
    query_prompt: str | None = None,
    corpus_prompt_name: str | None = None,
    corpus_prompt: str | None = None,
    include_positives: bool = False,
    output_format: str = "triplet",
    output_scores: bool = False,
    batch_size: int = 32,
    faiss_batch_size: int = 16384,
    use_faiss: bool = False,
    use_multi_process: Any = False,
    verbose: bool = True,
    cache_folder: str | None = None,
    *,
    near_duplicate: float | None = None,
    seed: int = 0,
    device: str | None = None,
    dtype: str | None = None,
    output_dir: str | None = None,
):
    """Add hard negatives to (anchor, positive) pairs: `sentence_transformers.util.mine_hard_negatives`, on negminer.

    Takes the same arguments and returns a `datasets.Dataset` with the same columns for each `output_format`
    (`triplet`: anchor, positive, negative [, scores]; `n-tuple`: anchor, positive, negative_1..n [, scores];
    `labeled-pair`: anchor, positive, label|score; `labeled-list`: anchor, positive (list), labels|scores).
    Underneath it writes the pairs as tuple shards and runs negminer's miner (`negminer.mining.mine.mine`).

    `dataset` is a `datasets.Dataset` (first two columns, or the named ones) or a tuple-shard directory (its
    `query` and `positive` columns). `model` is a model name or path, or a loaded `SentenceTransformer` made of a
    Transformer, a Pooling (mean, cls or last-token) and optionally a Normalize module. `cross_encoder` is a name or
    path of a sequence-classification model, or a loaded `CrossEncoder` (its weights are re-read from its path).

    Where the semantics differ from sentence-transformers':

    - Rank window: `range_min` skips the best non-positive candidates *before* the score rules; sentence-transformers
      skips the best candidates left *after* its margins and max/min score. The same when `range_min=0`.
    - Several positives per query: one group per query (case- and space-insensitive, not exact text); every positive
      of the group is excluded from its negatives and the margin is taken from the lowest positive score (as in
      sentence-transformers). Positives and corpus texts are deduplicated the same insensitive way.
    - Margins: one of `absolute_margin` and `relative_margin` (not both); kept are scores strictly below the bound.
    - A `cross_encoder` always rescores, the candidates inside the rank window; sentence-transformers rescores only
      when a margin or score bound is set, and cuts its window after rescoring. Scores are probabilities (sigmoid of
      one logit, softmax of two), as a 1-label `CrossEncoder.predict` gives.
    - `sampling_strategy="random"` draws with a seeded hash of (seed, query, document): reproducible, and a
      different draw from sentence-transformers' `random.sample`.
    - Search is exact inner product on FAISS either way (`use_faiss` and `faiss_batch_size` change nothing);
      embeddings are cached as float16, so scores agree to ~1e-3.
    - `include_positives=True` and `use_multi_process` are not supported.

    negminer's extras: `cache_folder` holds the embedding and search cache, so a re-run with other thresholds
    encodes nothing (without it a temporary folder is used and removed); `output_dir` keeps the mined tuple shards and
    their `manifest.json` (the report: rules applied, removed counts per rule, score statistics); `near_duplicate`
    drops candidates whose cosine to a positive is at least this; `seed` seeds random sampling; `device`/`dtype`
    default to the loaded model's, else `auto`.

    >>> mined = mine_hard_negatives(dataset, "sentence-transformers/all-MiniLM-L6-v2", relative_margin=0.05)
    """
    if include_positives:
        raise ValueError("include_positives=True is not supported by negminer's miner")
    if use_multi_process:
        raise ValueError("use_multi_process is not supported: negminer encodes in-process on one device")
    if output_format not in OUTPUT_FORMATS:
        raise ValueError(f"output_format must be one of {OUTPUT_FORMATS}, got {output_format!r}")
    if absolute_margin is not None and relative_margin is not None:
        raise ValueError("give one of absolute_margin and relative_margin, not both")
    pairs = read_pairs(dataset, anchor_column_name, positive_column_name)
    model_name, max_length, (dev, dt) = model_settings(model, device, dtype)
    prompts = model_prompts(model)
    bounds = (absolute_margin, relative_margin, max_score, min_score if cross_encoder is not None else None)
    filtering = any(b is not None for b in bounds)
    settings = dict(
        model=model_name,
        reranker=cross_encoder_path(cross_encoder),
        reranker_scores="probability",  # sentence-transformers' scale, thresholds and output
        reranker_threshold=None,  # sentence-transformers keeps what its cross-encoder calls relevant
        num_negatives=num_negatives,
        range_min=range_min,
        range_max=default_range_max(range_min, num_negatives, pairs, filtering) if range_max is None else range_max,
        positive_aware=ceiling_spec(absolute_margin, relative_margin),
        max_score=max_score,
        min_score=min_score,
        near_dup=near_duplicate,
        sampling=sampling_strategy,
        seed=seed,
        query_prompt=pick_prompt(prompts, query_prompt, query_prompt_name, ("query",)),
        doc_prompt=pick_prompt(prompts, corpus_prompt, corpus_prompt_name, _DOC_PROMPT_NAMES),
        max_length=max_length,
        batch_size=batch_size,
        device=dev,
        dtype=dt,
    )
    with tempfile.TemporaryDirectory(prefix="negminer-") as tmp:
        given = os.fspath(dataset) if isinstance(dataset, (str, os.PathLike)) else None
        paths = dict(
            input=given or os.path.join(tmp, "input"),
            output=output_dir or os.path.join(tmp, "output"),
            corpus=(os.path.join(tmp, "corpus.parquet"),) if corpus is not None else (),
            work_dir=cache_folder or os.path.join(tmp, "work"),
        )
        manifest, rows = _run(MineConfig(**paths, **settings), pairs if given is None else None, corpus, model)
    if verbose:
        print_summary(manifest)
    return to_dataset(pairs, rows, output_format, output_scores, num_negatives)


def _run(cfg: MineConfig, pairs: Pairs | None, corpus: Sequence[str] | None, model: Any):
    """Write the pairs (unless the input is a shard directory) and the corpus, load the model, mine; the mined rows
    keyed by (query, positive). `cfg` was built first, so a bad setting fails before anything is written or loaded."""
    from negminer.mining.mine import mine as mine_job

    if pairs is not None:
        write_pairs(pairs, cfg.input)
    if corpus is not None:
        write_corpus(corpus, cfg.corpus[0])
    manifest = mine_job(cfg, encoder=load_encoder(model, cfg.max_length))
    cols = [S.ID, S.QUERY, S.POSITIVE, S.NEGATIVES, S.POSITIVE_SCORE, S.NEGATIVE_SCORES]
    rows = {(r[S.QUERY], r[S.POSITIVE]): r for r in io.iter_rows(cfg.output, columns=cols)}
    return manifest, rows


def read_pairs(dataset: Any, anchor: str | None, positive: str | None) -> Pairs:
    """(anchor, positive) texts from a `datasets.Dataset` (named or first two columns) or a shard directory."""
    if isinstance(dataset, (str, os.PathLike)):
        rows = list(io.iter_rows(os.fspath(dataset), columns=[S.QUERY, S.POSITIVE]))
        if not rows:
            raise ValueError(f"no rows in the tuple shards at {dataset}")
        return Pairs([r[S.QUERY] for r in rows], [r[S.POSITIVE] for r in rows])
    columns = list(dataset.column_names)
    if len(dataset) == 0:
        raise ValueError("the dataset is empty")
    anchor = anchor if anchor in columns else columns[0]
    if positive not in columns:
        if len(columns) < 2:
            raise ValueError(f"the dataset needs an anchor and a positive column, got {columns}")
        positive = columns[1]
    pairs = Pairs(list(dataset[anchor]), list(dataset[positive]), anchor, positive)
    for i, (q, p) in enumerate(zip(pairs.queries, pairs.positives, strict=True)):
        if not isinstance(q, str) or not isinstance(p, str) or not q.strip() or not p.strip():
            raise ValueError(f"row {i}: anchor and positive must be non-empty strings, got {q!r}, {p!r}")
    return pairs


def write_pairs(pairs: Pairs, out_dir: str) -> str:
    """The pairs as one tuple shard (duplicate (query, positive) rows collapse into one)."""
    rows = [
        S.TupleRow(source=SOURCE, pair_type="qa", query=q, positive=p).to_dict()
        for q, p in zip(pairs.queries, pairs.positives, strict=True)
    ]
    io.write_shards(rows, out_dir)
    return out_dir


def write_corpus(corpus: Sequence[str], path: str) -> str:
    """Extra candidate documents as a Parquet file with `id` and `text` columns."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = list(corpus)
    if not all(isinstance(t, str) for t in texts):
        raise ValueError("corpus must be a list of strings")
    pq.write_table(pa.table({"id": [f"corpus-{i}" for i in range(len(texts))], "text": texts}), path)
    return path


def model_settings(model: Any, device: str | None, dtype: str | None) -> tuple[str, int, tuple[str, str]]:
    """(name for the manifest, max length, (device, dtype)) of a name/path or a loaded SentenceTransformer.

    A loaded model keeps its device and dtype unless asked otherwise (the miner converts the weights in place).
    """
    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        return path, st_max_length(path), (device or "auto", dtype or "auto")
    transformer = list(model)[0]
    param = next(transformer.auto_model.parameters())
    name = str(getattr(transformer.auto_model.config, "_name_or_path", "") or "SentenceTransformer")
    return (
        name,
        int(model.max_seq_length),
        (device or param.device.type, dtype or str(param.dtype).removeprefix("torch.")),
    )


def load_encoder(model: Any, max_length: int):
    """negminer's Encoder from a name/path, or over the modules of a loaded SentenceTransformer (no copy)."""
    from negminer.training.model import Encoder

    if isinstance(model, (str, os.PathLike)):
        return Encoder.from_pretrained(os.fspath(model), max_length=max_length)
    modules = list(model)
    transformer = modules[0]
    pool = getattr(modules[1], "pooling_mode", None) if len(modules) > 1 else None
    if pool is None and len(modules) > 1 and hasattr(modules[1], "get_pooling_mode_str"):
        pool = modules[1].get_pooling_mode_str()
    kinds = [type(m).__name__ for m in modules]
    if pool not in _ST_POOLING or kinds[2:] not in ([], ["Normalize"]):
        raise ValueError(
            f"a loaded model must be Transformer + Pooling(mean|cls|lasttoken) [+ Normalize], got {kinds}"
        )
    return Encoder(transformer.auto_model, transformer.tokenizer, _ST_POOLING[pool], max_length)


def st_max_length(path: str, default: int = 512) -> int:
    """`max_seq_length` of a sentence-transformers model folder (what its encode truncates to), else `default`."""
    import json

    from transformers.utils import cached_file

    try:
        found = cached_file(path, "sentence_bert_config.json", _raise_exceptions_for_missing_entries=False)
    except OSError:
        return default
    if not found:
        return default
    with open(found, encoding="utf-8") as fh:
        return int(json.load(fh).get("max_seq_length") or default)


def model_prompts(model: Any) -> dict[str, str]:
    """The model's named prompts: `model.prompts` of a loaded model, else its config_sentence_transformers.json."""
    if not isinstance(model, (str, os.PathLike)):
        return dict(getattr(model, "prompts", None) or {})
    import json

    from transformers.utils import cached_file

    try:
        found = cached_file(
            os.fspath(model), "config_sentence_transformers.json", _raise_exceptions_for_missing_entries=False
        )
    except OSError:
        return {}
    if not found:
        return {}
    with open(found, encoding="utf-8") as fh:
        return dict(json.load(fh).get("prompts") or {})


def pick_prompt(
    prompts: dict[str, str], prompt: str | None, name: str | None, defaults: tuple[str, ...]
) -> str | None:
    """A raw prompt wins, then a named one, then the first default name the model has (encode_query/_document)."""
    if prompt is not None:
        return prompt or None
    if name is not None:
        if name not in prompts:
            raise ValueError(f"prompt name {name!r} is not one of the model's prompts {sorted(prompts)}")
        return prompts[name] or None
    return next((prompts[n] or None for n in defaults if n in prompts), None)


def cross_encoder_path(cross_encoder: Any) -> str | None:
    """A name/path, or the path a loaded CrossEncoder was read from."""
    if cross_encoder is None or isinstance(cross_encoder, (str, os.PathLike)):
        return None if cross_encoder is None else os.fspath(cross_encoder)
    inner = getattr(cross_encoder, "model", None)
    path = getattr(getattr(inner, "config", None), "_name_or_path", "")
    if not path:
        raise ValueError("pass the cross-encoder as a name or path: this CrossEncoder does not say where it came from")
    return str(path)


def ceiling_spec(absolute_margin: float | None, relative_margin: float | None) -> str:
    """sentence-transformers' margins as negminer's positive-aware ceiling (`margin:M`, `perc:1-R` or `none`)."""
    if absolute_margin is not None:
        return f"margin:{absolute_margin!r}"
    if relative_margin is not None:
        if not 0.0 <= relative_margin < 1.0:
            raise ValueError(f"relative_margin must be in [0, 1), got {relative_margin}")
        return f"perc:{1.0 - relative_margin!r}"
    return "none"


def default_range_max(range_min: int, num_negatives: int, pairs: Pairs, filtering: bool) -> int:
    """sentence-transformers' default window: 10x the negatives when a rule may drop candidates, else just enough."""
    return range_min + num_negatives * (10 if filtering else 1) + pairs.max_positives()


def to_dataset(pairs: Pairs, rows: dict, output_format: str, output_scores: bool, num_negatives: int):
    """Mined rows -> a `datasets.Dataset` in sentence-transformers' columns and row order for `output_format`."""
    from datasets import Dataset

    builder = {
        "triplet": _triplets,
        "n-tuple": _n_tuples,
        "labeled-pair": _labeled_pairs,
        "labeled-list": _labeled_lists,
    }[output_format]
    return Dataset.from_dict(builder(pairs, rows, output_scores, num_negatives))


def _mined(pairs: Pairs, rows: dict):
    """(query, positive, mined row) in sentence-transformers' order: queries by first occurrence, then positives."""
    for q, positives in pairs.ordered().items():
        for p in positives:
            row = rows.get((q, p))
            if row is not None:  # absent only when the miner dropped it (drop_shortfall)
                yield q, p, row


def _triplets(pairs: Pairs, rows: dict, scores: bool, n: int) -> dict[str, list]:
    a, b = pairs.anchor_column, pairs.positive_column
    out: dict[str, list] = {a: [], b: [], "negative": [], **({"scores": []} if scores else {})}
    for q, p, row in _mined(pairs, rows):
        for neg, s in zip(row[S.NEGATIVES], row[S.NEGATIVE_SCORES] or [], strict=True):
            out[a].append(q)
            out[b].append(p)
            out["negative"].append(neg)
            if scores:
                out["scores"].append([row[S.POSITIVE_SCORE], s])
    return out


def _n_tuples(pairs: Pairs, rows: dict, scores: bool, n: int) -> dict[str, list]:
    a, b = pairs.anchor_column, pairs.positive_column
    out: dict[str, list] = {a: [], b: [], **{f"negative_{i}": [] for i in range(1, n + 1)}}
    if scores:
        out["scores"] = []
    for q, p, row in _mined(pairs, rows):
        if len(row[S.NEGATIVES]) < n:  # as in sentence-transformers: only rows that got every negative
            continue
        out[a].append(q)
        out[b].append(p)
        for i, neg in enumerate(row[S.NEGATIVES], start=1):
            out[f"negative_{i}"].append(neg)
        if scores:
            out["scores"].append([row[S.POSITIVE_SCORE], *row[S.NEGATIVE_SCORES]])
    return out


def _labeled_pairs(pairs: Pairs, rows: dict, scores: bool, n: int) -> dict[str, list]:
    a, b, c = pairs.anchor_column, pairs.positive_column, "score" if scores else "label"
    out: dict[str, list] = {a: [], b: [], c: []}
    by_query: dict[str, list] = {}
    for q, p, row in _mined(pairs, rows):
        by_query.setdefault(q, []).append((p, row))
    for q, found in by_query.items():  # each positive, then the query's negatives once
        items = [(p, row[S.POSITIVE_SCORE] if scores else 1) for p, row in found]
        negs = found[0][1]
        items += [(d, s if scores else 0) for d, s in zip(negs[S.NEGATIVES], negs[S.NEGATIVE_SCORES], strict=True)]
        for doc, value in items:
            out[a].append(q)
            out[b].append(doc)
            out[c].append(value)
    return out


def _labeled_lists(pairs: Pairs, rows: dict, scores: bool, n: int) -> dict[str, list]:
    a, b, c = pairs.anchor_column, pairs.positive_column, "scores" if scores else "labels"
    out: dict[str, list] = {a: [], b: [], c: []}
    for q, p, row in _mined(pairs, rows):
        if not row[S.NEGATIVES]:  # as in sentence-transformers: a row needs at least one negative
            continue
        out[a].append(q)
        out[b].append([p, *row[S.NEGATIVES]])
        out[c].append(
            [row[S.POSITIVE_SCORE], *row[S.NEGATIVE_SCORES]] if scores else [1] + [0] * len(row[S.NEGATIVES])
        )
    return out


def print_summary(manifest: dict[str, Any]) -> None:
    """A few lines like sentence-transformers' own: counts, removed candidates per rule, shortfall."""
    m = manifest["mining"]
    print(f"Mined {manifest['negatives']:,} negatives for {manifest['rows']:,} rows ({m['groups']:,} queries).")
    for rule, count in m["removed"].items():
        if count:
            print(f"Skipped {count:,} candidates: {rule}.")
    short = m["shortfall"]["rows"]
    if short:
        print(f"Could not find enough negatives for {short} rows: widen range_max or loosen the margin/max_score.")


# The jobs as plain functions on their config objects (imports stay lazy so `import negminer` is light).


def mine(config: MineConfig, encoder: Any = None) -> dict[str, Any]:
    """`negminer mine` on a `negminer.mining.config.MineConfig`; returns the manifest written to `config.output`."""
    from negminer.mining.mine import mine as mine_job

    return mine_job(config, encoder=encoder)


def train(config: Any) -> dict[str, Any]:
    """`negminer train` on a `negminer.training.config.TrainConfig`; returns losses, metrics and steps."""
    from negminer.training.train import train as train_job

    return train_job(config)


def _builder(source: str):
    def build(config: Any, beam_args: Sequence[str] = ()) -> dict[str, Any]:
        import importlib

        module = importlib.import_module(f"negminer.pipelines.{source}")
        return module.build(config, list(beam_args))

    build.__name__ = f"build_{source}"
    build.__doc__ = (
        f"`negminer build {source}` on its config object (negminer.pipelines.{source}); `beam_args` go to Apache Beam "
        "(default: the local DirectRunner). Returns the manifest."
    )
    return build


build_snli = _builder("snli")
build_msmarco = _builder("msmarco")
build_fever = _builder("fever")
build_beir = _builder("beir")
build_wikipedia = _builder("wikipedia")
build_webcrawl = _builder("webcrawl")
