"""The build driver's process settings: the garbage collector is quieted while a build runs, and undone after."""

from __future__ import annotations

import contextlib
import copy
import gc
import hashlib
import json

import apache_beam as beam
import pytest

from negminer import cli
from negminer.pipelines import runner
from tests.conftest import shared_file

SEEN: list[tuple[int, int]] = []  # (freeze count, young threshold) seen inside a DoFn of a running build


class RecordGcFn(beam.DoFn):
    def process(self, element):
        SEEN.append((gc.get_freeze_count(), gc.get_threshold()[0]))
        yield element


@pytest.fixture
def default_gc():
    """The test runs from CPython's own settings (nothing frozen, threshold 700); they are put back after."""
    threshold = gc.get_threshold()
    gc.unfreeze()
    gc.set_threshold(700, *threshold[1:])
    yield
    gc.set_threshold(*threshold)


def test_quiet_gc_freezes_raises_and_restores(default_gc):
    with runner.quiet_gc(young=5000):
        assert gc.get_freeze_count() > 1000  # the imported modules' objects (Beam alone has ~10^5)
        assert gc.get_threshold()[0] == 5000
    assert gc.get_freeze_count() == 0 and gc.get_threshold()[0] == 700
    gc.set_threshold(20_000)  # a caller's higher threshold is never lowered
    with runner.quiet_gc(young=5000):
        assert gc.get_threshold()[0] == 20_000
    assert gc.get_threshold()[0] == 20_000


def test_quiet_gc_keeps_a_callers_own_freeze(default_gc):
    gc.freeze()
    frozen = gc.get_freeze_count()
    with runner.quiet_gc():
        assert gc.get_freeze_count() == frozen
    assert gc.get_freeze_count() == frozen
    gc.unfreeze()


def test_quiet_gc_restores_after_an_error(default_gc):
    with pytest.raises(RuntimeError, match="boom"), runner.quiet_gc():
        raise RuntimeError("boom")
    assert gc.get_freeze_count() == 0 and gc.get_threshold()[0] == 700


def test_run_build_runs_with_quiet_gc(tmp_path, default_gc):
    SEEN.clear()
    during_construction = []

    def build(p):
        during_construction.append((gc.get_freeze_count(), gc.get_threshold()[0]))
        probe = p | "Probe" >> beam.Create(["a"]) | "Record" >> beam.ParDo(RecordGcFn())
        rows = probe | "NoRows" >> beam.Filter(lambda _: False)
        return {
            "rows": rows,
            "rejects": p | "NoRejects" >> beam.Create([]),
            "skipped": p | "NoSkips" >> beam.Create([]),
        }

    runner.run_build("build test", {}, [], str(tmp_path / "out"), build, [])
    assert (tmp_path / "out" / "manifest.json").exists()
    [(frozen, young)] = during_construction
    assert frozen > 1000 and young == runner.GC_YOUNG_THRESHOLD
    assert SEEN and all(f > 1000 and y == runner.GC_YOUNG_THRESHOLD for f, y in SEEN)  # in the running DoFns too
    assert gc.get_freeze_count() == 0 and gc.get_threshold()[0] == 700


def shard_digests(out) -> dict:
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    shards = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.glob("*.parquet"))}
    return {"shards": shards, "rows": manifest["rows"], "rejects": manifest.get("rejects")}


def test_quiet_gc_gives_the_same_bytes(tmp_path, monkeypatch):
    src = str(shared_file("nli", "bert-shortcuts_sample_mnli.jsonl"))

    def build(out):
        argv = ["build", "snli", "--source", "mnli", "--input", src, "--output", str(out), "--num-shards", "2"]
        assert cli.main(argv) == 0
        return shard_digests(out)

    quiet = build(tmp_path / "quiet")
    monkeypatch.setattr(runner, "quiet_gc", contextlib.nullcontext)
    plain = build(tmp_path / "plain")
    assert quiet == plain and quiet["rows"] > 0 and len(quiet["shards"]) == 2


def test_view_caching_options_answer_as_beams_own_views():
    from apache_beam.options.pipeline_options import DebugOptions, PipelineOptions, StandardOptions, TypeOptions

    flags = ["--runner=DirectRunner", "--no_pipeline_type_check", "--experiments=a"]
    cached, plain = runner.ViewCachingOptions(flags), PipelineOptions(flags)
    assert cached.view_as(TypeOptions) is cached.view_as(TypeOptions)
    for opts in (cached, plain):  # the same answers, and a value set through one view is seen by the others
        assert opts.view_as(TypeOptions).pipeline_type_check is False
        opts.view_as(StandardOptions).runner = "Other"
        opts.view_as(DebugOptions).add_experiment("b")
        assert opts.view_as(StandardOptions).runner == "Other" and opts.get_all_options()["runner"] == "Other"
        assert opts.view_as(DebugOptions).experiments == ["a", "b"]
    assert cached.get_all_options() == plain.get_all_options()
    twin = copy.deepcopy(cached)  # as beam.Pipeline copies its options: the copy's views write to the copy
    twin.view_as(StandardOptions).runner = "Third"
    assert twin.get_all_options()["runner"] == "Third" and cached.view_as(StandardOptions).runner == "Other"
    assert runner.pipeline_options([]).view_as(StandardOptions) is not None
    assert type(runner.pipeline_options([])) is runner.ViewCachingOptions
