"""The on-disk corpus builder gives exactly the in-memory builder's corpus, with every array through scratch files."""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from negminer.mining import extsort
from negminer.mining.corpus import CorpusBuilder, hash64
from negminer.mining.corpus_disk import DiskCorpusBuilder

text = st.sampled_from(["red fish", "Red  fish", "blue fish", "one two", "ONE TWO", "sun", "  ", "", "moon", "x"])
ident = st.one_of(st.none(), st.sampled_from(["i1", "i2", "i3", "i4", "i5"]))
batch = st.lists(st.tuples(ident, text), max_size=9)


def build(builder, batches):
    for rows in batches:
        builder.add([i for i, _ in rows], [t for _, t in rows])
    return builder.build()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(batch, min_size=1, max_size=6), block=st.sampled_from([2, 3, 5, 1 << 18]))
def test_disk_builder_equals_in_memory_builder(monkeypatch, batches, block):
    if not any(t.strip() for rows in batches for _, t in rows):
        return  # an empty corpus: both refuse (tested below)
    monkeypatch.setattr(extsort, "BLOCK", block)
    want = build(CorpusBuilder(), batches)
    with tempfile.TemporaryDirectory() as tmp:
        got = build(DiskCorpusBuilder(os.path.join(tmp, "corpus.arrow")), batches)
        assert got.table.equals(want.table)
        for name in ("norm_key", "text_key", "alias_key", "alias_doc"):
            assert np.array_equal(np.asarray(getattr(got, name)), np.asarray(getattr(want, name))), name
        assert (got.raw_count, got.empty_skipped) == (want.raw_count, want.empty_skipped)
        probe = np.array([hash64(t) for t in ["red fish", "one two", "sun", "nothing"]], np.uint64)
        assert got.find_texts(probe).tolist() == want.find_texts(probe).tolist()
        keys = np.array([hash64(i) for i in ["i1", "i3", "i5", "zz"]] + [0], np.uint64)
        for a, b in zip(got.find_ids(keys), want.find_ids(keys), strict=True):
            assert a.tolist() == b.tolist()
        assert np.asarray(got.lengths()).tolist() == np.asarray(want.lengths()).tolist()
        assert sorted(os.listdir(tmp)) == ["corpus.arrow"]  # raw files removed, scratch files unlinked


def test_disk_builder_refuses_an_empty_corpus(tmp_path):
    b = DiskCorpusBuilder(str(tmp_path / "c.arrow"))
    b.add(["a"], ["   "])
    with pytest.raises(ValueError, match="corpus is empty"):
        b.build()


def test_corpus_arrays_above_a_block_are_file_backed(tmp_path, monkeypatch):
    """What grows with the corpus (keys, aliases, text index, lengths) lives in mapped files, not the heap."""
    monkeypatch.setattr(extsort, "BLOCK", 8)
    b = DiskCorpusBuilder(str(tmp_path / "corpus.arrow"))
    b.add([f"i{k}" for k in range(50)], [f"text number {k % 40}" for k in range(50)])
    c = b.build()
    assert len(c) == 40 and c.raw_count == 50
    arrays = [c.norm_key, c.text_key, c.alias_key, c.alias_doc, *c._text_index(), c.lengths()]
    assert all(isinstance(a, np.memmap) for a in arrays)
    assert c.find_texts(np.array([hash64("text number 7")], np.uint64)).tolist() == [7]
