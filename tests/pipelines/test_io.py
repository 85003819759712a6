"""Shard IO without Beam: deterministic sharding, dedup, atomic writes, rejects, manifest, fingerprints."""

from __future__ import annotations

import hashlib
import json
import os
import random

import pyarrow.parquet as pq
import pytest

from negminer.pipelines import io
from negminer.pipelines import schema as S


def _rows(n: int) -> list[dict]:
    return [
        S.TupleRow(
            source="snli" if i % 3 else "mnli",
            pair_type="nli",
            query=f"premise {i // 2}",
            positive=f"hypothesis {i}",
            negatives=tuple(f"neg {i} {j}" for j in range(i % 4)),
        ).to_dict()
        for i in range(n)
    ]


def _files(d) -> dict[str, bytes]:
    return {f: open(os.path.join(d, f), "rb").read() for f in sorted(os.listdir(d)) if f.endswith(".parquet")}


def test_shard_name_follows_the_hf_pattern():
    assert io.shard_name("train", 2, 10) == "train-00002-of-00010.parquet"
    with pytest.raises(ValueError, match="shard index 3"):
        io.shard_name("train", 3, 3)


def test_write_shards_is_byte_identical_whatever_the_input_order(tmp_path):
    rows = _rows(50)
    shuffled = rows[:]
    random.Random(1).shuffle(shuffled)
    io.write_shards(rows, str(tmp_path / "a"), num_shards=3)
    io.write_shards(shuffled, str(tmp_path / "b"), num_shards=3)
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert list(a) == [io.shard_name("train", i, 3) for i in range(3)]
    assert a == b


def test_write_shards_puts_each_row_in_its_hash_shard_sorted_and_deduplicated(tmp_path):
    rows = _rows(40)
    stats = io.write_shards(rows + rows[:5], str(tmp_path), num_shards=4)
    assert stats["rows"] == 40 and stats["duplicates"] == 5
    assert stats["negatives"] == sum(len(r[S.NEGATIVES]) for r in rows)
    assert stats["source"] == {
        "snli": sum(r[S.SOURCE] == "snli" for r in rows),
        "mnli": sum(r[S.SOURCE] == "mnli" for r in rows),
    }
    for i in range(4):
        ids = pq.read_table(tmp_path / io.shard_name("train", i, 4)).column(S.ID).to_pylist()
        assert ids == sorted(ids)
        assert all(int(x[:15], 16) % 4 == i for x in ids)
    assert sorted(r[S.ID] for r in io.iter_rows(str(tmp_path))) == sorted(r[S.ID] for r in rows)


def test_dedup_keeps_the_same_survivor_in_any_order():
    a = _rows(1)[0]
    b = {**a, S.PROVENANCE: '{"line": 2}'}
    c = {**a, S.PROVENANCE: '{"line": 1}'}
    survivors = {
        json.dumps(io.sort_and_dedup(order)[0], sort_keys=True) for order in ([a, b, c], [c, b, a], [b, a, c])
    }
    assert len(survivors) == 1


def test_every_shard_index_is_written_even_when_empty(tmp_path):
    io.write_shards(_rows(1), str(tmp_path), num_shards=5)
    assert len(_files(tmp_path)) == 5
    assert sum(pq.read_metadata(tmp_path / f).num_rows for f in _files(tmp_path)) == 1


def test_atomic_write_leaves_no_temp_files(tmp_path):
    io.write_bytes_atomic(str(tmp_path / "sub" / "x.bin"), b"one")
    io.write_bytes_atomic(str(tmp_path / "sub" / "x.bin"), b"two")
    assert os.listdir(tmp_path / "sub") == ["x.bin"]
    assert (tmp_path / "sub" / "x.bin").read_bytes() == b"two"


def test_rejects_are_sorted_truncated_and_counted(tmp_path):
    rejects = [
        io.make_reject("b.jsonl", "malformed_json", "{", line=3),
        io.make_reject("a.jsonl", "no_gold_label", {"gold_label": "-"}, line=9),
        io.make_reject("a.jsonl", "malformed_json", b"\xff{", line=2),
        io.make_reject("a.jsonl", "malformed_json", "x" * (S.MAX_REJECT_RAW_CHARS + 5), line=4),
    ]
    counts = io.write_rejects(rejects, str(tmp_path))
    assert counts == {"malformed_json": 3, "no_gold_label": 1}
    t = io.read_rejects(str(tmp_path))
    assert t.schema.equals(S.REJECT_SCHEMA)
    got = list(zip(t.column(S.REJECT_SOURCE_FILE).to_pylist(), t.column(S.REJECT_LINE).to_pylist(), strict=True))
    assert got == [("a.jsonl", 2), ("a.jsonl", 4), ("a.jsonl", 9), ("b.jsonl", 3)]
    raws = t.column(S.REJECT_RAW).to_pylist()
    assert (
        raws[0] == "\ufffd{" and len(raws[1]) == S.MAX_REJECT_RAW_CHARS and json.loads(raws[2]) == {"gold_label": "-"}
    )


def test_manifest_round_trip_and_missing_manifest(tmp_path):
    io.write_manifest(str(tmp_path), {"format_version": S.FORMAT_VERSION, "rows": 3, "b": {"z": 1, "a": 2}})
    assert io.read_manifest(str(tmp_path)) == {"format_version": S.FORMAT_VERSION, "rows": 3, "b": {"z": 1, "a": 2}}
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        io.read_manifest(str(tmp_path / "nowhere"))


def test_fingerprint_matches_hashlib(tmp_path):
    data = os.urandom(100_000)
    (tmp_path / "f.bin").write_bytes(data)
    fp = io.fingerprint(str(tmp_path / "f.bin"), chunk=4096)
    assert fp["size"] == len(data) and fp["sha256"] == hashlib.sha256(data).hexdigest()


def test_expand_patterns_globs_dirs_and_fails_on_no_match(tmp_path):
    for name in ("a.jsonl", "b.jsonl", "c.txt", ".hidden.jsonl"):
        (tmp_path / name).write_text("{}\n")
    got = io.expand_patterns([str(tmp_path / "*.jsonl")])
    assert [os.path.basename(f) for f in got] == ["a.jsonl", "b.jsonl"]
    assert [os.path.basename(f) for f in io.expand_patterns([str(tmp_path)])] == ["a.jsonl", "b.jsonl", "c.txt"]
    with pytest.raises(FileNotFoundError, match="nothing-here"):
        io.expand_patterns([str(tmp_path / "nothing-here*.jsonl")])


def test_shard_files_skip_rejects_and_fail_clearly(tmp_path):
    io.write_shards(_rows(3), str(tmp_path), num_shards=2)
    io.write_rejects([io.make_reject("a", "r", "x", line=1)], str(tmp_path))
    assert [os.path.basename(f) for f in io.shard_files(str(tmp_path))] == [
        "train-00000-of-00002.parquet",
        "train-00001-of-00002.parquet",
    ]
    with pytest.raises(FileNotFoundError, match="no shard files"):
        io.shard_files(str(tmp_path / "rejects" / "nothing"))


def test_merge_counts_adds_nested_counts():
    a = {"rows": 2, "source": {"snli": 2}, "files": ["a"]}
    b = {"rows": 3, "source": {"snli": 1, "mnli": 2}, "files": ["b"], "new": 1}
    assert io.merge_counts(a, b) == {"rows": 5, "source": {"snli": 3, "mnli": 2}, "files": ["a", "b"], "new": 1}
