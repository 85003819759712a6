"""An encoder served over HTTP: an OpenAI-compatible `/embeddings` endpoint in place of a local model in the miner.

Usage: negminer mine --input shards --output mined --model http://localhost:8000/v1 --api-model BAAI/bge-m3

`EndpointEncoder` stands where `training.model.Encoder` stands (the miner asks it for its fingerprint and an
embedder per prompt); `EndpointEmbedder` has the interface of `mining.encode.Embedder`: `texts -> (n, D) float32`
L2-normalised, and `cache_fields()` for the embedding cache, which is keyed by the endpoint's model name (not its
URL: the same model moved to another host keeps its cache). Requests go `max_inputs` texts at a time,
`concurrency` in flight, with the retries of negminer/llm.py (429, 5xx, timeouts, dropped connections: counted).
"""

from __future__ import annotations

import concurrent.futures as cf
from typing import Any

import numpy as np

from negminer.llm import LLMConfig, LLMError, Stats, check_endpoint, openai_client, with_retries

KIND = "openai-embeddings"


def is_endpoint(model: str) -> bool:
    """`--model` names an HTTP endpoint rather than a local directory or hub name."""
    return model.startswith(("http://", "https://"))


class EndpointEncoder:
    """The endpoint and model; makes one `EndpointEmbedder` per prompt. `pooling`/`max_length` are for manifests."""

    pooling = "endpoint"
    max_length = 0  # the server truncates (or refuses) long inputs by its own settings

    def __init__(
        self, base_url: str, model: str, concurrency: int = 4, max_inputs: int = 64, dimensions: int | None = None
    ):
        if not model:
            raise ValueError("--model is an endpoint URL: name the model it serves with --api-model NAME")
        if max_inputs < 1:
            raise ValueError(f"max_inputs must be >= 1, got {max_inputs}")
        self.cfg = LLMConfig(model=model, base_url=base_url, concurrency=concurrency)
        self.max_inputs, self.dimensions = max_inputs, dimensions
        self.stats = Stats()
        self.client = openai_client(self.cfg)

    def check(self) -> None:
        """One line (LLMError) now if the endpoint cannot be reached or refuses the key."""
        check_endpoint(self.client, self.cfg)

    def fingerprint(self) -> str:
        return f"{KIND}:{self.cfg.model}" + (f":{self.dimensions}" if self.dimensions else "")

    def embedder(self, prompt: str | None) -> EndpointEmbedder:
        return EndpointEmbedder(self, prompt)

    def _request(self, texts: list[str]) -> np.ndarray:
        import openai

        kw: dict[str, Any] = {"model": self.cfg.model, "input": texts, "encoding_format": "float"}
        if self.dimensions:
            kw["dimensions"] = self.dimensions
        try:
            r = with_retries(lambda: self.client.embeddings.create(**kw), self.cfg, self.stats)
        except openai.APIStatusError as exc:  # 4xx other than 429: the request itself is wrong; no row to blame
            raise LLMError(f"{self.cfg.base_url}: embeddings HTTP {exc.status_code}: {exc.message}") from exc
        data = sorted(r.data, key=lambda d: d.index)
        if len(data) != len(texts):
            raise LLMError(f"{self.cfg.base_url}: asked for {len(texts)} embeddings, got {len(data)}")
        return np.asarray([d.embedding for d in data], dtype=np.float32)  # (n, D)

    def embed(self, texts: list[str]) -> np.ndarray:
        """texts -> (n, D) float32 L2-normalised, in the order given."""
        parts = [texts[i : i + self.max_inputs] for i in range(0, len(texts), self.max_inputs)]
        with cf.ThreadPoolExecutor(max_workers=min(self.cfg.concurrency, max(len(parts), 1))) as pool:
            out = list(pool.map(self._request, parts))
        if len({o.shape[1] for o in out}) > 1:
            raise LLMError(f"{self.cfg.base_url}: embeddings of different sizes {sorted({o.shape[1] for o in out})}")
        emb = np.concatenate(out) if out else np.zeros((0, 0), np.float32)
        if not np.isfinite(emb).all():
            raise LLMError(f"{self.cfg.base_url}: the endpoint returned non-finite embeddings")
        norms = np.linalg.norm(emb, axis=1, keepdims=True)
        return emb / np.maximum(norms, 1e-12)


class EndpointEmbedder:
    """Same interface as `mining.encode.Embedder`, over an `EndpointEncoder`."""

    def __init__(self, encoder: EndpointEncoder, prompt: str | None):
        self.encoder, self.prompt = encoder, prompt or None

    def cache_fields(self) -> dict[str, Any]:
        return {
            "kind": KIND,
            "fingerprint": self.encoder.fingerprint(),  # names the endpoint's model
            "model": self.encoder.cfg.model,
            "dimensions": self.encoder.dimensions,
            "prompt": self.prompt or "",
            "dtype": "float32",
        }

    def __call__(self, texts: list[str]) -> np.ndarray:
        return self.encoder.embed([(self.prompt or "") + t for t in texts])
