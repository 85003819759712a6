"""The encoder: a Hugging Face model + pooling (mean / CLS / last token) + L2 norm, saved so others load it."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModel, AutoTokenizer, BatchEncoding, PreTrainedModel, PreTrainedTokenizerBase

from negminer.pipelines import io

POOLINGS = ("mean", "cls", "last")
_VOLATILE_CONFIG_KEYS = {"_name_or_path", "transformers_version"}  # where it was loaded from is not its identity
_ST_POOLING_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_lasttoken": "last",
}


def check_model_ref(ref: str, flag: str = "--model") -> None:
    """Fail in one line, before anything loads, when `ref` can be neither a local model nor a hub model.

    A path (absolute, relative with `./`/`../`/`~`, or more than one `/`) must exist; a hub name (`org/name`)
    must be in the Hugging Face cache when the hub is offline (`HF_HUB_OFFLINE=1`).
    """
    if "://" in ref or os.path.exists(os.path.expanduser(ref)):
        return
    if ref.startswith(("/", "./", "../", "~")) or ref.count("/") > 1 or ref.endswith("/") or not ref.strip():
        raise FileNotFoundError(f"{flag} {ref}: no such model directory")
    from huggingface_hub import constants, try_to_load_from_cache

    if constants.HF_HUB_OFFLINE and not isinstance(try_to_load_from_cache(ref, "config.json"), str):
        raise FileNotFoundError(
            f"{flag} {ref}: not a local directory, and not in the Hugging Face cache (the hub is offline)"
        )


def follow_umask(out_dir: str | Path) -> None:
    """Weights written by safetensors are 0600 whatever the umask: give them the mode every other file gets."""
    for f in Path(out_dir).glob("*.safetensors"):
        io.follow_umask(str(f))


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, mode: str) -> torch.Tensor:
    """(B, T, D) hidden states and (B, T) mask -> (B, D) sentence embeddings.

    `last` takes the last non-pad token of each row and works with right or left padding.
    """
    if mode == "cls":
        return hidden[:, 0]
    mask = attention_mask.to(hidden.dtype).unsqueeze(-1)  # (B, T, 1)
    if mode == "mean":
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    if mode == "last":
        T = attention_mask.shape[1]
        positions = torch.arange(T, device=attention_mask.device).expand_as(attention_mask)  # (B, T)
        last = (positions * attention_mask.long()).max(dim=1).values  # index of the last real token, (B,)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    raise ValueError(f"pooling must be one of {POOLINGS}, got {mode!r}")


def resolve_pooling(name_or_path: str, pooling: str = "auto") -> str:
    """`auto`: the sentence-transformers pooling config when the model has one, last-token for decoders, else mean."""
    if pooling != "auto":
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be 'auto' or one of {POOLINGS}, got {pooling!r}")
        return pooling
    st_pooling = Path(name_or_path) / "1_Pooling" / "config.json"
    if st_pooling.is_file():
        cfg = json.loads(st_pooling.read_text())
        for key, mode in _ST_POOLING_KEYS.items():
            if cfg.get(key):
                return mode
    config = AutoConfig.from_pretrained(name_or_path)
    if _is_decoder(config):
        return "last"
    return "mean"


def _is_decoder(config) -> bool:
    """Decoder-only LMs: a causal-LM type that has no masked-LM head (BERT has both, Qwen2/Llama/GPT-2 only one)."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    kind = getattr(config, "model_type", "")
    if kind in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and kind not in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return True
    archs = getattr(config, "architectures", None) or []
    return bool(getattr(config, "is_decoder", False)) or any(a.endswith("ForCausalLM") for a in archs)


