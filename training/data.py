"""Streaming shards into training batches: shuffled, without duplicate texts, optionally one source per batch.

The batch sequence is a pure function of (data, seed, batch size, ...): resuming at step N regenerates and skips the
first N batches (reading rows is cheap next to encoding them), so a resumed run sees exactly the same data.
"""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from collections.abc import Iterator

from negminer.mining.groups import DEFAULT_INSTRUCTION_TEMPLATE, instructed
from negminer.pipelines import io
from negminer.pipelines import schema as S

COLUMNS = [S.SOURCE, S.QUERY, S.INSTRUCTION, S.POSITIVE, S.NEGATIVES, S.POSITIVE_SCORE, S.NEGATIVE_SCORES]
TEMPLATE = "instruction_template"  # the key each row dict carries the instruction template under


# What teacher scores are (`mining.scores.kind` in a mined manifest) and the teacher temperature each gets by default:
# cosines from an encoder trained at τ ≈ 0.05 (MiniLM, E5, BGE: 0.01-0.05), a cross-encoder's logits as they are,
# probabilities turned back into logits first.
SCORE_KINDS = ("cosine", "logit", "probability")
TEACHER_TEMPERATURE = {"cosine": 0.05, "logit": 1.0, "probability": 1.0}
SCORE_KIND = "score_kind"  # the key each row dict carries it under


@dataclasses.dataclass
class Batch:
    queries: list[str]
    positives: list[str]
    negatives: list[list[str]]  # per row, at most num_negatives, hardest first
    positive_scores: list[float | None]
    negative_scores: list[list[float] | None]
    source: str | None = None
    score_kinds: list[str | None] | None = None  # per row, the kind of its teacher scores

    def __len__(self) -> int:
        return len(self.queries)

    def slice(self, start: int, stop: int) -> Batch:
        """Rows [start, stop) — one process's share of a global batch."""
        return Batch(
            self.queries[start:stop],
            self.positives[start:stop],
            self.negatives[start:stop],
            self.positive_scores[start:stop],
            self.negative_scores[start:stop],
            self.source,
            None if self.score_kinds is None else self.score_kinds[start:stop],
        )


# One training source: a shard directory (its `train` split, checked against its manifest) or the shard files to read.
Source = str | list[str]


def source_files(source: Source) -> list[str]:
    """The files of a source: a directory's `train` split (see `io.shard_files`), or the files given."""
    return io.shard_files(source, "train") if isinstance(source, str) else list(source)


def count_rows(source: Source) -> int:
    """Rows of a source, from the Parquet footers (no data read)."""
    return sum(io.parquet_rows(f) for f in source_files(source))


def score_kind(path: str, split: str = "train") -> str | None:
    """The kind of the teacher scores of a mined directory's split, from its manifest (None when unknown).

    Shards mined before kinds were recorded: a reranker's scores were probabilities, a retriever's cosines.
    """
    try:
        manifest = io.read_manifest(path)
    except (FileNotFoundError, ValueError):
        return None
    mining = ((manifest.get("splits") or {}).get(split) or {}).get("mining") or manifest.get("mining") or {}
    scores = mining.get("scores") or {}
    if scores.get("kind"):
        return scores["kind"]
    return {"reranker": "probability", "retriever": "cosine"}.get(scores.get("teacher"))


def _dir_rows(source: Source, rng: random.Random, kind: str | None = None) -> Iterator[dict]:
    files = source_files(source)
    rng.shuffle(files)
    for f in files:
        for batch in io.read_shards(f, columns=COLUMNS):
            for row in batch.to_pylist():
                row[SCORE_KIND] = kind
                yield row


def shuffled_rows(
    dirs: list[Source], seed: int, epoch: int, buffer: int, kinds: list[str | None] | None = None
) -> Iterator[dict]:
    """One epoch of rows: directories interleaved at random by remaining size, then a shuffle buffer."""
    rng = random.Random(f"{seed}-{epoch}")
    kinds = kinds or [None] * len(dirs)
    streams = [_dir_rows(d, random.Random(f"{seed}-{epoch}-{i}"), kinds[i]) for i, d in enumerate(dirs)]
    remaining = [count_rows(d) for d in dirs]
    pool: list[dict] = []
    while any(remaining):
        i = rng.choices(range(len(dirs)), weights=remaining)[0]
        row = next(streams[i], None)
        if row is None:  # the footer count was stale; drop this stream
            remaining[i] = 0
            continue
        remaining[i] -= 1
        if len(pool) < buffer:
            pool.append(row)
            continue
        j = rng.randrange(len(pool))
        pool[j], row = row, pool[j]
        yield row
    rng.shuffle(pool)
    yield from pool


