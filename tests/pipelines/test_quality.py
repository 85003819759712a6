"""Quality filters: each heuristic on hand-made text, document filters, keep-rates, the Beam step."""

from __future__ import annotations

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from negminer.pipelines import schema as S
from negminer.pipelines.source import SKIPPED
from negminer.pipelines.transforms import quality
from negminer.pipelines.transforms.quality import QualityConfig, document_problem, keep_rates, pair_problem

PROSE = (
    "The river flows through the valley and into the sea, carrying with it the silt that has made "
    "the plain one of the most fertile regions of the country for many centuries."
)
CFG = QualityConfig()


def test_clean_english_prose_passes_every_filter():
    assert pair_problem("River valley", PROSE, CFG) is None


@pytest.mark.parametrize(
    ("query", "positive", "reason"),
    [
        ("", PROSE, "query_length"),
        ("x" * 2001, PROSE, "query_length"),
        ("River", "Too short to use.", "positive_length"),
        ("River", PROSE + " " + PROSE * 30, "positive_length"),
        ("River", PROSE.upper(), None),  # case alone is no problem
        ("River", "word " * 3 + "and the of " + "x" * 80, "mean_word_length"),  # mean 100 / 7 > 10
        ("River", "a b c d e f g h i j k l m n o p q r s t u v w x y z of to the and", "mean_word_length"),
        ("River", "# # # # the cat and the dog of the house ### #### ## # # # # # # # # # ok", "symbol_ratio"),
        ("River", "In 1999 2000 2001 2002 2003 2004 2005 2006 the and of 2007 2008 2009 2010", "digit_ratio"),
        ("River", "The cat and the dog sat on the mat " + "——→—— " * 10, "alpha_words"),
        ("River", "Fast red cars race down empty roads near seaside towns during summer nights.", "stop_words"),
        (
            "River",
            "Please enable JavaScript in your browser to view the content of this page and the site.",
            "boilerplate",
        ),
        (
            "River",
            "Click here to read the rest of the story and to see all of the photos of the event.",
            "boilerplate",
        ),
        (PROSE, PROSE, "query_equals_positive"),
        (" ".join(PROSE.split()[:10]), PROSE, "query_in_positive"),
        (" ".join(PROSE.split()[:3]), PROSE, None),  # a title-like query inside its passage is fine
    ],
)
def test_each_filter_names_its_reason(query, positive, reason):
    assert pair_problem(query, positive, CFG) == reason


def test_filters_can_be_switched_off():
    off = QualityConfig.off()
    assert pair_problem("River", "word " * 3 + "x" * 80, off) is None
    assert pair_problem(PROSE, PROSE, off) is None
    assert pair_problem("", PROSE, off) == "query_length"  # empty text never passes


def test_document_filters_repeated_lines_and_language():
    lines = [PROSE, "Home", "Home", "Home", "Contact"]
    assert quality.repeated_line_ratio(lines) == pytest.approx(2 / 5)
    assert document_problem(lines, CFG) == "repeated_lines"
    german = [
        "Der Fluss fließt durch das Tal und mündet ins Meer, wobei er den Schlamm mit sich führt.",
        "Die Ebene ist seit vielen Jahrhunderten eine der fruchtbarsten Regionen des Landes.",
    ]
    assert document_problem(german, CFG) == "language"
    assert document_problem(german, QualityConfig(languages=("de", "en"))) is None
    assert document_problem(german, QualityConfig(languages=())) is None
    assert document_problem([PROSE, PROSE.replace("river", "stream")], CFG) is None


def test_config_rejects_bad_bounds():
    with pytest.raises(ValueError, match="max_digit_ratio"):
        QualityConfig(max_digit_ratio=1.5)
    with pytest.raises(ValueError, match="min length above max"):
        QualityConfig(min_positive_chars=100, max_positive_chars=10)


def test_keep_rates_from_manifest_counts():
    manifest = {
        "counts": {S.PAIR_TYPE: {"title-lead": 6, "adjacent-paragraph": 10}},
        "skipped": {
            "filter:language:title-lead": 2,
            "filter:query_in_positive:title-lead": 1,
            "dedup:near:title-lead": 1,
            "filter:language:adjacent-paragraph": 5,
            "dedup:exact:adjacent-paragraph": 5,
            "page:redirect": 40,  # per page, not per pair: not part of any keep-rate
        },
    }
    rates = keep_rates(manifest)
    assert rates["title-lead"]["candidates"] == 10
    assert rates["title-lead"]["keep_rate"] == pytest.approx(0.6)
    assert rates["title-lead"]["dropped"] == {"filter:language": 2, "filter:query_in_positive": 1, "dedup:near": 1}
    assert rates["adjacent-paragraph"]["keep_rate"] == pytest.approx(0.5)


def _row(query: str, positive: str, pair_type: str = "title-lead") -> dict:
    return S.TupleRow(source="wikipedia", pair_type=pair_type, query=query, positive=positive).to_dict()


def test_filter_pairs_transform_counts_skips_per_pair_type():
    good = _row("River", PROSE)
    rows = [good, _row("River", "too short"), _row(PROSE, PROSE, "adjacent-paragraph")]
    with TestPipeline() as p:
        out = p | beam.Create(rows) | quality.FilterPairs(CFG)
        assert_that(out["rows"], equal_to([good]), label="rows")
        expected = ["filter:positive_length:title-lead", "filter:query_equals_positive:adjacent-paragraph"]
        assert_that(out[SKIPPED], equal_to(expected), label="skipped")
