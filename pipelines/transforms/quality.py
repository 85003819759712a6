"""Quality filters for pre-training pairs: length, language, Gopher-style heuristics, boilerplate, query in positive."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import re
import string
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import apache_beam as beam

from negminer.pipelines import schema as S
from negminer.pipelines.source import SKIPPED, skip
from negminer.pipelines.transforms.clean import is_normal_whitespace, normalize_for_match
from negminer.pipelines.transforms.language import LANGID_CHARS, detect_languages

# Gopher (Rae et al. 2021, appendix A) "stop word" check: real English prose uses at least two of these.
STOP_WORDS = frozenset({"the", "be", "to", "of", "and", "that", "have", "with"})
# Phrases of navigation, legal and cookie boilerplate (C4 / Gopher style); matched case-insensitively.
BOILERPLATE = (
    "lorem ipsum",
    "javascript",
    "cookie policy",
    "use cookies",
    "privacy policy",
    "terms of use",
    "terms of service",
    "all rights reserved",
    "click here",
    "sign up for",
    "log in to",
    "enable cookies",
    "skip to content",
)
_DIGIT = re.compile(r"\d")
# UTF-8 bytes to three classes: ASCII letter "a", ASCII whitespace (what str.split splits on) " ", anything else "#"
_BYTE_CLASSES = bytes(
    ord("a") if chr(c) in string.ascii_letters else ord(" ") if c < 128 and chr(c).isspace() else ord("#")
    for c in range(256)
)
# A whitespace-separated word holding a letter, from its first letter to its end: one match per such word
# (\S is the complement of the whitespace str.split uses).
_LETTER_WORD = re.compile(r"[^\W\d_]\S*")
# A whole \w+ word that casefolds to a stop word: only ASCII letters casefold into these words (the non-ASCII
# characters that casefold to ASCII letters, such as the long s or the ligature ﬁ, give none of them; tested), so
# an ASCII case-insensitive match bounded by non-word characters finds exactly those words, with no per-word casefold.
_STOP_WORD = re.compile(
    r"(?<!\w)(?:" + "|".join("".join(f"[{c}{c.upper()}]" for c in w) for w in sorted(STOP_WORDS)) + r")(?!\w)"
)
# A paragraph is the query of one adjacent pair and the positive of the next, and a kept positive is keyed by its
# normalised text right after (dedup.positive_key, in the same fused stage): normalise it once.
normalized_for_match = functools.lru_cache(maxsize=1 << 14)(normalize_for_match)


@dataclasses.dataclass(frozen=True)
class QualityConfig:
    """Thresholds of every filter; a filter whose bound is None is off. Defaults follow Gopher where it applies."""

    min_query_chars: int = 3
    max_query_chars: int = 2_000
    min_positive_chars: int = 40
    max_positive_chars: int = 4_000
    min_positive_words: int = 5
    languages: tuple[str, ...] = ("en",)  # empty: keep every language
    max_symbol_ratio: float | None = 0.1  # '#' and ellipses per word
    max_digit_ratio: float | None = 0.2  # digits per character
    min_mean_word_length: float | None = 3.0
    max_mean_word_length: float | None = 10.0
    min_alpha_word_ratio: float | None = 0.8  # words holding a letter
    require_stop_words: bool = True  # English only: >= 2 of the Gopher stop words
    max_repeated_line_ratio: float | None = 0.3  # per document: lines that repeat an earlier line
    boilerplate: bool = True
    query_in_positive: bool = True
    min_contained_query_words: int = 8  # shorter queries (titles, headings) naturally occur in their positive

    def __post_init__(self) -> None:
        for name in ("min_query_chars", "max_query_chars", "min_positive_chars", "max_positive_chars"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.min_query_chars > self.max_query_chars or self.min_positive_chars > self.max_positive_chars:
            raise ValueError(f"min length above max length in {self}")
        for name in ("max_symbol_ratio", "max_digit_ratio", "min_alpha_word_ratio", "max_repeated_line_ratio"):
            v = getattr(self, name)
            if v is not None and not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be in [0, 1] or None, got {v}")
        object.__setattr__(self, "languages", tuple(sorted(set(self.languages))))

    @classmethod
    def off(cls) -> QualityConfig:
        """Every filter disabled except non-empty text (for counting what the parsers produce)."""
        return cls(
            min_query_chars=1,
            min_positive_chars=1,
            max_query_chars=10**9,
            max_positive_chars=10**9,
            min_positive_words=0,
            languages=(),
            max_symbol_ratio=None,
            max_digit_ratio=None,
            min_mean_word_length=None,
            max_mean_word_length=None,
            min_alpha_word_ratio=None,
            require_stop_words=False,
            max_repeated_line_ratio=None,
            boilerplate=False,
            query_in_positive=False,
        )


def repeated_line_ratio(lines: Sequence[str]) -> float:
    """Fraction of non-empty lines that repeat an earlier line (Gopher's duplicate-line fraction)."""
    seen: set[str] = set()
    total = dup = 0
    for line in lines:
        key = line.strip()
        if not key:
            continue
        total += 1
        dup += key in seen
        seen.add(key)
    return dup / total if total else 0.0


def document_problem(lines: Sequence[str], cfg: QualityConfig) -> str | None:
    """The first document-level filter that `lines` (a page's paragraphs and headings) fails, or None."""
    return document_problems([lines], cfg)[0]


def document_problems(docs: Sequence[Sequence[str]], cfg: QualityConfig) -> list[str | None]:
    """`document_problem` of each document's lines, with language id run on the whole batch at once."""
    problems: list[str | None] = [None] * len(docs)
    samples: dict[int, str] = {}
    for i, lines in enumerate(docs):
        if cfg.max_repeated_line_ratio is not None and repeated_line_ratio(lines) > cfg.max_repeated_line_ratio:
            problems[i] = "repeated_lines"
        elif cfg.languages:
            sample = " ".join(lines)[:LANGID_CHARS]
            if sample.strip():
                samples[i] = sample
    for i, lang in zip(samples, detect_languages(list(samples.values())), strict=True):
        if lang not in cfg.languages:
            problems[i] = "language"
    return problems


def word_stats(text: str) -> tuple[int, int]:
    """(words, characters in words) of `text`, as `len(text.split())` and `len("".join(text.split()))` give.

    Cleaned text (one space between words, no other whitespace: the only whitespace a printable string can hold
    is the ASCII space) is counted without building the word list.
    """
    if is_normal_whitespace(text):
        spaces = text.count(" ")
        return (spaces + 1, len(text) - spaces) if text else (0, 0)
    words = text.split()
    return len(words), len("".join(words))


def _digits(text: str) -> int:
    r"""`len(re.findall(r"\d", text))`: on ASCII text `\d` is 0-9, counted by ten C scans without a match list."""
    if text.isascii():
        return sum(map(text.count, "0123456789"))
    return len(_DIGIT.findall(text))


def _char_problem(text: str, n_words: int, cfg: QualityConfig) -> str | None:
    """Too many symbols per word or digits per character."""
    if cfg.max_symbol_ratio is not None:
        symbols = text.count("#") + text.count("...") + text.count("…")  # "#" and ellipses
        if symbols / n_words > cfg.max_symbol_ratio:
            return "symbol_ratio"
    if cfg.max_digit_ratio is not None and _digits(text) / len(text) > cfg.max_digit_ratio:
        return "digit_ratio"
    return None


def _word_problem(text: str, n_words: int, word_chars: int, cfg: QualityConfig) -> str | None:
    """Mean word length out of bounds, or too few words with a letter."""
    mean_len = word_chars / n_words
    if cfg.min_mean_word_length is not None and mean_len < cfg.min_mean_word_length:
        return "mean_word_length"
    if cfg.max_mean_word_length is not None and mean_len > cfg.max_mean_word_length:
        return "mean_word_length"
    if cfg.min_alpha_word_ratio is not None and _letter_words_below(text, n_words, cfg.min_alpha_word_ratio):
        return "alpha_words"
    return None


def _letter_words_below(text: str, n_words: int, ratio: float) -> bool:
    """Whether fewer than `ratio` of the words hold a letter.

    A word without a letter starts with a character that is not an ASCII letter, at the start of the text or after
    whitespace, so `n_words - (such word starts)` is a lower bound of the words with a letter: when it clears the
    bound (most prose), one bytes.translate answers without the regex's list of words. Word starts are found in the
    UTF-8 bytes, where a non-ASCII character counts as a possible non-letter; so its whitespace must be ASCII: the
    text is ASCII, or printable (its only whitespace is then the space).
    """
    if text.isascii() or text.isprintable():
        classes = text.encode().translate(_BYTE_CLASSES)
        if (n_words - classes.count(b" #") - classes.startswith(b"#")) / n_words >= ratio:
            return False
    return len(_LETTER_WORD.findall(text)) / n_words < ratio  # = words w with _LETTER.search(w), one C pass


def _has_boilerplate(folded: str) -> bool:
    """Whether case-folded text holds a BOILERPLATE phrase: one C substring search per phrase (~2x the one
    alternation regex, which tries every phrase at every position)."""
    return any(map(folded.__contains__, BOILERPLATE))


def _has_stop_words(text: str, n: int = 2) -> bool:
    """Whether `text` holds >= n distinct Gopher stop words; the scan stops at the n-th (most prose: early)."""
    found: set[str] = set()
    for m in _STOP_WORD.finditer(text):
        found.add(m.group().lower())
        if len(found) >= n:
            return True
    return False


def text_problem(text: str, cfg: QualityConfig) -> str | None:
    """The first Gopher-style heuristic that a positive text fails, or None."""
    n_words, word_chars = word_stats(text)
    if n_words < cfg.min_positive_words:
        return "too_few_words"
    if not n_words:
        return None
    problem = _char_problem(text, n_words, cfg) or _word_problem(text, n_words, word_chars, cfg)
    if problem:
        return problem
    if cfg.require_stop_words and "en" in cfg.languages and not _has_stop_words(text):
        return "stop_words"
    if cfg.boilerplate and ("{" in text or _has_boilerplate(text.casefold())):
        return "boilerplate"
    return None


def pair_problem(query: str, positive: str, cfg: QualityConfig) -> str | None:
    """The first pair-level filter a (query, positive) fails, or None: lengths, query in positive, heuristics.

    A query inside its positive is a leak only when the query is a passage (>= `min_contained_query_words`
    words): a title or heading inside its paragraph is how those pairs look.
    """
    if not cfg.min_query_chars <= len(query) <= cfg.max_query_chars:
        return "query_length"
    if not cfg.min_positive_chars <= len(positive) <= cfg.max_positive_chars:
        return "positive_length"
    if cfg.query_in_positive:
        q, p = normalized_for_match(query), normalized_for_match(positive)
        if q == p:
            return "query_equals_positive"
        if q in p and len(q.split()) >= cfg.min_contained_query_words:
            return "query_in_positive"
    return text_problem(positive, cfg)


def filter_reason(name: str, pair_type: str) -> str:
    """The `skipped` reason of a filtered pair: `filter:<name>:<pair_type>` (keep-rates per filter and type)."""
    return f"filter:{name}:{pair_type}"


def keep_rates(manifest: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Per pair type: candidate pairs, rows kept, keep-rate and drops per filter/dedup step, from a manifest.

    Candidates are rows plus every `filter:` and `dedup:` skip of that pair type (parse-level skips such as
    redirects are per page, not per pair, and are left out).
    """
    out: dict[str, dict[str, Any]] = {}
    for pt, n in manifest.get("counts", {}).get(S.PAIR_TYPE, {}).items():
        out.setdefault(pt, {"rows": 0, "dropped": {}})["rows"] = n
    for reason, n in manifest.get("skipped", {}).items():
        kind, _, rest = reason.partition(":")
        if kind not in ("filter", "dedup") or ":" not in rest:
            continue
        name, _, pt = rest.rpartition(":")
        entry = out.setdefault(pt, {"rows": 0, "dropped": {}})
        entry["dropped"][f"{kind}:{name}"] = entry["dropped"].get(f"{kind}:{name}", 0) + n
    for entry in out.values():
        entry["candidates"] = entry["rows"] + sum(entry["dropped"].values())
        entry["keep_rate"] = entry["rows"] / entry["candidates"] if entry["candidates"] else None
    return dict(sorted(out.items()))


class FilterPairsFn(beam.DoFn):
    """row dict -> the row if it passes every pair-level filter, else a `filter:<name>:<pair_type>` skip."""

    def __init__(self, cfg: QualityConfig):
        self.cfg = cfg

    def process(self, row: dict) -> Iterator[Any]:
        problem = pair_problem(row[S.QUERY], row[S.POSITIVE], self.cfg)
        if problem is None:
            yield row
        else:
            yield skip(filter_reason(problem, row[S.PAIR_TYPE]))


class FilterPairs(beam.PTransform):
    """PCollection[row dict] -> {'rows': kept rows, 'skipped': reason strings}."""

    def __init__(self, cfg: QualityConfig):
        super().__init__()
        self.cfg = cfg

    def expand(self, rows):
        out = rows | "Filter" >> beam.ParDo(FilterPairsFn(self.cfg)).with_outputs(SKIPPED, main="rows")
        return {"rows": out.rows, "skipped": out[SKIPPED]}


def skip_all(rows: Iterable[Mapping[str, Any]], name: str) -> Iterator[beam.pvalue.TaggedOutput]:
    """A `filter:<name>:<pair_type>` skip for every row of a document that failed a document-level filter."""
    for r in rows:
        yield skip(filter_reason(name, r[S.PAIR_TYPE]))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The quality-filter flags shared by the pre-training pipelines (defaults from `QualityConfig`)."""
    d = QualityConfig()
    g = parser.add_argument_group("quality filters")
    g.add_argument(
        "--languages",
        default=",".join(d.languages),
        help="keep these languages (py3langid codes, comma-separated; empty keeps all)",
    )
    a = g.add_argument
    a("--min-positive-chars", type=int, default=d.min_positive_chars, help="drop positives shorter than this")
    a("--max-positive-chars", type=int, default=d.max_positive_chars, help="drop positives longer than this")
    a("--min-positive-words", type=int, default=d.min_positive_words, help="drop positives with fewer words")
    a("--min-query-chars", type=int, default=d.min_query_chars, help="drop queries shorter than this")
    a("--max-query-chars", type=int, default=d.max_query_chars, help="drop queries longer than this")
    a("--max-symbol-ratio", type=float, default=d.max_symbol_ratio, help="max '#' and ellipses per word")
    a("--max-digit-ratio", type=float, default=d.max_digit_ratio, help="max digits per character")
    a(
        "--max-repeated-line-ratio",
        type=float,
        default=d.max_repeated_line_ratio,
        help="max share of a document's lines that repeat an earlier line",
    )
    g.add_argument("--no-quality-filters", action="store_true", help="turn every filter off (lengths >= 1 char only)")


def config_from_args(args: argparse.Namespace) -> QualityConfig:
    if args.no_quality_filters:
        return QualityConfig.off()
    return QualityConfig(
        languages=tuple(x.strip() for x in args.languages.split(",") if x.strip()),
        min_positive_chars=args.min_positive_chars,
        max_positive_chars=args.max_positive_chars,
        min_positive_words=args.min_positive_words,
        min_query_chars=args.min_query_chars,
        max_query_chars=args.max_query_chars,
        max_symbol_ratio=args.max_symbol_ratio,
        max_digit_ratio=args.max_digit_ratio,
        max_repeated_line_ratio=args.max_repeated_line_ratio,
    )
