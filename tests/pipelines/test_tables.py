"""Arrow-table shards against the row-dict path (io.write_shard is the oracle): same bytes, same statistics."""

from __future__ import annotations

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
