"""The `negminer` command: help on every level, clear failures on bad flags, Beam flags passed through."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from apache_beam.options.pipeline_options import DirectOptions, StandardOptions

from negminer import cli
from negminer.pipelines import io, runner, snli
from tests.conftest import PROJECT_ROOT, shared_file


def _help(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as e:
        cli.main([*argv, "--help"])
    assert e.value.code == 0
    return capsys.readouterr().out


def test_top_level_help_lists_commands(capsys):
    out = _help([], capsys)
    for command in ("build", "inspect", "mine", "train", "export", "demo"):
        assert command in out


def test_build_help_lists_sources_and_beam_passthrough(capsys):
    out = _help(["build"], capsys)
    assert "snli" in out and "--runner" in out


def test_build_snli_help_lists_every_flag(capsys):
    out = _help(["build", "snli"], capsys)
    for flag in ("--input", "--output", "--source", "--drop-without-negatives", "--num-shards", "--split"):
        assert flag in out


def test_inspect_help(capsys):
    out = _help(["inspect"], capsys)
    for flag in ("--samples", "--json", "--plot"):
        assert flag in out


def test_console_entry_point_runs():
    # the installed script's module path; proves `python -m negminer` and the import chain work
    proc = subprocess.run(
        [sys.executable, "-m", "negminer", "build", "snli", "--help"], capture_output=True, text=True, cwd=PROJECT_ROOT
    )
    assert proc.returncode == 0, proc.stderr
    assert "--drop-without-negatives" in proc.stdout


@pytest.mark.parametrize(
    "flags, named",
    [
        (["--num-shards", "0"], "--num-shards"),
        (["--num-shards", "two"], "'two'"),
        (["--source", "xnli"], "'xnli'"),
    ],
)
def test_bad_flag_values_fail_with_a_usage_error(flags, named, capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        cli.main(["build", "snli", "--input", "x.jsonl", "--output", str(tmp_path), *flags])
    err = capsys.readouterr().err
    assert e.value.code == 2 and named in err and "usage:" in err


def test_missing_required_flag_fails(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["build", "snli", "--output", "o"])
    assert e.value.code == 2 and "--input" in capsys.readouterr().err


def test_unknown_flag_outside_build_fails(capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        cli.main(["inspect", str(tmp_path), "--direct_num_workers=2"])
    assert e.value.code == 2 and "--direct_num_workers=2" in capsys.readouterr().err


def test_input_matching_nothing_names_the_pattern(tmp_path, capsys):
    argv = ["build", "snli", "--input", str(tmp_path / "nothing-here*.jsonl"), "--output", str(tmp_path / "o")]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "error" in err and "nothing-here" in err and "Traceback" not in err
    with pytest.raises(FileNotFoundError, match="nothing-here"):  # --verbose shows the real exception
        cli.main(["-v", *argv])


def test_unknown_flags_reach_beam_untouched(monkeypatch, tmp_path):
    seen = {}

    def fake_build(config, beam_args):
        seen["config"], seen["beam_args"] = config, beam_args
        return {"rows": 0}

    monkeypatch.setattr(snli, "build", fake_build)
    argv = ["build", "snli", "--input", "a.jsonl", "b*.jsonl", "--output", str(tmp_path), "--source", "mnli"]
    beam = ["--direct_running_mode=multi_processing", "--direct_num_workers", "2"]
    assert cli.main(argv + beam) == 0
    assert seen["beam_args"] == beam
    assert seen["config"] == snli.SnliConfig(inputs=("a.jsonl", "b*.jsonl"), output=str(tmp_path), source="mnli")


def test_pipeline_options_pin_the_direct_runner_unless_told():
    opts = runner.pipeline_options(["--direct_num_workers=3"])
    assert opts.view_as(StandardOptions).runner == "DirectRunner"
    assert opts.view_as(DirectOptions).direct_num_workers == 3
    assert runner.pipeline_options(["--runner", "DataflowRunner"]).view_as(StandardOptions).runner == "DataflowRunner"


def test_local_runs_never_try_prism(tmp_path, caplog):
    # Beam's DirectRunner would first try to download the Prism runner; negminer runs its FnApiRunner directly.
    from apache_beam.runners.portability.fn_api_runner.fn_runner import FnApiRunner

    assert isinstance(runner.local_runner(runner.pipeline_options([])), FnApiRunner)
    assert runner.local_runner(runner.pipeline_options(["--runner=DataflowRunner"])) is None
    src = tmp_path / "one.jsonl"
    src.write_text(json.dumps({"premise": "A dog runs.", "hypothesis": "An animal moves.", "label": 0}) + "\n")
    caplog.set_level("INFO")
    manifest = snli.build(snli.SnliConfig(inputs=(str(src),), output=str(tmp_path / "o")), [])
    assert manifest["rows"] == 1
    assert not [r for r in caplog.records if "prism" in r.getMessage().lower()]


def test_build_then_inspect_real_snli(tmp_path, capsys):
    src = str(shared_file("nli", "jack_1000_samples_snli_1.0_train.jsonl"))
    out = str(tmp_path / "snli")
    assert cli.main(["build", "snli", "--input", src, "--output", out, "--num-shards", "2"]) == 0
    manifest = io.read_manifest(out)
    assert manifest["config"]["num_shards"] == 2 and manifest["splits"]["train"]["shards"] == 2
    capsys.readouterr()
    assert cli.main(["inspect", out, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["rows"] == manifest["rows"] == sum(1 for _ in io.iter_rows(out))
    assert summary["rejects"] == manifest["rejects"] and summary["warnings"] == []
