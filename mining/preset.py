"""`negminer mine --preset NAME`: named selection settings, chosen from `bench/bench_false_negatives.py --grid`.

`clean` was picked by `pick` from the grid measured on the labelled tuning sets (`labelled.TUNING`: snli,
snli_scene, fever; bench/results/false_negatives_grid.json; DL19's human judgements were kept out): the lowest
worst-set false-negative rate relative to `perc:0.95` among settings that keep the hardness (mean score minus
positive within `HARDNESS_TOLERANCE`) and at least `MIN_KEPT` of 10 negatives per query on every set. A test
re-runs `pick` on that file. It sets no score ceiling: the positive-neighbourhood rules (triangle, positive rank)
do that work at less cost in hardness.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

FIELDS = (
    "positive_aware",
    "triangle",
    "positive_side",
    "positive_rank",
    "lexical",
    "coverage",
)  # what a preset sets; explicit flags override each one
PRESETS: dict[str, dict[str, Any]] = {
    "clean": {"positive_aware": "none", "triangle": -0.05, "positive_rank": 5},
}
BASELINE = "perc:0.95"
HARDNESS_TOLERANCE = 0.03
MIN_KEPT = 9.5


def resolve(name: str | None, given: Mapping[str, Any]) -> dict[str, Any]:
    """The preset's values under the explicitly given settings (`given` wins); no preset: `given` unchanged."""
    if name is None:
        return dict(given)
    if name not in PRESETS:
        raise ValueError(f"--preset must be one of {tuple(PRESETS)}, got {name!r}")
    return {**PRESETS[name], **given}


def pick(grid: list[dict[str, Any]], tolerance: float = HARDNESS_TOLERANCE, min_kept: float = MIN_KEPT) -> dict:
    """The grid entry with the lowest worst-set false-negative ratio to the baseline among the admissible ones.

    `grid` rows: {"settings": {field: value}, "sets": {name: {"fn": f, "rel": r, "kept": k}}}; the row whose
    settings are {"positive_aware": BASELINE} (and nothing else on) is the baseline. Admissible: on every set,
    |rel - baseline rel| <= tolerance and kept >= min_kept. Ties: fewer rules on, then the grid order.
    """
    base = [r for r in grid if _is_baseline(r["settings"])]
    if len(base) != 1:
        raise ValueError(f"the grid needs exactly one {BASELINE} baseline row, found {len(base)}")
    ref = base[0]["sets"]
    best, best_key = None, None
    for i, row in enumerate(grid):
        sets = row["sets"]
        if set(sets) != set(ref):
            raise ValueError(f"grid row {row['settings']} covers {sorted(sets)}, the baseline {sorted(ref)}")
        ok = all(abs(sets[n]["rel"] - ref[n]["rel"]) <= tolerance and sets[n]["kept"] >= min_kept for n in ref)
        if not ok:
            continue
        ratio = max(sets[n]["fn"] / ref[n]["fn"] if ref[n]["fn"] > 0 else float("inf") for n in ref)
        rules_on = sum(v is not None and v != "none" for v in row["settings"].values())
        key = (round(ratio, 9), rules_on, i)
        if best_key is None or key < best_key:
            best, best_key = row, key
    if best is None:
        raise ValueError("no admissible grid row (not even the baseline?)")
    return best


def _is_baseline(settings: Mapping[str, Any]) -> bool:
    return settings.get("positive_aware") == BASELINE and all(
        settings.get(f) is None for f in FIELDS if f != "positive_aware"
    )
