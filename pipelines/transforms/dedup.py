"""Deterministic dedup of pairs: exact (pair type, positive) and MinHash-LSH near-duplicate positives.

The near-duplicate rule (the same input gives the same survivors on any runner and in any order):
distinct positive texts are keyed by a hash of their normalised text; each gets a MinHash signature
split into `bands` LSH band keys. Within one band bucket, a positive is a duplicate when some
positive with a *smaller key* in that bucket has an estimated Jaccard similarity >= `threshold`.
A positive is dropped when any bucket marks it. The rule is deliberately not transitive (no
connected components): in a chain A~B~C with A !~ C (keys A<B<C), B is dropped for A and C for B.
That removes slightly more than a cluster-representative rule would, but every decision depends only
on the set of positives, never on the order they arrive in.

At scale (Beam): only band hashes are shuffled per band (band key -> positive key, ~40 bytes, not the signature);
a bucket with one member (most of them) is dropped there. Buckets with the same member set are merged, since the
rule gives them the same answer, and each signature (one per row of a positive) travels to be joined with the
candidate buckets it is in.
Inside a bucket, members are compared as a NumPy block (rows against every smaller-keyed row), not pair by pair.
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
from negminer.pipelines.source import SKIPPED, _counter, skip
from negminer.pipelines.transforms.clean import normalize_for_match
from negminer.pipelines.transforms.quality import normalized_for_match

SKIPPED_COUNTS = "skipped_counts"  # tag and output: dicts reason -> count (exact dedup)


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
    """Hash of the normalised (case-folded, whitespace-collapsed) text: identical positives share it.

    The normalised text comes from the quality filters' cache: a kept positive was normalised by them just before.
    """
    return hashlib.blake2b(normalized_for_match(text).encode("utf-8"), digest_size=12).hexdigest()


def shingles(text: str, n: int) -> list[bytes]:
    """Distinct word n-grams of the normalised text (the whole text when it has fewer than n words)."""
    words = normalize_for_match(text).split()
    if len(words) <= n:
        return [" ".join(words).encode("utf-8")]
    return sorted({" ".join(words[i : i + n]).encode("utf-8") for i in range(len(words) - n + 1)})


_FMIX32 = (16, 0x85EBCA6B, 13, 0xC2B2AE35, 16)  # MurmurHash3's 32-bit finalizer: shifts and multipliers


@functools.lru_cache(maxsize=8)
def _permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) of datasketch 2's default "affine32" MinHash: h -> a*h + b mod 2^32, a odd, drawn as it draws them."""
    gen = np.random.RandomState(seed)
    a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    return a, b


def signature(text: str, cfg: DedupConfig) -> np.ndarray:
    """MinHash signature of the text's word shingles, the values of datasketch's `MinHash(num_perm, seed)`
    (affine32 scheme, SHA-1 32-bit hashes) computed here: the same array (tested against datasketch) without
    importing datasketch (~0.5-1 s per worker process) or building a MinHash object per text.
    """
    a, b = _permutations(cfg.num_perm, cfg.seed)
    digests = [hashlib.sha1(s).digest()[:4] for s in shingles(text, cfg.shingle_words)]
    h = np.frombuffer(b"".join(digests), dtype="<u4").astype(np.uint32).reshape(-1, 1)  # (S, 1)
    s1, m1, s2, m2, s3 = _FMIX32
    h = h ^ (h >> np.uint32(s1))
    h = h * np.uint32(m1)
    h = h ^ (h >> np.uint32(s2))
    h = h * np.uint32(m2)
    h = h ^ (h >> np.uint32(s3))
    return (h * a + b).min(axis=0)  # (P,) uint32: the smallest permuted hash per permutation


def band_keys(sig: np.ndarray, bands: int) -> list[str]:
    """One LSH bucket key per band: the band index and a hash of that band's signature values."""
    rows = len(sig) // bands
    return [
        f"{b}:{hashlib.blake2b(sig[b * rows : (b + 1) * rows].tobytes(), digest_size=8).hexdigest()}"
        for b in range(bands)
    ]


_BLOCK = 256  # members per side of one compare step: (256, 256, P) equal values, 8 MB at P = 128


