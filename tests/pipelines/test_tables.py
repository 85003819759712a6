"""Arrow-table shards against the row-dict path (io.write_shard is the oracle): same bytes, same statistics."""

from __future__ import annotations

import json
import random

import apache_beam as beam
import pyarrow as pa
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline  # aliased: pytest collects Test*

from negminer.pipelines import io, sink, tables
from negminer.pipelines import schema as S
from tests.pipelines.test_io import _files, _rows


def _with_collisions(n: int) -> list[dict]:
    """Rows, then copies of some of them under the same id with another provenance (the dedup tie-break decides)."""
    rows = _rows(n)
    rows += [{**r, S.PROVENANCE: f'{{"line": {i}}}'} for i, r in enumerate(rows[:7])]
    rows += [{**r, S.NEGATIVES: ["other"], S.NEGATIVE_IDS: [None]} for r in rows[3:5]]
    rows += rows[10:12]  # exact copies
    random.Random(0).shuffle(rows)
    return rows


def test_table_shard_has_the_bytes_and_stats_of_the_row_path(tmp_path):
    rows = _with_collisions(60)
    for count in (1, 3):
        want = io.write_shard_files(rows, str(tmp_path / f"rows{count}"), num_shards=count)
        got: dict = {}
        table = S.rows_to_table(rows)
        parts = dict(tables.split_by_shard(pa.concat_tables([table.slice(0, 20), table.slice(20)]), count))
        for i in range(count):
            path = str(tmp_path / f"tables{count}" / io.shard_name("train", i, count))
            st = tables.write_shard(tables.from_ipc(parts[i]) if i in parts else S.SCHEMA.empty_table(), path)
            st["files"] = [st.pop("file")]
            got = io.merge_counts(got, st)
        assert _files(tmp_path / f"tables{count}") == _files(tmp_path / f"rows{count}")
        for key in ("rows", "duplicates", "negatives", "rows_without_negatives", "source", "pair_type", "file_rows"):
            assert got[key] == want[key], key
        assert want["duplicates"] == 11


def test_shard_indices_follow_io_shard_of():
    ids = [r[S.ID] for r in _rows(30)]
    assert tables.shard_indices(pa.array(ids), 4).tolist() == [io.shard_of(i, 4) for i in ids]


def test_sink_writes_the_same_directory_from_tables_as_from_rows(tmp_path):
    rows = _with_collisions(40)

    def build(out, pcolls):
        with BeamTestPipeline() as p:
            made = {k: p | f"Make{k}" >> beam.Create(v) for k, v in pcolls.items()}
            made | sink.WriteShardDir(str(out), {"command": "test"}, num_shards=2)

    build(tmp_path / "rows", {"rows": rows})
    half = len(rows) // 2
    build(tmp_path / "mixed", {"row_tables": [S.rows_to_table(rows[:half])], "rows": rows[half:]})
    assert _files(tmp_path / "mixed") == _files(tmp_path / "rows")
    assert io.read_manifest(str(tmp_path / "mixed"))["splits"] == io.read_manifest(str(tmp_path / "rows"))["splits"]


def test_string_hashes_do_not_depend_on_the_batch():
    words = ["1", "3", "12", "", "a" * 70, "a" * 70 + "b", "x" * 64 + "y"]
    alone = [int(tables.string_hashes(pa.array([w]))[0]) for w in words]
    together = tables.string_hashes(pa.chunked_array([pa.array(words[:3]), pa.array(words[3:])])).tolist()
    assert together == alone
    assert len(set(alone[:4])) == 4 and alone[4] != alone[6]  # the first 64 bytes and the length are mixed in
    assert alone[4] != alone[5]  # same first 64 bytes, other length


def test_shard_indices_take_any_id_the_slow_way():
    ids = ["0123456789abcdefff", "FFFFFFFFFFFFFFF0", "short", "0x1234567890abcde", "1_23456789abcdef0"]
    for count in (1, 3, 7):
        want = [0] * 5 if count == 1 else [io.shard_of(i, count) if i != "short" else -1 for i in ids]
        if count > 1:
            assert tables.shard_indices(pa.array(ids[:2]), count).tolist() == want[:2]
            assert tables.shard_indices(pa.array(ids[3:]), count).tolist() == want[3:]
        else:
            assert tables.shard_indices(pa.array(ids), count).tolist() == want


