"""Mixture-of-experts Hugging Face configs: each family's keys, which layers are MoE, parameter counts,
and the refusals (a key tpsim cannot interpret, a family without a rule, multi-head latent attention)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tpsim.config.model import parse_model_config
from tpsim.config.moe import parse_moe
from tpsim.errors import InputError, NotSupportedError

REPO = Path(__file__).resolve().parents[1]
QWEN3_MOE = json.loads((REPO / "configs" / "model" / "Qwen" / "Qwen3-30B-A3B.json").read_text())

# Qwen/Qwen1.5-MoE-A2.7B (qwen2_moe, one shared expert): the fields of its config.json as quoted in public code
# (search-index id 71463455676); the model card gives 14.3B parameters, 2.7B activated.
QWEN2_MOE = {
    "architectures": ["Qwen2MoeForCausalLM"], "decoder_sparse_step": 1, "hidden_size": 2048,
    "intermediate_size": 5632, "max_position_embeddings": 32768, "max_window_layers": 21, "model_type": "qwen2_moe",
    "moe_intermediate_size": 1408, "num_attention_heads": 16, "num_experts": 60, "num_experts_per_tok": 4,
    "num_hidden_layers": 24, "num_key_value_heads": 16, "shared_expert_intermediate_size": 5632,
    "sliding_window": 32768, "tie_word_embeddings": False, "use_sliding_window": False, "vocab_size": 151936,
}
# deepseek-ai/DeepSeek-R1 (DeepSeek-V3 architecture): its config.json as quoted in public code (search-index id
# 1570491832), without auto_map, quantization_config and rope_scaling (nothing here reads them)
DEEPSEEK_V3 = {
    "architectures": ["DeepseekV3ForCausalLM"], "attention_bias": False, "bos_token_id": 0, "eos_token_id": 1,
    "ep_size": 1, "first_k_dense_replace": 3, "hidden_act": "silu", "hidden_size": 7168, "intermediate_size": 18432,
    "kv_lora_rank": 512, "max_position_embeddings": 163840, "model_type": "deepseek_v3", "moe_intermediate_size": 2048,
    "moe_layer_freq": 1, "n_group": 8, "n_routed_experts": 256, "n_shared_experts": 1, "norm_topk_prob": True,
    "num_attention_heads": 128, "num_experts_per_tok": 8, "num_hidden_layers": 61, "num_key_value_heads": 128,
    "num_nextn_predict_layers": 1, "q_lora_rank": 1536, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64,
    "rms_norm_eps": 1e-06, "rope_theta": 10000, "routed_scaling_factor": 2.5, "scoring_func": "sigmoid",
    "tie_word_embeddings": False, "topk_group": 4, "topk_method": "noaux_tc", "torch_dtype": "bfloat16",
    "v_head_dim": 128, "vocab_size": 129280,
}


def parse(cfg: dict, name: str = "acme/M"):
    return parse_model_config(cfg, name, "m.json")


def test_qwen2_moe_shared_expert_and_counts_match_the_model_card():
    m = parse(QWEN2_MOE)
    x = m.moe
    assert (x.family, x.num_experts, x.top_k, x.expert_intermediate_size) == ("qwen", 60, 4, 1408)
    assert x.shared_expert_intermediate_size == 5632 and x.shared_expert_gate
    assert x.moe_layers == tuple(range(24)) and m.num_dense_layers == 0
    assert x.norm_topk_prob is False  # absent: HF's Qwen2MoeConfig default
    assert not m.qk_norm  # Qwen2-MoE has no per-head q/k norm
    assert round(m.num_params() / 1e9, 1) == 14.3
    assert round(m.active_params() / 1e9, 1) == 2.7


def test_shared_expert_parameters_by_hand():
    """One Qwen2-MoE layer's MLP: router H x E, E experts of 3 x H x I, the shared expert 3 x H x S, its gate H."""
    x = parse(QWEN2_MOE).moe
    h = 2048
    assert x.params_per_layer(h) == h * 60 + 60 * 3 * h * 1408 + 3 * h * 5632 + h
    assert x.params_per_layer(h, active=True) == h * 60 + 4 * 3 * h * 1408 + 3 * h * 5632 + h


def test_deepseek_v3_moe_keys_are_read_but_its_attention_is_refused():
    x = parse_moe(DEEPSEEK_V3, "deepseek_v3", 61, 18432, "m.json", 1 << 20)
    assert (x.family, x.num_experts, x.top_k, x.expert_intermediate_size) == ("deepseek", 256, 8, 2048)
    assert x.moe_layers == tuple(range(3, 61))  # first_k_dense_replace 3, moe_layer_freq 1: 58 MoE layers
    assert x.shared_expert_intermediate_size == 2048 and not x.shared_expert_gate  # 1 shared x 2048
    assert x.norm_topk_prob is True
    with pytest.raises(NotSupportedError, match=r"m\.json: field 'kv_lora_rank'.*multi-head latent attention"):
        parse(DEEPSEEK_V3)


def test_deepseek_moe_layer_freq_skips_layers():
    cfg = {**DEEPSEEK_V3, "first_k_dense_replace": 1, "moe_layer_freq": 2}
    assert parse_moe(cfg, "deepseek_v3", 8, 18432, "m.json", 1 << 20).moe_layers == (2, 4, 6)


