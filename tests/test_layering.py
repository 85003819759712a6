"""Import layering: the library packages never import the CLI; the shared encoder module sits below mining and
training (it imports neither), and mining/pipelines reach into training only for it."""

from __future__ import annotations

import ast

import pytest

from tests.conftest import PROJECT_ROOT

ENCODER_MODULE = "negminer.training.model"  # the one encoder, shared by mining, generate and training


def _imports(path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return names


@pytest.mark.parametrize("package", ["pipelines", "mining", "training"])
def test_library_packages_do_not_import_the_cli(package):
    for path in sorted((PROJECT_ROOT / package).rglob("*.py")):
        bad = {n for n in _imports(path) if n.startswith(("negminer.cli", "negminer.demo", "negminer.api"))}
        assert not bad, f"{path.relative_to(PROJECT_ROOT)} imports {bad}"


@pytest.mark.parametrize("package", ["pipelines", "mining"])
def test_training_is_reached_only_for_the_shared_encoder(package):
    for path in sorted((PROJECT_ROOT / package).rglob("*.py")):
        into_training = {n for n in _imports(path) if n.startswith("negminer.training")}
        others = {n for n in into_training if n != ENCODER_MODULE and not n.startswith(ENCODER_MODULE + ".")}
        assert not others, (path.relative_to(PROJECT_ROOT), others)


def test_the_encoder_module_sits_below_mining_and_training():
    above = (
        "negminer.training",
        "negminer.mining",
        "negminer.cli",
        "negminer.api",
    )  # shared IO (pipelines.io) is fine
    bad = {n for n in _imports(PROJECT_ROOT / "training" / "model.py") if n.startswith(above)}
    assert not bad, bad
