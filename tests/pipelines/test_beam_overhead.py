"""Beam's fixed cost cut per build (beam_overhead): the same answers, the same bytes, and everything undone after."""

from __future__ import annotations

import contextlib
import copy
import gc
import hashlib
import json

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.transforms import userstate

from negminer import cli
from negminer.pipelines import beam_overhead as bo
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
    with bo.quiet_gc(young=5000):
        assert gc.get_freeze_count() > 1000  # the imported modules' objects (Beam alone has ~10^5)
        assert gc.get_threshold()[0] == 5000
    assert gc.get_freeze_count() == 0 and gc.get_threshold()[0] == 700
    gc.set_threshold(20_000)  # a caller's higher threshold is never lowered
    with bo.quiet_gc(young=5000):
        assert gc.get_threshold()[0] == 20_000
    assert gc.get_threshold()[0] == 20_000


def test_quiet_gc_keeps_a_callers_own_freeze(default_gc):
    gc.freeze()
    frozen = gc.get_freeze_count()
    with bo.quiet_gc():
        assert gc.get_freeze_count() == frozen
    assert gc.get_freeze_count() == frozen
    gc.unfreeze()


def test_quiet_gc_restores_after_an_error(default_gc):
    with pytest.raises(RuntimeError, match="boom"), bo.quiet_gc():
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
    assert frozen > 1000 and young == bo.GC_YOUNG_THRESHOLD
    assert SEEN and all(f > 1000 and y == bo.GC_YOUNG_THRESHOLD for f, y in SEEN)  # in the running DoFns too
    assert gc.get_freeze_count() == 0 and gc.get_threshold()[0] == 700


def shard_digests(out) -> dict:
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    shards = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.glob("*.parquet"))}
    return {"shards": shards, "rows": manifest["rows"], "rejects": manifest.get("rejects")}


def test_builds_give_the_same_bytes_without_the_cuts(tmp_path, monkeypatch):
    src = str(shared_file("nli", "bert-shortcuts_sample_mnli.jsonl"))

    def build(out):
        argv = ["build", "snli", "--source", "mnli", "--input", src, "--output", str(out), "--num-shards", "2"]
        assert cli.main(argv) == 0
        return shard_digests(out)

    lean = build(tmp_path / "lean")
    monkeypatch.setattr(runner, "quiet_gc", contextlib.nullcontext)
    monkeypatch.setattr(runner, "memo_dofn_specs", contextlib.nullcontext)
    monkeypatch.setattr(runner, "ViewCachingOptions", PipelineOptions)
    plain = build(tmp_path / "plain")
    assert lean == plain and lean["rows"] > 0 and len(lean["shards"]) == 2


def test_view_caching_options_answer_as_beams_own_views():
    from apache_beam.options.pipeline_options import DebugOptions, PipelineOptions, StandardOptions, TypeOptions

    flags = ["--runner=DirectRunner", "--no_pipeline_type_check", "--experiments=a"]
    cached, plain = bo.ViewCachingOptions(flags), PipelineOptions(flags)
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
    assert type(runner.pipeline_options([])) is bo.ViewCachingOptions


BUFFER = userstate.BagStateSpec("buffer", beam.coders.StrUtf8Coder())
TIMER = userstate.TimerSpec("flush", userstate.TimeDomain.WATERMARK)
ORPHAN = userstate.TimerSpec("orphan", userstate.TimeDomain.WATERMARK)
BUFFER_PARAM, TIMER_PARAM, ORPHAN_PARAM = (
    beam.DoFn.StateParam(BUFFER),
    beam.DoFn.TimerParam(TIMER),
    beam.DoFn.TimerParam(ORPHAN),
)


class StatefulFn(beam.DoFn):
    def process(self, kv, buffer=BUFFER_PARAM, timer=TIMER_PARAM):
        buffer.add(kv[1])
        yield kv

    @userstate.on_timer(TIMER)
    def flush(self, buffer=BUFFER_PARAM):
        yield from buffer.read()


class TimerWithoutCallbackFn(beam.DoFn):
    def process(self, kv, timer=ORPHAN_PARAM):
        yield kv


def test_memo_dofn_specs_answers_as_beam_once_per_object(monkeypatch):
    calls = []
    original = userstate.get_dofn_specs

    def counted(dofn):
        calls.append(dofn)
        return original(dofn)

    monkeypatch.setattr(userstate, "get_dofn_specs", counted)
    stateful, other, plain = StatefulFn(), StatefulFn(), RecordGcFn()
    expected = original(stateful)
    assert [s.name for s in expected[0]] == ["buffer"] and [t.name for t in expected[1]] == ["ts-flush"]
    with bo.memo_dofn_specs():
        assert userstate.get_dofn_specs(stateful) == expected
        assert userstate.is_stateful_dofn(stateful) and not userstate.is_stateful_dofn(plain)
        userstate.validate_stateful_dofn(stateful)
        assert userstate.get_dofn_specs(other) == expected and userstate.get_dofn_specs(plain) == (set(), set())
        userstate.get_dofn_specs(stateful)[0].clear()  # a caller changing its answer changes no later answer
        assert userstate.get_dofn_specs(stateful) == expected
        with pytest.raises(ValueError, match="TimerSpec without an associated on_timer"):
            userstate.validate_stateful_dofn(TimerWithoutCallbackFn())  # Beam's checks still run
    assert userstate.get_dofn_specs is counted  # undone
    assert [id(d) for d in calls[:3]] == [id(stateful), id(plain), id(other)]
    assert len(calls) == 4  # the three objects once each, and the new one


def test_memo_dofn_specs_runs_a_stateful_pipeline_the_same():
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that, equal_to

    def run():
        with TestPipeline(runner=runner.local_runner(runner.pipeline_options([]))) as p:
            out = p | beam.Create([("k", "a"), ("k", "b"), ("j", "c")]) | beam.ParDo(StatefulFn())
            assert_that(out, equal_to([("k", "a"), ("k", "b"), ("j", "c")]))

    run()
    with bo.memo_dofn_specs():
        run()


def test_overlapping_builds_undo_once_the_last_one_ends(default_gc):
    """Builds in several threads of one process overlap in any order: the first applies the cuts, the last undoes."""
    original = userstate.get_dofn_specs
    first, second = bo.quiet_gc(), bo.quiet_gc()
    specs_first, specs_second = bo.memo_dofn_specs(), bo.memo_dofn_specs()
    for cm in (first, specs_first, second, specs_second):
        cm.__enter__()
    patched = userstate.get_dofn_specs
    assert patched is not original
    for cm in (first, specs_first):  # the first build ends before the second
        cm.__exit__(None, None, None)
    assert gc.get_freeze_count() > 1000 and gc.get_threshold()[0] == bo.GC_YOUNG_THRESHOLD
    assert userstate.get_dofn_specs is patched
    for cm in (second, specs_second):
        cm.__exit__(None, None, None)
    assert gc.get_freeze_count() == 0 and gc.get_threshold()[0] == 700
    assert userstate.get_dofn_specs is original
