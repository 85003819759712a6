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


def all_skips(out) -> beam.PCollection:
    """Every skip of DedupPairs as one reason string per skipped row (strings and count dicts together)."""
    counted = out[dedup.SKIPPED_COUNTS] | "Expand" >> beam.FlatMap(
        lambda d: [k for k, n in d.items() for _ in range(n)]
    )
    return (out[SKIPPED], counted) | "AllSkips" >> beam.Flatten()


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
        assert_that(all_skips(out), equal_to(expected), label="skipped")


def test_exact_only_when_near_dedup_is_off():
    p1 = passage(5)
    rows = [row("a", p1), row("b", near_copy(p1)), row("a", p1, prov="x")]
    with TestPipeline() as p:
        out = p | beam.Create(rows) | dedup.DedupPairs(DedupConfig(near=False))
        assert_that(out["rows"] | beam.combiners.Count.Globally(), equal_to([2]), label="rows")
        assert_that(all_skips(out), equal_to(["dedup:exact:adjacent-paragraph"]), label="skipped")


def test_config_validation():
    with pytest.raises(ValueError, match="multiple of bands"):
        DedupConfig(num_perm=100, bands=16)
    with pytest.raises(ValueError, match="threshold"):
        DedupConfig(threshold=0.0)


def old_rule(texts: list[str], cfg: DedupConfig) -> set[str]:
    """The rule as first written: every positive's signature in each of its band buckets, pairs compared one by one."""
    buckets: dict[str, list] = {}
    for key, text in {dedup.positive_key(t): t for t in sorted(texts)}.items():
        sig = dedup.signature(text, cfg)
        for band in dedup.band_keys(sig, cfg.bands):
            buckets.setdefault(band, []).append((key, sig))
    dropped = set()
    for members in buckets.values():
        ordered = sorted(members, key=lambda m: m[0])
        for i, (key, sig) in enumerate(ordered):
            if any(float(np.mean(sig == other)) >= cfg.threshold for _, other in ordered[:i]):
                dropped.add(key)
    return dropped


def clustered_texts(seed: int) -> list[str]:
    """Clusters of chained edits (A~B~C, A!~C), exact-normalised copies and unrelated passages."""
    rng = random.Random(seed)
    texts = []
    for c in range(12):
        base = passage(1000 + c, 120)
        chain = [base]
        for _ in range(rng.randint(1, 5)):
            words = chain[-1].split()
            for _ in range(rng.randint(1, 2)):
                words[rng.randrange(len(words))] = f"w{rng.randrange(10**6)}"
            chain.append(" ".join(words))
        texts += chain
        texts.append(base.upper())  # the same positive key as base
    return texts + [passage(5000 + i, 40) for i in range(30)]


def test_bucket_duplicates_block_compare_equals_pairwise():
    rng = np.random.default_rng(0)
    for m, perms in ((2, 8), (7, 16), (60, 128), (300, 32), (700, 12)):  # up to 3 blocks of 256 a side
        sigs = rng.integers(0, 4, size=(m, perms)).astype(np.uint32)  # few values: many close pairs
        members = [(f"k{rng.integers(10**6):07d}", s) for s in sigs]
        ordered = sorted(members, key=lambda x: x[0])
        for t in (0.3, 0.5, 0.9):
            want = [k for i, (k, s) in enumerate(ordered) if any(float(np.mean(s == o)) >= t for _, o in ordered[:i])]
            assert dedup.bucket_duplicates(members, t) == want


def test_near_dedup_equals_the_pairwise_rule_in_process_and_on_beam():
    texts = clustered_texts(3)
    cfg = DedupConfig(threshold=0.8)
    want = old_rule(texts, cfg)
    assert len(want) >= 8  # the planted clusters do give near duplicates
    assert dedup.near_duplicates(texts, cfg) == want
    rows = [row(f"q{i}", t) for i, t in enumerate(texts)]
    kept = {dedup.positive_key(t) for t in texts} - want
    with TestPipeline() as p:
        out = p | beam.Create(rows) | dedup.DedupPairs(cfg)
        assert_that(
            out["rows"] | beam.Map(lambda r: dedup.positive_key(r[S.POSITIVE])) | beam.Distinct(),
            equal_to(sorted(kept)),
            label="kept",
        )


def test_band_stage_ships_hashes_not_signatures():
    sig = dedup.signature(passage(9), CFG)
    out = list(dedup.bucket_hashes(("key", sig), CFG.bands))
    assert len(out) == CFG.bands and all(isinstance(b, str) and k == "key" for b, k in out)
    assert [b for b, _ in out] == dedup.band_keys(dedup.signature(passage(9), CFG), CFG.bands)
    assert list(dedup.candidate_buckets(("band", ["b", "a", "b"]))) == [
        (list(dedup.candidate_buckets(("other", ["a", "b"])))[0][0], ("a", "b"))
    ]
    assert list(dedup.candidate_buckets(("band", ["a", "a"]))) == []


def test_keep_first_combine_equals_sorting_whatever_the_split():
    """Partial accumulators (as a runner builds them per bundle) merge to the sort-based keep and counts."""
    p = passage(77)
    rows = [row(f"q{i % 4}", p, prov=f"page{i % 3}") for i in range(13)]
    want = sorted(rows, key=lambda r: (r[S.ID], r[S.PROVENANCE]))[0]
    fn = dedup.KeepFirstFn()
    for seed in range(5):
        shuffled = rows[:]
        random.Random(seed).shuffle(shuffled)
        parts = [shuffled[:4], shuffled[4:5], shuffled[5:]]
        accs = []
        for part in parts:
            acc = fn.create_accumulator()
            for r in part:
                acc = fn.add_input(acc, r)
            accs.append(acc)
        keep, ids = fn.extract_output(fn.merge_accumulators([fn.create_accumulator(), *accs]))
        assert keep == want
        out = list(dedup.keep_first(("k", (keep, ids))))
        assert out[0] == want
        counts = out[1].value
        exact = sum(1 for r in rows if r[S.ID] == want[S.ID]) - 1
        assert counts == {"dedup:exact:adjacent-paragraph": exact, "dedup:positive:adjacent-paragraph": 12 - exact}


@pytest.mark.parametrize(("num_perm", "seed"), [(128, 1), (64, 7)])
def test_signature_equals_datasketch_minhash(num_perm, seed):
    from datasketch import MinHash

    cfg = DedupConfig(num_perm=num_perm, bands=16, seed=seed)
    rng = random.Random(num_perm)
    texts = ["", "one", passage(3), passage(4, 400)]
    texts += [" ".join(rng.choice(WORDS + ["Ελλάδα", "straße"]) for _ in range(rng.randint(1, 40))) for _ in range(50)]
    for text in texts:
        m = MinHash(num_perm=num_perm, seed=seed)
        m.update_batch(dedup.shingles(text, cfg.shingle_words))
        got = dedup.signature(text, cfg)
        assert got.dtype == m.hashvalues.dtype and np.array_equal(got, m.hashvalues), text