def bucket_duplicates(members: Iterable[tuple[str, np.ndarray]], threshold: float) -> list[str]:
    """Keys of one bucket that have a smaller-keyed member with estimated Jaccard >= threshold, in key order.

    The estimate is the share of equal signature values (as `np.mean(a == b)`). Members are compared as NumPy
    blocks of rows against blocks of smaller-keyed rows, and a row leaves as soon as one of them is close: a bucket
    of m unrelated members still costs O(m^2) vectorised compares, but a bucket of near copies (templated pages,
    the usual cause of a large bucket) costs about m x the first block, since most rows find their match there.
    """
    by_key: dict[str, np.ndarray] = {}
    for key, sig in sorted(members, key=lambda m: m[0]):
        by_key.setdefault(key, sig)  # the same key twice (same normalised text) is one member
    keys = list(by_key)
    if len(keys) < 2:
        return []
    sigs = np.stack([np.asarray(v) for v in by_key.values()])  # (m, P)
    m, perms = sigs.shape
    dup = np.zeros(m, dtype=bool)
    for a in range(1, m, _BLOCK):
        open_rows = np.arange(a, min(m, a + _BLOCK))  # rows of this block not yet known to be duplicates
        for c in range(0, open_rows[-1], _BLOCK):  # blocks of smaller-keyed rows, first rows first
            cols = np.arange(c, min(c + _BLOCK, open_rows[-1]))
            equal = (sigs[open_rows, None, :] == sigs[None, cols, :]).sum(axis=2)  # (rows, cols) equal values
            close = (equal / perms >= threshold) & (cols[None, :] < open_rows[:, None])
            dup[open_rows[close.any(axis=1)]] = True
            open_rows = open_rows[~dup[open_rows]]
            if not len(open_rows):
                break
    return [k for k, d in zip(keys, dup, strict=True) if d]


def near_duplicates(texts: Sequence[str], cfg: DedupConfig) -> set[str]:
    """Positive keys to drop among `texts` by the module's rule (the Beam steps below, in one process)."""
    sigs = {key: signature(text, cfg) for key, text in {positive_key(t): t for t in sorted(texts)}.items()}
    buckets: dict[str, list[str]] = {}
    for key, sig in sigs.items():
        for band in band_keys(sig, cfg.bands):
            buckets.setdefault(band, []).append(key)
    candidates = {tuple(sorted(keys)) for keys in buckets.values() if len(keys) > 1}
    return {k for keys in candidates for k in bucket_duplicates([(k, sigs[k]) for k in keys], cfg.threshold)}


def dedup_reason(kind: str, pair_type: str) -> str:
    return f"dedup:{kind}:{pair_type}"


def _row_order(row: dict) -> tuple[str, str]:
    return row[S.ID], row.get(S.PROVENANCE) or ""


class KeepFirstFn(beam.CombineFn):
    """Rows of one (pair type, positive key) -> (the row with the smallest (id, provenance), {id: rows with it}).

    A combine, so most rows are reduced before the shuffle (one accumulator per key and bundle travels,
    not every duplicate row).
    """

    def create_accumulator(self) -> tuple[dict | None, dict[str, int]]:
        return None, {}

    def add_input(self, acc: tuple[dict | None, dict[str, int]], row: dict) -> tuple[dict | None, dict[str, int]]:
        best, ids = acc
        ids[row[S.ID]] = ids.get(row[S.ID], 0) + 1
        return (row if best is None or _row_order(row) < _row_order(best) else best), ids

    def merge_accumulators(self, accs: Iterable[tuple[dict | None, dict[str, int]]]) -> tuple[dict | None, dict]:
        best, ids = None, {}
        for b, counts in accs:
            if b is not None and (best is None or _row_order(b) < _row_order(best)):
                best = b
            for k, n in counts.items():
                ids[k] = ids.get(k, 0) + n
        return best, ids

    def extract_output(self, acc: tuple[dict | None, dict[str, int]]) -> tuple[dict | None, dict[str, int]]:
        return acc


def keep_first(element: tuple[str, tuple[dict, dict[str, int]]]) -> Iterator[Any]:
    """(key, (kept row, {id: rows})) -> the kept row, and the counts of the others as one dict (if any).

    Another row with the kept row's id is an exact (query, positive) duplicate; another query for the same
    positive in the same pair type is a `positive` duplicate.
    """
    keep, ids = element[1]
    yield keep
    exact = ids[keep[S.ID]] - 1
    positive = sum(ids.values()) - 1 - exact
    kinds = (("exact", exact), ("positive", positive))
    counts = {dedup_reason(kind, keep[S.PAIR_TYPE]): n for kind, n in kinds if n}
    if counts:
        for reason, n in counts.items():
            _counter("negminer", f"skipped_{reason}").inc(n)
        yield beam.pvalue.TaggedOutput(SKIPPED_COUNTS, counts)


class SignatureFn(beam.DoFn):
    """(positive key, row) -> (positive key, MinHash signature of its positive), keyed by positive.

    One per row, not per distinct positive: the signature depends only on the normalised text, which the key names,
    so the rows of one positive (at most one per pair type after exact dedup) give the same signature, and the
    steps after it take each key once. Making them distinct first would cost a shuffle and a combine.
    """

    def __init__(self, cfg: DedupConfig):
        self.cfg = cfg

    def process(self, element: tuple[str, dict]) -> Iterator[tuple[str, np.ndarray]]:
        key, row = element
        yield key, signature(row[S.POSITIVE], self.cfg)


