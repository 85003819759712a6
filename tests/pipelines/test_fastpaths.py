"""Fast paths of the pre-training filters against the slow code they replace, on real pages and random text.

`looks_bad` vs ftfy's `is_bad`, `ftfy_leaves` and `fix_text` vs `ftfy.fix_text`, batched language id vs `py3langid.classify`, the one-regex letter-word count vs the
per-word search, and `filtered_rows` (a batch of documents) vs per-row filtering of `doc_pairs`.
"""

from __future__ import annotations

import random
import re
from collections import Counter

import ftfy
import pytest
from ftfy.badness import MOJIBAKE_CATEGORIES, is_bad

from negminer.pipelines import docpairs, webcrawl, wikipedia
from negminer.pipelines.transforms import language, quality
from negminer.pipelines.transforms.clean import _fixer_triggers, fix_text, ftfy_leaves, looks_bad
from tests.conftest import shared_file

CC = "commoncrawl"
PAGES = (
    "dolma_wget_sample-0000.warc.gz",
    "resiliparse-warcfile.warc.gz",
    "whirlwind.warc.gz",
    "whirlwind.warc.wet.gz",
)
WORDS = ["café", "naïve", "Ελληνικά", "русский", "日本語", "don’t", "über", "piñata", "façade", "Ø", "½", "x²"]


@pytest.fixture(scope="module")
def real_docs() -> list[docpairs.Doc]:
    docs = []
    for name in PAGES:
        path = str(shared_file(CC, name))
        docs += [d for _, d, _ in webcrawl.iter_warc(path) if isinstance(d, docpairs.Doc)]
    assert len(docs) > 30
    return docs


def mojibake(text: str) -> list[str]:
    """UTF-8 text read back in the code pages ftfy's detector knows (what real mojibake looks like)."""
    out = []
    for enc in ("cp1252", "latin-1", "mac_roman", "cp1251", "cp1253", "cp1257", "cp437"):
        out.append(text.encode("utf-8").decode(enc, errors="replace"))
    return out


def random_texts(seed: int, n: int, pool: str, max_len: int = 24) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(pool) for _ in range(rng.randint(0, max_len))) for _ in range(n)]


def test_looks_bad_equals_ftfy_is_bad(real_docs):
    mojibake_chars = "".join(MOJIBAKE_CATEGORIES.values()).replace("-", "")
    pool = "abcxyzABCÃÂØÙ .,?!\n\t" + mojibake_chars + "–—’“”°µ»²³×àâóêœŒ√≈‚βā€ВГРСΒΓΞΟЂ"
    texts = random_texts(0, 20_000, pool, max_len=12) + random_texts(1, 2_000, pool, max_len=200)
    texts += [m for w in WORDS for m in mojibake(f"the {w} and {w.upper()}, “{w}” — {w}…")]
    texts += ["\n".join(p for s in d.sections for p in s.paragraphs) for d in real_docs]
    texts += ["Â ", "Ã ", "xÂ ", "plain ascii text", "", "é"]
    got = [looks_bad(t) for t in texts]
    want = [is_bad(t) for t in texts]
    assert got == want
    assert 1_000 < sum(want) < len(want) - 1_000  # both answers are well represented


def test_ftfy_leaves_only_what_fix_text_leaves(real_docs):
    pool = "abcxyzABCÃÂØÙ .,?!\t" + "–—’“”°µ»²³×àâóêœŒ√≈‚βā€ВГРСΒΓΞΟЂ" + "ﬁＡ\u200b\x85\x1b&;<\r\n\u2028é\u0301"
    texts = random_texts(3, 20_000, pool, max_len=12) + random_texts(4, 2_000, pool, max_len=200)
    texts += [m for w in WORDS for m in mojibake(f"the {w} and {w.upper()}, “{w}” — {w}…")]
    texts += [f"the {w} and {w.upper()}" for w in WORDS] + ["e\u0301", "\ufb01le", "&amp;é", "x\x1b[31mé", "é\n"]
    texts += ["\n".join(p for s in d.sections for p in s.paragraphs) for d in real_docs]
    texts += [p for d in real_docs for s in d.sections for p in s.paragraphs if not p.isascii()]
    leaves = [t for t in texts if ftfy_leaves(t)]
    assert [t for t in leaves if ftfy.fix_text(t, normalization="NFC") != t] == []
    unchanged = sum(ftfy.fix_text(t, normalization="NFC") == t for t in texts)
    assert 1_000 < len(leaves) <= unchanged < len(texts) - 1_000  # the fast path is taken, and not always


