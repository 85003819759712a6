"""Mistakes a new user makes are caught before any work, in one line, with exit status 2 (issue 11, point 5)."""

from __future__ import annotations

import gzip
import json
import os

import pytest

from negminer import cli
from negminer.pipelines import io
from negminer.pipelines import schema as S
from tests.conftest import shared_file


def run(argv: list[str], capsys) -> tuple[int, str]:
    try:
        code = cli.main(argv)
    except SystemExit as e:  # argparse's usage errors
        code = e.code
    return code, capsys.readouterr().err.strip()


@pytest.fixture
def shards(tmp_path) -> str:
    d = str(tmp_path / "shards")
    rows = [S.TupleRow(source="t", pair_type="qa", query=f"q {i}", positive=f"p {i}").to_dict() for i in range(4)]
    io.write_shards(rows, d, "train", 1)
    return d


def test_output_naming_an_existing_file(tmp_path, shards, capsys):
    taken = tmp_path / "taken.txt"
    taken.write_text("not a directory\n")
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"premise": "A dog runs.", "hypothesis": "An animal moves.", "label": 0}) + "\n")
    commands = [
        ["build", "snli", "--input", str(src), "--output", str(taken)],
        ["mine", "--input", shards, "--output", str(taken), "--model", str(tmp_path / "no-model")],
        ["train", "--data", shards, "--model", "m", "--output", str(taken), "--max-steps", "1"],
        ["export", "--input", shards, "--format", "jsonl", "--output", str(taken)],
    ]
    for argv in commands:
        code, err = run(argv, capsys)
        assert code == 2 and err.count("\n") == 0 and f"{taken} is an existing file" in err, (argv, err)
    assert taken.read_text() == "not a directory\n"


def test_mine_model_that_does_not_exist(tmp_path, shards, capsys, monkeypatch):
    import negminer.mining.mine as mine_module

    def no_loading(*a, **k):
        raise AssertionError("nothing may be loaded")

    monkeypatch.setattr(mine_module, "load_encoder", no_loading)
    base = ["mine", "--input", shards, "--output", str(tmp_path / "o"), "--work-dir", str(tmp_path / "w")]
    code, err = run([*base, "--model", str(tmp_path / "nowhere" / "model")], capsys)
    assert code == 2 and err.count("\n") == 0 and "no such model directory" in err and "nowhere" in err
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    code, err = run([*base, "--model", "some-org/not-a-cached-model"], capsys)
    assert code == 2 and err.count("\n") == 0 and "not in the Hugging Face cache" in err
    assert not (tmp_path / "o").exists()


def test_mistyped_builder_flag_fails_unless_beam_knows_it(tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"premise": "A dog runs.", "hypothesis": "An animal moves.", "label": 0}) + "\n")
    base = ["build", "snli", "--input", str(src), "--output", str(tmp_path / "o")]
    code, err = run([*base, "--nm-shards", "3"], capsys)
    assert code == 2 and "--nm-shards 3" in err and "Apache Beam" in err
    assert not (tmp_path / "o").exists()
    code, _ = run([*base, "--direct_num_workers", "1"], capsys)  # a Beam flag passes
    assert code == 0 and (tmp_path / "o" / S.MANIFEST_NAME).exists()


def test_input_that_is_all_unreadable_exits_non_zero_with_the_reason(tmp_path, capsys):
    (tmp_path / "random.jsonl.gz").write_bytes(os.urandom(2000))
    code, err = run(
        ["build", "snli", "--input", str(tmp_path / "random.jsonl.gz"), "--output", str(tmp_path / "o")], capsys
    )
    assert code == 2 and "wrote 0 rows" in err and "unreadable_file=1" in err and err.count("\n") == 0


def test_truncated_gz_is_its_own_reject(tmp_path):
    from negminer.pipelines import snli

    lines = shared_file("nli", "jack_1000_samples_snli_1.0_train.jsonl").read_bytes()
    whole = gzip.compress(lines * 20)
    (tmp_path / "cut.jsonl.gz").write_bytes(whole[: len(whole) // 2])
    manifest = snli.build(snli.SnliConfig(inputs=(str(tmp_path / "cut.jsonl.gz"),), output=str(tmp_path / "o")), [])
    assert manifest["rejects"].get("truncated_file") == 1 and manifest["rows"] > 0
    raw = io.read_rejects(str(tmp_path / "o")).to_pylist()
    cut = [r for r in raw if r[S.REJECT_REASON] == "truncated_file"]
    assert "cut short after line" in cut[0][S.REJECT_RAW]