class Encoder(torch.nn.Module):
    """Text -> (B, D) embeddings. `tokenize` then `forward`; `save` writes a transformers + sentence-transformers dir."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        pooling: str = "mean",
        max_length: int = 512,
        normalize: bool = True,
    ):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if max_length < 2:
            raise ValueError(f"max_length must be >= 2, got {max_length}")
        self.model, self.tokenizer = model, tokenizer
        self.pooling, self.max_length, self.normalize = pooling, max_length, normalize
        if tokenizer.pad_token is None:  # decoder tokenizers often have none; padding is masked anyway
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str,
        pooling: str = "auto",
        max_length: int = 512,
        normalize: bool = True,
        trust_remote_code: bool = False,
        torch_dtype: torch.dtype | None = None,
    ) -> Encoder:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
        model = AutoModel.from_pretrained(
            name_or_path, use_safetensors=True, trust_remote_code=trust_remote_code, dtype=torch_dtype
        )
        return cls(model, tokenizer, resolve_pooling(name_or_path, pooling), max_length, normalize)

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    def tokenize(self, texts: list[str], prompt: str | None = None) -> BatchEncoding:
        """Prompt prepended; for last-token pooling an EOS is appended so the last state sees the whole text."""
        texts = [(prompt or "") + t for t in texts]
        if self.pooling != "last":
            return self.tokenizer(
                texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
            )
        eos = self.tokenizer.eos_token_id
        if eos is None:
            raise ValueError("last-token pooling needs a tokenizer with an eos_token")
        enc = self.tokenizer(texts, truncation=True, max_length=self.max_length - 1, padding=False)
        ids = [x if x and x[-1] == eos else [*x, eos] for x in enc["input_ids"]]
        return self.tokenizer.pad({"input_ids": ids}, padding=True, return_tensors="pt")

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **kw) -> torch.Tensor:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, **kw)
        emb = pool(out.last_hidden_state, attention_mask, self.pooling)  # (B, D)
        return F.normalize(emb, p=2, dim=-1) if self.normalize else emb

    def fingerprint(self) -> str:
        """Stable hash of the weights (values, names, shapes, dtypes) and the model config."""
        h = hashlib.blake2b(digest_size=16)
        config = {k: v for k, v in self.model.config.to_dict().items() if k not in _VOLATILE_CONFIG_KEYS}
        h.update(json.dumps(config, sort_keys=True, default=str).encode())
        for name, t in sorted(self.model.state_dict().items()):
            h.update(name.encode())
            h.update(str((tuple(t.shape), t.dtype)).encode())
            h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        return h.hexdigest()

    def save(self, out_dir: str, query_prompt: str | None = None, doc_prompt: str | None = None) -> None:
        """Write the HF model (safetensors) + tokenizer and the sentence-transformers module files."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(out, safe_serialization=True)
        follow_umask(out)
        self.tokenizer.save_pretrained(out)
        modules = [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        ]
        if self.normalize:
            modules.append(
                {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}
            )
            (out / "2_Normalize").mkdir(exist_ok=True)
        pooling_cfg = {
            "word_embedding_dimension": self.dim,
            "pooling_mode_cls_token": self.pooling == "cls",
            "pooling_mode_mean_tokens": self.pooling == "mean",
            "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False,
            "pooling_mode_weightedmean_tokens": False,
            "pooling_mode_lasttoken": self.pooling == "last",
            "include_prompt": True,
        }
        (out / "1_Pooling").mkdir(exist_ok=True)
        _write_json(out / "1_Pooling" / "config.json", pooling_cfg)
        _write_json(out / "modules.json", modules)
        _write_json(out / "sentence_bert_config.json", {"max_seq_length": self.max_length, "do_lower_case": False})
        prompts = {k: v for k, v in (("query", query_prompt), ("document", doc_prompt)) if v}
        _write_json(
            out / "config_sentence_transformers.json",
            {"prompts": prompts, "default_prompt_name": None, "similarity_fn_name": "cosine"},
        )


def _write_json(path: Path, obj) -> None:
    io.write_bytes_atomic(str(path), (json.dumps(obj, indent=2) + "\n").encode("utf-8"))
