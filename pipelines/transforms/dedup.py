"""Deterministic dedup of pairs: exact (pair type, positive) and MinHash-LSH near-duplicate positives.

The near-duplicate rule (the same input gives the same survivors on any runner and in any order):
distinct positive texts are keyed by a hash of their normalised text; each gets a MinHash signature
split into `bands` LSH band keys. Within one band bucket, a positive is a duplicate when some
positive with a *smaller key* in that bucket has an estimated Jaccard similarity >= `threshold`.
A positive is dropped when any bucket marks it. The rule is deliberately not transitive (no
connected components): in a chain A~B~C with A !~ C (keys A<B<C), B is dropped for A and C for B.
That removes slightly more than a cluster-representative rule would, but every decision depends only
on the set of positives, never on the order they arrive in, and needs a single GroupByKey.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import apache_beam as beam
import numpy as np

from negminer.pipelines import schema as S
from negminer.pipelines.source import SKIPPED, skip
from negminer.pipelines.transforms.clean import normalize_for_match


@dataclasses.dataclass(frozen=True)
class DedupConfig:
    near: bool = True
    threshold: float = 0.8  # estimated Jaccard of word shingles at or above which two positives are near-dups
    num_perm: int = 128
    bands: int = 16  # 16 bands x 8 rows: LSH S-curve midpoint (1/16)^(1/8) ~ 0.71, below `threshold`
    shingle_words: int = 5
    seed: int = 1

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"dedup threshold must be in (0, 1], got {self.threshold}")
        if self.bands < 1 or self.num_perm % self.bands:
            raise ValueError(f"num_perm ({self.num_perm}) must be a positive multiple of bands ({self.bands})")
        if self.shingle_words < 1:
            raise ValueError(f"shingle_words must be >= 1, got {self.shingle_words}")


def positive_key(text: str) -> str:
    """Hash of the normalised (case-folded, whitespace-collapsed) text: identical positives share it."""
    return hashlib.blake2b(normalize_for_match(text).encode("utf-8"), digest_size=12).hexdigest()


def shingles(text: str, n: int) -> list[bytes]:
    """Distinct word n-grams of the normalised text (the whole text when it has fewer than n words)."""
    words = normalize_for_match(text).split()
    if len(words) <= n:
        return [" ".join(words).encode("utf-8")]
    return sorted({" ".join(words[i : i + n]).encode("utf-8") for i in range(len(words) - n + 1)})


@functools.lru_cache(maxsize=8)
def _template(num_perm: int, seed: int) -> Any:
    """A MinHash whose permutations are reused: drawing them costs more than hashing a paragraph."""
    from datasketch import MinHash

    return MinHash(num_perm=num_perm, seed=seed)


def signature(text: str, cfg: DedupConfig) -> np.ndarray:
    """MinHash signature (datasketch) of the text's word shingles; the same text always gives the same array."""
    from datasketch import MinHash

    t = _template(cfg.num_perm, cfg.seed)
    m = MinHash(num_perm=cfg.num_perm, seed=cfg.seed, permutations=t.permutations, scheme=t.scheme)
    m.update_batch(shingles(text, cfg.shingle_words))
    return np.asarray(m.hashvalues)


def band_keys(sig: np.ndarray, bands: int) -> list[str]:
    """One LSH bucket key per band: the band index and a hash of that band's signature values."""
    rows = len(sig) // bands
    return [
        f"{b}:{hashlib.blake2b(sig[b * rows : (b + 1) * rows].tobytes(), digest_size=8).hexdigest()}"
        for b in range(bands)
    ]


def bucket_duplicates(members: Iterable[tuple[str, np.ndarray]], threshold: float) -> list[str]:
    """Keys of one bucket that have a smaller-keyed member with estimated Jaccard >= threshold."""
    ordered = sorted(members, key=lambda m: m[0])
    dups = []
    for i, (key, sig) in enumerate(ordered):
        if i and key == ordered[i - 1][0]:
            continue
        if any(float(np.mean(sig == other)) >= threshold for _, other in ordered[:i]):
            dups.append(key)
    return dups


def near_duplicates(texts: Sequence[str], cfg: DedupConfig) -> set[str]:
    """Positive keys to drop among `texts` by the module's rule (the Beam steps below, in one process)."""
    buckets: dict[str, list[tuple[str, np.ndarray]]] = {}
    distinct = {positive_key(t): t for t in sorted(texts)}
    for key, text in distinct.items():
        sig = signature(text, cfg)
        for band in band_keys(sig, cfg.bands):
            buckets.setdefault(band, []).append((key, sig))
    return {k for members in buckets.values() for k in bucket_duplicates(members, cfg.threshold)}


