"""Choosing hard negatives from retrieved candidates: pure numpy rules, applied in order and counted."""

from __future__ import annotations

import dataclasses

import numpy as np

# Every removed candidate is charged to the first rule, in this order, that removes it.
RULES = (
    "positive",
    "rank_window",
    "min_score",
    "max_score",
    "positive_aware",
    "near_duplicate",
    "triangle",
    "positive_side",
    "positive_rank",
    "lexical",
    "coverage",
)
CEILING_KINDS = ("perc", "margin", "z", "none")
SAMPLINGS = ("top", "random")
JUDGED_RELEVANT = 1  # the LLM judge's verdict code for "relevant" (mining/judge.py)


@dataclasses.dataclass(frozen=True)
class Ceiling:
    """Positive-aware ceiling (NV-Retriever): `perc:0.95` keeps scores below 95% of the positive's, `margin:0.05`
    below positive - 0.05, `z:1.5` below positive - 1.5 x the standard deviation of the query's own candidate
    scores (a margin in the query's units, so it carries across models), `none` no ceiling. With several
    positives the lowest positive score counts."""

    kind: str = "perc"
    value: float = 0.95

    def __post_init__(self) -> None:
        if self.kind not in CEILING_KINDS:
            raise ValueError(f"positive-aware kind must be one of {CEILING_KINDS}, got {self.kind!r}")
        if self.kind == "perc" and not 0.0 < self.value <= 1.0:
            raise ValueError(f"perc:{self.value} must be in (0, 1]")
        if self.kind in ("margin", "z") and not (np.isfinite(self.value) and self.value >= 0.0):
            raise ValueError(f"{self.kind}:{self.value} must be a finite number >= 0")

    @classmethod
    def parse(cls, spec: str) -> Ceiling:
        """`perc:0.95`, `margin:0.05`, `z:1.5` or `none`."""
        spec = spec.strip().lower()
        if spec == "none":
            return cls("none", 0.0)
        kind, sep, value = spec.partition(":")
        if not sep or kind not in ("perc", "margin", "z"):
            raise ValueError(f"--positive-aware must be perc:P, margin:M, z:A or none, got {spec!r}")
        try:
            return cls(kind, float(value))
        except ValueError as e:
            raise ValueError(f"--positive-aware {spec!r}: {e}") from None

    def __str__(self) -> str:
        return "none" if self.kind == "none" else f"{self.kind}:{self.value:g}"


@dataclasses.dataclass(frozen=True)
class Rules:
    """The selection settings (validated)."""

    num_negatives: int = 7
    range_min: int = 0
    range_max: int = 100
    min_score: float | None = None
    max_score: float | None = None
    ceiling: Ceiling = Ceiling()
    near_dup: float | None = 0.98
    triangle: float | None = None
    positive_side: float | None = None
    positive_rank: int | None = None
    lexical: float | None = None
    coverage: float | None = None
    sampling: str = "top"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.num_negatives < 1:
            raise ValueError(f"num_negatives must be >= 1, got {self.num_negatives}")
        if self.range_min < 0 or self.range_max <= self.range_min:
            raise ValueError(f"need 0 <= range_min < range_max, got {self.range_min}..{self.range_max}")
        if self.num_negatives > self.range_max - self.range_min:
            raise ValueError(
                f"num_negatives={self.num_negatives} does not fit in the rank window {self.range_min}..{self.range_max}"
            )
        if self.min_score is not None and self.max_score is not None and self.min_score > self.max_score:
            raise ValueError(f"min_score {self.min_score} > max_score {self.max_score}")
        if self.near_dup is not None and not 0.0 < self.near_dup <= 1.0:
            raise ValueError(f"near-duplicate threshold must be in (0, 1] or none, got {self.near_dup}")
        self._check_signal_rules()
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {SAMPLINGS}, got {self.sampling!r}")

    def _check_signal_rules(self) -> None:
        if self.triangle is not None and not -2.0 <= self.triangle <= 2.0:
            raise ValueError(f"triangle margin must be in [-2, 2] (a cosine difference) or none, got {self.triangle}")
        if self.positive_side is not None and not -2.0 <= self.positive_side <= 2.0:
            raise ValueError(
                f"positive-side margin must be in [-2, 2] (a cosine difference) or none, got {self.positive_side}"
            )
        if self.positive_rank is not None and not (int(self.positive_rank) == self.positive_rank >= 1):
            raise ValueError(f"positive rank must be a whole number >= 1 or none, got {self.positive_rank}")
        if self.lexical is not None and not (np.isfinite(self.lexical) and self.lexical > 0.0):
            raise ValueError(f"lexical ratio must be a finite number > 0 or none, got {self.lexical}")
        if self.coverage is not None and not -1.0 <= self.coverage <= 1.0:
            raise ValueError(f"coverage must be in [-1, 1] (a mean of token cosines) or none, got {self.coverage}")


