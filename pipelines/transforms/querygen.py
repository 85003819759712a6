"""Prompt templates for LLM-written queries, and the pure checks that turn an answer into a query or a reason."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path

from negminer.pipelines.transforms.clean import normalize_whitespace
from negminer.pipelines.transforms.language import detect_language

PARSES = ("line", "json")

_QUERY = """Write one search query that the passage below answers. Reply with the query only, on one line.
{examples}
Passage: {passage}
Query:"""

_QUESTION = """Read the passage and write one natural question whose answer is in it. Do not copy sentences from \
the passage. Reply with the question only, on one line.
{examples}
Passage: {passage}
Question:"""

# After E5-mistral (Wang et al. 2024, "Improving Text Embeddings with Large Language Models"): the LLM first
# names a retrieval task the passage serves, then writes a query for that task. The task becomes `instruction`.
_E5_TASK = """You write training data for a text retrieval model. Given the passage below:
1. Name a retrieval task this passage serves, as a one-sentence instruction (e.g. "Given a medical question, \
retrieve passages that answer it").
2. Write one query for that task that the passage is a good result for. Do not copy the passage.
Reply with JSON only: {{"task": "...", "query": "..."}}
{examples}
Passage: {passage}
JSON:"""


@dataclasses.dataclass(frozen=True)
class Template:
    """A prompt with `{passage}` (and optionally `{examples}`), its name (it becomes `pair_type` gen-<name>) and how
    to read the answer: `line` = the first non-empty line is the query; `json` = {"query": ..., "task": ...}."""

    name: str
    prompt: str
    parse: str = "line"
    examples: tuple[tuple[str, str], ...] = ()  # few-shot (passage, query) pairs

    def __post_init__(self):
        if "{passage}" not in self.prompt:
            raise ValueError(f"template {self.name!r} has no {{passage}} placeholder")
        if self.parse not in PARSES:
            raise ValueError(f"template parse must be one of {PARSES}, got {self.parse!r}")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", self.name):
            raise ValueError(f"template name must be letters, digits, '.', '_' or '-', got {self.name!r}")

    @property
    def pair_type(self) -> str:
        return f"gen-{self.name}"

    def fingerprint(self) -> str:
        blob = json.dumps(dataclasses.asdict(self), sort_keys=True, ensure_ascii=False).encode("utf-8")
        return hashlib.sha256(blob).hexdigest()[:16]

    def render(self, passage: str, max_chars: int = 2000) -> str:
        """The prompt for one passage (cut to `max_chars`), with the few-shot examples, if any, before it."""
        shots = "".join(f"\nPassage: {p}\n{self._answer_label()} {self._shot(q)}\n" for p, q in self.examples)
        return self.prompt.replace("{examples}", shots).replace("{passage}", passage[:max_chars])

    def _answer_label(self) -> str:
        last = self.prompt.rstrip().rsplit("\n", 1)[-1]
        return last if last.endswith(":") and "{" not in last else "Query:"

    def _shot(self, query: str) -> str:
        return (
            json.dumps({"task": "Retrieve passages that answer the query", "query": query})
            if self.parse == "json"
            else query
        )


TEMPLATES = {
    "query": Template("query", _QUERY),
    "question": Template("question", _QUESTION),
    "e5-task": Template("e5-task", _E5_TASK, parse="json"),
}


def load_template(spec: str, few_shot: str | None = None) -> Template:
    """A shipped template by name, or a file: `.json` {"name", "prompt", "parse"} or plain text (name = file stem).

    `few_shot` is a JSON-lines file of {"passage": ..., "query": ...} examples shown before each passage.
    """
    if spec in TEMPLATES:
        t = TEMPLATES[spec]
    else:
        path = Path(spec)
        if not path.is_file():
            raise FileNotFoundError(
                f"--template {spec!r} is neither a shipped template {sorted(TEMPLATES)} nor a file"
            )
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".json":
            obj = json.loads(text)
            t = Template(obj.get("name", path.stem), obj["prompt"], obj.get("parse", "line"))
        else:
            t = Template(path.stem, text)
    if few_shot:
        shots = []
        for n, line in enumerate(Path(few_shot).read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                obj = json.loads(line)
                if not isinstance(obj.get("passage"), str) or not isinstance(obj.get("query"), str):
                    raise ValueError(f"{few_shot}:{n}: a few-shot example needs string 'passage' and 'query'")
                shots.append((obj["passage"], obj["query"]))
        t = dataclasses.replace(t, examples=tuple(shots))
    return t


_PREFIX = re.compile(r"^(?:query|question|search query)\s*[:\-]\s*", re.IGNORECASE)
_QUOTES = "\"'“”‘’`"


def parse_answer(template: Template, text: str, finish_reason: str | None) -> tuple[str, str | None] | str:
    """An LLM answer -> (query, instruction or None), or the reason it is unusable."""
    if template.parse == "json":
        start, end = text.find("{"), text.rfind("}")
        if start < 0 or end < start:
            return "truncated" if finish_reason == "length" else "unparseable_answer"
        try:
            obj = json.loads(text[start : end + 1])
        except json.JSONDecodeError:
            return "unparseable_answer"
        query, task = (obj.get("query") if isinstance(obj, dict) else None), None
        if isinstance(obj, dict) and isinstance(obj.get("task"), str):
            task = normalize_whitespace(obj["task"]) or None
        if not isinstance(query, str):
            return "unparseable_answer"
        return _tidy(query), task
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        return "empty_query"
    if finish_reason == "length" and len(lines) == 1 and not text.rstrip("\r ").endswith("\n"):
        return "truncated"  # the model was cut off inside its only line: the query may be half a sentence
    return _tidy(lines[0]), None


def _tidy(query: str) -> str:
    q = normalize_whitespace(_PREFIX.sub("", query.strip()))
    if len(q) >= 2 and q[0] in _QUOTES and q[-1] in _QUOTES:
        q = q[1:-1].strip()
    return q


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def copies_passage(query: str, passage: str, min_words: int = 8) -> bool:
    """The query is the passage, or a verbatim run of >= `min_words` of its words (case and punctuation aside)."""
    q, p = _words(query), _words(passage)
    if not q:
        return False
    if q == p:
        return True
    if len(q) < min(min_words, len(p)):
        return False
    return f" {' '.join(q)} " in f" {' '.join(p)} "


def query_problem(query: str, passage: str, max_words: int, language: str) -> str | None:
    """Why a parsed query cannot be used (None when it can): empty, too long, copies the passage, wrong language.

    `language`: an ISO 639-1 code the query must be in, `auto` = the passage's language, `any` = no check.
    """
    if not _words(query):
        return "empty_query"
    if len(query.split()) > max_words:
        return "query_too_long"
    if copies_passage(query, passage):
        return "copies_passage"
    if language != "any":
        want = detect_language(passage) if language == "auto" else language
        if detect_language(query) != want:
            return "wrong_language"
    return None
