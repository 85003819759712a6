"""An OpenAI-compatible embeddings endpoint as the miner's encoder: equal to the local encoder on a real server
(LitServe + sentence-transformers serving the bundled MiniLM), retries counted, cache keyed by the model name."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest

from negminer import cli
from negminer.mining.config import MineConfig
from negminer.mining.mine import mine
from negminer.mining.remote import EndpointEncoder
from negminer.pipelines import io
from tests.llm_servers import FaultServer, embeddings_body, free_port
from tests.mining.conftest import mine_config

TEXTS = ["The river flows through the city.", "what is the capital of france", "Paris", "a" * 3000]


def _unit(v):
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_retries_are_counted_and_order_is_kept():
    with FaultServer(["429", "close", "502"], ok_body=embeddings_body) as srv:
        enc = EndpointEncoder(srv.base_url, "fake-emb", concurrency=1, max_inputs=3)
        enc.cfg = dataclasses.replace(enc.cfg, backoff_s=0.01)
        got = enc.embedder("q: ")(TEXTS)  # (4, 8): two requests of 3 + 1
        sent = [t for _, _, body in srv.seen for t in body["input"]]
    assert enc.stats.retries == {"http_429": 1, "connection": 1, "http_502": 1}
    want = _unit([embeddings_body({"input": ["q: " + t], "model": "m"})["data"][0]["embedding"] for t in TEXTS])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    assert got.dtype == np.float32 and sent[-4:] == ["q: " + t for t in TEXTS]


def test_api_model_flag_is_required_with_a_url_and_only_then(tmp_path):
    base = dict(input="in", output=str(tmp_path / "o"), work_dir=str(tmp_path / "w"))
    with pytest.raises(ValueError, match="--api-model"):
        MineConfig(model="http://127.0.0.1:1/v1", **base)
    with pytest.raises(ValueError, match="--api-model"):
        MineConfig(model="some/local-model", api_model="x", **base)


def test_unreachable_endpoint_is_one_line_before_reading(mine_data, tmp_path, capsys):
    url = f"http://127.0.0.1:{free_port()}/v1"
    argv = ["mine", "--input", mine_data["input"], "--output", str(tmp_path / "o"), "--model", url]
    argv += ["--api-model", "m", "--work-dir", str(tmp_path / "w")]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot reach" in err and url in err and "\n" not in err
    assert not (tmp_path / "o").exists()


def test_mine_through_endpoint_caches_by_model_name(mine_data, tmp_path):
    with FaultServer([], ok_body=embeddings_body) as srv:
        cfg = mine_config(mine_data, tmp_path, "unused", model=srv.base_url, api_model="fake-emb")
        m1 = mine(cfg)
        asked = len(srv.seen)
        m2 = mine(cfg)  # everything is in the embedding cache: the endpoint is not asked again
        assert len(srv.seen) == asked > 0
    assert m2["mining"]["encoded"] == {"documents": 0, "queries": 0}
    assert m1["rows"] == m2["rows"] > 0
    metas = [json.load(open(os.path.join(r, "meta.json"))) for r, _, f in os.walk(cfg.work_dir) if "meta.json" in f]
    assert metas and all(m["model"] == "fake-emb" and m["kind"] == "openai-embeddings" for m in metas)
    assert all(srv.base_url not in json.dumps(m) for m in metas)  # the URL is not part of the key


@pytest.mark.slow  # the LitServe server loads MiniLM in its own process: ~15-30 s
def test_endpoint_embeddings_equal_the_local_encoder(embedding_server, mine_data, tmp_path):
    import torch

    from negminer.mining.encode import Embedder
    from negminer.training.model import Encoder

    url, model_dir = embedding_server
    local_enc = Encoder.from_pretrained(model_dir)
    for prompt in (None, "query: "):
        local = Embedder(local_enc, prompt, "cpu", torch.float32, "x")(TEXTS)
        remote = EndpointEncoder(url, "all-MiniLM-L6-v2", max_inputs=2).embedder(prompt)(TEXTS)
        np.testing.assert_allclose(remote, local, rtol=0, atol=2e-5)
    # the whole miner: the endpoint and the local model choose the same negatives
    out_local = mine(mine_config(mine_data, tmp_path / "a", model_dir, max_length=256))
    out_remote = mine(
        mine_config(mine_data, tmp_path / "b", model_dir, model=url, api_model="all-MiniLM-L6-v2", max_length=256)
    )
    assert out_local["rows"] == out_remote["rows"]

    def negatives(d):
        return sorted((r["query"], r["positive"], r["negative_ids"]) for r in io.iter_rows(str(d)))

    assert negatives(tmp_path / "a" / "out") == negatives(tmp_path / "b" / "out")