def test_fix_text_equals_ftfy_fix_text(real_docs):
    pool = "abcxyzABCÃÂØÙ .,?!\t" + "–—’“”°µ»²³×àâóêœŒ√≈‚βā€ВГРСΒΓΞΟЂ" + "ﬁＡ\u200b\x85\x1b&;<\r\u2028é\u0301"
    texts = random_texts(5, 5_000, pool, max_len=12) + random_texts(6, 1_000, pool, max_len=200)
    words = WORDS + ["ﬁne", "Ｗide", "&amp; &eacute;", "<b>&lt;</b>", "\x1b[31mred", "a\u2028b", "e\u0301"]
    plain = [f"the {w} and {w.upper()}, “{w}” — {w}… ‘{w}’" for w in words]
    texts += [m for t in plain for m in mojibake(t)]
    texts += [m2 for t in plain for m in mojibake(t)[:2] for m2 in mojibake(m)[:2]]  # mojibake twice
    paragraphs = [p for d in real_docs for s in d.sections for p in s.paragraphs if not p.isascii()]
    texts += paragraphs + [m for p in paragraphs[:200] for m in mojibake(p)[:3]]
    texts += ["x" * 2000 + "cafÃ©", "cafÃ©\nnaÃ¯ve"]  # several segments: ftfy itself
    want = [ftfy.fix_text(t, normalization="NFC") for t in texts]
    assert [t for t, w in zip(texts, want, strict=True) if fix_text(t) != w] == []
    assert 500 < sum(w != t for t, w in zip(texts, want, strict=True)) < len(texts) - 500


def test_ftfy_fixers_keep_every_character_outside_the_triggers():
    """What `ftfy_leaves` rests on: each fixer `fix_text` runs besides `fix_encoding` changes no character outside
    the trigger class (the class holds `&` and ESC, the only multi-character patterns' first characters)."""
    from ftfy import fixes

    string_fixers = [
        fixes.unescape_html,
        fixes.remove_terminal_escapes,
        fixes.fix_c1_controls,
        fixes.fix_latin_ligatures,
        fixes.fix_character_width,
        fixes.uncurl_quotes,
        fixes.fix_line_breaks,
        fixes.fix_surrogates,
        fixes.remove_control_chars,
    ]
    triggers = _fixer_triggers()
    kept = "".join(chr(c) for c in range(0x10000) if not triggers.match(chr(c)))
    assert 60_000 < len(kept) < 0x10000
    for fix in string_fixers:
        assert fix(kept) == kept, fix.__name__
        assert fix(kept[::-1]) == kept[::-1], fix.__name__
    astral = "".join(chr(c) for c in range(0x10000, 0x30000, 7))
    assert not triggers.search(astral) and all(fix(astral) == astral for fix in string_fixers)


@pytest.mark.parametrize("min_live", [1, 7, language.MIN_LIVE, 10**6])
def test_detect_languages_equals_py3langid(real_docs, min_live):
    """Every split of the walk between NumPy (all texts a step) and the per-text loop for the long tail: 1 walks
    everything in NumPy, 10**6 everything per text."""
    import py3langid

    texts = [" ".join(docpairs.doc_lines(d)) for d in real_docs]
    texts += ["", " ", "THE RIVER FLOWS INTO THE SEA", "Der Fluss fließt ins Meer.", "川は海に流れる", "123 456"]
    texts += random_texts(2, 200, "abcdefghij klmnopé日本ру\n", max_len=300)
    texts.append("x" * 5000 + " Ελληνικά" * 300)  # longer than the 2000 characters read
    texts += ["Ελληνικά κείμενα " * 200, "русский текст " * 200, "日本語の文章" * 400]  # long in UTF-8 bytes
    got = language.detect_languages(texts, min_live=min_live)
    want = [py3langid.classify(t[: language.LANGID_CHARS])[0] for t in texts]
    assert got == want
    assert len(set(want)) > 5
    assert language.detect_languages([], min_live=min_live) == []
    assert language.detect_languages(texts[-3:], min_live=min_live) == want[-3:]


