"""The builders' output bytes are locked: sha256 of every shard and the rejects per reason on every real excerpt.

Recorded (`golden_builds.json`) with the code of before the Arrow-batch rewrite (issue 15.4), each build with
`--num-shards 2`: a mismatch after a refactor means the output changed, not only its speed. Regenerate only for a
deliberate change of the output, and say so in the commit:

    .venv/bin/python -m tests.pipelines.test_golden_builds --write

Builds run from inside ../shared/data with relative input paths: provenance records input paths as given, so the
digests do not depend on where the checkout lies. There is no BEIR excerpt in ../shared/data, so BEIR has no case
here. Digests hold no data, only hashes and counts.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from negminer import cli
from negminer.pipelines import schema as S
from tests.conftest import SHARED_DATA, shared_file

GOLDEN = Path(__file__).with_name("golden_builds.json")
NUM_SHARDS = 2

MS = "msmarco"
CC = "commoncrawl"
WARCS = [
    "whirlwind.warc.gz",
    "resiliparse-warcfile.warc.gz",
    "warcio-example.warc.gz",
    "warcio-example-iana.org-chunked.warc",
    "dolma_wget_sample-0000.warc.gz",
]

# name -> (builder, [(flag, [path parts...]) or (flag, value)]); paths are relative to ../shared/data.
CASES: dict[str, tuple[str, list[tuple[str, object]]]] = {
    "snli": ("snli", [("--input", [("nli", "jack_1000_samples_snli_1.0_train.jsonl")])]),
    "mnli": ("snli", [("--source", "mnli"), ("--input", [("nli", "bert-shortcuts_sample_mnli.jsonl")])]),
    "msmarco-dl19": (
        "msmarco",
        [
            ("--collection", [(MS, "nos-irv3_dl19-judged_collection.tsv")]),
            ("--queries", [(MS, "anserini-tools_topics.dl19-passage.txt")]),
            ("--qrels", [(MS, "anserini-tools_qrels.dl19-passage.txt")]),
        ],
    ),
    "msmarco-dl19-rel0": (
        "msmarco",
        [
            ("--collection", [(MS, "nos-irv3_dl19-judged_collection.tsv")]),
            ("--queries", [(MS, "anserini-tools_topics.dl19-passage.txt")]),
            ("--qrels", [(MS, "anserini-tools_qrels.dl19-passage.txt"), (MS, "nos-irv3_dl19_qrels.binary.txt")]),
            ("--min-relevance", "0"),
        ],
    ),
    "msmarco-dev-subset": (
        "msmarco",
        [
            ("--collection", [(MS, "splade-toy_collection.head89.tsv")]),
            ("--queries", [(MS, "anserini-tools_topics.msmarco-passage.dev-subset.txt")]),
            ("--qrels", [(MS, "anserini-tools_qrels.msmarco-passage.dev-subset.txt")]),
        ],
    ),
    "msmarco-triples": (
        "msmarco",
        [
            ("--collection", [(MS, "nos-irv3_dl19-judged_collection.tsv"), (MS, "splade-toy_collection.head89.tsv")]),
            ("--queries", [(MS, "anserini-tools_topics.dl19-passage.txt")]),
            ("--qrels", [(MS, "anserini-tools_qrels.dl19-passage.txt")]),
            ("--triples", [(MS, "splade-toy_triples.train.small.head100.tsv")]),
        ],
    ),
    "fever": (
        "fever",
        [
            ("--claims", [("fever", "paper_dev.jsonl")]),
            ("--wiki-pages", [("fever", "anserini_fever_wiki-pages_segment1.jsonl")]),
        ],
    ),
    "wikipedia-dump": (
        "wikipedia",
        [
            (
                "--input",
                [
                    ("wikipedia", "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"),
                    ("wikipedia", "enwiki-table-markup.xml.bz2"),
                ],
            )
        ],
    ),
    "wikipedia-wikiextractor": ("wikipedia", [("--input", [("wikipedia", "wikiextractor_wiki_00")])]),
    "webcrawl-warc": ("webcrawl", [("--input", [(CC, w) for w in WARCS])]),
    "webcrawl-wet": ("webcrawl", [("--input", [(CC, "whirlwind.warc.wet.gz")])]),
}


def relative(*parts: str) -> Path:
    """A ../shared/data file as a path relative to that folder (skips the test when it is absent)."""
    shared_file(*parts)
    return Path(*parts)


def build_args(name: str, out: Path, resolve=relative) -> list[str]:
    builder, flags = CASES[name]
    args = ["build", builder]
    for flag, value in flags:
        args.append(flag)
        if isinstance(value, list):
            args.extend(str(resolve(*parts)) for parts in value)
        else:
            args.append(str(value))
    return [*args, "--output", str(out), "--num-shards", str(NUM_SHARDS)]


def digest(out: Path) -> dict:
    """sha256 of each shard; rejects per reason, their content (order-free, source file by base name), skips."""
    shards = {
        f: hashlib.sha256((out / f).read_bytes()).hexdigest()
        for f in sorted(os.listdir(out))
        if f.endswith(".parquet")
    }
    rejects = []
    for f in sorted((out / S.REJECTS_DIR).glob("*.parquet")) if (out / S.REJECTS_DIR).is_dir() else []:
        for row in pq.read_table(f).to_pylist():
            row["source_file"] = os.path.basename(row["source_file"] or "")
            rejects.append(json.dumps(row, sort_keys=True, default=str, ensure_ascii=False))
    reasons = Counter(json.loads(r)[S.REJECT_REASON] for r in rejects)
    manifest = json.loads((out / S.MANIFEST_NAME).read_text(encoding="utf-8"))
    return {
        "shards": shards,
        "rows": manifest["rows"],
        "rejects": dict(sorted(reasons.items())),
        "rejects_sha256": hashlib.sha256("\n".join(sorted(rejects)).encode("utf-8")).hexdigest(),
        "skipped": dict(sorted(manifest.get("skipped", {}).items())),
        "duplicates_dropped": manifest.get("duplicates_dropped"),
    }


def run_case(name: str, out: Path) -> dict:
    args = build_args(name, out.resolve())
    here = os.getcwd()
    os.chdir(SHARED_DATA)
    try:
        rc = cli.main(args)
    finally:
        os.chdir(here)
    got = digest(out)
    assert rc == (2 if not got["rows"] and got["rejects"] else 0), (name, rc)  # all rejected: exit 2 (issue 11.5)
    return got


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_build_output_matches_golden_digest(name, tmp_path):
    want = json.loads(GOLDEN.read_text(encoding="utf-8"))[name]
    got = run_case(name, tmp_path / "out")
    assert got["rejects"] == want["rejects"] and got["skipped"] == want["skipped"]
    assert got == want


def test_golden_file_covers_every_case():
    """The JSON and the case table agree, and every case produced rows or counted rejects/skips (a digest of
    nothing would lock nothing). The FEVER excerpt's pages hold none of the dev claims' evidence, and the WET
    excerpt is not English: both lock their rejects and skips only."""
    golden = json.loads(GOLDEN.read_text(encoding="utf-8"))
    assert sorted(golden) == sorted(CASES)
    for name, g in golden.items():
        assert g["rows"] > 0 or g["rejects"] or g["skipped"], name
        assert len(g["shards"]) == NUM_SHARDS, name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="write golden_builds.json (else print)")
    parser.add_argument("--only", nargs="*", help="case names (default all)")
    a = parser.parse_args()
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in a.only or sorted(CASES):
            out[name] = run_case(name, Path(tmp) / name)
    text = json.dumps(out, indent=1, sort_keys=True) + "\n"
    if a.write:
        GOLDEN.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
