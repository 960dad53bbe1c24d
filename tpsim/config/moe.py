"""The mixture-of-experts part of a Hugging Face ``config.json``, read per family as vLLM 0.19 reads it.

Families spell the same facts differently (``docs/notes/vllm-0.19-moe-dp-ep.md`` §5.3, §5.4, §7):

* Qwen3-MoE / Qwen2-MoE (``qwen3_moe``, ``qwen2_moe``): ``num_experts``, ``num_experts_per_tok``,
  ``moe_intermediate_size``; a layer is MoE iff ``idx not in mlp_only_layers`` and
  ``(idx + 1) % decoder_sparse_step == 0``; the other layers are dense MLPs of ``intermediate_size``;
  ``shared_expert_intermediate_size`` > 0 adds one shared expert gated by ``sigmoid(Linear(H, 1))``.
* Mixtral (``mixtral``): ``num_local_experts``; the expert width is ``intermediate_size``; every layer.
* DeepSeek-V2/V3 (``deepseek_v2``, ``deepseek_v3``): ``n_routed_experts``, ``moe_intermediate_size``;
  a layer is MoE iff ``idx >= first_k_dense_replace and idx % moe_layer_freq == 0``; the shared MLP
  is ``n_shared_experts x moe_intermediate_size`` wide.  (Their attention, MLA, is refused elsewhere.)

A key of another family, or a family this module has no rule for, is an error naming the key:
guessing which layers are sparse would give wrong memory and latency without a word.
"""

from __future__ import annotations

import msgspec

from tpsim.config import typed
from tpsim.errors import InputError, NotSupportedError

#: limits no real model reaches (DeepSeek-V3: 256 routed experts, top-8)
MAX_EXPERTS = 1 << 16

#: every key that describes experts in some family; a family must interpret or knowingly ignore each
MOE_KEYS = (
    "num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts", "num_experts_per_tok",
    "moe_intermediate_size", "shared_expert_intermediate_size", "n_shared_experts", "num_shared_experts",
    "decoder_sparse_step", "mlp_only_layers", "first_k_dense_replace", "moe_layer_freq",
    "interleave_moe_layer_step", "intermediate_size_mlp", "moe_layers", "norm_topk_prob",
    "n_group", "topk_group", "topk_method", "scoring_func", "routed_scaling_factor",
)
#: keys that only steer routing numerics or training; they change no shape and no cost
_ROUTING_ONLY = {
    "deepseek": ("norm_topk_prob", "n_group", "topk_group", "topk_method", "scoring_func", "routed_scaling_factor"),
    "mixtral": ("norm_topk_prob",),  # vLLM hard-codes renormalize=True for Mixtral (mixtral.py:136)
    "qwen": ("norm_topk_prob",),
}
#: model_type -> rule
FAMILIES = {"qwen3_moe": "qwen", "qwen2_moe": "qwen", "mixtral": "mixtral", "deepseek_v2": "deepseek",
            "deepseek_v3": "deepseek"}
#: keys each rule reads (besides num_experts_per_tok)
_READS = {
    "qwen": ("num_experts", "moe_intermediate_size", "shared_expert_intermediate_size", "decoder_sparse_step",
             "mlp_only_layers"),
    "mixtral": ("num_local_experts",),
    "deepseek": ("n_routed_experts", "moe_intermediate_size", "n_shared_experts", "first_k_dense_replace",
                 "moe_layer_freq"),
}
_EXPERTS_KEY = {"qwen": "num_experts", "mixtral": "num_local_experts", "deepseek": "n_routed_experts"}


class MoESpec(msgspec.Struct, frozen=True):
    """The experts of an MoE model: what memory, parallel layout and latency need to know."""

    family: str  # the rule that read the config: "qwen", "mixtral" or "deepseek"
    num_experts: int  # routed experts E per MoE layer
    top_k: int  # experts each token is routed to (num_experts_per_tok)
    expert_intermediate_size: int  # width I of one routed expert (gate/up out, down in)
    shared_expert_intermediate_size: int  # width of the shared-expert MLP of each MoE layer; 0: none
    shared_expert_gate: bool  # Qwen-style sigmoid(Linear(H, 1)) gate on the shared expert
    moe_layers: tuple[int, ...]  # 0-based indices of the MoE layers; the other layers are dense MLPs
    norm_topk_prob: bool  # top-k weights renormalised to sum 1 (numerics only, no cost)

    @property
    def num_moe_layers(self) -> int:
        return len(self.moe_layers)

    def is_moe_layer(self, index: int) -> bool:
        return index in self.moe_layers

    def params_per_layer(self, hidden: int, active: bool = False) -> int:
        """Parameters of one MoE layer's MLP: router, routed experts (only ``top_k`` if ``active``),
        shared expert and its gate."""
        experts = self.top_k if active else self.num_experts
        return (hidden * self.num_experts + experts * 3 * hidden * self.expert_intermediate_size
                + 3 * hidden * self.shared_expert_intermediate_size + (hidden if self.shared_expert_gate else 0))


