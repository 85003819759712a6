"""One small LLM client: an OpenAI-compatible endpoint or a local transformers causal LM, with a response cache.

Usage:
    llm = LLM(LLMConfig(model="Qwen/Qwen2.5-0.5B-Instruct", base_url="http://localhost:8000/v1", cache_dir="cache"))
    llm.check()                                   # one-line LLMError now if the endpoint cannot be reached
    answers = llm.generate(["Write a query for: ..."], Sampling(max_new_tokens=32))
    answers[0].text, answers[0].error, llm.stats  # error is None or a reason; stats count retries and cache hits

Answers are cached on disk by a content key (model, system prompt, prompt, sampling settings, mode), so a rerun
or a resumed job asks only for what is missing. The API key is read from the environment and never logged.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import logging
import os
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

from apache_beam.io.filesystems import FileSystems

from negminer.pipelines.io import join, write_bytes_atomic

log = logging.getLogger("negminer.llm")
T = TypeVar("T")
CACHE_SUFFIX = ".answers.jsonl"


class LLMError(RuntimeError):
    """A failure that stops the job: endpoint unreachable, key refused, retries exhausted. One line."""


@dataclass(frozen=True)
class Sampling:
    """Decoding settings; part of the cache key. temperature 0 = greedy (the same answer on every rerun)."""

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


@dataclass(frozen=True)
class LLMConfig:
    """Which model, where, and how hard to push it.

    `model` is a local directory or hub name (transformers back end) or, with `base_url`, the model name the
    OpenAI-compatible endpoint serves. `chat` uses chat completions (instruct models) rather than plain completions.
    """

    model: str
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    chat: bool = True
    system: str | None = None
    concurrency: int = 8  # requests in flight (endpoint) / prompts per generate() call (local)
    max_retries: int = 5
    backoff_s: float = 0.5  # first wait; doubles each retry, with jitter, capped by max_backoff_s
    max_backoff_s: float = 30.0
    timeout_s: float = 120.0
    cache_dir: str | None = None
    device: str = "auto"

    def __post_init__(self):
        if not self.model:
            raise ValueError("an LLM model name or path is required")
        if self.base_url is not None and not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {self.base_url!r}")
        for name in ("concurrency", "timeout_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.max_retries < 0 or self.backoff_s < 0:
            raise ValueError("max_retries and backoff_s must be >= 0")

    @property
    def backend(self) -> str:
        return "openai" if self.base_url else "transformers"


@dataclass
class Answer:
    """One prompt's outcome: `text` when it worked, else `error` names the reason (never a made-up text)."""

    text: str | None
    finish_reason: str | None = None
    error: str | None = None
    cached: bool = False


@dataclass
class Stats:
    requests: int = 0
    retries: Counter = field(default_factory=Counter)  # reason -> count ("http_429", "http_503", "connection", ...)
    errors: Counter = field(default_factory=Counter)
    cache_hits: int = 0
    cache_misses: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def bump(self, what: str, reason: str | None = None) -> None:
        """Count one request / retry / error from any thread."""
        with self._lock:
            if reason is None:
                setattr(self, what, getattr(self, what) + 1)
            else:
                getattr(self, what)[reason] += 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "retries": dict(self.retries),
            "errors": dict(self.errors),
            "cache_hits": self.cache_hits,
            "cache_misses": self.cache_misses,
        }