def test_qwen_sparse_step_and_mlp_only_layers_make_dense_layers():
    cfg = {**QWEN3_MOE, "decoder_sparse_step": 2, "mlp_only_layers": [1, 5]}
    m = parse(cfg)
    assert m.moe.moe_layers == tuple(i for i in range(48) if i not in (1, 5) and (i + 1) % 2 == 0)
    assert m.num_dense_layers == 48 - len(m.moe.moe_layers) == 26  # 24 odd-numbered layers are MoE, less 1 and 5
    base = parse(QWEN3_MOE)
    dense_mlp = 3 * 2048 * 6144
    moe_mlp = base.moe.params_per_layer(2048)
    assert base.num_params() - m.num_params() == 26 * (moe_mlp - dense_mlp)


@settings(max_examples=60, deadline=None)
@given(layers=st.integers(1, 64), step=st.integers(1, 8), only=st.sets(st.integers(0, 63), max_size=6))
def test_qwen_layer_rule_is_vllms_predicate(layers, step, only):
    """A layer is sparse iff it is not in mlp_only_layers and (idx + 1) % decoder_sparse_step == 0
    (vLLM qwen3_moe.py); a config whose rule leaves no MoE layer is refused."""
    only = sorted(i for i in only if i < layers)
    step = min(step, layers)
    cfg = {**QWEN3_MOE, "num_hidden_layers": layers, "decoder_sparse_step": step, "mlp_only_layers": only}
    expected = tuple(i for i in range(layers) if i not in only and (i + 1) % step == 0)
    if not expected:
        with pytest.raises(InputError, match="no layer is a mixture-of-experts layer"):
            parse(cfg)
        return
    m = parse(cfg)
    assert m.moe.moe_layers == expected
    assert m.num_dense_layers + m.moe.num_moe_layers == layers
    assert m.active_params() < m.num_params()


BAD = [
    ({**QWEN3_MOE, "n_shared_experts": 2}, NotSupportedError, "field 'n_shared_experts' is not part of the qwen3_moe"),
    ({**QWEN3_MOE, "first_k_dense_replace": 1}, NotSupportedError, "field 'first_k_dense_replace'"),
    ({**QWEN3_MOE, "model_type": "olmoe"}, NotSupportedError, "model_type 'olmoe' is a mixture-of-experts"),
    ({**QWEN3_MOE, "num_experts_per_tok": 200}, InputError, "'num_experts_per_tok' (200) exceeds the 128 experts"),
    ({k: v for k, v in QWEN3_MOE.items() if k != "moe_intermediate_size"}, InputError, "'moe_intermediate_size'"),
    ({**QWEN3_MOE, "mlp_only_layers": [48]}, InputError, "'mlp_only_layers[0]' must be <= 47"),
    ({**QWEN3_MOE, "mlp_only_layers": "0,1"}, InputError, "'mlp_only_layers' must be a list"),
    ({**QWEN3_MOE, "decoder_sparse_step": 0}, InputError, "'decoder_sparse_step' must be >= 1"),
    ({**QWEN3_MOE, "num_experts": 1.5}, InputError, "'num_experts' must be an integer"),
    ({**QWEN3_MOE, "norm_topk_prob": "true"}, InputError, "'norm_topk_prob' must be true or false"),
    ({**QWEN3_MOE, "shared_expert_intermediate_size": -1}, InputError,
     "'shared_expert_intermediate_size' must be >= 0"),
    ({**QWEN3_MOE, "model_type": "llama"}, NotSupportedError, "model_type 'llama' is a mixture-of-experts model"),
]


@pytest.mark.parametrize("cfg,error,message", BAD, ids=[b[2][:40] for b in BAD])
def test_moe_configs_tpsim_cannot_interpret_are_refused_naming_the_key(cfg, error, message):
    with pytest.raises(error) as exc:
        parse(cfg)
    assert message in str(exc.value) and str(exc.value).startswith("m.json: ")


def test_mixtral_reads_the_expert_width_from_intermediate_size():
    cfg = json.loads((REPO / "configs" / "model" / "mistralai" / "Mixtral-8x7B-v0.1.json").read_text())
    x = parse(cfg).moe
    assert (x.family, x.num_experts, x.top_k, x.expert_intermediate_size) == ("mixtral", 8, 2, 14336)
    assert x.norm_topk_prob is True  # vLLM hard-codes renormalize=True for Mixtral
    with pytest.raises(NotSupportedError, match="field 'moe_intermediate_size'"):
        parse({**cfg, "moe_intermediate_size": 1024})


@pytest.mark.parametrize("argv,message", [
    (["profile", "--model", "mistralai/Mixtral-8x7B-v0.1", "--device", "cpu", "--grid", "tiny", "--out", "{out}"],
     "--model mistralai/Mixtral-8x7B-v0.1: a mixture-of-experts model; tpsim profile times dense decoder layers only"),
])
def test_commands_without_an_moe_model_refuse_one_in_one_line(tmp_path, argv, message):
    from conftest import run_subprocess

    out = tmp_path / "bundle"
    proc = run_subprocess(["-m", "tpsim", *[a.replace("{out}", str(out)) for a in argv]])
    assert proc.returncode == 2 and proc.stderr.startswith("tpsim: error: ")
    assert message in proc.stderr and proc.stderr.count("\n") == 1 and not out.exists()
