"""Decoder-only transformer architecture, read from a Hugging Face ``config.json``.

Only the facts the memory and latency models need are kept.  Quirks handled
here, once, so nothing downstream has to know about them:

* ``head_dim`` may be absent (Llama, Mistral: ``hidden / heads``) or disagree
  with ``hidden / heads`` (Qwen3-0.6B/4B/32B), so ``q_dim = heads * head_dim``
  is used everywhere instead of ``hidden``.
* ``num_key_value_heads`` may be absent (then equal to the heads).
* Qwen3 normalises q and k per head (``qk_norm``).
* Mixture-of-experts configs are recognised and rejected with a clear message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tpsim.config import catalog
from tpsim.errors import InputError, NotSupportedError
from tpsim.hashing import sha256_file
from tpsim.units import HF_DTYPE_ALIASES

_MOE_KEYS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_intermediate_size")
_QK_NORM_TYPES = {"qwen3"}


@dataclass(frozen=True)
class ModelSpec:
    name: str
    model_type: str
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    max_position_embeddings: int
    tie_word_embeddings: bool
    torch_dtype: str
    qk_norm: bool
    source: str = ""
    sha256: str = ""

    @property
    def q_dim(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.head_dim

    def num_params(self) -> int:
        """Total parameters (tied embeddings counted once, no biases)."""
        h = self.hidden_size
        attn = h * (self.q_dim + 2 * self.kv_dim) + self.q_dim * h
        mlp = 3 * h * self.intermediate_size
        norms = 2 * h + (2 * self.head_dim if self.qk_norm else 0)
        embed = self.vocab_size * h * (1 if self.tie_word_embeddings else 2)
        return embed + self.num_layers * (attn + mlp + norms) + h


def _req_int(cfg: dict, key: str, where: str, positive: bool = True) -> int:
    if key not in cfg:
        raise InputError(f"{where}: missing field '{key}'; copy the model's config.json from Hugging Face unchanged")
    value = cfg[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"{where}: field '{key}' must be an integer, got {value!r}")
    if positive and value <= 0:
        raise InputError(f"{where}: field '{key}' must be positive, got {value}")
    return value


def parse_model_config(cfg: dict, name: str, where: str) -> ModelSpec:
    """Validate a parsed config.json; ``where`` names the file in messages."""
    if not isinstance(cfg, dict):
        raise InputError(f"{where}: expected a JSON object (a Hugging Face config.json)")
    if "text_config" in cfg and "hidden_size" not in cfg:
        cfg = {**cfg["text_config"], **{k: v for k, v in cfg.items() if k != "text_config"}}
    model_type = cfg.get("model_type")
    if not isinstance(model_type, str):
        raise InputError(f"{where}: missing field 'model_type'; copy the model's config.json from Hugging Face unchanged")
    moe = [k for k in _MOE_KEYS if cfg.get(k)]
    if moe or "moe" in model_type:
        raise NotSupportedError(
            f"{where}: {name} is a mixture-of-experts model ({', '.join(moe) or model_type}); "
            "MoE not supported yet, choose a dense model"
        )
    hidden = _req_int(cfg, "hidden_size", where)
    layers = _req_int(cfg, "num_hidden_layers", where)
    heads = _req_int(cfg, "num_attention_heads", where)
    kv_heads = cfg.get("num_key_value_heads", heads)
    if kv_heads is None:
        kv_heads = heads
    if isinstance(kv_heads, bool) or not isinstance(kv_heads, int) or kv_heads <= 0:
        raise InputError(f"{where}: field 'num_key_value_heads' must be a positive integer, got {kv_heads!r}")
    if heads % kv_heads:
        raise InputError(f"{where}: num_attention_heads ({heads}) is not a multiple of num_key_value_heads ({kv_heads})")
    head_dim = cfg.get("head_dim")
    if head_dim is None:
        if hidden % heads:
            raise InputError(f"{where}: no 'head_dim' and hidden_size {hidden} is not divisible by {heads} heads; add head_dim")
        head_dim = hidden // heads
    elif isinstance(head_dim, bool) or not isinstance(head_dim, int) or head_dim <= 0:
        raise InputError(f"{where}: field 'head_dim' must be a positive integer, got {head_dim!r}")
    inter = cfg.get("intermediate_size", cfg.get("ffn_dim"))
    if inter is None:
        raise InputError(f"{where}: missing field 'intermediate_size'")
    if isinstance(inter, bool) or not isinstance(inter, int) or inter <= 0:
        raise InputError(f"{where}: field 'intermediate_size' must be a positive integer, got {inter!r}")
    vocab = _req_int(cfg, "vocab_size", where)
    max_pos = _req_int(cfg, "max_position_embeddings", where)
    dtype_raw = cfg.get("torch_dtype", cfg.get("dtype", "bfloat16")) or "bfloat16"
    dtype = HF_DTYPE_ALIASES.get(str(dtype_raw).replace("torch.", ""))
    if dtype is None:
        raise InputError(f"{where}: torch_dtype {dtype_raw!r} is not one of float32/float16/bfloat16")
    return ModelSpec(
        name=name,
        model_type=model_type,
        hidden_size=hidden,
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        intermediate_size=inter,
        vocab_size=vocab,
        max_position_embeddings=max_pos,
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        torch_dtype=dtype,
        qk_norm=model_type in _QK_NORM_TYPES,
    )


def model_config_path(name: str) -> Path:
    """Resolve a model name (``Qwen/Qwen3-32B``) or a path to its config.json."""
    direct = Path(name)
    if direct.suffix == ".json" and direct.is_file():
        return direct
    if direct.suffix == ".json" or direct.is_absolute():
        raise InputError(f"model config {name}: no such file; give an existing Hugging Face config.json "
                         "or a model name under configs/model/")
    found = catalog.find("model", f"{name}.json")
    if found is None:
        known = ", ".join(catalog.available("model", ".json"))
        raise InputError(
            f"unknown model '{name}': no configs/model/{name}.json; known models: {known}; "
            "or add the model's Hugging Face config.json there"
        )
    return found


def load_model(name: str) -> ModelSpec:
    path = model_config_path(name)
    try:
        cfg = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}:{exc.lineno}: malformed JSON ({exc.msg})") from None
    spec = parse_model_config(cfg, name, str(path))
    return ModelSpec(**{**spec.__dict__, "source": str(path), "sha256": sha256_file(path)})
