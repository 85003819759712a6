"""The train command's settings: parsed from the CLI, bad values refused with the value in the message."""

from __future__ import annotations

import argparse

import pytest

from negminer.training.config import TrainConfig
from negminer.training.train import add_arguments


def _parse(*argv: str) -> TrainConfig:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return TrainConfig.from_args(parser.parse_args(["--model", "m", "--output", "o", *argv]))


def test_cli_flags_reach_the_config():
    cfg = _parse(
        "--data",
        "a",
        "--data",
        "b",
        "--max-steps",
        "5",
        "--grad-cache-chunk",
        "16",
        "--loss",
        "infonce-bidirectional",
        "--same-source-batches",
        "--query-prompt",
        "query: ",
        "--precision",
        "bf16",
    )
    assert cfg.data == ("a", "b") and cfg.max_steps == 5 and cfg.grad_cache_chunk == 16
    assert cfg.loss == "infonce-bidirectional" and cfg.same_source_batches and cfg.query_prompt == "query: "
    assert cfg.batch_size == 128 and cfg.num_negatives == 7 and cfg.temperature == 0.05 and cfg.lr == 2e-5


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--max-steps", "0"), "--max-steps must be > 0, got 0"),
        (("--max-steps", "3", "--epochs", "1"), "exactly one of --max-steps and --epochs"),
        (("--max-steps", "3", "--batch-size", "1"), "--batch-size must be >= 2"),
        (("--max-steps", "3", "--temperature", "0"), "--temperature must be > 0, got 0.0"),
        (("--max-steps", "3", "--warmup", "1.5"), "got 1.5"),
        (("--max-steps", "3", "--grad-cache-chunk", "0"), "--grad-cache-chunk"),
    ],
)
def test_bad_values_are_refused(argv, message):
    with pytest.raises(ValueError, match=message.replace("-", r"\-").replace(".", r"\.")):
        _parse("--data", "a", *argv)