def test_letter_word_count_equals_per_word_search():
    letter = re.compile(r"[^\W\d_]")
    pool = "ab9_ \t\n\xa0\u2028\u3000\x1c\x85½²٣éЖ日\u0301-—.,"
    for text in random_texts(3, 5_000, pool, max_len=40):
        want = sum(1 for w in text.split() if letter.search(w))
        assert len(quality._LETTER_WORD.findall(text)) == want, repr(text)


def test_word_digit_and_letter_counts_equal_the_plain_definitions():
    """`word_stats`, `_digits` and the letter-word bound against split/findall, on cleaned and uncleaned text."""
    letter = re.compile(r"[^\W\d_]")
    pools = ("ab 9.,- ", "ab9_ \t\n\xa0\u2028\u3000\x1c\x85½²٣éЖ日-—.,", "1 2 a- .. b")
    texts = [t for i, pool in enumerate(pools) for t in random_texts(10 + i, 4_000, pool, max_len=30)]
    texts += ["", " ", "a", " a", "a ", "a  b", "a\tb", "a\xa0b", "x²³ y٣"]
    for text in texts:
        words = text.split()
        assert quality.word_stats(text) == (len(words), len("".join(words))), repr(text)
        assert quality._digits(text) == len(re.findall(r"\d", text)), repr(text)
        if words:
            for ratio in (0.5, 0.8, 1.0):
                want = sum(1 for w in words if letter.search(w)) / len(words) < ratio
                assert quality._letter_words_below(text, len(words), ratio) == want, repr(text)


def test_normalize_whitespace_fast_path_and_its_premise():
    """The premise of the fast paths: a printable string's only whitespace is the ASCII space (every code point)."""
    import sys

    from negminer.pipelines.transforms.clean import normalize_whitespace

    assert [c for c in map(chr, range(sys.maxunicode + 1)) if c.isspace() and c.isprintable()] == [" "]
    pool = "ab \t\n\xa0\u2028\u3000\x1c\x85é日"
    for text in random_texts(20, 5_000, pool, max_len=20) + ["", " ", "a b", " a", "a ", "a  b"]:
        assert normalize_whitespace(text) == " ".join(text.split()), repr(text)


def test_nfc_never_joins_across_a_newline():
    """The premise of `html_sections` normalising a page once, then its lines by whitespace only: NFC of the page
    split at newlines equals NFC line by line (combining marks, Hangul jamo, singletons, next to newlines)."""
    import unicodedata

    pool = "ae\u0301\u0308\u0327 \t\n\u2000\u00a0\uac00\u1100\u1161\u11a8\u0345\u05b0\u0f71\u212b\u2126\u3099\u304b"
    for text in random_texts(30, 50_000, pool, max_len=12):
        lines = [unicodedata.normalize("NFC", x) for x in text.split("\n")]
        assert unicodedata.normalize("NFC", text).split("\n") == lines, repr(text)


def oracle_rows(docs, pair_types, cfg, lead_min_words):
    """The per-row path filtered_rows replaces: row dicts for every pair, then the filters one row at a time."""
    rows, skipped = [], Counter()
    for doc in docs:
        candidates = docpairs.doc_pairs(doc, pair_types, lead_min_words)
        if not candidates:
            skipped["page:no_pairs"] += 1
            continue
        problem = quality.document_problem(docpairs.doc_lines(doc), cfg)
        for r in candidates:
            reason = problem or quality.pair_problem(r["query"], r["positive"], cfg)
            if reason is None:
                rows.append(r)
            else:
                skipped[quality.filter_reason(reason, r["pair_type"])] += 1
    return rows, dict(skipped)