def is_moe_config(cfg: dict, model_type: str) -> bool:
    """vLLM's ``ModelConfig.is_moe`` (an expert count > 0), or a model type that names itself MoE."""
    return any(_present(cfg.get(k)) for k in ("num_experts", "moe_num_experts", "n_routed_experts",
                                               "num_local_experts", "moe_intermediate_size")) or "moe" in model_type


def _present(value) -> bool:
    return value not in (None, 0, False, [], "")


def _int(cfg: dict, key: str, where: str, minimum: int, maximum: int, default: int | None = None) -> int:
    value = cfg.get(key)
    if value is None:
        if default is None:
            raise InputError(f"{where}: missing field '{key}' of a mixture-of-experts config; "
                             "copy the model's config.json from Hugging Face unchanged")
        return default
    return typed.integer(value, f"{where}: field '{key}'", minimum, maximum)


def _qwen_layers(cfg: dict, layers: int, where: str) -> tuple[int, ...]:
    step = _int(cfg, "decoder_sparse_step", where, 1, layers, 1)
    dense = cfg.get("mlp_only_layers") or []
    if not isinstance(dense, list):
        raise InputError(f"{where}: field 'mlp_only_layers' must be a list of layer indices, got {typed.show(dense)}")
    only = {typed.integer(i, f"{where}: field 'mlp_only_layers[{n}]'", 0, layers - 1) for n, i in enumerate(dense)}
    return tuple(i for i in range(layers) if i not in only and (i + 1) % step == 0)


def _deepseek_layers(cfg: dict, layers: int, where: str) -> tuple[int, ...]:
    first = _int(cfg, "first_k_dense_replace", where, 0, layers, 0)
    freq = _int(cfg, "moe_layer_freq", where, 1, layers, 1)
    return tuple(i for i in range(layers) if i >= first and i % freq == 0)


def parse_moe(cfg: dict, model_type: str, layers: int, intermediate_size: int | None, where: str,
              max_width: int) -> MoESpec:
    """The :class:`MoESpec` of an MoE config (``is_moe_config`` is true); ``where`` names the file."""
    family = FAMILIES.get(model_type)
    if family is None:
        keys = [k for k in MOE_KEYS if _present(cfg.get(k))]
        raise NotSupportedError(
            f"{where}: model_type '{model_type}' is a mixture-of-experts model "
            f"({', '.join(f'key {k!r}' for k in keys[:3]) or 'its model_type'}) of a family tpsim has no MoE rule for; "
            f"supported: {', '.join(sorted(FAMILIES))}")
    known = {"num_experts_per_tok", *_READS[family], *_ROUTING_ONLY[family]}
    for key in MOE_KEYS:
        if key not in known and _present(cfg.get(key)):
            raise NotSupportedError(
                f"{where}: field '{key}' is not part of the {model_type} MoE config that tpsim reads "
                f"({', '.join(sorted(known))}); tpsim cannot tell what it changes, so it refuses the model")
    experts = _int(cfg, _EXPERTS_KEY[family], where, 1, MAX_EXPERTS)
    top_k = _int(cfg, "num_experts_per_tok", where, 1, MAX_EXPERTS)
    if top_k > experts:
        raise InputError(f"{where}: field 'num_experts_per_tok' ({top_k}) exceeds the {experts} experts")
    norm = cfg.get("norm_topk_prob")
    if family == "mixtral":
        width, shared, moe_layers, norm = intermediate_size, 0, tuple(range(layers)), True
    else:
        width = _int(cfg, "moe_intermediate_size", where, 1, max_width)
        if family == "qwen":
            shared = _int(cfg, "shared_expert_intermediate_size", where, 0, max_width, 0)
            moe_layers = _qwen_layers(cfg, layers, where)
        else:
            shared = width * _int(cfg, "n_shared_experts", where, 0, MAX_EXPERTS, 0)
            moe_layers = _deepseek_layers(cfg, layers, where)
        norm = False if norm is None else typed.boolean(norm, f"{where}: field 'norm_topk_prob'")
    if not moe_layers:
        raise InputError(f"{where}: no layer is a mixture-of-experts layer under this config's layer rule "
                         "(decoder_sparse_step / mlp_only_layers / first_k_dense_replace); check the config")
    return MoESpec(family=family, num_experts=experts, top_k=top_k, expert_intermediate_size=width,
                   shared_expert_intermediate_size=shared, shared_expert_gate=family == "qwen" and shared > 0,
                   moe_layers=moe_layers, norm_topk_prob=norm)
