"""The learning-rate schedule (transformers' linear warm-up and decay) against the formula computed by hand."""

from __future__ import annotations

import pytest
import torch

from negminer.training.config import TrainConfig
from negminer.training.train import make_optimizer


class _Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.dense = torch.nn.Linear(3, 3)  # a weight (decayed) and a bias (not)
        self.norm = torch.nn.LayerNorm(3)  # not decayed


@pytest.mark.parametrize("steps, warmup", [(10, 0.2), (7, 0.0), (3, 0.5)])
def test_linear_warmup_then_decay(steps, warmup):
    cfg = TrainConfig(data=("d",), model="m", output="o", lr=1e-3, warmup=warmup, max_steps=steps)
    optimizer, scheduler = make_optimizer(_Tiny(), cfg, steps)
    warm = -(-int(warmup * steps * 1000) // 1000)  # ceil without float surprises for these values
    want = [1e-3 * (s / warm if s < warm else (steps - s) / (steps - warm)) for s in range(steps)]
    got = []
    for _ in range(steps):
        got.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert got == pytest.approx(want)
    decays = [g["weight_decay"] for g in optimizer.param_groups]
    assert [len(g["params"]) for g in optimizer.param_groups] == [1, 3] and decays == [cfg.weight_decay, 0.0]
