"""Splits are explicit, and a shard directory is read only as its complete manifest lists it (issue 11, points 1-2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from negminer import cli
from negminer.pipelines import io
from negminer.pipelines import schema as S
from tests.conftest import PROJECT_ROOT, shared_file


def _rows(n: int, tag: str) -> list[dict]:
    return [
        S.TupleRow(source="t", pair_type="qa", query=f"{tag} query {i}", positive=f"{tag} positive {i}").to_dict()
        for i in range(n)
    ]


def _names(files: list[str]) -> list[str]:
    return [os.path.basename(f) for f in files]


@pytest.fixture
def two_splits(tmp_path) -> str:
    d = str(tmp_path / "d")
    bad = [io.make_reject("in.jsonl", "malformed_json", "{", line=3)]
    io.write_shards(_rows(10, "train"), d, "train", 2, record={"command": "build a"}, rejects=bad)
    io.write_shards(_rows(4, "dev"), d, "dev", 1, record={"command": "build b"})
    return d


def test_readers_read_only_the_split_asked_for(two_splits):
    d = two_splits
    assert _names(io.shard_files(d, "train")) == ["train-00000-of-00002.parquet", "train-00001-of-00002.parquet"]
    assert _names(io.shard_files(d, "dev")) == ["dev-00000-of-00001.parquet"]
    assert {r[S.QUERY].split()[0] for r in io.iter_rows(io.shard_files(d, "train"))} == {"train"}
    assert len(io.shard_files(d)) == 3  # None: every split
    with pytest.raises(io.DirectoryError, match=r"has no split 'test' \(its manifest lists: dev, train\)"):
        io.shard_files(d, "test")
    with pytest.raises(io.DirectoryError, match="is a shard of split 'dev', not 'train'"):
        io.shard_files(os.path.join(d, "dev-00000-of-00001.parquet"), "train")
    with pytest.raises(S.SchemaError, match="split name 'a-b'"):
        io.shard_files(d, "a-b")


def test_second_split_keeps_the_first_ones_manifest_entry_and_rejects(two_splits):
    m = io.read_manifest(two_splits)
    assert set(m["splits"]) == {"dev", "train"} and m["counts"]["split"] == {"dev": 4, "train": 10}
    assert m["splits"]["train"]["rejects"] == {"malformed_json": 1} and m["splits"]["dev"]["rejects"] == {}
    assert m["splits"]["train"]["command"] == "build a" and m["command"] == "build b"
    assert m["rows"] == 14 and m["rejects"] == {"malformed_json": 1}
    assert io.read_rejects(two_splits, "train").num_rows == 1 and io.read_rejects(two_splits, "dev").num_rows == 0
    # rebuilding train replaces train only
    io.write_shards(_rows(3, "train"), two_splits, "train", 1, record={"command": "build c"})
    m = io.read_manifest(two_splits)
    assert m["counts"]["split"] == {"dev": 4, "train": 3} and m["splits"]["dev"]["command"] == "build b"
    assert _names(io.shard_files(two_splits)) == ["dev-00000-of-00001.parquet", "train-00000-of-00001.parquet"]
    assert io.read_rejects(two_splits, "train").num_rows == 0


def test_killed_or_foreign_directories_are_refused(two_splits, tmp_path):
    d = two_splits
    # a build of dev killed after writing shards: its entry is gone, its files are not listed
    io.begin_split(d, "dev")
    io.write_shard_files(_rows(4, "dev"), d, "dev", 2)
    with pytest.raises(io.DirectoryError, match="dev-00000-of-00002.parquet, dev-00001-of-00002.parquet not listed"):
        io.shard_files(d, "train")
    with pytest.raises(io.DirectoryError, match="not listed"):
        io.shard_files(d, "dev")
    # no manifest at all: refused, unless --no-manifest-check
    os.remove(os.path.join(d, S.MANIFEST_NAME))
    with pytest.raises(io.DirectoryError, match="no manifest.json: an unfinished build.*--no-manifest-check"):
        io.shard_files(d, "train")
    assert _names(io.shard_files(d, "dev", check=False)) == [
        "dev-00000-of-00002.parquet",
        "dev-00001-of-00002.parquet",
    ]
    # a manifest that does not parse, a listed file with another row count, a listed file missing
    e = str(tmp_path / "e")
    io.write_shards(_rows(5, "x"), e, "train", 1)
    good = io.read_manifest(e)
    with open(os.path.join(e, S.MANIFEST_NAME), "w") as f:
        f.write("{not json")
    with pytest.raises(io.DirectoryError, match="manifest.json does not parse"):
        io.shard_files(e, "train")
    io.write_manifest(e, {**good, "splits": {"train": {**good["splits"]["train"], "file_rows": {}, "rows": 6}}})
    with pytest.raises(io.DirectoryError, match="split 'train' of .* holds 5 rows, manifest.json says 6"):
        io.shard_files(e, "train")
    os.remove(os.path.join(e, "train-00000-of-00001.parquet"))
    with pytest.raises(io.DirectoryError, match="train-00000-of-00001.parquet is listed in manifest.json but missing"):
        io.shard_files(e, "train")


def test_killed_build_is_refused_by_train_mine_export_and_inspect(two_splits, tmp_path, capsys):
    io.begin_split(two_splits, "train")  # killed: train's shards half written, no entry
    io.write_shard_files(_rows(3, "train"), two_splits, "train", 3)
    commands = [
        ["train", "--data", two_splits, "--model", "m", "--output", str(tmp_path / "t"), "--max-steps", "1"],
        ["mine", "--input", two_splits, "--output", str(tmp_path / "m"), "--model", "m"],
        ["export", "--input", two_splits, "--format", "jsonl", "--output", str(tmp_path / "x")],
        ["inspect", two_splits],
    ]
    for argv in commands:
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "not listed in manifest.json" in err, err
    assert not any((tmp_path / n).exists() for n in ("t", "m", "x"))  # nothing written


def test_inspect_and_export_split_flags(two_splits, tmp_path, capsys):
    assert cli.main(["inspect", two_splits, "--json", "--split", "dev"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["rows"] == 4 and s["counts"]["split"] == {"dev": 4} and s["rejects"] == {}
    assert cli.main(["inspect", two_splits, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["counts"]["split"] == {"dev": 4, "train": 10}
    out = tmp_path / "x"
    assert cli.main(["export", "--input", two_splits, "--format", "jsonl", "--output", str(out)]) == 0
    assert sorted(os.listdir(out)) == [
        "export_manifest.json",
        "train-00000-of-00002.jsonl",
        "train-00001-of-00002.jsonl",
    ]


def test_the_lock_refuses_a_second_writer_and_names_a_stale_lock(tmp_path):
    d = str(tmp_path / "d")
    with io.output_lock(d, "build snli"):
        assert os.path.isfile(os.path.join(d, S.LOCK_NAME))
        with pytest.raises(io.DirectoryError, match=r"is being written by `build snli` \(pid \d+"):
            with io.output_lock(d, "mine"):
                pass
    assert not os.path.exists(d)  # released, and the directory it created for nothing is gone
    os.makedirs(d)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    with open(os.path.join(d, S.LOCK_NAME), "w") as f:
        json.dump({"pid": int(dead.stdout), "host": os.uname().nodename, "command": "mine"}, f)
    with pytest.raises(io.DirectoryError, match=f"which is no longer running; .*delete {d}/{S.LOCK_NAME}"):
        with io.output_lock(d, "mine"):
            pass


_SECOND = """
import os, sys, time
from negminer import cli
import negminer.pipelines.snli  # imported before the wait, so it starts at once
lock = sys.argv[1]
while not os.path.exists(lock):
    time.sleep(0.01)