def cache_key(model: str, prompt: str, sampling: Sampling, system: str | None = None, chat: bool = True) -> str:
    """Content key of one request: everything the answer depends on."""
    blob = json.dumps(
        {"model": model, "system": system or "", "prompt": prompt, "chat": chat, "sampling": asdict(sampling)},
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class AnswerCache:
    """Answers by content key in JSONL chunk files (local or gs://), each written atomically: a killed run keeps
    every chunk it finished, and concurrent writers never share a file."""

    def __init__(self, cache_dir: str):
        self.dir = cache_dir
        self._mem: dict[str, dict] = {}
        for meta in FileSystems.match([join(cache_dir, "*" + CACHE_SUFFIX)])[0].metadata_list:
            with FileSystems.open(meta.path) as f:
                for line in f.read().decode("utf-8").splitlines():
                    rec = json.loads(line)
                    self._mem[rec["key"]] = rec

    def __len__(self) -> int:
        return len(self._mem)

    def get(self, key: str) -> dict | None:
        return self._mem.get(key)

    def put(self, records: list[dict]) -> None:
        if not records:
            return
        data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
        write_bytes_atomic(join(self.dir, f"{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex}{CACHE_SUFFIX}"), data)
        self._mem.update((r["key"], r) for r in records)


def retry_reason(exc: BaseException) -> str | None:
    """Why a failed request is worth retrying ("http_429", "http_5xx", "connection", "timeout"), else None."""
    import openai

    if isinstance(exc, openai.APITimeoutError):
        return "timeout"
    if isinstance(exc, openai.APIConnectionError):
        return "connection"
    if isinstance(exc, openai.APIStatusError) and (exc.status_code == 429 or exc.status_code >= 500):
        return f"http_{exc.status_code}"
    return None


def _retry_after(exc: BaseException) -> float | None:
    response = getattr(exc, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def with_retries(call: Callable[[], T], cfg: LLMConfig, stats: Stats) -> T:
    """`call()` retried with exponential backoff (honouring Retry-After) on 429, 5xx, timeouts and lost
    connections, each retry counted by reason; other errors propagate at once; exhausted retries -> LLMError."""
    for attempt in range(cfg.max_retries + 1):
        stats.bump("requests")
        try:
            return call()
        except Exception as exc:
            reason = retry_reason(exc)
            if reason is None:
                raise
            if attempt == cfg.max_retries:
                stats.bump("errors", reason)
                raise LLMError(
                    f"{cfg.base_url}: gave up after {cfg.max_retries} retries, last error {reason}: {exc}"
                ) from exc
            stats.bump("retries", reason)
            wait = min(cfg.max_backoff_s, cfg.backoff_s * 2**attempt) * (0.5 + random.random() / 2)
            time.sleep(max(wait, min(_retry_after(exc) or 0.0, cfg.max_backoff_s)))
    raise AssertionError("unreachable")


def openai_client(cfg: LLMConfig):
    """An `openai.OpenAI` for `cfg.base_url` with its own retries off (ours count them)."""
    import openai

    key = os.environ.get(cfg.api_key_env) or "EMPTY"  # self-served endpoints (vLLM, TGI) accept any key
    return openai.OpenAI(base_url=cfg.base_url, api_key=key, max_retries=0, timeout=cfg.timeout_s)


def check_endpoint(client: Any, cfg: LLMConfig) -> None:
    """Fail in one line before any work when the endpoint is unreachable or refuses the key."""
    import openai

    try:
        client.models.list(timeout=min(cfg.timeout_s, 10.0))
    except (openai.APIConnectionError, openai.APITimeoutError) as exc:
        raise LLMError(f"cannot reach the OpenAI-compatible endpoint {cfg.base_url}: {exc}") from exc
    except openai.AuthenticationError as exc:
        raise LLMError(f"{cfg.base_url} refused the API key (read from ${cfg.api_key_env}): HTTP 401") from exc
    except openai.APIStatusError as exc:  # reachable; some servers do not list models
        log.info("%s: GET /models answered HTTP %s; going on", cfg.base_url, exc.status_code)


def answer_from_response(r: Any) -> Answer:
    """An OpenAI chat or text completion response -> Answer; a refusal or a filtered answer is a reason, not text."""
    choice = r.choices[0]
    message = getattr(choice, "message", None)
    if message is not None and getattr(message, "refusal", None):
        return Answer(None, choice.finish_reason, error="refused")
    if choice.finish_reason == "content_filter":
        return Answer(None, choice.finish_reason, error="content_filter")
    text = message.content if message is not None else choice.text
    return Answer(text or "", choice.finish_reason)


class OpenAIBackend:
    """Chat or text completions from an OpenAI-compatible endpoint, `concurrency` requests in flight."""

    def __init__(self, cfg: LLMConfig, stats: Stats):
        self.cfg, self.stats, self.client = cfg, stats, openai_client(cfg)

    def check(self) -> None:
        check_endpoint(self.client, self.cfg)

    def _one(self, prompt: str, s: Sampling) -> Answer:
        import openai

        kw: dict[str, Any] = {"model": self.cfg.model, "max_tokens": s.max_new_tokens, "temperature": s.temperature}
        kw.update({"top_p": s.top_p} if s.top_p < 1 else {})
        kw.update({"seed": s.seed} if s.seed is not None else {})
        try:
            if self.cfg.chat:
                messages = [{"role": "system", "content": self.cfg.system}] if self.cfg.system else []
                messages.append({"role": "user", "content": prompt})
                r = with_retries(
                    lambda: self.client.chat.completions.create(messages=messages, **kw), self.cfg, self.stats
                )
            else:
                r = with_retries(lambda: self.client.completions.create(prompt=prompt, **kw), self.cfg, self.stats)
        except openai.APIStatusError as exc:  # 4xx other than 429: this prompt, not the endpoint, is the problem
            self.stats.bump("errors", f"http_{exc.status_code}")
            return Answer(None, None, error=f"http_{exc.status_code}")
        return answer_from_response(r)

    def complete(self, prompts: list[str], s: Sampling) -> list[Answer]:
        with cf.ThreadPoolExecutor(max_workers=min(self.cfg.concurrency, max(len(prompts), 1))) as pool:
            return list(pool.map(lambda p: self._one(p, s), prompts))


class TransformersBackend:
    """A local causal LM (directory or hub name): left-padded batches, greedy when temperature is 0."""

    def __init__(self, cfg: LLMConfig, stats: Stats):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.cfg, self.stats = cfg, stats
        self.device = "cuda" if cfg.device == "auto" and torch.cuda.is_available() else cfg.device
        self.device = "cpu" if self.device == "auto" else self.device
        self.tok = AutoTokenizer.from_pretrained(cfg.model, padding_side="left")
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token
        dtype = torch.bfloat16 if self.device == "cuda" else torch.float32  # bf16 is emulated (slow) on most CPUs
        self.model = AutoModelForCausalLM.from_pretrained(cfg.model, dtype=dtype).to(self.device).eval()

    def check(self) -> None:
        pass

    def _render(self, prompt: str) -> str:
        if not (self.cfg.chat and self.tok.chat_template):
            return prompt
        messages = [{"role": "system", "content": self.cfg.system}] if self.cfg.system else []
        messages.append({"role": "user", "content": prompt})
        return self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def complete(self, prompts: list[str], s: Sampling) -> list[Answer]:
        import torch

        out: list[Answer] = []
        for lo in range(0, len(prompts), self.cfg.concurrency):
            texts = [self._render(p) for p in prompts[lo : lo + self.cfg.concurrency]]
            templated = bool(self.cfg.chat and self.tok.chat_template)  # the template already has special tokens
            batch = self.tok(texts, return_tensors="pt", padding=True, add_special_tokens=not templated)
            batch = {k: v.to(self.device) for k, v in batch.items()}
            gen: dict[str, Any] = {"max_new_tokens": s.max_new_tokens, "pad_token_id": self.tok.pad_token_id}
            if s.temperature > 0:
                gen.update(do_sample=True, temperature=s.temperature, top_p=s.top_p)
            else:  # greedy, whatever the model's generation_config says
                gen.update(do_sample=False, temperature=None, top_p=None, top_k=None)
            if s.seed is not None:
                torch.manual_seed(s.seed)
            self.stats.bump("requests")
            with torch.inference_mode():
                ids = self.model.generate(**batch, **gen)
            new = ids[:, batch["input_ids"].shape[1] :]  # (B, new tokens)
            for row in new:
                ended = self.tok.eos_token_id is not None and bool((row == self.tok.eos_token_id).any())
                out.append(Answer(self.tok.decode(row, skip_special_tokens=True), "stop" if ended else "length"))
        return out


class LLM:
    """The one interface: prompts -> answers, from the cache when it has them, else from the back end."""

    def __init__(self, cfg: LLMConfig, flush_every: int = 64):
        self.cfg, self.flush_every, self.stats = cfg, flush_every, Stats()
        self.cache = AnswerCache(cfg.cache_dir) if cfg.cache_dir else None
        self._backend: OpenAIBackend | TransformersBackend | None = None

    @property
    def backend(self) -> OpenAIBackend | TransformersBackend:
        if self._backend is None:  # loaded on first use: a fully cached rerun never loads the model
            cls = OpenAIBackend if self.cfg.base_url else TransformersBackend
            self._backend = cls(self.cfg, self.stats)
        return self._backend

    def check(self) -> None:
        """Raise LLMError now (one line) when the endpoint cannot be reached; loads a local model."""
        self.backend.check()

    def provenance(self, sampling: Sampling) -> dict[str, Any]:
        """What to record beside generated rows (no key, no secrets)."""
        where = {"base_url": self.cfg.base_url} if self.cfg.base_url else {}
        return {"model": self.cfg.model, "backend": self.cfg.backend, **where, "sampling": asdict(sampling)}

    def generate(self, prompts: list[str], sampling: Sampling | None = None) -> list[Answer]:
        s = sampling or Sampling()
        keys = [cache_key(self.cfg.model, p, s, self.cfg.system, self.cfg.chat) for p in prompts]
        answers: list[Answer | None] = [None] * len(prompts)
        todo: dict[str, list[int]] = {}
        for i, k in enumerate(keys):
            rec = self.cache.get(k) if self.cache else None
            if rec is not None:
                answers[i] = Answer(rec["text"], rec.get("finish_reason"), cached=True)
                self.stats.cache_hits += 1
            else:
                todo.setdefault(k, []).append(i)  # a prompt repeated in one call is asked once
        self.stats.cache_misses += len(todo)
        pending = list(todo.items())
        for lo in range(0, len(pending), self.flush_every):
            part = pending[lo : lo + self.flush_every]
            got = self.backend.complete([prompts[idx[0]] for _, idx in part], s)
            done = []
            for (k, idx), a in zip(part, got, strict=True):
                for i in idx:
                    answers[i] = a
                if a.error is None:  # errors are not cached: a rerun asks again
                    done.append({"key": k, "text": a.text, "finish_reason": a.finish_reason})
            if self.cache is not None:
                self.cache.put(done)
        return answers  # type: ignore[return-value]


def stats_summary(stats: Stats | Mapping[str, Any]) -> str:
    d = stats.as_dict() if isinstance(stats, Stats) else dict(stats)
    total = d["cache_hits"] + d["cache_misses"]
    rate = d["cache_hits"] / total if total else 0.0
    return (
        f"{d['requests']} requests, {sum(d['retries'].values())} retries {d['retries'] or ''}, "
        f"{sum(d['errors'].values())} errors {d['errors'] or ''}, cache hits {d['cache_hits']}/{total} ({rate:.0%})"
    )
