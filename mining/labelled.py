"""Labelled false-negative sets from real data: rows with ONE visible positive and the other known positives hidden.

A miner sees only the visible positive; a negative it keeps that is a hidden positive is a measured false negative.
Used by `bench/bench_false_negatives.py` (see docs/mining.md, "False negatives").
"""

from __future__ import annotations

import collections
import dataclasses
import json
import zlib
from collections.abc import Iterator
from pathlib import Path

from negminer.pipelines.transforms.clean import normalize_for_match

TUNING = ("snli", "snli_scene", "fever")  # sets the preset may be tuned on
FINAL = ("dl19",)  # human graded judgements: a final check only, never tuned on


@dataclasses.dataclass
class LabelledSet:
    """`rows`: tuple-shard dicts (one visible positive each); `corpus`: (id, text) candidates, hidden positives
    included; `hidden`: query -> normalised texts of its other known positives (only queries that have some)."""

    name: str
    rows: list[dict]
    corpus: list[tuple[str, str]]
    hidden: dict[str, set[str]]
    note: str = ""


def _row(source: str, pair_type: str, query: str, qid: str, positive: str, pid: str) -> dict:
    return dict(source=source, pair_type=pair_type, query=query, query_id=qid, positive=positive, positive_id=pid)


def _nli_rows(data: Path, corpus: dict[str, tuple[str, str]]) -> Iterator[tuple[dict, str, str]]:
    """(record, pairID, hypothesis) of every row of the SNLI and MultiNLI excerpts; each new hypothesis (by
    normalised text) is added to `corpus`."""
    for name in ("jack_1000_samples_snli_1.0_train.jsonl", "bert-shortcuts_sample_mnli.jsonl"):
        for line in (data / "nli" / name).read_text(encoding="utf-8").splitlines():
            r = json.loads(line)
            h, pid = r["sentence2"].strip(), str(r["pairID"])
            corpus.setdefault(normalize_for_match(h), (pid, h))
            yield r, pid, h


def snli_set(data: Path) -> LabelledSet:
    """SNLI + MultiNLI excerpts: query = premise, positive = its first entailed hypothesis, hidden = its other
    entailed hypotheses; corpus = every hypothesis of every label (neutral/contradiction of the same premise are
    the classic hard negatives). Only premises with at least two entailments are kept as queries."""
    ent: dict[str, list[tuple[str, str]]] = collections.defaultdict(list)
    corpus: dict[str, tuple[str, str]] = {}
    for r, pid, h in _nli_rows(data, corpus):
        if r["gold_label"] == "entailment":
            ent[r["sentence1"].strip()].append((pid, h))
    rows, hidden = [], {}
    for i, (premise, hyps) in enumerate(ent.items()):
        uniq = list({normalize_for_match(h): (pid, h) for pid, h in hyps}.values())
        if len(uniq) < 2:
            continue
        rows.append(_row("snli", "nli", premise, f"p{i}", uniq[0][1], uniq[0][0]))
        hidden[premise] = {normalize_for_match(h) for _, h in uniq[1:]}
    return LabelledSet("snli", rows, list(corpus.values()), hidden, "premise -> other entailments of the same premise")


def snli_scene_set(data: Path) -> LabelledSet:
    """SNLI with the scene as the unit of relevance (SNLI premises are Flickr30k captions, `captionID` = image#n):
    query = premise, visible positive = its first entailed hypothesis, hidden = every other hypothesis that an
    annotator judged entailed by a caption of the SAME image (its own or a sibling caption's: true of the scene the
    query describes). Corpus as `snli_set`. ~10x the queries of `snli` (premises need one entailment, not two)."""
    own: dict[str, list[tuple[str, str]]] = collections.defaultdict(list)  # premise -> its entailments
    scene: dict[str, set[str]] = collections.defaultdict(set)  # image -> normalised entailments of its captions
    image: dict[str, str] = {}
    corpus: dict[str, tuple[str, str]] = {}
    for r, pid, h in _nli_rows(data, corpus):
        if r["gold_label"] == "entailment" and "captionID" in r:  # MultiNLI rows carry no image: corpus only
            premise, img = r["sentence1"].strip(), r["captionID"].split("#")[0]
            own[premise].append((pid, h))
            scene[img].add(normalize_for_match(h))
            image[premise] = img
    rows, hidden = [], {}
    for i, (premise, hyps) in enumerate(own.items()):
        pid, visible = hyps[0]
        extra = scene[image[premise]] - {normalize_for_match(visible)}
        if extra:
            rows.append(_row("snli", "nli", premise, f"s{i}", visible, pid))
            hidden[premise] = extra
    return LabelledSet(
        "snli_scene", rows, list(corpus.values()), hidden, "premise -> entailments of any caption of its image"
    )


