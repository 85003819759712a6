"""The converters build a Dataflow job graph offline (DataflowRunner dry run), with the package staged via setup.py."""

from __future__ import annotations

import json
import tarfile

import apache_beam as beam
import pytest
from apache_beam.portability.api import beam_runner_api_pb2 as pb

from negminer import cli
from negminer.pipelines import runner
from negminer.pipelines.msmarco import BuildMsMarcoTuples, MsMarcoConfig
from negminer.pipelines.sink import WriteShardDir
from tests.conftest import PROJECT_ROOT

pytest.importorskip("apache_beam.runners.dataflow.internal.apiclient", reason="needs the gcp extra (apache-beam[gcp])")

# Dataflow validates these offline: a project id needs 6+ chars, a bucket 3+ (else Beam looks one up on GCS).
DATAFLOW = [
    "--runner=DataflowRunner",
    "--dry_run=True",
    "--no_auth",
    "--project=negminer-test",
    "--region=us-central1",
    "--temp_location=gs://negminer-test/tmp",
    "--experiments=disable_logging_submission_environment",  # skips a `pip freeze` (seconds) per job
]


@pytest.fixture
def msmarco_files(tmp_path):
    (tmp_path / "collection.tsv").write_text("1\tParis is the capital of France.\n")
    (tmp_path / "queries.tsv").write_text("10\tcapital of france\n")
    (tmp_path / "qrels.tsv").write_text("10 0 1 1\n")
    (tmp_path / "triples.tsv").write_text("capital of france\tParis is the capital of France.\tLyon is a city.\n")
    return tmp_path


def test_msmarco_job_graph_with_setup_file(msmarco_files, tmp_path):
    d = msmarco_files
    config = MsMarcoConfig(
        output=str(tmp_path / "out"),
        collection=(str(d / "collection.tsv"),),
        queries=(str(d / "queries.tsv"),),
        qrels=(str(d / "qrels.tsv"),),
        triples=(str(d / "triples.tsv"),),
    )
    options = runner.pipeline_options([*DATAFLOW, f"--setup_file={PROJECT_ROOT / 'setup.py'}"])
    p = beam.Pipeline(options=options)
    _ = p | BuildMsMarcoTuples(config) | WriteShardDir(config.output, {}, "train", 2)
    result = p.run()
    assert result.state == "DONE" and not (tmp_path / "out").exists()  # built, not submitted, nothing written
    graph = p.runner.proto_pipeline
    names = {t.unique_name for t in graph.components.transforms.values()}
    joins = ("JoinTables/GroupByQuery", "JoinTables/GroupByDoc", "AttachTriples/GroupByText")
    for join in joins:  # the three joins are shuffles (per hash partition)
        assert f"BuildMsMarcoTuples/{join}/CoGroupByKeyImpl/GroupByKey" in names
    (env,) = graph.components.environments.values()
    staged = {
        pb.ArtifactStagingToRolePayload.FromString(dep.role_payload).staged_name: pb.ArtifactFilePayload.FromString(
            dep.type_payload
        ).path
        for dep in env.dependencies
    }
    path = staged["workflow.tar.gz"]  # the sdist Beam built from setup.py, installed on every worker
    with tarfile.open(path) as tar:
        members = {m.name.split("/", 1)[1] for m in tar.getmembers() if "/" in m.name}
    assert {"pipelines/msmarco.py", "pipelines/triple_columns.py", "negminer/cli.py"} <= members


@pytest.mark.parametrize("command", ["msmarco", "fever", "beir"])
def test_cli_dry_run_builds_each_converter(command, msmarco_files, tmp_path):
    d = msmarco_files
    (d / "claims.jsonl").write_text(
        json.dumps({"id": 1, "label": "SUPPORTS", "claim": "c", "evidence": [[[0, 0, "P", 0]]]}) + "\n"
    )
    (d / "wiki.jsonl").write_text(json.dumps({"id": "P", "text": "s .", "lines": "0\ts ."}) + "\n")
    (d / "corpus.jsonl").write_text(json.dumps({"_id": "d1", "title": "T", "text": "x"}) + "\n")
    (d / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "q"}) + "\n")
    (d / "qrels_beir.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    inputs = {
        "msmarco": ["--collection", d / "collection.tsv", "--queries", d / "queries.tsv", "--qrels", d / "qrels.tsv"],
        "fever": ["--claims", d / "claims.jsonl", "--wiki-pages", d / "wiki.jsonl"],
        "beir": ["--corpus", d / "corpus.jsonl", "--queries", d / "queries.jsonl", "--qrels", d / "qrels_beir.tsv"],
    }[command]
    extra = ["--name", "tiny"] if command == "beir" else []
    args = ["build", command, *map(str, inputs), *extra, "--output", str(tmp_path / "out"), *DATAFLOW]
    assert cli.main(args) == 0
    assert not (tmp_path / "out").exists()