@dataclasses.dataclass
class Selection:
    """Chosen negatives per query group, hardest first; -1 / nan pad rows that fell short."""

    doc: np.ndarray  # (G, N) int64 corpus indices
    score: np.ndarray  # (G, N) float32
    found: np.ndarray  # (G,) int64 how many were found
    removed: dict[str, int]  # candidates removed per rule (RULES order) + survivors not sampled


def positive_mask(cand: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """(G, K) candidates x (G, P) positives of the same group (-1 padded) -> (G, K) True where a positive."""
    _check_2d(cand, "candidates")
    _check_2d(pos, "positives")
    if cand.shape[0] != pos.shape[0]:
        raise ValueError(f"candidates have {cand.shape[0]} groups, positives {pos.shape[0]}")
    hit = (cand[:, :, None] == pos[:, None, :]) & (pos[:, None, :] >= 0)
    return hit.any(axis=2)


def window_mask(candidate: np.ndarray, range_min: int, range_max: int) -> np.ndarray:
    """(G, K) mask of retrieved non-positive candidates (in retrieval order) -> those ranked in [min, max)."""
    rank = np.cumsum(candidate, axis=1) - 1  # rank among the candidates, counting only eligible ones
    return candidate & (rank >= range_min) & (rank < range_max)


def ceiling_threshold(min_positive: np.ndarray, ceiling: Ceiling, spread: np.ndarray | None = None) -> np.ndarray:
    """Per-group upper bound for negative scores. `perc` subtracts |p|*(1-P), so it stays below p when p < 0;
    `z` subtracts A x `spread` (the group's own candidate-score standard deviation, see `score_spread`)."""
    p = np.asarray(min_positive, dtype=np.float64)
    if ceiling.kind == "perc":
        return p - np.abs(p) * (1.0 - ceiling.value)
    if ceiling.kind == "margin":
        return p - ceiling.value
    if ceiling.kind == "z":
        if spread is None or spread.shape != p.shape:
            raise ValueError(
                f"z ceiling needs one score spread per group, got {None if spread is None else spread.shape}"
            )
        return p - ceiling.value * spread
    return np.full_like(p, np.inf)


def score_spread(score: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """(G, K) scores, (G, K) eligible mask -> (G,) population std of each group's eligible scores (0 below 2)."""
    n = keep.sum(axis=1)
    x = np.where(keep, score.astype(np.float64), 0.0)
    mean = x.sum(axis=1) / np.maximum(n, 1)
    var = np.where(keep, (x - mean[:, None]) ** 2, 0.0).sum(axis=1) / np.maximum(n, 1)
    return np.where(n >= 2, np.sqrt(var), 0.0)


def triangle_gap(cand_pos_sim: np.ndarray, query_pos_sim: np.ndarray) -> np.ndarray:
    """TriSampler's triangle of query q, positive p and candidate c: (G, K, P) cos(c, p) and (G, P) cos(q, p)
    (nan for padding positives) -> (G, K) max over positives of cos(c, p) - cos(q, p). A candidate much closer
    to a positive than the query is (gap >= margin) is likely relevant too; -inf where a group has no positive."""
    if cand_pos_sim.ndim != 3 or query_pos_sim.shape != (cand_pos_sim.shape[0], cand_pos_sim.shape[2]):
        raise ValueError(f"need (G, K, P) and (G, P), got {cand_pos_sim.shape} and {query_pos_sim.shape}")
    gap = cand_pos_sim.astype(np.float64) - query_pos_sim.astype(np.float64)[:, None, :]
    gap = np.where(np.isnan(gap), -np.inf, gap)
    return gap.max(axis=2) if gap.shape[2] else np.full(gap.shape[:2], -np.inf)


def positive_side_gap(cand_pos_sim: np.ndarray, cand_query_sim: np.ndarray, query_pos_sim: np.ndarray) -> np.ndarray:
    """(G, K, P) cos(c, p), (G, K) cos(c, q), (G, P) cos(q, p) (nan for padding positives) -> (G, K) max over
    positives of cos(c, p) - (cos(c, q) + cos(q, p)) / 2: how much nearer the positive the candidate is than the
    mean of the other two sides of the (q, p, c) triangle, i.e. how far it leans to the positive's side. It weighs
    both the candidate's own cosine to the query (unlike the triangle rule) and the query's to the positive (a
    loose pair leaves more room); -inf where a group has no positive."""
    g, k = cand_query_sim.shape
    if cand_pos_sim.ndim != 3 or cand_pos_sim.shape[:2] != (g, k) or query_pos_sim.shape != (g, cand_pos_sim.shape[2]):
        raise ValueError(
            f"need (G, K, P), (G, K) and (G, P), got {cand_pos_sim.shape}, {cand_query_sim.shape}, {query_pos_sim.shape}"
        )
    mean = (cand_query_sim.astype(np.float64)[:, :, None] + query_pos_sim.astype(np.float64)[:, None, :]) / 2
    gap = cand_pos_sim.astype(np.float64) - mean
    gap = np.where(np.isnan(gap), -np.inf, gap)
    return gap.max(axis=2) if gap.shape[2] else np.full((g, k), -np.inf)


def positive_rank(cand_pos_sim: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """(G, K, P) cos(c, p) (nan for padding positives), (G, K) eligible mask -> (G, K) int64: the best (lowest)
    0-based rank of each eligible candidate among its group's eligible candidates ordered by closeness to a
    positive (ties: retrieval order). A rank, not a cosine, so it carries across models; K where not eligible
    or the group has no positive."""
    g, k = keep.shape
    if cand_pos_sim.ndim != 3 or cand_pos_sim.shape[:2] != (g, k):
        raise ValueError(f"need (G, K, P) similarities for {keep.shape} candidates, got {cand_pos_sim.shape}")
    sim = np.where(keep[:, :, None], cand_pos_sim.astype(np.float64), np.nan)
    sim = np.where(np.isnan(sim), -np.inf, sim)
    order = np.argsort(-sim, axis=1, kind="stable")  # (G, K, P) candidates by closeness to each positive
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(k)[None, :, None], axis=1)
    has = ~np.isnan(cand_pos_sim).all(axis=1, keepdims=True)  # (G, 1, P) a real positive
    rank = np.where(has & keep[:, :, None], rank, k)
    return rank.min(axis=2) if rank.shape[2] else np.full((g, k), k, np.int64)


def lexical_ratio(cand_lex: np.ndarray, pos_lex: np.ndarray) -> np.ndarray:
    """(G, K) BM25 of (query, candidate) and (G, P) BM25 of (query, positive), nan padded -> (G, K) candidate
    over the lowest positive with some overlap. nan where no positive shares a term with the query: no lexical
    evidence either way, the rule abstains."""
    pos = np.where(pos_lex > 0, pos_lex, np.nan).astype(np.float64)
    has = ~np.isnan(pos).all(axis=1)
    ref = np.full(pos.shape[0], np.nan)
    ref[has] = np.nanmin(pos[has], axis=1)
    return cand_lex.astype(np.float64) / ref[:, None]


def lowest_positive(pos_score: np.ndarray) -> np.ndarray:
    """(G, P) positive scores, nan padded -> (G,) the lowest (the hardest positive bounds the negatives)."""
    _check_2d(pos_score, "positive scores")
    if np.isnan(pos_score).all(axis=1).any():
        raise ValueError("every query group needs at least one positive score")
    return np.nanmin(pos_score, axis=1)


def eligible(cand: np.ndarray, pos: np.ndarray, rules: Rules) -> tuple[np.ndarray, dict[str, int]]:
    """Stage 1 (before any rescoring): drop padding, the group's positives and ranks outside the window."""
    valid = cand >= 0
    is_pos = positive_mask(cand, pos) & valid
    in_window = window_mask(valid & ~is_pos, rules.range_min, rules.range_max)
    counts = {"positive": int(is_pos.sum()), "rank_window": int((valid & ~is_pos & ~in_window).sum())}
    return in_window, counts


def choose(  # noqa: PLR0913 — a pure function of aligned (G, K) arrays and Rules: each array is its own input
    cand: np.ndarray,
    score: np.ndarray,
    keep: np.ndarray,
    min_positive: np.ndarray,
    near_dup_sim: np.ndarray | None,
    group_key: np.ndarray,
    rules: Rules,
    *,
    triangle: np.ndarray | None = None,
    side: np.ndarray | None = None,
    prank: np.ndarray | None = None,
    lexical: np.ndarray | None = None,
    coverage: np.ndarray | None = None,
    judged: np.ndarray | None = None,
) -> Selection:
    """Stage 2: score bounds, positive-aware ceiling, near-duplicates, triangle, positive side, positive rank,
    lexical, coverage, then `top` or seeded `random` sampling.

    `score` is in the teacher's space (the retriever's, or the reranker's when one rescored the candidates),
    `min_positive` the lowest positive score of each group in that same space, `near_dup_sim` the highest cosine
    of each candidate to any positive of its group, `triangle` the `triangle_gap` and `lexical` the
    `lexical_ratio`, `side` the `positive_side_gap` and `prank` the `positive_rank` of each candidate (needed when
    their rule is on), `coverage` the token coverage of each candidate by its query (`mining/coverage.py`; nan:
    not measured, the rule abstains), `judged` the LLM judge's verdicts
    (`JUDGED_RELEVANT` drops; any other value keeps; None: no judge). Order of the result: score descending,
    retrieval rank on ties.
    """
    g, k = cand.shape
    for name, arr in (("score", score), ("keep", keep)):
        if arr.shape != (g, k):
            raise ValueError(f"{name} has shape {arr.shape}, candidates {cand.shape}")
    if min_positive.shape != (g,) or group_key.shape != (g,):
        raise ValueError(f"min_positive {min_positive.shape} and group_key {group_key.shape} must be ({g},)")
    if np.isnan(score[keep]).any():
        raise ValueError("eligible candidates must have finite scores")
    signals = (
        ("triangle", rules.triangle, triangle),
        ("positive_side", rules.positive_side, side),
        ("positive_rank", rules.positive_rank, prank),
        ("lexical", rules.lexical, lexical),
        ("coverage", rules.coverage, coverage),
    )
    for name, on, arr in signals:
        if on is not None and (arr is None or arr.shape != (g, k)):
            raise ValueError(
                f"the {name} rule is on but its signal is {None if arr is None else arr.shape}, not {(g, k)}"
            )
    alive = keep.copy()
    counts: dict[str, int] = {}

    def drop(rule: str, mask: np.ndarray) -> None:
        hit = alive & mask
        counts[rule] = int(hit.sum())
        alive[hit] = False

    with np.errstate(invalid="ignore"):
        drop("min_score", score < rules.min_score if rules.min_score is not None else np.zeros_like(keep))
        drop("max_score", score > rules.max_score if rules.max_score is not None else np.zeros_like(keep))
        spread = score_spread(score, keep) if rules.ceiling.kind == "z" else None
        ceiling = ceiling_threshold(min_positive, rules.ceiling, spread)[:, None]
        drop("positive_aware", ~(score < ceiling) if rules.ceiling.kind != "none" else np.zeros_like(keep))
        if rules.near_dup is not None and near_dup_sim is not None:
            drop("near_duplicate", near_dup_sim >= rules.near_dup)
        else:
            counts["near_duplicate"] = 0
        none = np.zeros_like(keep)
        drop("triangle", triangle >= rules.triangle if rules.triangle is not None else none)
        drop("positive_side", side >= rules.positive_side if rules.positive_side is not None else none)
        drop("positive_rank", prank < rules.positive_rank if rules.positive_rank is not None else none)
        drop("lexical", lexical >= rules.lexical if rules.lexical is not None else none)  # nan: abstains
        drop("coverage", coverage >= rules.coverage if rules.coverage is not None else none)  # nan: abstains
        drop("judge", judged == JUDGED_RELEVANT if judged is not None else none)
    picked = _sample(alive, score, cand, group_key, rules)
    counts["not_sampled"] = int(alive.sum() - picked.sum())
    return _gather(cand, score, picked, rules.num_negatives, counts)


def _sample(alive: np.ndarray, score: np.ndarray, cand: np.ndarray, group_key: np.ndarray, rules: Rules) -> np.ndarray:
    n = rules.num_negatives
    if rules.sampling == "top":
        order_key = np.where(alive, -score.astype(np.float64), np.inf)
    else:  # random: a hash of (seed, group, document) so the draw does not depend on batching or input order
        order_key = np.where(alive, _mix(rules.seed, group_key[:, None], cand).astype(np.float64), np.inf)
    order = np.argsort(order_key, axis=1, kind="stable")[:, :n]
    picked = np.zeros_like(alive)
    np.put_along_axis(picked, order, True, axis=1)
    return picked & alive


def _gather(cand: np.ndarray, score: np.ndarray, picked: np.ndarray, n: int, counts: dict[str, int]) -> Selection:
    g = cand.shape[0]
    key = np.where(picked, -score.astype(np.float64), np.inf)
    order = np.argsort(key, axis=1, kind="stable")[:, :n]  # hardest first; retrieval rank breaks ties
    took = np.take_along_axis(picked, order, axis=1)
    doc = np.where(took, np.take_along_axis(cand, order, axis=1), -1).astype(np.int64)
    sc = np.where(took, np.take_along_axis(score, order, axis=1), np.nan).astype(np.float32)
    if order.shape[1] < n:  # fewer candidates than negatives wanted
        pad = n - order.shape[1]
        doc = np.pad(doc, ((0, 0), (0, pad)), constant_values=-1)
        sc = np.pad(sc, ((0, 0), (0, pad)), constant_values=np.nan)
    found = took.sum(axis=1).astype(np.int64) if g else np.zeros(0, np.int64)
    return Selection(doc=doc, score=sc, found=found, removed=counts)


def _mix(seed: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """splitmix64 of (seed, a, b): a uniform, reproducible sort key per (group, document)."""
    with np.errstate(over="ignore"):
        x = np.uint64(seed & 0xFFFFFFFFFFFFFFFF) ^ (a.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15))
        x = x ^ (b.astype(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F))
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def _check_2d(arr: np.ndarray, name: str) -> None:
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (groups, items), got shape {arr.shape}")
