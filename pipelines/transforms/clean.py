"""Text clean-up shared by every source: mojibake repair, Unicode NFC, whitespace normalisation."""

from __future__ import annotations

import functools
import re
import unicodedata

import ftfy
from ftfy.badness import BADNESS_RE


def is_normal_whitespace(text: str) -> bool:
    """Whether `normalize_whitespace` would return `text` unchanged, by a cheap sufficient test: printable, no double
    space, no space at either end (the only whitespace a printable string holds is the ASCII space: tested)."""
    return text.isprintable() and "  " not in text and text[:1] != " " and text[-1:] != " "


def normalize_whitespace(text: str) -> str:
    """Collapse runs of whitespace (tabs, newlines, NBSP...) to one space and strip the ends."""
    if is_normal_whitespace(text):
        return text
    return " ".join(text.split())  # splits on str.isspace, the set `\s` matches; ~5x faster than re.sub


def clean_text(text: str, fix_encoding: bool = True) -> str:
    """Repair mojibake (`donÃ¢Â€Â™t` -> `don't`) with ftfy, normalise to NFC, collapse whitespace.

    ASCII text skips ftfy, which is most of the cost on English corpora.

    >>> clean_text("  don\\u00e2\\u0080\\u0099t   stop\\n")
    "don't stop"
    """
    if fix_encoding and not text.isascii():
        text = text if ftfy_leaves(text) else fix_text(text)
    elif not text.isascii():
        text = unicodedata.normalize("NFC", text)
    return normalize_whitespace(text)


_MAX_SEGMENT = ftfy.TextFixerConfig().max_decode_length  # fix_text fixes a longer line in pieces


@functools.lru_cache(maxsize=1)
def _fixer_triggers() -> re.Pattern:
    """A class of every character some ftfy fixer other than `fix_encoding` may change or needs to act.

    From ftfy's own tables: the keys of its translate maps, what its character classes match (curly quotes, C1
    controls, surrogates), line breaks, and `&` (HTML entities), ESC (terminal escapes) and newline (`fix_text`
    fixes each line apart)."""
    from ftfy import chardata, fixes

    chars = {chr(c) for table in (chardata.LIGATURES, chardata.WIDTH_MAP, chardata.CONTROL_CHARS) for c in table}
    classes = (chardata.SINGLE_QUOTE_RE, chardata.DOUBLE_QUOTE_RE, chardata.C1_CONTROL_RE, fixes.SURROGATE_RE)
    chars |= {chr(c) for c in range(0x10000) if any(r.match(chr(c)) for r in classes)}
    chars |= set("&\x1b\n\r\u2028\u2029\x85")
    return re.compile("[" + "".join(re.escape(c) for c in sorted(chars)) + "]")


# the fixers `ftfy.fix_and_explain` runs after `fix_encoding`, in its order (all on in ftfy's default config)
_AFTER_ENCODING = (
    "fix_c1_controls",
    "fix_latin_ligatures",
    "fix_character_width",
    "uncurl_quotes",
    "fix_line_breaks",
    "fix_surrogates",
    "remove_terminal_escapes",
    "remove_control_chars",
)


def fix_text(text: str) -> str:
    """`ftfy.fix_text(text, normalization="NFC")`, ~2.5x faster on a mojibake passage of one segment.

    It is ftfy's own loop (`fix_and_explain`: unescape, fix_encoding, the other fixers, NFC, until nothing changes),
    with two exact shortcuts: the fixers other than `fix_encoding` run only when the text holds a character one of
    them acts on (`_fixer_triggers`; each leaves any other text as it is), and the loop stops as soon as
    `ftfy_leaves` says another round would change nothing (ftfy's round that finds no change costs as much as the
    first). Text of several segments (a newline, or longer than ftfy's decode length) goes to ftfy itself."""
    if len(text) > _MAX_SEGMENT or "\n" in text:
        return ftfy.fix_text(text, normalization="NFC")
    html = "<" not in text  # ftfy's unescape_html="auto", decided once on the segment
    while True:
        before = text
        if html and "&" in text:
            text = ftfy.FIXERS["unescape_html"](text)
        text = ftfy.fix_encoding(text)
        if _fixer_triggers().search(text):
            for name in _AFTER_ENCODING:
                text = ftfy.FIXERS[name](text)
        text = unicodedata.normalize("NFC", text)
        if text == before or ftfy_leaves(text):
            return text


