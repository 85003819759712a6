"""FAISS search against brute force numpy, input validation, the float16 chunk cache and resumable encoding."""

from __future__ import annotations

import io
import os

import numpy as np
import pyarrow as pa
import pytest

from negminer.mining import index as ix
from negminer.mining.encode import encode_missing, length_order
from negminer.mining.store import EMB_SUFFIX, KEYS_SUFFIX, EmbeddingStore


def unit(rng, n, d):
    x = rng.standard_normal((n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute(q, docs, k):
    s = q.astype(np.float64) @ docs.astype(np.float64).T
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, order, axis=1), order


def test_sharded_flat_search_equals_brute_force():
    rng = np.random.default_rng(0)
    docs, q = unit(rng, 1000, 16).astype(np.float32), unit(rng, 37, 16).astype(np.float32)
    perm = rng.permutation(1000)  # shards hold scattered documents, of uneven sizes
    cuts = [0, 5, 300, 301, 1000]
    shards = [(perm[a:b], docs[perm[a:b]]) for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
    s, i = ix.search_sharded(q, iter(shards), k=20, query_batch=10)
    ws, wi = brute(q, docs, 20)
    assert (i == wi).all()
    np.testing.assert_allclose(s, ws, atol=1e-5)


def test_k_larger_than_corpus_pads_with_minus_one():
    rng = np.random.default_rng(1)
    docs = unit(rng, 3, 8).astype(np.float32)
    s, i = ix.search_sharded(docs[:2], iter([(np.array([10, 11]), docs[:2]), (np.array([12]), docs[2:])]), k=5)
    assert (i[:, 3:] == -1).all() and np.isneginf(s[:, 3:]).all()
    assert sorted(i[0, :3]) == [10, 11, 12] and i[0, 0] == 10


def test_merge_topk_breaks_ties_by_index():
    s, i = ix.merge_topk(np.array([[0.5, 0.2]]), np.array([[7, 1]]), np.array([[0.5, 0.9]]), np.array([[3, -1]]), 3)
    assert i.tolist() == [[3, 7, 1]]


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_indexes_recall(kind):
    rng = np.random.default_rng(2)
    docs, q = unit(rng, 4000, 16).astype(np.float32), unit(rng, 50, 16).astype(np.float32)
    ids = np.arange(4000) + 100
    shards = [(ids[a : a + 1000], docs[a : a + 1000]) for a in range(0, 4000, 1000)]
    index, labels = ix.build_ann(kind, iter(shards), lambda n: docs[:n], 4000, 16)
    _, got = ix.search_ann(index, labels, q, 10)
    _, want = brute(q, docs, 10)
    recall = np.mean([len(set(g) & set(w + 100)) / 10 for g, w in zip(got, want, strict=True)])
    assert recall > 0.8, recall


def test_vectors_are_validated_before_faiss():
    with pytest.raises(ValueError, match="2-D"):
        ix.check_vectors(np.zeros(4), "q")
    with pytest.raises(ValueError, match="dimension 3 does not match the index dimension 4"):
        ix.check_vectors(np.zeros((2, 3)), "q", 4)
    with pytest.raises(ValueError, match="1 vectors contain nan"):
        ix.check_vectors(np.array([[0.0, np.nan], [1.0, 0.0]]), "q")
    with pytest.raises(ValueError, match="dtype int64"):
        ix.check_vectors(np.zeros((2, 2), np.int64), "q")
    with pytest.raises(ValueError, match="at most 2048"):
        ix.search_sharded(np.zeros((1, 2), np.float32), iter([]), k=3000, gpu=True)


def test_store_roundtrip_and_partial_chunk_ignored(tmp_path):
    st = EmbeddingStore(str(tmp_path), {"fingerprint": "x", "prompt": ""})
    emb = np.array([[1.0, 0.0], [0.6, 0.8]], np.float32)
    name = st.write_chunk(np.array([5, 9], np.uint64), emb)
    # a crash between the two files leaves a keys file alone: that chunk does not count
    np.save(os.path.join(st.dir, "orphan" + KEYS_SUFFIX), np.array([7], np.uint64))
    assert st.chunk_names() == [name]
    chunk, row = st.locate(np.array([9, 7, 5], np.uint64))
    assert chunk.tolist() == [0, -1, 0] and row.tolist() == [1, -1, 0]
    np.testing.assert_allclose(st.gather(chunk[[0, 2]], row[[0, 2]]), emb[[1, 0]], atol=1e-3)
    assert st.chunk(0).dtype == np.float16
    assert not [f for f in os.listdir(st.dir) if ".tmp" in f]  # atomic writes leave no temp files
    with pytest.raises(ValueError, match="not in the cache"):
        st.gather(chunk, row)
    with pytest.raises(ValueError, match="non-finite"):
        st.write_chunk(np.array([1], np.uint64), np.array([[np.nan, 0.0]]))
    other = EmbeddingStore(str(tmp_path), {"fingerprint": "x", "prompt": "query: "})
    assert other.dir != st.dir and other.locate(np.array([5], np.uint64))[0].tolist() == [-1]
    assert os.path.exists(os.path.join(st.dir, name + EMB_SUFFIX))


class Boom(RuntimeError):
    pass


def fake_embed(calls):
    def embed(texts):
        calls.append(list(texts))
        v = np.array([[len(t), sum(map(ord, t)) % 97, 1.0] for t in texts], np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    return embed


def test_encode_resumes_after_a_crash_and_skips_cached(tmp_path):
    texts = [f"text number {i} " + "x" * (i % 13) for i in range(50)]
    keys = np.arange(1, 51, dtype=np.uint64) * 7919
    lengths = np.array([len(t) for t in texts])
    arr = pa.array(texts)
    st = EmbeddingStore(str(tmp_path), {"fingerprint": "fake"})
    calls: list[list[str]] = []

    def crash_after_two(c):
        if c == 1:
            raise Boom

    with pytest.raises(Boom):
        encode_missing(st, arr, keys, lengths, fake_embed(calls), batch_size=4, chunk_size=8, on_chunk=crash_after_two)
    assert sum(map(len, calls)) == 16
    flat = [t for b in calls for t in b]
    assert [len(t) for t in flat] == sorted((len(t) for t in flat), reverse=True)  # longest first
    calls.clear()
    n = encode_missing(st, arr, keys, lengths, fake_embed(calls), batch_size=4, chunk_size=8)
    assert n == 34 and sum(map(len, calls)) == 34  # only what the killed run had not stored
    assert encode_missing(st, arr, keys, lengths, fake_embed(calls), batch_size=4, chunk_size=8) == 0
    chunk, row = st.locate(keys)
    np.testing.assert_allclose(st.gather(chunk, row), fake_embed([])(texts), atol=2e-3)


def test_length_order_ties_by_position():
    assert length_order(np.array([3, 5, 3, 5])).tolist() == [1, 3, 0, 2]


def test_coalesce_joins_shards_in_order():
    shards = [
        (np.arange(a, b), np.full((b - a, 2), a, np.float32)) for a, b in [(0, 5), (5, 305), (305, 306), (306, 1000)]
    ]
    out = list(ix.coalesce(iter(shards), 301))
    assert [len(i) for i, _ in out] == [305, 695]
    assert (np.concatenate([i for i, _ in out]) == np.arange(1000)).all()
    assert (out[1][1][:, 0] == np.repeat([305, 306], [1, 694])).all()


def test_malformed_chunks_are_removed_and_encoded_again(tmp_path):
    texts = [f"text {i} " + "y" * (i % 5) for i in range(24)]
    keys = np.arange(1, 25, dtype=np.uint64) * 104729
    lengths = np.array([len(t) for t in texts])
    arr = pa.array(texts)
    st = EmbeddingStore(str(tmp_path), {"fingerprint": "fake"})
    assert encode_missing(st, arr, keys, lengths, fake_embed([]), batch_size=4, chunk_size=8) == 24
    names = st.chunk_names()
    assert len(names) == 3
    path = os.path.join(st.dir, "{}" + EMB_SUFFIX).format
    # keys and vectors disagree (one vector short), a foreign dimension, a truncated file
    np.save(path(names[0]), np.load(path(names[0]))[:-1])
    np.save(path(names[1]), np.zeros((8, 5), np.float16))
    with open(path(names[2]), "r+b") as fh:
        fh.truncate(40)
    fresh = EmbeddingStore(str(tmp_path), {"fingerprint": "fake"})
    assert fresh.locate(keys)[0].tolist() == [-1] * 24  # nothing of a malformed chunk is used
    assert fresh.bad_chunks == 3 and fresh.chunk_names() == []
    calls: list[list[str]] = []
    n = encode_missing(fresh, arr, keys, lengths, fake_embed(calls), batch_size=4, chunk_size=8)
    assert n == 24 and sum(map(len, calls)) == n
    with pytest.raises(ValueError, match="dimension 4 in a store of dimension 3"):
        fresh.write_chunk(np.array([999], np.uint64), np.ones((1, 4), np.float32))
    chunk, row = fresh.locate(keys)
    np.testing.assert_allclose(fresh.gather(chunk, row)[np.argsort(keys)], fake_embed([])(texts), atol=2e-3)


def test_encoding_over_several_devices_gives_the_same_store(tmp_path):
    import threading

    texts = [f"passage {i} " + "z" * (i % 11) for i in range(40)]
    keys = np.arange(1, 41, dtype=np.uint64) * 7907
    lengths = np.array([len(t) for t in texts])
    one = EmbeddingStore(str(tmp_path / "one"), {"fingerprint": "fake"})
    encode_missing(one, pa.array(texts), keys, lengths, fake_embed([]), batch_size=4, chunk_size=8)
    seen: dict[str, list] = {}

    def on_device(name):
        def embed(batch):
            seen.setdefault(name, []).append((threading.get_ident(), list(batch)))
            return fake_embed([])(batch)

        return embed

    two = EmbeddingStore(str(tmp_path / "two"), {"fingerprint": "fake"})
    n = encode_missing(two, pa.array(texts), keys, lengths, [on_device("a"), on_device("b")], 4, 8)
    assert n == 40 and sum(len(b) for calls in seen.values() for _, b in calls) == 40  # every text once
    assert sorted(two.chunk_names()) == sorted(one.chunk_names())  # the same planned chunks
    for name in one.chunk_names():
        a = np.load(os.path.join(one.dir, name + EMB_SUFFIX))
        np.testing.assert_array_equal(np.load(os.path.join(two.dir, name + EMB_SUFFIX)), a)


@pytest.mark.gpu
def test_mining_on_all_gpus_matches_one_gpu(mine_data, tmp_path, tiny_bert_dir, monkeypatch):
    import dataclasses

    import torch

    from negminer.mining.mine import mine
    from negminer.pipelines import io
    from tests.mining.conftest import mine_config

    if torch.cuda.device_count() < 2:
        pytest.skip("needs at least 2 CUDA GPUs")
    cfg = mine_config(mine_data, tmp_path, tiny_bert_dir, device="cuda", dtype="float32")
    all_gpus = mine(cfg)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    one = mine(dataclasses.replace(cfg, output=str(tmp_path / "one"), work_dir=str(tmp_path / "w1")))
    assert all_gpus["rows"] == one["rows"]
    assert list(io.iter_rows(cfg.output)) == list(io.iter_rows(str(tmp_path / "one")))


def test_store_on_a_non_local_file_system_resumes_and_drops_malformed_chunks(tmp_path):
    """`mem://` (tests/memfs.py) stands for gs://: the same chunks as on disk, read whole instead of mapped."""
    from tests import memfs

    texts = [f"text {i} " + "z" * (i % 7) for i in range(40)]
    keys = np.arange(1, 41, dtype=np.uint64) * 7907
    lengths, arr = np.array([len(t) for t in texts]), pa.array(texts)
    remote = EmbeddingStore(f"mem://{tmp_path.name}/work", {"fingerprint": "fake"})
    local = EmbeddingStore(str(tmp_path), {"fingerprint": "fake"})
    assert not remote.local and remote.dir.startswith("mem://") and remote.key == local.key

    def crash_after_two(c):
        if c == 1:
            raise Boom

    with pytest.raises(Boom):
        encode_missing(
            remote, arr, keys, lengths, fake_embed([]), batch_size=4, chunk_size=8, on_chunk=crash_after_two
        )
    calls: list[list[str]] = []
    assert encode_missing(remote, arr, keys, lengths, fake_embed(calls), batch_size=4, chunk_size=8) == 24
    assert sum(map(len, calls)) == 24  # the rerun encodes only the 24 texts the killed run had not stored
    encode_missing(local, arr, keys, lengths, fake_embed([]), batch_size=4, chunk_size=8)
    names = remote.chunk_names()
    assert names == local.chunk_names() and len(names) == 5
    for n in names:  # byte for byte the files the local store holds
        for suffix in (KEYS_SUFFIX, EMB_SUFFIX):
            with open(os.path.join(local.dir, n + suffix), "rb") as fh:
                assert memfs.FILES[f"{remote.dir}/{n}{suffix}"] == fh.read()
    chunk, row = remote.locate(keys)
    np.testing.assert_array_equal(remote.gather(chunk, row), local.gather(*local.locate(keys)))
    assert not [p for p in memfs.FILES if p.startswith(remote.dir) and "/." in p]  # no temp objects left
    # a truncated object and one whose keys and vectors disagree: found, removed, encoded again
    path = f"{remote.dir}/{{}}{EMB_SUFFIX}".format
    memfs.FILES[path(names[0])] = memfs.FILES[path(names[0])][:100]
    buf = io.BytesIO()
    np.save(buf, np.zeros((7, 3), np.float16))
    memfs.FILES[path(names[1])] = buf.getvalue()
    fresh = EmbeddingStore(f"mem://{tmp_path.name}/work", {"fingerprint": "fake"})
    assert (fresh.locate(keys)[0] < 0).sum() == 16 and fresh.bad_chunks == 2
    assert path(names[0]) not in memfs.FILES
    assert encode_missing(fresh, arr, keys, lengths, fake_embed([]), batch_size=4, chunk_size=8) == 16