def test_shipped_tables_come_back_from_bytes_and_from_spilled_files(tmp_path):
    table = S.rows_to_table(_rows(5))
    spill = str(tmp_path / "out" / ".negminer-spill-train")
    assert tables.spill_dir(str(tmp_path / "out")) == spill
    as_bytes, as_file = tables.ship(table), tables.ship(table.slice(1, 3), spill)
    assert isinstance(as_bytes, bytes) and isinstance(as_file, str) and as_file.startswith(spill)
    assert tables.from_ipc(as_bytes).equals(table)
    assert tables.from_ipc(as_file).equals(table.slice(1, 3))
    assert tables.ship(table, spill) != as_file  # a fresh name each time: a retried bundle overwrites nothing
    tables.remove_spill(str(tmp_path / "out"))
    assert not (tmp_path / "out" / ".negminer-spill-train").exists()
    tables.remove_spill(str(tmp_path / "out"))  # nothing there: nothing to do


def test_a_build_leaves_no_spilled_files(tmp_path, monkeypatch):
    from negminer.pipelines import snli

    src = tmp_path / "snli.jsonl"
    lines = [
        {"sentence1": "A man runs.", "sentence2": "A man moves.", "gold_label": "entailment", "pairID": "1e"},
        {"sentence1": "A man runs.", "sentence2": "A man sleeps.", "gold_label": "contradiction", "pairID": "1c"},
    ]
    src.write_text("".join(json.dumps(x) + "\n" for x in lines))
    spill = tmp_path / "out" / ".negminer-spill-dev"
    spill.mkdir(parents=True)
    (spill / "left-by-a-killed-build.arrow").write_bytes(b"x")
    seen = []
    real_ship = tables.ship

    def ship(table, spill=None):
        seen.append(spill)
        return real_ship(table, spill)

    monkeypatch.setattr(tables, "ship", ship)
    m = snli.build(snli.SnliConfig(inputs=(str(src),), output=str(tmp_path / "out"), num_shards=2, split="dev"))
    assert m["rows"] == 1 and not spill.exists() and set(seen) == {str(spill)}  # every table went through files


def test_take_rows_is_take_on_any_chunking(monkeypatch):
    table = S.rows_to_table(_rows(30))
    chunked = pa.concat_tables([table.slice(0, 7), table.slice(7, 1), table.slice(8)])
    order = pa.array(random.Random(1).sample(range(30), 30))
    assert tables.take_rows(chunked, order).equals(table.take(order))
    monkeypatch.setattr(tables, "COMBINE_BYTES", 0)  # too large to combine: Arrow's chunked take, same rows
    assert tables.take_rows(chunked, order).equals(table.take(order))
    assert tables.take_rows(S.SCHEMA.empty_table(), pa.array([], pa.int64())).num_rows == 0


def test_row_ids_are_make_ids_on_any_chunking():
    rng = random.Random(7)
    pool = "ab é日\t\n\x00😀"
    qs = ["".join(rng.choice(pool) for _ in range(rng.randint(0, 30))) for _ in range(300)]
    ps = ["".join(rng.choice(pool) for _ in range(rng.randint(0, 300))) for _ in range(300)]
    chunked = pa.chunked_array([qs[:100], qs[100:]]), pa.chunked_array([ps[:7], ps[7:]])
    want = S.make_ids("msmarco", qs, ps)
    assert want[0] == S.make_id("msmarco", qs[0], ps[0])
    assert tables.row_ids("msmarco", *chunked).to_pylist() == want
    assert tables.row_ids("msmarco", pa.array(qs).slice(5), pa.array(ps).slice(5)).to_pylist() == want[5:]
    assert tables.row_ids("beir/scifact", pa.array([], pa.string()), pa.array([], pa.string())).to_pylist() == []