def fever_set(data: Path, query_share: float = 0.3) -> LabelledSet:
    """FEVER paper_dev claims: the evidence sentences' text is not in the sample data, so relevance is "shares an
    evidence sentence (page, line)". A seeded hash puts ~`query_share` of the claims on the query side and the
    rest in the corpus (a query never retrieves itself); queries with at least two relevant corpus claims are
    kept: the first (by claim id) is visible, the others hidden."""
    claims: dict[int, tuple[str, set]] = {}
    for line in (data / "fever" / "paper_dev.jsonl").read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        sents = {(a[2], a[3]) for group in r["evidence"] for a in group if a[2] is not None}
        claims[int(r["id"])] = (r["claim"].strip(), sents)
    is_query = {cid: zlib.crc32(str(cid).encode()) % 1000 < query_share * 1000 for cid in claims}
    by_sent: dict[tuple, list[int]] = collections.defaultdict(list)
    for cid in sorted(claims):
        if not is_query[cid]:
            for s in claims[cid][1]:
                by_sent[s].append(cid)
    corpus = {normalize_for_match(t): (str(cid), t) for cid, (t, _) in sorted(claims.items()) if not is_query[cid]}
    rows, hidden = [], {}
    for cid in sorted(claims):
        text, sents = claims[cid]
        if not is_query[cid] or normalize_for_match(text) in corpus:
            continue
        rel = sorted({d for s in sents for d in by_sent.get(s, ())})
        texts = list({normalize_for_match(claims[d][0]): d for d in rel}.items())
        if len(texts) < 2:
            continue
        first = texts[0][1]
        rows.append(_row("fever", "fact", text, str(cid), claims[first][0], str(first)))
        hidden[text] = {norm for norm, _ in texts[1:]}
    return LabelledSet("fever", rows, list(corpus.values()), hidden, "claim -> claims sharing an evidence sentence")


def dl19_set(data: Path, min_grade: int = 1) -> LabelledSet:
    """TREC DL19 (human graded judgements; a final check only): query -> its highest-graded judged passage visible,
    every other passage graded >= `min_grade` hidden; corpus = the judged collection (every passage graded > 0)."""
    ms = data / "msmarco"
    topics = dict(
        ln.split("\t", 1) for ln in ms.joinpath("anserini-tools_topics.dl19-passage.txt").read_text().split("\n") if ln
    )
    coll = [
        ln.split("\t", 1)
        for ln in ms.joinpath("nos-irv3_dl19-judged_collection.tsv").read_text("utf-8").split("\n")
        if ln
    ]
    text = {pid: t.strip() for pid, t in coll}
    grades: dict[str, list[tuple[int, str]]] = collections.defaultdict(list)
    for ln in ms.joinpath("anserini-tools_qrels.dl19-passage.txt").read_text().split("\n"):
        if ln.strip():
            qid, _, pid, rel = ln.split()
            if int(rel) > 0 and pid in text and qid in topics:
                grades[qid].append((-int(rel), pid))
    rows, hidden = [], {}
    for qid in sorted(grades):
        judged = sorted(grades[qid])
        query = topics[qid].strip()
        top = judged[0][1]
        extra = {normalize_for_match(text[p]) for g, p in judged[1:] if -g >= min_grade} - {
            normalize_for_match(text[top])
        }
        if not extra:
            continue
        rows.append(_row("msmarco", "qa", query, qid, text[top], top))
        hidden[query] = extra
    return LabelledSet("dl19", rows, [(p, t) for p, t in text.items()], hidden, f"graded >= {min_grade} (human)")


LOADERS = {"snli": snli_set, "snli_scene": snli_scene_set, "fever": fever_set, "dl19": dl19_set}
