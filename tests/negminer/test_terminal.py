"""A quiet, helpful terminal: every flag documented with its default; Beam's and FAISS's chatter only with -v."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from negminer import cli
from tests.conftest import PROJECT_ROOT, shared_file

COMMANDS = [["build", s] for s in cli.BUILDERS] + [[c] for c in cli.COMMANDS]
# Run the CLI in a fresh process with the `gcp` extra hidden, as on an install without it: Beam then logs
# "apitools not found ..." when it is imported.
WITHOUT_GCP = "import sys; sys.modules['apitools'] = None; from negminer.cli import main; sys.exit(main(sys.argv[1:]))"


def _subparser(argv: list[str]) -> argparse.ArgumentParser:
    parser = cli.build_parser(argv)
    for word in argv:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = action.choices[word]
    return parser


def _spellings(value) -> set[str]:
    """Ways a help text may write a default: 1.0 as 1, 2e-05 as 2e-5, a list joined."""
    out = {str(value)}
    if isinstance(value, float):
        out |= {f"{value:g}", f"{value:g}".replace("e-0", "e-")}
    if isinstance(value, (list, tuple)):
        out |= {",".join(map(str, value)), " ".join(map(str, value))}
    return out


def _run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_GCP, *argv], capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=300
    )


@pytest.mark.parametrize("argv", COMMANDS, ids=" ".join)
def test_every_flag_has_help_and_shows_its_default(argv):
    parser = _subparser(argv)
    formatter = parser._get_formatter()
    assert isinstance(formatter, cli.HelpFormatter)
    for action in parser._actions:
        if not action.option_strings or action.dest == "help":
            continue
        assert action.help, f"{' '.join(argv)} {action.option_strings[-1]} has no help text"
        if cli.has_default(action):
            text = formatter._expand_help(action)
            assert "default" in text and any(v in text for v in _spellings(action.default)), (
                action.option_strings,
                text,
            )


def test_train_help_documents_the_flags_the_issue_named(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for flag, default in [("--lr", "2e-5"), ("--weight-decay", "0.01"), ("--seed", "0"), ("--warmup", "0.05")]:
        assert flag in out and f"(default {default})" in out, flag
    for flag in ("--max-steps", "--epochs"):
        assert f"{flag} " in out and "give this or" in out


@pytest.mark.slow  # three fresh processes that import Beam: ~30 s on a loaded 2-core machine
def test_help_and_build_are_quiet_and_verbose_shows_the_chatter(tmp_path):
    src = shared_file("nli", "jack_1000_samples_snli_1.0_train.jsonl")
    head = tmp_path / "snli.jsonl"
    head.write_text("".join(src.read_text(encoding="utf-8").splitlines(keepends=True)[:20]), encoding="utf-8")
    helped = _run("build", "snli", "--help")
    assert helped.returncode == 0 and helped.stderr == "", helped.stderr
    quiet = _run("build", "snli", "--input", str(head), "--output", str(tmp_path / "q"))
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout.startswith("wrote ") and "rows" in quiet.stdout
    lines = quiet.stderr.splitlines()
    assert all(" negminer" in ln for ln in lines), lines  # only negminer's own progress lines
    assert any("build snli:" in ln for ln in lines)
    loud = _run("-v", "build", "snli", "--input", str(head), "--output", str(tmp_path / "v"))
    assert loud.returncode == 0, loud.stderr
    assert "apitools not found" in loud.stderr and "Converting string literal type hint" in loud.stderr


def test_faiss_loader_lines_only_with_verbose():
    code = "import sys; from negminer.cli import setup_logging; setup_logging(sys.argv[1] == 'v'); import faiss"
    pytest.importorskip("faiss")
    runs = {
        v: subprocess.run([sys.executable, "-c", code, v], capture_output=True, text=True, timeout=120) for v in "qv"
    }
    assert runs["q"].returncode == 0 and "faiss" not in runs["q"].stderr.lower()
    assert "Loading faiss" in runs["v"].stderr  # the loader's INFO lines (the AVX2 one among them on AVX2 CPUs)


@pytest.mark.slow  # a fresh process importing Beam and torch: ~13 s here
def test_python_api_import_does_not_print_beams_gcp_warning():
    code = (
        "import sys, logging; sys.modules['apitools'] = None; import negminer.api; print(logging.getLogger().handlers)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "apitools" not in out.stderr and out.stdout.strip() == "[]"  # nor was the root logger set up for the user
