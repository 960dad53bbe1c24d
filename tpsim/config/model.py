"""Decoder-only transformer architecture, read from a Hugging Face ``config.json``.

Only the facts the memory and latency models need are kept.  Quirks handled
here, once, so nothing downstream has to know about them:

* ``head_dim`` may be absent (Llama, Mistral: ``hidden / heads``) or disagree
  with ``hidden / heads`` (Qwen3-0.6B/4B/32B), so ``q_dim = heads * head_dim``
  is used everywhere instead of ``hidden``.
* ``num_key_value_heads`` may be absent (then equal to the heads).
* Qwen3 (and Qwen3-MoE) normalise q and k per head (``qk_norm``).
* Mixture-of-experts configs carry a :class:`~tpsim.config.moe.MoESpec` (``moe``), read per family
  by :mod:`tpsim.config.moe`; ``intermediate_size`` is then the width of the dense layers' MLP.
* Multi-head latent attention (DeepSeek-V2/V3, ``kv_lora_rank``) is refused: the attention shape
  below (heads x head_dim, a K and a V per KV head) does not describe it.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from tpsim.config import catalog, typed
from tpsim.config.moe import MoESpec, is_moe_config, parse_moe
from tpsim.errors import InputError, NotSupportedError
from tpsim.hashing import sha256_bytes
from tpsim.io.files import read_json_file, show_path
from tpsim.units import HF_DTYPE_ALIASES

_QK_NORM_TYPES = {"qwen3", "qwen3_moe"}


class ModelSpec(msgspec.Struct, frozen=True):
    name: str
    model_type: str
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int  # MLP width of the dense layers (of an MoE model: the layers that are not MoE)
    vocab_size: int
    max_position_embeddings: int
    tie_word_embeddings: bool
    torch_dtype: str
    qk_norm: bool
    source: str = ""
    sha256: str = ""
    moe: MoESpec | None = None  # the experts of a mixture-of-experts model; None: dense

    @property
    def is_moe(self) -> bool:
        return self.moe is not None

    @property
    def num_dense_layers(self) -> int:
        """Layers with a dense MLP of ``intermediate_size`` (all of them in a dense model)."""
        return self.num_layers - (self.moe.num_moe_layers if self.moe else 0)

    @property
    def q_dim(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.head_dim

    def num_params(self) -> int:
        """Total parameters (tied embeddings counted once, no biases; MoE: every expert, routers, shared experts)."""
        return self._params(active=False)

    def active_params(self) -> int:
        """Parameters one token passes through: of each MoE layer only its ``top_k`` routed experts
        (and the router and shared expert); equal to :meth:`num_params` for a dense model."""
        return self._params(active=True)

    def _params(self, active: bool) -> int:
        h = self.hidden_size
        attn = h * (self.q_dim + 2 * self.kv_dim) + self.q_dim * h
        mlp = 3 * h * self.intermediate_size
        norms = 2 * h + (2 * self.head_dim if self.qk_norm else 0)
        embed = self.vocab_size * h * (1 if self.tie_word_embeddings else 2)
        moe = self.moe.num_moe_layers * self.moe.params_per_layer(h, active) if self.moe else 0
        return embed + self.num_layers * (attn + norms) + self.num_dense_layers * mlp + moe + h


#: limits no real model reaches (the largest today: hidden 16k-32k, vocab 256k, 10M context)
MAX_WIDTH = 1 << 20  # hidden, intermediate, head_dim
MAX_COUNT = 1 << 16  # layers, heads
MAX_VOCAB = 1 << 24
MAX_CONTEXT = 1 << 28


def _req_int(cfg: dict, key: str, where: str, maximum: int) -> int:
    if key not in cfg:
        raise InputError(f"{where}: missing field '{key}'; copy the model's config.json from Hugging Face unchanged")
    return typed.integer(cfg[key], f"{where}: field '{key}'", 1, maximum)


def _opt_int(cfg: dict, key: str, where: str, maximum: int, default: int | None) -> int | None:
    value = cfg.get(key)
    if value is None:
        return default
    return typed.integer(value, f"{where}: field '{key}'", 1, maximum)


def parse_model_config(cfg: dict, name: str, where: str) -> ModelSpec:
    """Validate a parsed config.json; ``where`` names the file in messages."""
    if not isinstance(cfg, dict):
        raise InputError(f"{where}: expected a JSON object (a Hugging Face config.json)")
    if "text_config" in cfg and "hidden_size" not in cfg:
        text_config = typed.mapping(cfg["text_config"], f"{where}: field 'text_config'",
                                    "an object (the text model's config)")
        cfg = {**text_config, **{k: v for k, v in cfg.items() if k != "text_config"}}
    model_type = cfg.get("model_type")
    if not isinstance(model_type, str):
        raise InputError(f"{where}: missing field 'model_type'; "
                         "copy the model's config.json from Hugging Face unchanged")
    typed.text(model_type, f"{where}: field 'model_type'", 128)
    hidden = _req_int(cfg, "hidden_size", where, MAX_WIDTH)
    layers = _req_int(cfg, "num_hidden_layers", where, MAX_COUNT)
    heads = _req_int(cfg, "num_attention_heads", where, MAX_COUNT)
    kv_heads = _opt_int(cfg, "num_key_value_heads", where, MAX_COUNT, heads)
    if heads % kv_heads:
        raise InputError(f"{where}: num_attention_heads ({heads}) "
                         f"is not a multiple of num_key_value_heads ({kv_heads})")
    head_dim = _opt_int(cfg, "head_dim", where, MAX_WIDTH, None)
    if head_dim is None:
        if hidden % heads:
            raise InputError(f"{where}: no 'head_dim' and hidden_size {hidden} "
                             f"is not divisible by {heads} heads; add head_dim")
        head_dim = hidden // heads
    inter_key = "intermediate_size" if "intermediate_size" in cfg else "ffn_dim"
    inter = _opt_int(cfg, inter_key, where, MAX_WIDTH, None)
    if inter is None:
        raise InputError(f"{where}: missing field 'intermediate_size'")
    vocab = _req_int(cfg, "vocab_size", where, MAX_VOCAB)
    max_pos = _req_int(cfg, "max_position_embeddings", where, MAX_CONTEXT)
    dtype_raw = cfg.get("torch_dtype", cfg.get("dtype", "bfloat16")) or "bfloat16"
    dtype = HF_DTYPE_ALIASES.get(dtype_raw.replace("torch.", "")) if isinstance(dtype_raw, str) else None
    if dtype is None:
        raise InputError(f"{where}: torch_dtype {typed.show(dtype_raw)} is not one of float32/float16/bfloat16")
    tied = cfg.get("tie_word_embeddings", False)
    moe = parse_moe(cfg, model_type, layers, inter, where, MAX_WIDTH) if is_moe_config(cfg, model_type) else None
    if cfg.get("kv_lora_rank") is not None:
        raise NotSupportedError(f"{where}: field 'kv_lora_rank': {name} uses multi-head latent attention (MLA), "
                                "which tpsim does not model; choose a model with standard (grouped-query) attention")
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
        tie_word_embeddings=typed.boolean(tied, f"{where}: field 'tie_word_embeddings'"),
        torch_dtype=dtype,
        qk_norm=model_type in _QK_NORM_TYPES,
        moe=moe,
    )


def model_config_path(name: str) -> Path:
    """Resolve a model name (``Qwen/Qwen3-32B``, looked up only inside the catalog) or an explicit path
    to a config.json (a name ending in ``.json``)."""
    if name.endswith(".json"):
        try:
            if Path(name).is_file():
                return Path(name)
        except (OSError, ValueError):
            pass
        raise InputError(f"model config {show_path(name)}: no such file; give an existing Hugging Face config.json "
                         "or a model name under configs/model/")
    catalog.check_name("model", name)
    found = catalog.find("model", f"{name}.json")
    if found is None:
        known = ", ".join(catalog.available("model", ".json"))
        raise InputError(
            f"unknown model '{name}': no configs/model/{name}.json; known models: {known}; "
            "or add the model's Hugging Face config.json there"
        )
    return found


def load_model(name: str) -> ModelSpec:
    return load_model_file(model_config_path(name), name)


def load_model_file(path, name: str) -> ModelSpec:
    """The model config at ``path``, known by ``name`` (its catalog name, or the path itself)."""
    cfg, raw = read_json_file(path, "model config", "model_name")
    spec = parse_model_config(cfg, name, show_path(str(path)))
    return msgspec.structs.replace(spec, source=str(path), sha256=sha256_bytes(raw))
