"""The converters build a Dataflow job graph offline (DataflowRunner --dry_run=True), package staged by setup.py.

Beam validates the flags before the dry run: the project id must look like one (`p` is refused) and the temp
bucket name must be valid (`gs://b/...` is refused, and Beam then tries to create a default bucket over the
network), so the test uses well-formed made-up names. Input paths are listed when the graph is built: they are local.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("google.cloud.storage", reason="needs the `gcp` extra (apache-beam[gcp])")
pytest.importorskip("apache_beam.runners.dataflow.dataflow_runner", reason="needs the `gcp` extra (apache-beam[gcp])")

import apache_beam as beam  # noqa: E402

from pipelines import beir, fever, runner  # noqa: E402
from pipelines.msmarco import BuildMsMarcoTuples, MsMarcoConfig  # noqa: E402
from pipelines.sink import WriteShardDir  # noqa: E402
from tests.conftest import PROJECT_ROOT, shared_file  # noqa: E402

DATAFLOW = [
    "--runner=DataflowRunner",
    "--dry_run=True",
    "--no_auth",
    "--project=negminer-test",
    "--region=europe-west1",
    "--temp_location=gs://negminer-test-bucket/tmp",
]
GBK = "beam:transform:group_by_key:v1"


def test_msmarco_job_graph_with_setup_file(tmp_path):
    ms = "msmarco"
    config = MsMarcoConfig(
        output=str(tmp_path / "out"),
        collection=(str(shared_file(ms, "nos-irv3_dl19-judged_collection.tsv")),),
        queries=(str(shared_file(ms, "anserini-tools_topics.dl19-passage.txt")),),
        qrels=(str(shared_file(ms, "anserini-tools_qrels.dl19-passage.txt")),),
        triples=(str(shared_file(ms, "splade-toy_triples.train.small.head100.tsv")),),
    )
    options = runner.pipeline_options([*DATAFLOW, f"--setup_file={PROJECT_ROOT / 'setup.py'}"])
    p = beam.Pipeline(options=options)
    outputs = p | "BuildMsMarcoTuples" >> BuildMsMarcoTuples(config)
    _ = outputs | "WriteShardDir" >> WriteShardDir(config.output, {})
    job = p.run().job
    transforms = job.proto_pipeline.components.transforms.values()
    shuffles = {t.unique_name.split("/CoGroupByKeyImpl")[0] for t in transforms if t.spec.urn == GBK}
    # the joins are shuffles on Dataflow, not side inputs or in-memory dicts
    assert {"BuildMsMarcoTuples/Join/GroupByQuery", "BuildMsMarcoTuples/Join/GroupByDoc"} <= shuffles
    assert "BuildMsMarcoTuples/GroupByText" in shuffles
    staged = [d.role_payload for env in job.proto_pipeline.components.environments.values() for d in env.dependencies]
    assert any(b"workflow.tar.gz" in payload for payload in staged)  # the sdist built from setup.py
    assert not (tmp_path / "out").exists()  # a dry run writes nothing


def test_fever_and_beir_build_dry_run(tmp_path):
    claims = shared_file("fever", "paper_dev.jsonl")
    segment = shared_file("fever", "anserini_fever_wiki-pages_segment1.jsonl")
    config = fever.FeverConfig(claims=(str(claims),), wiki_pages=(str(segment),), output=str(tmp_path / "fever"))
    assert fever.build(config, DATAFLOW) == {}
    (tmp_path / "corpus.jsonl").write_text(json.dumps({"_id": "d", "title": "t", "text": "x"}) + "\n")
    (tmp_path / "queries.jsonl").write_text(json.dumps({"_id": "q", "text": "y"}) + "\n")
    (tmp_path / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\nq\td\t1\n")
    config = beir.BeirConfig(
        corpus=(str(tmp_path / "corpus.jsonl"),),
        queries=(str(tmp_path / "queries.jsonl"),),
        qrels=(str(tmp_path / "qrels.tsv"),),
        name="t",
        output=str(tmp_path / "beir"),
    )
    assert beir.build(config, DATAFLOW) == {}
    assert not list(tmp_path.glob("*/train-*.parquet"))
