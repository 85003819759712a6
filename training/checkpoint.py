"""Training checkpoints: weights (safetensors), optimizer, scheduler, scaler, data position and RNG, written atomically."""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model

from negminer.pipelines import io

WEIGHTS, STATE = "model.safetensors", "trainer_state.pt"


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(path: Path, model: torch.nn.Module, trainer: dict[str, Any]) -> None:
    """Write `path/` (model weights + trainer state) via a temporary sibling and a rename, replacing the old one."""
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_model(model, str(tmp / WEIGHTS))
    io.follow_umask(str(tmp / WEIGHTS))  # safetensors writes 0600
    torch.save({**trainer, "rng": rng_state()}, tmp / STATE)
    old = path.with_name(path.name + ".old")
    if path.exists():
        shutil.rmtree(old, ignore_errors=True)
        path.rename(old)
    tmp.rename(path)
    shutil.rmtree(old, ignore_errors=True)


def load(path: Path, model: torch.nn.Module) -> dict[str, Any]:
    """Load weights into model; return the trainer state (RNG not yet restored: call set_rng_state last)."""
    if not (path / STATE).is_file():
        old = path.with_name(path.name + ".old")  # a crash between the two renames leaves the previous one here
        if (old / STATE).is_file():
            path = old
        else:
            raise FileNotFoundError(f"--resume: no checkpoint at {path}")
    load_model(model, str(path / WEIGHTS))
    return torch.load(path / STATE, map_location="cpu", weights_only=True)
