"""The mining pipeline builds a Dataflow job graph offline with GPU worker options (DataflowRunner dry run)."""

from __future__ import annotations

import tarfile

import apache_beam as beam
import pytest
from apache_beam.portability.api import beam_runner_api_pb2 as pb

from negminer import cli
from negminer.mining.beam_mine import build_pipeline
from negminer.mining.beam_run import RunFiles
from negminer.mining.config import MineConfig
from negminer.pipelines import runner
from tests.conftest import PROJECT_ROOT
from tests.pipelines.test_dataflow import DATAFLOW

pytest.importorskip("apache_beam.runners.dataflow.internal.apiclient", reason="needs the gcp extra (apache-beam[gcp])")

GPU = [
    "--dataflow_service_options=worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver",
    "--machine_type=g2-standard-8",
    "--sdk_container_image=us-docker.pkg.dev/negminer-test/negminer/mine-gpu:latest",
    "--experiments=use_runner_v2",
    "--number_of_worker_harness_threads=1",
]


def test_mining_job_graph_with_gpu_workers(tmp_path):
    cfg = MineConfig(
        input=str(tmp_path / "in"),
        output=str(tmp_path / "out"),
        model="m",
        work_dir=str(tmp_path / "w"),
        device="cuda",
    )
    options = runner.pipeline_options([*DATAFLOW, *GPU, f"--setup_file={PROJECT_ROOT / 'setup.py'}"])
    p = beam.Pipeline(options=options)
    build_pipeline(p, RunFiles(cfg, str(tmp_path / "run")), "DataflowRunner")
    result = p.run()
    assert result.state == "DONE" and not (tmp_path / "out").exists()  # built, not submitted, nothing run
    graph = p.runner.proto_pipeline
    names = {t.unique_name for t in graph.components.transforms.values()}
    assert "Encode/BeamML_RunInference" in names
    assert "Search/MergeTopK/CombinePerKey" in names or any(n.startswith("Search/MergeTopK/") for n in names)
    service = options.get_all_options()["dataflow_service_options"]
    assert service == ["worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver"]
    (env,) = graph.components.environments.values()
    docker = pb.DockerPayload.FromString(env.payload)
    assert docker.container_image.endswith("mine-gpu:latest")  # the CUDA torch + faiss-gpu image
    staged = {
        pb.ArtifactStagingToRolePayload.FromString(dep.role_payload).staged_name: pb.ArtifactFilePayload.FromString(
            dep.type_payload
        ).path
        for dep in env.dependencies
    }
    with tarfile.open(staged["workflow.tar.gz"]) as tar:
        members = {m.name.split("/", 1)[1] for m in tar.getmembers() if "/" in m.name}
    assert {"mining/beam_mine.py", "mining/beam_search.py", "mining/mine.py"} <= members


def test_cli_dry_run_builds_the_mining_graph(tmp_path):
    args = ["mine", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--model", "m"]
    args += ["--work-dir", str(tmp_path / "w"), "--device", "cuda", *DATAFLOW, *GPU]
    assert cli.main(args) == 0
    assert not (tmp_path / "out").exists()
