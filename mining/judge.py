"""LLM relevance judge for the negatives about to be kept: (query, positive, candidate) -> relevant / not / unparseable.

Through the one LLM client (`negminer.llm`: OpenAI-compatible endpoint or local transformers causal LM, cached by
content key, concurrent, retried with backoff). Unparseable answers and failed requests are counted, never guessed:
such a candidate stays a negative.
"""

from __future__ import annotations

import collections
import dataclasses
import re
from collections.abc import Callable
from typing import Any

import numpy as np

from negminer.mining.select import JUDGED_RELEVANT, Selection

RELEVANT, NOT_RELEVANT, UNKNOWN, NOT_ASKED = JUDGED_RELEVANT, 0, -1, -2
PROMPT = (
    "You check search results for a training set.\n"
    "Query: {query}\n"
    "Known relevant passage: {positive}\n"
    "Candidate passage: {candidate}\n"
    "Is the candidate passage also relevant to the query (it answers it or supports it as well as the known "
    "relevant passage does)? Answer with one word: yes or no."
)
_WORD = re.compile(r"[a-z]+")
_YES, _NO = {"yes", "relevant", "true"}, {"no", "irrelevant", "not", "false"}


@dataclasses.dataclass(frozen=True)
class JudgeConfig:
    """`model`: served model name with `base_url`, else a local causal LM dir. `rounds`: judge the picked
    negatives, replace those judged relevant by the next survivors, judge those, ... at most this many times."""

    model: str
    base_url: str | None = None
    relabel: bool = False
    rounds: int = 2
    concurrency: int = 8
    max_retries: int = 5
    timeout_s: float = 120.0
    max_chars: int = 2000  # each text is cut to this many characters in the prompt
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        if not self.model:
            raise ValueError("--judge needs a model (a local causal LM dir, or a served name with --judge-url)")
        if self.rounds < 1:
            raise ValueError(f"--judge-rounds must be >= 1, got {self.rounds}")
        if self.max_chars < 16:
            raise ValueError(f"judge max_chars must be >= 16, got {self.max_chars}")


def judge_prompt(query: str, positive: str, candidate: str, max_chars: int = 2000) -> str:
    cut = lambda t: t if len(t) <= max_chars else t[:max_chars] + " ..."  # noqa: E731
    return PROMPT.format(query=cut(query), positive=cut(positive), candidate=cut(candidate))


def parse_verdict(text: str | None) -> int:
    """The answer's first word: yes -> RELEVANT, no -> NOT_RELEVANT, anything else (or no text) -> UNKNOWN."""
    if not text:
        return UNKNOWN
    m = _WORD.search(text.strip().lower())
    if m is None:
        return UNKNOWN
    word = m.group(0)
    return RELEVANT if word in _YES else NOT_RELEVANT if word in _NO else UNKNOWN


class Judge:
    """Verdicts for (query, positive, candidate) triples, counted: asked, relevant, not_relevant, unparseable,
    failed (request errors, by reason in `llm.stats`)."""

    def __init__(self, cfg: JudgeConfig, llm: Any = None):
        from negminer.llm import LLM, LLMConfig, Sampling

        self.cfg = cfg
        self.llm = llm or LLM(
            LLMConfig(
                model=cfg.model,
                base_url=cfg.base_url,
                concurrency=cfg.concurrency,
                max_retries=cfg.max_retries,
                timeout_s=cfg.timeout_s,
                cache_dir=cfg.cache_dir,
                device="auto",
            )
        )
        self.sampling = Sampling(max_new_tokens=4, temperature=0.0)
        self.counts: collections.Counter = collections.Counter()

    def check(self) -> None:
        """One-line LLMError now when the endpoint cannot be reached (before any mining work)."""
        self.llm.check()

    def verdicts(self, triples: list[tuple[str, str, str]]) -> np.ndarray:
        """(query, positive, candidate) triples -> (n,) int8 RELEVANT / NOT_RELEVANT / UNKNOWN."""
        prompts = [judge_prompt(q, p, c, self.cfg.max_chars) for q, p, c in triples]
        answers = self.llm.generate(prompts, self.sampling) if prompts else []
        out = np.empty(len(answers), dtype=np.int8)
        for i, a in enumerate(answers):
            v = UNKNOWN if a.error is not None else parse_verdict(a.text)
            out[i] = v
            self.counts["failed" if a.error is not None else _NAMES[v]] += 1
        self.counts["asked"] += len(answers)
        return out

    def summary(self) -> dict[str, Any]:
        names = ("asked", "relevant", "not_relevant", "unparseable", "failed")
        return {
            "model": self.cfg.model,
            "backend": "openai" if self.cfg.base_url else "transformers",
            "mode": "relabel" if self.cfg.relabel else "drop",
            "rounds": self.cfg.rounds,
            **{k: int(self.counts.get(k, 0)) for k in names},
            "llm": self.llm.stats.as_dict(),
        }


def judge_rounds(
    judge: Judge, select: Callable[[np.ndarray], Selection], cand: np.ndarray, triple: Callable[[int, int], tuple]
) -> tuple[Selection, np.ndarray]:
    """Select, judge the picked negatives not judged yet, select again without the relevant ones, ... for at most
    `judge.cfg.rounds` rounds. `select(judged)` runs the selection with the verdicts so far; `triple(g, doc)` is
    the (query, positive, candidate) text of group row g. Returns the last selection and the (G, K) verdicts."""
    judged = np.full(cand.shape, NOT_ASKED, np.int8)
    sel = select(judged)
    for _ in range(judge.cfg.rounds):
        picked = (cand[:, :, None] == sel.doc[:, None, :]).any(axis=2) & (cand >= 0)
        new = picked & (judged == NOT_ASKED)
        if not new.any():
            break
        g, k = np.nonzero(new)
        judged[g, k] = judge.verdicts([triple(int(gi), int(cand[gi, ki])) for gi, ki in zip(g, k, strict=True)])
        sel = select(judged)
    return sel, judged


_NAMES = {RELEVANT: "relevant", NOT_RELEVANT: "not_relevant", UNKNOWN: "unparseable"}
