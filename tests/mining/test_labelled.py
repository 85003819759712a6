"""The labelled false-negative sets built from ../shared/data: hidden positives are real, disjoint, retrievable."""

from __future__ import annotations

import json

import pytest

from negminer.mining.labelled import FINAL, LOADERS, TUNING
from negminer.pipelines.transforms.clean import normalize_for_match as norm


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_sets_hide_other_positives_that_are_in_the_corpus(shared_data, name):
    ls = LOADERS[name](shared_data)
    corpus = {norm(t) for _, t in ls.corpus}
    assert ls.rows and set(ls.hidden) == {r["query"] for r in ls.rows}
    for r in ls.rows:
        hidden = ls.hidden[r["query"]]
        assert hidden and norm(r["positive"]) not in hidden  # the visible positive is never counted as hidden
        assert hidden <= corpus and norm(r["positive"]) in corpus
        assert norm(r["query"]) not in corpus  # a query never retrieves itself
    assert not set(TUNING) & set(FINAL) and "dl19" in FINAL


def test_snli_hidden_are_entailments_of_the_same_premise(shared_data):
    ls = LOADERS["snli"](shared_data)
    ent = {}
    for line in (shared_data / "nli" / "jack_1000_samples_snli_1.0_train.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r["gold_label"] == "entailment":
            ent.setdefault(r["sentence1"].strip(), set()).add(norm(r["sentence2"]))
    for r in ls.rows:
        if r["query"] in ent:
            assert ls.hidden[r["query"]] | {norm(r["positive"])} == ent[r["query"]]


def test_dl19_hidden_are_judged_relevant(shared_data):
    ls = LOADERS["dl19"](shared_data)
    text = dict(
        ln.split("\t", 1)
        for ln in (shared_data / "msmarco" / "nos-irv3_dl19-judged_collection.tsv").read_text("utf-8").splitlines()
    )
    topics = {
        v.strip(): k
        for k, v in (
            ln.split("\t", 1)
            for ln in (shared_data / "msmarco" / "anserini-tools_topics.dl19-passage.txt").read_text().splitlines()
        )
    }
    rel = {}
    for ln in (shared_data / "msmarco" / "anserini-tools_qrels.dl19-passage.txt").read_text().splitlines():
        qid, _, pid, g = ln.split()
        if int(g) > 0 and pid in text:
            rel.setdefault(qid, set()).add(norm(text[pid].strip()))
    assert len(ls.rows) == 43
    for r in ls.rows:
        assert ls.hidden[r["query"]] <= rel[topics[r["query"]]]


def test_snli_scene_hidden_are_entailments_of_captions_of_the_same_image(shared_data):
    ls = LOADERS["snli_scene"](shared_data)
    image, scene = {}, {}
    for line in (shared_data / "nli" / "jack_1000_samples_snli_1.0_train.jsonl").read_text().splitlines():
        r = json.loads(line)
        img = r["captionID"].split("#")[0]
        image[r["sentence1"].strip()] = img
        if r["gold_label"] == "entailment":
            scene.setdefault(img, set()).add(norm(r["sentence2"]))
    strict = LOADERS["snli"](shared_data).hidden
    assert len(ls.rows) > 5 * len(strict)  # the point of the set: many more labelled queries
    for r in ls.rows:
        assert ls.hidden[r["query"]] == scene[image[r["query"]]] - {norm(r["positive"])}
        assert strict.get(r["query"], set()) <= ls.hidden[r["query"]] | {norm(r["positive"])}
