"""Shim for Beam's `--setup_file ./setup.py` (Dataflow workers install the package from it); pyproject.toml is the source of truth."""

from setuptools import setup

setup()
