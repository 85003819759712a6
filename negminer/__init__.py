"""negminer: training data for text-embedding models, and a lean trainer on it."""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Public names, imported on first use so `import negminer` stays light (no torch, Beam or FAISS).
_LAZY = {
    "mine_hard_negatives": "negminer.api",
    "mine": "negminer.api",
    "train": "negminer.api",
    "build_snli": "negminer.api",
    "build_msmarco": "negminer.api",
    "build_fever": "negminer.api",
    "build_beir": "negminer.api",
    "build_wikipedia": "negminer.api",
    "build_webcrawl": "negminer.api",
    "MineConfig": "negminer.mining.config",
    "TrainConfig": "negminer.training.config",
}
__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'negminer' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