sys.exit(cli.main(sys.argv[2:]))
"""


@pytest.mark.slow
def test_two_concurrent_builds_into_one_directory(tmp_path):
    """Two real `negminer build snli` processes into one directory: the second refuses, the first completes."""
    lines = shared_file("nli", "jack_1000_samples_snli_1.0_train.jsonl").read_text().splitlines(keepends=True)
    big = tmp_path / "big.jsonl"
    big.write_text("".join(lines) * 4)
    out = tmp_path / "out"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    args = ["build", "snli", "--input", str(big), "--output", str(out)]
    pipes = dict(cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # the second process is ready first and starts its build the moment the first one holds the directory
    second = subprocess.Popen(
        [sys.executable, "-c", _SECOND, str(out / S.LOCK_NAME), *args, "--split", "dev"], **pipes
    )
    first = subprocess.Popen([sys.executable, "-m", "negminer", *args, "--split", "train"], **pipes)
    _, err2 = second.communicate(timeout=300)
    _, err1 = first.communicate(timeout=300)
    assert first.returncode == 0, err1.decode()
    assert second.returncode == 2, err2.decode()
    assert "is being written by `build snli`" in err2.decode() and S.LOCK_NAME in err2.decode()
    m = io.read_manifest(str(out))
    assert set(m["splits"]) == {"train"} and not (out / S.LOCK_NAME).exists()
    assert sum(1 for _ in io.iter_rows(str(out))) == m["rows"] > 0  # consistent: every listed row, nothing else


@pytest.mark.slow
def test_building_dev_after_train_keeps_trains_manifest_entry_and_rejects(tmp_path):
    src = str(shared_file("nli", "jack_1000_samples_snli_1.0_train.jsonl"))
    out = str(tmp_path / "snli")
    assert cli.main(["build", "snli", "--input", src, "--output", out, "--num-shards", "2"]) == 0
    train = io.read_manifest(out)["splits"]["train"]
    train_rejects = io.read_rejects(out, "train")
    assert train["rejects_total"] == train_rejects.num_rows > 0
    dev_src = tmp_path / "dev.jsonl"
    dev_src.write_text("".join(open(src).readlines()[:50]) + "not json\n")
    assert cli.main(["build", "snli", "--input", str(dev_src), "--output", out, "--split", "dev"]) == 0
    m = io.read_manifest(out)
    assert m["splits"]["train"] == train and io.read_rejects(out, "train").equals(train_rejects)
    assert m["splits"]["dev"]["rejects"]["malformed_json"] == 1
    assert m["rows"] == train["rows"] + m["splits"]["dev"]["rows"]
    assert m["rejects_total"] == train["rejects_total"] + m["splits"]["dev"]["rejects_total"]
    assert len(io.shard_files(out, "train")) == 2 and len(io.shard_files(out, "dev")) == 1
