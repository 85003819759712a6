"""The default `--num-shards`: derived from the input size; the same bytes as giving that number explicitly."""

from __future__ import annotations

import hashlib
import json
import math

from negminer import cli
from negminer.pipelines import runner
from tests.conftest import shared_file


def sparse_file(path, size: int) -> str:
    with open(path, "wb") as f:
        f.truncate(size)  # sparse: no disk used, the listing reports the size
    return str(path)


def test_auto_num_shards_grows_with_input_size(tmp_path, monkeypatch):
    mib = 2**20
    assert runner.auto_num_shards([]) == 1
    assert runner.auto_num_shards([sparse_file(tmp_path / "small", 10)]) == 1
    files = [sparse_file(tmp_path / f"f{i}", 300 * mib) for i in range(3)]  # 900 MiB / 256 MiB -> 4
    assert runner.auto_num_shards(files) == math.ceil(900 / 256) == 4
    monkeypatch.setattr(runner, "SHARD_INPUT_BYTES", mib)
    assert runner.auto_num_shards(files) == 900
    monkeypatch.setattr(runner, "SHARD_INPUT_BYTES", 1024)  # 921,600 shards' worth: capped
    assert runner.auto_num_shards(files) == runner.MAX_AUTO_SHARDS == 4096


def build(out, *extra) -> dict:
    src = str(shared_file("nli", "bert-shortcuts_sample_mnli.jsonl"))
    assert cli.main(["build", "snli", "--source", "mnli", "--input", src, "--output", str(out), *extra]) == 0
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    shards = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.glob("*.parquet"))}
    return {"config_shards": manifest["config"]["num_shards"], "shards": shards}


def test_default_shard_count_matches_explicit_flag(tmp_path, monkeypatch):
    src = shared_file("nli", "bert-shortcuts_sample_mnli.jsonl")
    small = build(tmp_path / "small")
    assert small["config_shards"] == 1 and list(small["shards"]) == ["train-00000-of-00001.parquet"]
    monkeypatch.setattr(runner, "SHARD_INPUT_BYTES", src.stat().st_size // 3 + 1)  # -> 3 shards
    auto = build(tmp_path / "auto")
    explicit = build(tmp_path / "explicit", "--num-shards", "3")
    assert auto["config_shards"] == 3 and len(auto["shards"]) == 3
    assert auto == explicit
