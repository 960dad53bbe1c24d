"""Weight, activation and KV-cache arithmetic, checked against hand-computed values."""

import pytest

from tpsim.config.engine import DEFAULTS, resolve_engine
from tpsim.config.model import load_model
from tpsim.errors import InfeasibleError
from tpsim.memory import ShardShape, kv_bytes_per_token, plan_memory, weights_per_gpu_bytes
from tpsim.units import GB, GiB


def engine_for(model, **kw):
    cli = dict(DEFAULTS, **kw)
    return resolve_engine(cli, {}, model.torch_dtype, model.max_position_embeddings, None, "test")


def test_qwen3_32b_weights_by_hand():
    m = load_model("Qwen/Qwen3-32B")
    h, v, inter, layers = 5120, 151936, 25600, 64
    q, kv = 64 * 128, 8 * 128
    per_layer = h * (q + 2 * kv) + q * h + 3 * h * inter + 2 * h + 2 * 128
    expected_tp1 = 2 * (2 * v * h + layers * per_layer + h)
    assert weights_per_gpu_bytes(m, 1, 1, 2) == expected_tp1
    assert 65.0 * GB < expected_tp1 < 66.0 * GB  # "about 64 GB at TP=1"
    tp2 = weights_per_gpu_bytes(m, 2, 1, 2)
    assert 32.5 * GB < tp2 < 33.0 * GB  # "about 32 GB at TP=2"


@pytest.mark.parametrize("name", ["Qwen/Qwen3-32B", "meta-llama/Llama-3.1-8B", "Qwen/Qwen3-8B",
                                  "meta-llama/Llama-3.1-70B"])
def test_tp2_weights_are_half_of_tp1(name):
    m = load_model(name)
    w1 = weights_per_gpu_bytes(m, 1, 1, 2)
    w2 = weights_per_gpu_bytes(m, 2, 1, 2)
    norms = 2 * (m.num_layers * (2 * m.hidden_size + (2 * m.head_dim if m.qk_norm else 0)) + m.hidden_size)
    # everything is sharded except the (tiny) norm weights, which every GPU keeps
    assert w2 == (w1 - norms) // 2 + norms


def test_llama_8b_weights_match_llmservingsim_banner():
    # LLMServingSim's banner for this model: 14.96 GiB of weights per GPU at TP=1
    m = load_model("meta-llama/Llama-3.1-8B")
    assert weights_per_gpu_bytes(m, 1, 1, 2) / GiB == pytest.approx(14.96, abs=0.01)
    assert m.num_params() == 8_030_261_248


def test_kv_bytes_per_token_and_replication():
    m = load_model("meta-llama/Llama-3.1-8B")  # 8 KV heads x 128, 32 layers
    assert kv_bytes_per_token(m, 1, 1, 2) == 2 * 8 * 128 * 32 * 2 == 131072
    assert kv_bytes_per_token(m, 2, 1, 2) == 131072 // 2
    assert kv_bytes_per_token(m, 8, 1, 2) == 131072 // 8
    # 16 GPUs > 8 KV heads: each GPU keeps one (replicated) KV head, as vLLM does
    assert ShardShape.of(m, 16, 1).kv_heads == 1
    m70 = load_model("meta-llama/Llama-3.1-70B")
    assert kv_bytes_per_token(m70, 16, 1, 2) == kv_bytes_per_token(m70, 8, 1, 2)
    # pipeline stages split the layers (ceil)
    assert kv_bytes_per_token(m, 1, 3, 2) == 2 * 8 * 128 * 11 * 2


def test_fp8_kv_and_weights():
    m = load_model("meta-llama/Llama-3.1-8B")
    assert kv_bytes_per_token(m, 1, 1, 1) == 65536
    w16 = weights_per_gpu_bytes(m, 1, 1, 2)
    w8 = weights_per_gpu_bytes(m, 1, 1, 1)
    embed = 2 * m.vocab_size * m.hidden_size * 2  # embedding + LM head stay 16-bit
    assert w8 == pytest.approx((w16 - embed) / 2 + embed, rel=1e-3)


def test_kv_capacity_by_hand():
    m = load_model("meta-llama/Llama-3.1-8B")
    e = engine_for(m)
    plan = plan_memory(m, 1, 1, e, 96, 1.5, "test")
    budget = int(96 * GiB * 0.9)
    free = budget - plan.weights_bytes - plan.activation_bytes - int(1.5 * GiB)
    assert plan.num_blocks == free // (16 * 131072)
    assert plan.kv_capacity_tokens == plan.num_blocks * 16
    assert plan.weights_bytes + plan.activation_bytes + plan.reserve_bytes + plan.kv_capacity_bytes <= budget


def test_tp_halves_weights_and_grows_kv():
    m = load_model("Qwen/Qwen3-32B")
    e = engine_for(m)
    p1 = plan_memory(m, 1, 1, e, 96, 1.5, "t")
    p2 = plan_memory(m, 2, 1, e, 96, 1.5, "t")
    p4 = plan_memory(m, 4, 1, e, 96, 1.5, "t")
    assert p1.weights_bytes > p2.weights_bytes > p4.weights_bytes
    assert p1.kv_capacity_tokens < p2.kv_capacity_tokens < p4.kv_capacity_tokens


def test_model_that_does_not_fit_says_how_much():
    m = load_model("meta-llama/Llama-3.1-70B")
    e = engine_for(m)
    with pytest.raises(InfeasibleError) as exc:
        plan_memory(m, 1, 1, e, 80, 1.5, "cluster.json: instance 0")
    msg = str(exc.value)
    assert "does not fit" in msg and "GB" in msg and "tp_size=1" in msg
    needed = float(msg.split("needs ")[1].split(" GB")[0])
    assert needed > 141  # 70.6B parameters x 2 bytes
    assert "available" in msg


@pytest.mark.parametrize("tp,pp,fragment", [(3, 1, "does not divide"), (1, 81, "exceeds")])
def test_impossible_parallelism(tp, pp, fragment):
    m = load_model("meta-llama/Llama-3.1-70B")  # 64 heads, 80 layers
    e = engine_for(m)
    with pytest.raises(InfeasibleError, match=fragment):
        plan_memory(m, tp, pp, e, 1000, 0, "t")
