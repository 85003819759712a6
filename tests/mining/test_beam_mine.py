"""The Beam miner (DirectRunner, 2 worker processes) writes the same bytes as the in-process miner."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from negminer.mining.beam_mine import mine_beam
from negminer.mining.mine import mine
from tests.mining.conftest import mine_config
from tests.mining.test_golden import MSMARCO, MULTI_POSITIVE, digests, mine_splits, msmarco_config

TWO_WORKERS = ["--runner=DirectRunner", "--direct_running_mode=multi_processing", "--direct_num_workers=2"]


@pytest.mark.slow
def test_beam_and_in_process_write_the_same_bytes_multi_positive(mine_data, tmp_path, tiny_bert_dir):
    cfg = mine_config(mine_data, tmp_path, tiny_bert_dir, positive_aware="perc:0.99", near_dup=0.99)
    beam_manifest = mine_splits(
        dataclasses.replace(cfg, output=str(tmp_path / "beam")), lambda c: mine_beam(c, ["--runner=DirectRunner"])
    )
    assert digests(tmp_path / "beam") == MULTI_POSITIVE
    assert beam_manifest["mining"]["runner"] == "DirectRunner"
    assert beam_manifest["mining"]["encoded"]["documents"] == beam_manifest["mining"]["corpus"]["documents"]
    # the in-process miner on the same work dir: nothing left to encode, same bytes
    local = mine_splits(cfg)
    assert local["mining"]["encoded"] == {"documents": 0, "queries": 0}
    assert digests(cfg.output) == MULTI_POSITIVE
    # the manifest says the same of both runs, but for how they ran
    how = ("runner", "encoded", "timings_s", "rows_held_max")
    assert {k: v for k, v in local["mining"].items() if k not in how} == {
        k: v for k, v in beam_manifest["mining"].items() if k not in how
    }
    assert beam_manifest["mining"]["corpus"]["rejects"] == 1  # the bad line of the TSV corpus, as in-process


@pytest.mark.slow
def test_beam_reranks_in_its_select_tasks_as_in_process(mine_data, tmp_path, tiny_bert_dir, tiny_cross_encoder_dir):
    cfg = mine_config(
        mine_data, tmp_path, tiny_bert_dir, reranker=str(tiny_cross_encoder_dir), positive_aware="margin:1"
    )
    local = mine(dataclasses.replace(cfg, split="train"))
    beam = mine_beam(dataclasses.replace(cfg, split="train", output=str(tmp_path / "beam")), ["--runner=DirectRunner"])
    assert digests(tmp_path / "beam") == digests(cfg.output)
    assert beam["mining"]["reranker"] == local["mining"]["reranker"] is not None
    assert beam["mining"]["scores"] == local["mining"]["scores"]
    assert beam["mining"]["removed"] == local["mining"]["removed"]


def test_beam_refuses_the_judge(mine_data, tmp_path, tiny_bert_dir):
    cfg = mine_config(mine_data, tmp_path, tiny_bert_dir, judge="some-llm")
    with pytest.raises(ValueError, match="not on the Beam miner yet"):
        mine_beam(cfg, ["--runner=DirectRunner"])
    assert not (tmp_path / "out").exists()  # refused before anything ran


@pytest.mark.slow
@pytest.mark.parametrize(
    ("rule", "flags"), [("lexical", {"lexical": 0.2}), ("coverage", {"coverage": 0.3, "lexical": 0.2})]
)
def test_beam_applies_the_rule_as_in_process(rule, flags, mine_data, tmp_path, tiny_bert_dir):
    # thresholds low enough that the rule removes candidates here (checked below), so a Beam run without it differs
    cfg = mine_config(mine_data, tmp_path, tiny_bert_dir, positive_aware="none", **flags)
    local = mine(dataclasses.replace(cfg, split="train"))
    assert local["mining"]["removed"].get(rule, 0) > 0
    beam = mine_beam(dataclasses.replace(cfg, split="train", output=str(tmp_path / "beam")), ["--runner=DirectRunner"])
    assert digests(tmp_path / "beam") == digests(cfg.output)
    assert beam["mining"]["removed"] == local["mining"]["removed"]


@pytest.mark.slow
def test_beam_on_two_workers_matches_in_process_on_msmarco(tmp_path):
    cfg = msmarco_config(tmp_path)  # the train split only (80 queries, ~250 passages): one job of 2 worker processes
    mine_beam(dataclasses.replace(cfg, output=str(tmp_path / "beam"), split="train"), TWO_WORKERS)
    train = {k: v for k, v in MSMARCO.items() if k.rsplit("/", 1)[-1].startswith("train-")}
    assert digests(tmp_path / "beam") == train


class Killed(RuntimeError):
    pass


@pytest.mark.slow
def test_killed_beam_run_reruns_only_the_missing_chunks(mine_data, tmp_path, tiny_bert_dir, monkeypatch):
    from negminer.mining import beam_mine
    from negminer.mining.store import EmbeddingStore

    cfg = mine_config(mine_data, tmp_path, tiny_bert_dir, positive_aware="perc:0.99", near_dup=0.99)
    real, written = beam_mine.WriteChunkFn.process, []

    def die_on_third(self, element):
        if len(written) == 2:
            raise Killed("worker died while encoding")
        written.append(len(element[1]))
        yield from real(self, element)

    monkeypatch.setattr(beam_mine.WriteChunkFn, "process", die_on_third)
    with pytest.raises(Exception, match="worker died"):
        mine_beam(cfg, ["--runner=DirectRunner"])
    monkeypatch.setattr(beam_mine.WriteChunkFn, "process", real)
    cached = sum(len(EmbeddingStore(cfg.work_dir, f).cached_keys()) for f in _store_fields(cfg.work_dir))
    assert cached == sum(written) > 0
    rerun = mine_beam(cfg, ["--runner=DirectRunner"])
    encoded = rerun["mining"]["encoded"]
    total = rerun["mining"]["corpus"]["documents"] + rerun["mining"]["groups"]
    assert encoded["documents"] + encoded["queries"] == total - cached  # only what the killed run had not stored
    mine_beam(dataclasses.replace(cfg, split="dev"), ["--runner=DirectRunner"])
    assert digests(cfg.output) == MULTI_POSITIVE


def _store_fields(work_dir) -> list[dict]:
    return [json.loads(m.read_text()) for m in sorted(Path(work_dir).glob("embeddings/*/meta.json"))]


@pytest.mark.slow
def test_cli_with_runner_runs_the_beam_pipeline(mine_data, tmp_path, tiny_bert_dir):
    from negminer import cli
    from negminer.pipelines import io

    out = tmp_path / "cli-beam"
    argv = ["mine", "--input", mine_data["input"], "--output", str(out), "--model", str(tiny_bert_dir)]
    argv += ["--corpus", mine_data["corpus"], "--work-dir", str(tmp_path / "w"), "--num-negatives", "3"]
    argv += ["--max-length", "64", "--runner", "DirectRunner"]
    assert cli.main(argv) == 0
    assert io.read_manifest(str(out))["mining"]["runner"] == "DirectRunner"


@pytest.mark.slow
def test_beam_with_its_work_dir_on_a_non_local_file_system(mine_data, tmp_path, tiny_bert_dir, monkeypatch):
    """`--work-dir mem://...` (tests/memfs.py, standing for gs://): the store and every hand-off file of the run go
    through Beam's FileSystems; same bytes, and a rerun finds the store full."""
    from tests import memfs

    written, close = [], memfs._Writer.close
    monkeypatch.setattr(memfs._Writer, "close", lambda self: (written.append(self.path), close(self))[1])
    work = f"mem://{tmp_path.name}/work"
    cfg = mine_config(mine_data, tmp_path, tiny_bert_dir, positive_aware="perc:0.99", near_dup=0.99, work_dir=work)
    manifest = mine_splits(cfg, lambda c: mine_beam(c, ["--runner=DirectRunner"]))
    assert digests(cfg.output) == MULTI_POSITIVE
    assert manifest["mining"]["encoded"]["documents"] == manifest["mining"]["corpus"]["documents"]
    stored = [p for p in memfs.FILES if p.startswith(f"{work}/embeddings/")]
    assert any(p.endswith(".f16.npy") for p in stored)
    handed = {p.rsplit("/", 1)[-1] for p in written if p.startswith(f"{work}/beam/")}
    assert {"meta.json", "group_key.npy", "queries.arrow", "top-0.idx.npy"} <= {
        n.split(".tmp")[0].lstrip(".") for n in handed
    }
    assert any("/corpus/" in p for p in written) and any("/sources/" in p for p in written)
    assert not [p for p in memfs.FILES if p.startswith(f"{work}/beam/")]  # the run's hand-offs are removed
    again = mine_beam(dataclasses.replace(cfg, split="train"), ["--runner=DirectRunner"])
    assert again["mining"]["encoded"] == {"documents": 0, "queries": 0}


def test_in_process_miner_refuses_a_url_work_dir(mine_data, tmp_path, tiny_bert_dir):
    cfg = mine_config(mine_data, tmp_path, tiny_bert_dir, work_dir="gs://bucket/work")
    with pytest.raises(ValueError, match="needs a local directory"):
        mine(cfg)


@pytest.mark.slow
def test_beam_with_many_small_blocks_and_batches_writes_the_same_bytes(
    mine_data, tmp_path, tiny_bert_dir, monkeypatch
):
    """Tiny query blocks, corpus blocks and group batches (many search tasks, partial top-k merges, select tasks, rows
    joined across them) give the bytes the in-process miner writes with the same blocks and batches."""
    from negminer.mining import beam_run
    from negminer.mining import mine as core

    monkeypatch.setattr(core, "GROUP_BATCH", 2)
    monkeypatch.setattr(core, "QUERY_BLOCK", 4)
    monkeypatch.setattr(beam_run, "QUERY_BLOCK", 4)
    monkeypatch.setattr(core, "SEARCH_SHARD_CPU", 16)
    cfg = mine_config(mine_data, tmp_path, tiny_bert_dir, positive_aware="perc:0.99", near_dup=0.99)
    mine_splits(cfg)
    beam_out = tmp_path / "beam"
    manifest = mine_splits(
        dataclasses.replace(cfg, output=str(beam_out)), lambda c: mine_beam(c, ["--runner=DirectRunner"])
    )
    assert digests(beam_out) == digests(cfg.output)
    assert manifest["mining"]["groups"] > 2 * core.GROUP_BATCH  # several select tasks and query blocks
    assert manifest["mining"]["corpus"]["documents"] > 2 * core.SEARCH_SHARD_CPU  # several corpus blocks


def test_beam_refuses_an_unknown_corpus_format_before_the_job_runs(mine_data, tmp_path, tiny_bert_dir, monkeypatch):
    from negminer.mining import beam_mine

    odd = tmp_path / "corpus.xyz"
    odd.write_text("c1\tsome text\n")
    started = []
    monkeypatch.setattr(beam_mine, "build_pipeline", lambda *a: started.append(a))
    cfg = mine_config(mine_data, tmp_path, tiny_bert_dir, corpus=(str(odd),))
    with pytest.raises(ValueError, match="unknown format"):
        mine_beam(cfg, ["--runner=DirectRunner"])
    assert not started