@pytest.mark.parametrize("cfg", [quality.QualityConfig(), quality.QualityConfig(languages=("en", "de", "ru"))])
def test_filtered_rows_equal_per_row_filtering(real_docs, cfg):
    wiki = shared_file("wikipedia", "wikiextractor_wiki_00")
    wiki_docs = [wikipedia.text_doc(o, str(wiki), False) for _, o, _ in wikipedia.iter_extractor_docs(str(wiki))]
    docs = real_docs + [d for d in wiki_docs if isinstance(d, docpairs.Doc)]
    got = docpairs.filtered_rows(docs, webcrawl.PAIR_TYPES + (docpairs.TITLE_LEAD,), cfg, 10)
    want = oracle_rows(docs, webcrawl.PAIR_TYPES + (docpairs.TITLE_LEAD,), cfg, 10)
    assert got == want
    assert got[0] and sum(got[1].values()) > 100


def test_pair_row_refuses_what_row_problems_finds():
    """`pair_row` checks only for empty text (all a row built from a pair can lack), worded by `row_problems`."""
    doc = docpairs.Doc("webcrawl", "k", "Title", (), {"url": "u"})
    ok = docpairs.Pair(docpairs.ADJACENT_PARAGRAPH, "k#s0p0", "query", "k#s0p1", "positive", "")
    row = docpairs.pair_row(doc, ok)
    assert (
        row
        == docpairs.S.TupleRow(
            "webcrawl", ok.pair_type, "query", "positive", "k#s0p0", "k#s0p1", provenance=row["provenance"]
        ).to_dict()
    )
    for field in ("query", "positive", "pair_type"):
        with pytest.raises(docpairs.S.SchemaError, match=f"empty {field}"):
            docpairs.pair_row(doc, ok._replace(**{field: " "}))
    with pytest.raises(docpairs.S.SchemaError, match="empty source"):
        docpairs.pair_row(doc._replace(source=" "), ok)


def test_text_problem_fast_paths_equal_the_plain_definitions(real_docs):
    """The stop-word, boilerplate and letter-word checks as first written, on real paragraphs and odd text."""
    word, letter = re.compile(r"\w+"), re.compile(r"[^\W\d_]")
    cfg = quality.QualityConfig()

    def plain(text: str) -> str | None:
        words = text.split()
        if len(words) < cfg.min_positive_words:
            return "too_few_words"
        if sum(text.count(s) for s in ("#", "...", "…")) / len(words) > cfg.max_symbol_ratio:
            return "symbol_ratio"
        if len(re.findall(r"\d", text)) / len(text) > cfg.max_digit_ratio:
            return "digit_ratio"
        mean_len = sum(len(w) for w in words) / len(words)
        if not cfg.min_mean_word_length <= mean_len <= cfg.max_mean_word_length:
            return "mean_word_length"
        if sum(1 for w in words if letter.search(w)) / len(words) < cfg.min_alpha_word_ratio:
            return "alpha_words"
        if len({w.casefold() for w in word.findall(text)} & quality.STOP_WORDS) < 2:
            return "stop_words"
        folded = text.casefold()
        if any(p in folded for p in quality.BOILERPLATE) or "{" in text:
            return "boilerplate"
        return None

    texts = [p for d in real_docs for s in d.sections for p in s.paragraphs]
    texts += [
        "THE cat AND the dog sat there today.",
        "the_cat and_the dog of theirs, tothe end",
        "İthe wİth and ofthe cat sat down here",
        "Click Here to read the news of the day",
        "the river and the sea {",
        "ſhe the aﬁnd wİth THE and oﬀ the",
        "Straße The AND ＴＨＥ ｔｈｅ more words here",
        "the\u0301 and\u00a0theﬁ Of of of wıth with ok",
    ]
    got = [quality.text_problem(t, cfg) for t in texts]
    assert got == [plain(t) for t in texts]
    assert len(set(got)) >= 5


def test_only_ascii_letters_casefold_into_a_stop_word():
    """The premise of the stop-word regex: no non-ASCII character casefolds to a piece of a stop word."""
    pieces = []
    for cp in range(0x80, 0x110000):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        folded = chr(cp).casefold()
        if folded.isascii() and folded.isalpha():
            pieces.append(folded)
    assert pieces and not [p for p in pieces if any(p in w for w in quality.STOP_WORDS)]