def bucket_hashes(element: tuple[str, np.ndarray], bands: int) -> Iterator[tuple[str, str]]:
    """(positive key, signature) -> (band key, positive key) for every LSH band: only hashes are shuffled."""
    key, sig = element
    for band in band_keys(sig, bands):
        yield band, key


def candidate_buckets(element: tuple[str, Iterable[str]]) -> Iterator[tuple[str, tuple[str, ...]]]:
    """(band key, positive keys) -> (member-set id, sorted keys) for a bucket of >= 2 positives.

    Buckets with the same members get the same id (the rule's answer depends only on the members).
    """
    keys = tuple(sorted(set(element[1])))
    if len(keys) > 1:
        yield hashlib.blake2b("\x1f".join(keys).encode("utf-8"), digest_size=12).hexdigest(), keys


def signatures_to_buckets(element: tuple[str, dict[str, Iterable[Any]]]) -> Iterator[tuple[str, tuple[str, Any]]]:
    """(positive key, {'sig': [signature], 'buckets': [ids]}) -> (bucket id, (positive key, signature)) each."""
    key, grouped = element
    sig = next(iter(grouped["sig"]), None)
    for bucket in grouped["buckets"]:
        yield bucket, (key, sig)


def marked_duplicates(element: tuple[str, Iterable[tuple[str, Any]]], threshold: float) -> Iterator[tuple[str, bool]]:
    """(bucket id, members) -> (positive key, True) for each duplicate in the bucket (`bucket_duplicates`)."""
    for key in bucket_duplicates(element[1], threshold):
        yield key, True


class DropNearDuplicatesFn(beam.DoFn):
    """(positive key, {'rows': [...], 'dup': [...]}) -> rows, or `dedup:near:<pair_type>` skips if marked."""

    def process(self, element: tuple[str, dict[str, Iterable[Any]]]) -> Iterator[Any]:
        grouped = element[1]
        is_dup = any(True for _ in grouped["dup"])
        for r in grouped["rows"]:
            yield skip(dedup_reason("near", r[S.PAIR_TYPE])) if is_dup else r


class DedupPairs(beam.PTransform):
    """PCollection[row dict] -> {'rows': surviving rows, 'skipped': `dedup:near:<pair_type>` strings,
    'skipped_counts': dicts `dedup:<exact|positive>:<pair_type>` -> count}."""

    def __init__(self, cfg: DedupConfig):
        super().__init__()
        self.cfg = cfg

    def expand(self, rows):
        exact = (
            rows
            | "KeyByTypeAndPositive" >> beam.Map(lambda r: (f"{r[S.PAIR_TYPE]}\x1f{positive_key(r[S.POSITIVE])}", r))
            | "KeepFirstPerKey" >> beam.CombinePerKey(KeepFirstFn())
            | "KeepFirst" >> beam.FlatMap(keep_first).with_outputs(SKIPPED_COUNTS, main="rows")
        )
        if not self.cfg.near:
            p = rows.pipeline
            return {
                "rows": exact.rows,
                "skipped": p | "NoNearSkips" >> beam.Create([]),
                SKIPPED_COUNTS: exact[SKIPPED_COUNTS],
            }
        by_positive = exact.rows | "KeyByPositive" >> beam.Map(lambda r: (positive_key(r[S.POSITIVE]), r))
        sigs = by_positive | "Signatures" >> beam.ParDo(SignatureFn(self.cfg))
        buckets = (
            sigs
            | "BandHashes" >> beam.FlatMap(bucket_hashes, bands=self.cfg.bands)
            | "GroupBands" >> beam.GroupByKey()
            | "CandidateBuckets" >> beam.FlatMap(candidate_buckets)
            | "SameMembersOnce" >> beam.CombinePerKey(lambda sets: next(iter(sets), ()))
            | "BucketMembers" >> beam.FlatMap(lambda kv: ((k, kv[0]) for k in kv[1]))
        )
        dups = (
            {"sig": sigs, "buckets": buckets}
            | "JoinSignatures" >> beam.CoGroupByKey()
            | "SignaturesToBuckets" >> beam.FlatMap(signatures_to_buckets)
            | "GroupBuckets" >> beam.GroupByKey()
            | "BucketDuplicates" >> beam.FlatMap(marked_duplicates, threshold=self.cfg.threshold)
        )
        near = (
            {"rows": by_positive, "dup": dups}
            | "JoinMarks" >> beam.CoGroupByKey()
            | "DropNear" >> beam.ParDo(DropNearDuplicatesFn()).with_outputs(SKIPPED, main="rows")
        )
        return {"rows": near.rows, "skipped": near[SKIPPED], SKIPPED_COUNTS: exact[SKIPPED_COUNTS]}


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