def ftfy_leaves(text: str) -> bool:
    """True when `ftfy.fix_text(text, normalization="NFC")` surely returns `text` unchanged, by cheap tests: no
    mojibake (`looks_bad`), no character another fixer acts on, already NFC, one segment. ftfy costs ~0.25 ms on a
    passage even when it changes nothing (its badness regex and three `str.translate` passes, twice)."""
    return (
        len(text) <= _MAX_SEGMENT
        and not _fixer_triggers().search(text)
        and unicodedata.is_normalized("NFC", text)
        and not looks_bad(text)
    )


def normalize_for_match(text: str) -> str:
    """Key for 'same text' comparisons (dedup, positive filtering): cleaned and case-folded."""
    return normalize_whitespace(unicodedata.normalize("NFKC", text)).casefold()


@functools.lru_cache(maxsize=1)
def _badness_anchors() -> tuple[re.Pattern, int]:
    """A class of characters every match of ftfy's BADNESS_RE contains, and the longest match.

    Derived from the regex's own parse tree: for each alternative, a mandatory position whose class lists only
    non-ASCII characters (the one holding the fewest of ftfy's "common" characters such as ’ or NBSP).
    """
    from re import _constants as C  # noqa: N812 — the parse tree's opcodes
    from re import _parser

    from ftfy.badness import MOJIBAKE_CATEGORIES

    common = set("".join(MOJIBAKE_CATEGORIES[k] for k in ("common", "lower_common", "upper_common")))

    def chars(op, av) -> set[str] | None:
        if op is C.LITERAL:
            return {chr(av)}
        if op is not C.IN:
            return None
        out: set[str] = set()
        for o, a in av:
            if o is C.LITERAL:
                out.add(chr(a))
            elif o is C.RANGE:
                out.update(chr(c) for c in range(a[0], a[1] + 1))
            else:  # a negated class or a category: not a finite list
                return None
        return out

    tree = _parser.parse(BADNESS_RE.pattern, BADNESS_RE.flags)
    ((op, (_, branches)),) = tree.data  # the whole pattern is one alternation
    if op is not C.BRANCH:
        raise RuntimeError("ftfy's BADNESS_RE is no longer one alternation: update looks_bad")
    anchors: set[str] = set()
    for branch in branches:
        sets = [s for o, a in branch for s in [chars(o, a)] if s and all(ord(c) > 127 for c in s)]
        if not sets:
            raise RuntimeError(f"an alternative of ftfy's BADNESS_RE has no non-ASCII anchor: {branch}")
        anchors |= min(sets, key=lambda s: (len(s & common), len(s)))
    pattern = re.compile("[" + "".join(re.escape(c) for c in sorted(anchors)) + "]")
    return pattern, tree.getwidth()[1]


def looks_bad(text: str) -> bool:
    """`ftfy.badness.is_bad(text)`, ~12x faster on web pages: the regex runs only around its anchor characters.

    Every match of ftfy's mojibake regex holds one of a fixed set of non-ASCII characters and spans at most
    `width` characters, so searching the windows of `width` around those characters finds a match iff there is one.
    """
    if text.isascii():
        return False
    anchors, width = _badness_anchors()
    lo = hi = -1
    for m in anchors.finditer(text):
        q = m.start()
        if q - width + 1 > hi:  # a new window: search the one before
            if hi > 0 and BADNESS_RE.search(text, lo, hi):
                return True
            lo = max(0, q - width + 1)
        hi = q + width
    return hi > 0 and bool(BADNESS_RE.search(text, lo, hi))
