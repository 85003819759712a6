"""Property: whatever the input, no emitted negative equals (by normalised text or by id) a positive of its query."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from negminer.mining.corpus import CorpusBuilder
from negminer.mining.groups import build_groups, padded
from negminer.mining.select import Ceiling, Rules, choose, eligible, lowest_positive
from negminer.mining.sources import shard_documents
from negminer.pipelines.io import iter_rows
from negminer.pipelines.transforms.clean import normalize_for_match
from tests.mining.conftest import write_rows

BASE = ["red fish", "blue fish", "one two", "Paris", "rome", "a b c", "deep sea", "sun"]
variant = st.tuples(st.sampled_from(BASE), st.sampled_from(["", "upper", "spaces", "title"])).map(
    lambda t: {"": t[0], "upper": t[0].upper(), "spaces": f"  {t[0]}  ".replace(" ", "  "), "title": t[0].title()}[
        t[1]
    ]
)
ident = st.one_of(st.none(), st.sampled_from(["i1", "i2", "i3", "i4"]))
row = st.fixed_dictionaries(
    {"query": st.sampled_from(["q1", "Q1", "q2", "q3"]), "positive": variant, "positive_id": ident}
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(row, min_size=1, max_size=8),
    extra=st.lists(st.tuples(ident, variant), max_size=12),
    seed=st.integers(0, 2**16),
    sampling=st.sampled_from(["top", "random"]),
    ceiling=st.sampled_from(["none", "perc:0.95", "margin:0.05"]),
)
def test_no_negative_is_a_positive_of_its_query(rows, extra, seed, sampling, ceiling):
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as tmp:
        d = write_rows(Path(tmp) / "in", [dict(source="t", pair_type="qa", **r) for r in rows])
        b = CorpusBuilder()
        for ids, texts in shard_documents(str(d)):
            b.add(ids, texts)
        if extra:
            b.add([i for i, _ in extra], [t for _, t in extra])
        corpus = b.build()
        groups = build_groups(str(d), corpus)
        read = list(iter_rows(str(d)))
    n_groups, n_docs = len(groups), len(corpus)
    cand = np.stack([rng.permutation(n_docs) for _ in range(n_groups)])  # positives retrieved too, anywhere
    score = -np.sort(-rng.uniform(-1, 1, cand.shape), axis=1).astype(np.float32)
    k = min(4, n_docs)
    rules = Rules(num_negatives=k, range_max=n_docs + 1, ceiling=Ceiling.parse(ceiling), sampling=sampling, seed=seed)
    gb = np.arange(n_groups)
    keep, _ = eligible(cand, padded(groups.excl_indptr, groups.excl_docs, gb), rules)
    pos = padded(groups.pos_indptr, groups.pos_docs, gb)
    pos_score = np.where(pos >= 0, rng.uniform(-1, 1, pos.shape), np.nan)
    sel = choose(cand, score, keep, lowest_positive(pos_score), None, groups.key, rules)

    texts, doc_ids = corpus.texts.to_pylist(), corpus.doc_ids.to_pylist()
    for g in range(n_groups):
        members = [read[r] for r in np.flatnonzero(groups.row_group == g)]
        pos_text = {normalize_for_match(m["positive"]) for m in members}
        pos_ids = {m["positive_id"] for m in members} - {None}
        emitted = [int(x) for x in sel.doc[g] if x >= 0]
        assert len(set(emitted)) == len(emitted)
        for doc in emitted:
            assert normalize_for_match(texts[doc]) not in pos_text
            assert doc_ids[doc] not in pos_ids
            # nor a document that merely carried one of the positives' ids somewhere in the input
            carried = {i for i, t in extra if normalize_for_match(t) == normalize_for_match(texts[doc])}
            assert not (carried & pos_ids)
