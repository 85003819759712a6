"""Dedup: planted exact and near duplicates, the bucket rule, MinHash against true Jaccard, order independence."""

from __future__ import annotations

import random

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from negminer.pipelines import schema as S
from negminer.pipelines.source import SKIPPED
from negminer.pipelines.transforms import dedup
from negminer.pipelines.transforms.dedup import DedupConfig

CFG = DedupConfig()
WORDS = (
    "river valley mountain forest ocean desert city village castle bridge tower garden market harbour island "
    "winter summer autumn spring morning evening history science music painting theatre railway engine ship"
).split()


def passage(seed: int, n: int = 80) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(n))


def edit(text: str, every: int) -> str:
    """The text with every `every`-th word replaced: a near duplicate of controlled similarity."""
    words = text.split()
    return " ".join("CHANGED" if i % every == every - 1 else w for i, w in enumerate(words))


def near_copy(text: str) -> str:
    """The text with its middle word replaced: 5 of ~76 shingles change, Jaccard ~0.88."""
    words = text.split()
    words[len(words) // 2] = "CHANGED"
    return " ".join(words)


def true_jaccard(a: str, b: str, n: int = 5) -> float:
    sa, sb = set(dedup.shingles(a, n)), set(dedup.shingles(b, n))
    return len(sa & sb) / len(sa | sb)


def row(query: str, positive: str, pair_type: str = "adjacent-paragraph", prov: str = "p") -> dict:
    return S.TupleRow(
        source="wikipedia", pair_type=pair_type, query=query, positive=positive, provenance=prov
    ).to_dict()


def test_minhash_estimate_tracks_true_jaccard():
    base = passage(1, 200)
    for every in (3, 6, 12, 40):
        other = edit(base, every)
        est = float(np.mean(dedup.signature(base, CFG) == dedup.signature(other, CFG)))
        assert est == pytest.approx(true_jaccard(base, other), abs=0.12)


def test_bucket_rule_keeps_smallest_key_and_is_not_transitive():
    # Hand-made 10-value signatures: a~b agree on 9/10, b~c on 9/10, a~c on 8/10.
    a = np.arange(10)
    b = a.copy()
    b[0] = 100
    c = b.copy()
    c[1] = 101
    members = [("k3", c), ("k1", a), ("k2", b)]
    assert dedup.bucket_duplicates(members, threshold=0.9) == ["k2", "k3"]  # k3 goes for k2, though k2 goes too
    assert dedup.bucket_duplicates(members, threshold=0.95) == []
    assert dedup.bucket_duplicates(list(reversed(members)), threshold=0.9) == ["k2", "k3"]


def test_planted_near_duplicates_found_and_order_does_not_matter():
    originals = [passage(s) for s in range(20)]
    near = [near_copy(originals[i]) for i in range(0, 20, 4)]
    far = [edit(originals[i], 3) for i in range(1, 20, 4)]  # most shingles broken: not a duplicate
    texts = originals + near + far
    assert all(true_jaccard(originals[i * 4], t) >= 0.8 for i, t in enumerate(near))
    dropped = dedup.near_duplicates(texts, CFG)
    keys = {dedup.positive_key(t): t for t in texts}
    # exactly one of every planted pair goes, the one with the larger key; unrelated texts all stay
    expected = {max(dedup.positive_key(originals[i * 4]), dedup.positive_key(t)) for i, t in enumerate(near)}
    assert dropped == expected
    assert all(dedup.positive_key(t) not in dropped for t in far)
    shuffled = texts[:]
    random.Random(7).shuffle(shuffled)
    assert dedup.near_duplicates(shuffled, CFG) == dropped
    assert set(keys) >= dropped


def test_dedup_pairs_transform_exact_positive_and_near():
    p1, p2, p3 = passage(101), passage(102), passage(103)
    a, b = row("q1", p1), row("q3", p3, pair_type="heading-paragraph")
    exact = row("q1", p1, prov="another page")  # same (query, positive), other provenance
    two_queries = [row("q2", p2), row("q9", p2)]  # same positive, same pair type: the smaller id stays
    other_type = row("q2", p2, pair_type="heading-paragraph")  # same positive in another pair type: kept
    near = row("q4", near_copy(p3))  # adjacent-paragraph row whose positive nearly equals b's
    assert true_jaccard(p3, near[S.POSITIVE]) >= 0.8
    near_winner, near_loser = sorted([b, near], key=lambda r: dedup.positive_key(r[S.POSITIVE]))
    survivors = [a[S.ID], min(r[S.ID] for r in two_queries), other_type[S.ID], near_winner[S.ID]]
    rows = [a, b, exact, *two_queries, other_type, near]
    with TestPipeline() as p:
        out = p | beam.Create(rows) | dedup.DedupPairs(CFG)
        assert_that(out["rows"] | beam.Map(lambda r: r[S.ID]), equal_to(survivors), label="rows")
        expected = [
            "dedup:exact:adjacent-paragraph",
            "dedup:positive:adjacent-paragraph",
            f"dedup:near:{near_loser[S.PAIR_TYPE]}",
        ]
        assert_that(out[SKIPPED], equal_to(expected), label="skipped")


def test_exact_only_when_near_dedup_is_off():
    p1 = passage(5)
    rows = [row("a", p1), row("b", near_copy(p1)), row("a", p1, prov="x")]
    with TestPipeline() as p:
        out = p | beam.Create(rows) | dedup.DedupPairs(DedupConfig(near=False))
        assert_that(out["rows"] | beam.combiners.Count.Globally(), equal_to([2]), label="rows")
        assert_that(out[SKIPPED], equal_to(["dedup:exact:adjacent-paragraph"]), label="skipped")


def test_config_validation():
    with pytest.raises(ValueError, match="multiple of bands"):
        DedupConfig(num_perm=100, bands=16)
    with pytest.raises(ValueError, match="threshold"):
        DedupConfig(threshold=0.0)
