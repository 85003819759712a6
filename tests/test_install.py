"""A real (non-editable) install: only `negminer` lands at the top of site-packages, and it imports from there."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from tests.conftest import PROJECT_ROOT

pytestmark = pytest.mark.slow  # builds a wheel: ~20-60 s on a loaded 2-core machine

SOURCES = ("pyproject.toml", "setup.py", "README.md", "negminer", "pipelines", "mining", "training")
PROBE = """
import importlib, sys
import negminer, negminer.mining, negminer.pipelines, negminer.training
target = sys.argv[1]
for m in (negminer, negminer.mining, negminer.pipelines, negminer.training):
    assert m.__file__.startswith(target), (m.__name__, m.__file__)
for bare in ("mining", "pipelines", "training"):
    try:
        importlib.import_module(bare)
    except ModuleNotFoundError:
        continue
    raise SystemExit(f"import {bare} worked: {sys.modules[bare].__file__}")
print("ok")
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> str:
    """A wheel built from a copy of the sources (the checkout is left untouched), without build isolation."""
    src = tmp_path_factory.mktemp("src")
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in SOURCES:
        path = PROJECT_ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=ignore)
        else:
            shutil.copy2(path, src / name)
    out = tmp_path_factory.mktemp("dist")
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(src)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=600)
    (whl,) = out.glob("negminer-*.whl")
    return str(whl)


def test_wheel_installs_only_the_negminer_namespace(wheel):
    tops = {name.split("/", 1)[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"negminer"}, tops


def test_installed_wheel_imports_negminer_mining_and_not_bare_mining(wheel, tmp_path):
    target = tmp_path / "site"
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), wheel]
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    installed = {p.name for p in target.iterdir() if not p.name.endswith(".dist-info")}
    assert installed == {"negminer", "bin"}, installed  # bin: the `negminer` console script
    cwd = tmp_path / "elsewhere"  # not the checkout: its folders would shadow the install
    cwd.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target)}
    probe = subprocess.run(
        [sys.executable, "-c", PROBE, str(target)], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert probe.returncode == 0 and probe.stdout.strip() == "ok", probe.stderr[-2000:]