def _texts(row: dict, num_negatives: int) -> list[str]:
    return [row[S.QUERY], row[S.POSITIVE], *(row[S.NEGATIVES] or [])[:num_negatives]]


class _Bucket:
    def __init__(self) -> None:
        self.rows: list[dict] = []
        self.texts: set[str] = set()

    def try_add(self, row: dict, num_negatives: int) -> bool:
        texts = _texts(row, num_negatives)
        if len(set(texts)) < len(texts) or self.texts.intersection(texts):
            return False
        self.rows.append(row)
        self.texts.update(texts)
        return True


def _query(row: dict) -> str:
    """The query as encoded: with the instruction template filled when the row has an instruction."""
    return instructed(row[S.QUERY], row.get(S.INSTRUCTION), row.get(TEMPLATE) or DEFAULT_INSTRUCTION_TEMPLATE)


def _to_batch(rows: list[dict], num_negatives: int, source: str | None) -> Batch:
    negs = [(r[S.NEGATIVES] or [])[:num_negatives] for r in rows]
    neg_scores = [None if r[S.NEGATIVE_SCORES] is None else list(r[S.NEGATIVE_SCORES])[:num_negatives] for r in rows]
    return Batch(
        [_query(r) for r in rows],
        [r[S.POSITIVE] for r in rows],
        negs,
        [r[S.POSITIVE_SCORE] for r in rows],
        neg_scores,
        source,
        [r.get(SCORE_KIND) for r in rows],
    )


def batches(  # noqa: PLR0913 — the stream's settings, explicit so the generator stays a pure function of them
    dirs: list[Source],
    batch_size: int,
    num_negatives: int,
    seed: int,
    shuffle_buffer: int,
    same_source: bool = False,
    stats: Counter | None = None,
    kinds: list[str | None] | None = None,
    template: str = DEFAULT_INSTRUCTION_TEMPLATE,
) -> Iterator[Batch]:
    """Endless batches over epochs. A row whose texts clash with the batch (a false in-batch negative) waits for the next.

    A row that repeats a text within itself (query == positive, a negative equal to the positive) can never be used:
    it is skipped and counted in `stats["skipped_repeated_text"]`; waiting rows beyond a bound (4 batches) are
    dropped for this epoch and counted in `stats["dropped_clashing"]`.
    """
    stats = Counter() if stats is None else stats
    epoch = 0
    buckets: dict[str | None, _Bucket] = {}
    waiting: list[dict] = []
    while True:
        produced = False
        for row in shuffled_rows(dirs, seed, epoch, shuffle_buffer, kinds):
            row[TEMPLATE] = template
            texts = _texts(row, num_negatives)
            if len(set(texts)) < len(texts):
                stats["skipped_repeated_text"] += 1
                continue
            key = row[S.SOURCE] if same_source else None
            bucket = buckets.setdefault(key, _Bucket())
            if not bucket.try_add(row, num_negatives):
                waiting.append(row)
            while len(bucket.rows) == batch_size:
                produced = True
                stats["rows"] += batch_size
                yield _to_batch(bucket.rows, num_negatives, key)
                bucket = buckets[key] = _Bucket()
                still = []
                for w in waiting:  # rows that clashed with the batch just emitted get the next chance
                    same_key = (w[S.SOURCE] if same_source else None) == key
                    if not (same_key and len(bucket.rows) < batch_size and bucket.try_add(w, num_negatives)):
                        still.append(w)
                waiting = still
            if len(waiting) > 4 * batch_size:  # bounded: very clashy rows are dropped, not hoarded
                stats["dropped_clashing"] += len(waiting) - 4 * batch_size
                waiting = waiting[-4 * batch_size :]
        epoch += 1
        stats["epochs"] = epoch
        if not produced and epoch > 1:
            raise ValueError(f"cannot form a batch of {batch_size} rows without duplicate texts from {dirs}")
