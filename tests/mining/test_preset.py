"""`--preset clean` is what `preset.pick` chooses from the grid `bench/bench_false_negatives.py --grid` recorded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from negminer.mining.labelled import TUNING
from negminer.mining.preset import BASELINE, PRESETS, pick

GRID = Path(__file__).resolve().parents[2] / "bench" / "results" / "false_negatives_grid.json"


def row(settings, **sets):
    full = {"positive_aware": BASELINE, "triangle": None, "lexical": None, **settings}
    return {"settings": full, "sets": {n: dict(zip(("fn", "rel", "kept"), v, strict=True)) for n, v in sets.items()}}


def test_pick_obeys_hardness_and_kept_and_takes_the_worst_set():
    grid = [
        row({}, a=(0.20, -0.15, 10.0), b=(0.10, -0.20, 10.0)),  # the baseline
        row({"triangle": 0.0}, a=(0.05, -0.25, 10.0), b=(0.01, -0.30, 10.0)),  # cleanest but 0.1 easier: out
        row({"lexical": 1.0}, a=(0.08, -0.16, 9.4), b=(0.02, -0.21, 10.0)),  # too few kept on a: out
        row({"positive_aware": "perc:0.99", "triangle": -0.1}, a=(0.10, -0.17, 9.9), b=(0.08, -0.22, 9.9)),  # 0.8
        row({"positive_aware": "perc:0.97"}, a=(0.14, -0.12, 10.0), b=(0.07, -0.18, 10.0)),  # worst set 0.7
    ]
    assert pick(grid)["settings"]["positive_aware"] == "perc:0.97"
    grid[4]["sets"]["b"]["fn"] = 0.08  # now both 0.8 on their worst set: fewer rules on wins
    assert pick(grid)["settings"] == grid[4]["settings"]
    assert pick(grid[:1]) is grid[0]  # only the baseline is admissible
    with pytest.raises(ValueError, match="baseline"):
        pick(grid[1:])


@pytest.mark.skipif(not GRID.exists(), reason=f"{GRID} not recorded (run bench/bench_false_negatives.py --grid)")
def test_preset_clean_is_reproduced_from_the_recorded_grid():
    grid = json.loads(GRID.read_text())
    assert {n for r in grid for n in r["sets"]} == set(TUNING)  # DL19 (human judgements) never tuned on
    chosen = pick(grid)["settings"]
    assert chosen == {f: PRESETS["clean"].get(f) for f in chosen}
