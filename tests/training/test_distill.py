"""Distillation that teaches: targets scaled by the teacher's score kind, checked by hand and by what a student learns."""

from __future__ import annotations

import dataclasses
import math
import random

import numpy as np
import pytest
import torch

from negminer.pipelines import io
from negminer.pipelines.schema import TupleRow
from negminer.training.config import TrainConfig
from negminer.training.data import Batch, score_kind
from negminer.training.model import Encoder
from negminer.training.step import objective, teacher_logits
from negminer.training.train import train
from tests.training.conftest import WORDS, make_tiny_bert


def test_teacher_logits_per_kind():
    assert teacher_logits([0.9, 0.6], "cosine") == pytest.approx([18.0, 12.0])  # τ 0.05
    assert teacher_logits([2.0, -1.0], "logit") == pytest.approx([2.0, -1.0])  # τ 1
    assert teacher_logits([0.8, 0.5], "probability") == pytest.approx([math.log(4.0), 0.0])
    assert teacher_logits([0.9, 0.6], None) == teacher_logits([0.9, 0.6], "cosine")
    assert teacher_logits([0.9, 0.6], "cosine", 1.0) == pytest.approx([0.9, 0.6])  # --teacher-temperature wins
    with pytest.raises(ValueError, match="unknown teacher score kind 'rank'"):
        teacher_logits([1.0], "rank")


def test_objective_adds_the_kl_to_kind_scaled_targets_by_hand(tmp_path):
    g = torch.Generator().manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(3, 8, generator=g, dtype=torch.float64), dim=-1)
    d = torch.nn.functional.normalize(torch.randn(6, 8, generator=g, dtype=torch.float64), dim=-1)
    batch = Batch(
        ["a", "b", "c"],
        ["pa", "pb", "pc"],
        [["na1", "na2"], ["nb"], []],
        [0.9, 3.0, None],
        [[0.7, 0.2], [-1.0], None],
        score_kinds=["cosine", "logit", None],
    )
    cfg = TrainConfig(data=("x",), model="m", output=str(tmp_path), max_steps=1, temperature=0.05)
    base = objective(q, d, batch, cfg).item()
    with_kl = objective(q, d, batch, dataclasses.replace(cfg, distill=True, distill_weight=0.5)).item()
    qn, dn = q.numpy(), d.numpy()

    def kl(teacher: np.ndarray, student: np.ndarray) -> float:
        t = np.exp(teacher - teacher.max()) / np.exp(teacher - teacher.max()).sum()
        s = np.exp(student - student.max()) / np.exp(student - student.max()).sum()
        return float((t * np.log(t / s)).sum())

    # row 0: documents 0 (positive), 3, 4; cosine teacher at τ 0.05. Row 1: documents 1, 5; logit teacher at τ 1.
    kl0 = kl(np.array([0.9, 0.7, 0.2]) / 0.05, dn[[0, 3, 4]] @ qn[0] / 0.05)
    kl1 = kl(np.array([3.0, -1.0]), dn[[1, 5]] @ qn[1] / 0.05)
    assert with_kl - base == pytest.approx(0.5 * (kl0 + kl1) / 2, rel=1e-6)  # objective computes in float32


def test_score_kind_from_the_manifest(tmp_path):
    row = TupleRow(source="t", pair_type="qa", query="q", positive="p").to_dict()
    kinds = {"a": {"scores": {"kind": "logit"}}, "b": {"scores": {"teacher": "reranker"}}, "c": None}
    for name, mining in kinds.items():
        io.write_shards([row], str(tmp_path / name), record={"command": "mine", "mining": mining})
    assert [score_kind(str(tmp_path / n)) for n in "abc"] == ["logit", "probability", None]


def _rows(rng: random.Random, n: int, favourite: str, other: str) -> list[dict]:
    rows = []
    for i in range(n):
        words = rng.sample(WORDS[:30], 4)
        q = " ".join(words)
        rows.append(
            TupleRow(
                source="t",
                pair_type="qa",
                query=q,
                positive=" ".join(reversed(words)) + f" {i}",
                negatives=(f"{q} {favourite}", f"{q} {other}"),  # the teacher ranks `favourite` above `other`
                positive_score=0.9,
                negative_scores=(0.7, 0.5),
            ).to_dict()
        )
    return rows


def _prefers(model_dir: str, rows: list[dict]) -> tuple[float, float]:
    """Share of rows whose first negative the student scores above the second, and the student's mean log-odds of
    the first over the second, (s_a - s_b) / τ at τ 0.05 (the teacher's: (0.7 - 0.5) / 0.05 = 4)."""
    enc = Encoder.from_pretrained(model_dir, "mean", 24).eval()
    with torch.no_grad():

        def emb(texts):
            b = enc.tokenize(texts)
            return enc(b["input_ids"], b["attention_mask"])

        q = emb([r["query"] for r in rows])
        a, b = emb([r["negatives"][0] for r in rows]), emb([r["negatives"][1] for r in rows])
    gap = (q * a).sum(-1) - (q * b).sum(-1)
    return float((gap > 0).float().mean()), float(gap.mean() / 0.05)


@pytest.mark.slow
def test_distillation_moves_the_students_ranking_toward_the_teachers(tmp_path):
    """A teacher that prefers one negative the student ranks lower: distilling with kind-scaled targets teaches the
    student that order on held-out rows; the old flat targets (cosines at teacher temperature 1) do not."""
    model = make_tiny_bert(tmp_path / "m", seed=3)
    probe = _rows(random.Random(1), 64, "red", "blue")
    favourite, other = ("red", "blue") if _prefers(model, probe)[0] < 0.5 else ("blue", "red")  # the student's loser
    held_out = _rows(random.Random(1), 64, favourite, other)
    before = _prefers(model, held_out)
    data = str(tmp_path / "mined")
    record = {"command": "mine", "mining": {"scores": {"teacher": "retriever", "kind": "cosine"}}}
    io.write_shards(_rows(random.Random(0), 96, favourite, other), data, record=record)
    base = dict(data=(data,), model=model, batch_size=8, num_negatives=2, max_steps=40, lr=2e-3, max_length=24)
    base.update(distill=True, distill_weight=1.0, shuffle_buffer=32, warmup=0.1)
    train(TrainConfig(output=str(tmp_path / "kind"), **base))
    train(TrainConfig(output=str(tmp_path / "flat"), teacher_temperature=1.0, **base))
    after, flat = _prefers(str(tmp_path / "kind"), held_out), _prefers(str(tmp_path / "flat"), held_out)
    print(f"held-out (share ranked as the teacher, log-odds): before {before}, kind-scaled {after}, flat {flat}")
    assert before[0] < 0.5 and before[1] < 0
    assert after[0] >= 0.9 and after[1] >= 2.0  # at least half the teacher's log-odds of 4
    assert flat[1] < 1.0  # the old flat targets ask for log-odds 0.2: the student barely learns the order