def dedup_reason(kind: str, pair_type: str) -> str:
    return f"dedup:{kind}:{pair_type}"


class ExactDedupFn(beam.DoFn):
    """((pair type, positive key), rows) -> the row with the smallest (id, provenance); the rest skipped.

    Another row with the same id is an exact (query, positive) duplicate; another query for the same
    positive in the same pair type is a `positive` duplicate.
    """

    def process(self, element: tuple[str, Iterable[dict]]) -> Iterator[Any]:
        rows = sorted(element[1], key=lambda r: (r[S.ID], r.get(S.PROVENANCE) or ""))
        keep = rows[0]
        yield keep
        for r in rows[1:]:
            yield skip(dedup_reason("exact" if r[S.ID] == keep[S.ID] else "positive", r[S.PAIR_TYPE]))


class BandKeysFn(beam.DoFn):
    """(positive key, text) -> (band key, (positive key, signature)) for every LSH band."""

    def __init__(self, cfg: DedupConfig):
        self.cfg = cfg

    def process(self, element: tuple[str, str]) -> Iterator[tuple[str, tuple[str, np.ndarray]]]:
        key, text = element
        sig = signature(text, self.cfg)
        for band in band_keys(sig, self.cfg.bands):
            yield band, (key, sig)


class DropNearDuplicatesFn(beam.DoFn):
    """(positive key, {'rows': [...], 'dup': [...]}) -> rows, or `dedup:near:<pair_type>` skips if marked."""

    def process(self, element: tuple[str, dict[str, Iterable[Any]]]) -> Iterator[Any]:
        grouped = element[1]
        is_dup = any(True for _ in grouped["dup"])
        for r in grouped["rows"]:
            yield skip(dedup_reason("near", r[S.PAIR_TYPE])) if is_dup else r


class DedupPairs(beam.PTransform):
    """PCollection[row dict] -> {'rows': surviving rows, 'skipped': `dedup:<kind>:<pair_type>` strings}."""

    def __init__(self, cfg: DedupConfig):
        super().__init__()
        self.cfg = cfg

    def expand(self, rows):
        exact = (
            rows
            | "KeyByTypeAndPositive" >> beam.Map(lambda r: (f"{r[S.PAIR_TYPE]}\x1f{positive_key(r[S.POSITIVE])}", r))
            | "GroupExact" >> beam.GroupByKey()
            | "KeepFirst" >> beam.ParDo(ExactDedupFn()).with_outputs(SKIPPED, main="rows")
        )
        if not self.cfg.near:
            return {"rows": exact.rows, "skipped": exact[SKIPPED]}
        by_positive = exact.rows | "KeyByPositive" >> beam.Map(lambda r: (positive_key(r[S.POSITIVE]), r))
        dups = (
            by_positive
            | "PositiveText" >> beam.Map(lambda kv: (kv[0], kv[1][S.POSITIVE]))
            | "DistinctPositives" >> beam.CombinePerKey(min)
            | "BandKeys" >> beam.ParDo(BandKeysFn(self.cfg))
            | "GroupBuckets" >> beam.GroupByKey()
            | "BucketDuplicates" >> beam.FlatMap(lambda kv, t: bucket_duplicates(kv[1], t), t=self.cfg.threshold)
            | "MarkDuplicate" >> beam.Map(lambda k: (k, True))
        )
        near = (
            {"rows": by_positive, "dup": dups}
            | "JoinMarks" >> beam.CoGroupByKey()
            | "DropNear" >> beam.ParDo(DropNearDuplicatesFn()).with_outputs(SKIPPED, main="rows")
        )
        skipped = (exact[SKIPPED], near[SKIPPED]) | "DedupSkipped" >> beam.Flatten()
        return {"rows": near.rows, "skipped": skipped}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The dedup flags shared by the pre-training pipelines (defaults from `DedupConfig`)."""
    d = DedupConfig()
    g = parser.add_argument_group("dedup")
    g.add_argument("--no-near-dedup", action="store_true", help="keep near-duplicate positives (exact dedup stays)")
    g.add_argument(
        "--near-dup-threshold", type=float, default=d.threshold, help="estimated Jaccard of 5-word shingles"
    )
    g.add_argument("--minhash-perms", type=int, default=d.num_perm, help="MinHash permutations per positive")
    g.add_argument("--lsh-bands", type=int, default=d.bands, help="LSH bands (must divide --minhash-perms)")


def config_from_args(args: argparse.Namespace) -> DedupConfig:
    return DedupConfig(
        near=not args.no_near_dedup,
        threshold=args.near_dup_threshold,
        num_perm=args.minhash_perms,
        bands=args.lsh_bands,
    )
