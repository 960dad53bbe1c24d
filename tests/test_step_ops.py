"""The step's ops as data (tpsim.perf.ops): one op list for every latency model, built at the per-GPU
shapes, placed in or out of CUDA graphs by each model's reading of vLLM, priced by each model its own way."""

from __future__ import annotations

import functools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import batch_shapes
from test_profile_bundle import llmservingsim
from test_profile_model import make as make_profile

from tpsim.build import standalone
from tpsim.perf.base import BatchShape
from tpsim.perf.bundle import read_bundle
from tpsim.perf.ops import (
    ATTENTION,
    COLLECTIVE,
    ELEMENTWISE,
    GEMM,
    LOGITS,
    MLP,
    MOE,
    StepPlan,
)
from tpsim.perf.step import StepModel
from tpsim.perf.vllm_exec import EAGER, FULL, PIECEWISE

MIXED = BatchShape(((300, 1000), (40, 0)), 24, 24 * 1500, 1800, 25)


def latency(perf="analytical", model="Qwen/Qwen3-32B", hw="A100", tp=2, **kw):
    return standalone(model, hw, tp=tp, perf_model=perf, **kw)[3]


@functools.cache
def cached_latency(perf, model, hw, tp, pp):
    return latency(perf, model, hw, tp, pp=pp)


#: (model, GPU, TP, PP): between them every token-wise kind (GEMM, element-wise, TP collectives, the PP send),
#: q/k norms and an MoE model's layer without dense MLP
SHAPES = [("Qwen/Qwen3-32B", "A100", 2, 2), ("meta-llama/Llama-3.1-8B", "RTXPRO6000", 1, 1),
          ("Qwen/Qwen3-30B-A3B-Instruct-2507", "RTXPRO6000", 1, 1)]


def names(bd) -> list[str]:
    return [op.name for op in bd.ops]


def test_every_model_lists_the_same_ops_in_vllms_order():
    """Analytical and kernel models share one op list (A100: no all-reduce + RMSNorm fusion); the profile
    model's differs only by the KV-cache write, which its bundle times inside attention."""
    a, k = latency("analytical"), latency("kernels")
    assert names(a.explain(MIXED)) == names(k.explain(MIXED))
    assert names(a.explain(MIXED))[:9] == ["input_layernorm", "qkv_proj", "qk_norm", "rotary_emb", "kv_cache_write",
                                           "attention", "o_proj", "post_attention_layernorm", "gate_up_proj"]
    assert names(a.explain(MIXED))[-4:] == ["lm_head", "logits_gather", "sampler", "framework"]


def test_the_profile_model_times_the_kv_write_inside_attention(tmp_path):
    pm = make_profile(read_bundle(llmservingsim(tmp_path)))
    a = latency("analytical", model="meta-llama/Llama-3.2-1B", hw="RTXPRO6000", tp=1)
    assert names(pm.explain(MIXED)) == [n for n in names(a.explain(MIXED)) if n != "kv_cache_write"]


def test_ops_have_the_per_gpu_shapes():
    a = latency("analytical", tp=4)
    s = a.shape  # Qwen3-32B: 64 heads, 8 KV heads of 128, hidden 5120, MLP 25600, over TP 4
    plan = StepPlan(PIECEWISE, 64, 64, 3)
    ops = {op.name: op for op in a.step_ops.layer(plan) + a.step_ops.head(plan)}
    assert (ops["qkv_proj"].tokens, ops["qkv_proj"].n, ops["qkv_proj"].k) == (64, 16 * 128 + 2 * 2 * 128, 5120)
    assert (ops["o_proj"].n, ops["o_proj"].k) == (5120, 16 * 128)
    assert (ops["gate_up_proj"].n, ops["down_proj"].k) == (2 * 25600 // 4, 25600 // 4)
    assert (ops["lm_head"].tokens, ops["lm_head"].n) == (3, s.vocab)
    assert ops["all_reduce_attn"].elements == 64 * 5120 and ops["all_reduce_attn"].group == 4
    assert ops["logits_gather"].elements == 3 * s.vocab * 4
    assert ops["kv_cache_write"].mem_bytes == 64 * 2.0 * 2 * 128 * (2 + 2)
    assert {op.block for op in ops.values() if op.block == MLP} == {MLP}
    assert sum(op.count for op in ops.values() if op.block == MLP) == 4 * 64  # gate_up, act, down, their all-reduce


def test_each_model_places_ops_in_cuda_graphs_its_own_way():
    """vLLM 0.19 (kernel model): dense ops padded and in the piecewise graph, the KV-cache write with attention
    (unpadded, eager), the logits after the graph; the roofline keeps them all with the dense ops."""
    k, a = latency("kernels"), latency("analytical")
    batch = BatchShape(((9, 0),), 0, 0, 0, 1)  # 9 tokens: PIECEWISE, padded to 16 by vLLM's rule
    kops = {op.name: op for op in k.step_ops.layer(k.dense_plan(batch)) + k.step_ops.head(k.dense_plan(batch))}
    aops = {op.name: op for op in a.step_ops.layer(a.dense_plan(batch)) + a.step_ops.head(a.dense_plan(batch))}
    assert k.dense_plan(batch).mode == PIECEWISE and kops["qkv_proj"].tokens == 16 and kops["qkv_proj"].graph
    assert kops["kv_cache_write"].tokens == 9 and not kops["kv_cache_write"].graph
    assert not kops["lm_head"].graph and not kops["sampler"].graph
    assert aops["qkv_proj"].tokens == 9 and aops["kv_cache_write"].graph and aops["lm_head"].graph
    decode = BatchShape((), 600, 600 * 100, 100, 600)  # above every capture size: eager everywhere
    assert k.dense_plan(decode).mode == EAGER and a.dense_plan(decode).mode == EAGER
    assert k.dense_plan(BatchShape((), 7, 700, 100, 7)).mode == FULL


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(["analytical", "kernels"]),
       batch_shapes(max_prefills=2, max_chunk=2048, min_decodes=1, max_decodes=300, max_ctx=5000))
def test_the_breakdown_is_the_priced_ops(perf, batch):
    """Each op's time is its model's price of that op; the step is their sum times their counts plus the host."""
    lat = latency(perf, hw="RTXPRO6000")
    plan = lat.dense_plan(batch)
    so = lat.step_ops
    ops = so.layer(plan, so.attention(plan, batch)) + so.head(plan)
    bd = lat.explain(batch)
    assert [(op.name, op.time_ns, op.count, op.source) for op in bd.ops[:-1]] == [
        (op.name, lat.price(op).time_ns, op.count, lat.price(op).source) for op in ops]
    gpu = sum(op.total_ns for op in bd.ops[:-1])
    assert bd.total_ns == int(round(gpu + lat.host_visible_ns(gpu, batch.num_seqs))) == lat.iteration_ns(batch)


def test_kinds_and_bounds():
    k = latency("kernels")
    bd = {op.name: op for op in k.explain(MIXED).ops}
    ops = {op.name: op for op in k.step_ops.layer(k.dense_plan(MIXED)) + k.step_ops.head(k.dense_plan(MIXED))}
    assert ops["qkv_proj"].kind == GEMM and bd["qkv_proj"].bound == "kernel"
    assert ops["rotary_emb"].kind == ELEMENTWISE and bd["rotary_emb"].bound == "memory"
    assert ops["all_reduce_attn"].kind == COLLECTIVE and bd["all_reduce_attn"].bound == "link"
    assert ops["logits_gather"].block == LOGITS and bd["logits_gather"].time_ns >= k.launch_ns  # launched from the host
    a = latency("analytical")
    abd = {op.name: op for op in a.explain(MIXED).ops}
    assert abd["qkv_proj"].bound in ("compute", "memory") and abd["attention"].bound in ("compute", "memory")
    assert abd["all_reduce_attn"].source == "analytical"


@pytest.mark.parametrize("perf", ["analytical", "kernels"])
def test_an_all_moe_model_has_no_dense_mlp_and_its_moe_ops_count_every_moe_layer(perf):
    lat = latency(perf, model="Qwen/Qwen3-30B-A3B-Instruct-2507", hw="RTXPRO6000", tp=1, dp=2, ep_size=2)
    batch = BatchShape((), 64, 64 * 1500, 1500, 64)
    bd = lat.moe_explain(batch, FULL, (64, 64), 0)
    ops = {op.name: op for op in bd.ops}
    assert not {"gate_up_proj", "act_fn", "down_proj"} & set(ops)
    assert ops["fused_moe"].count == ops["moe_all_gather"].count == lat.model.moe.num_moe_layers == lat.num_layers
    moe_ops = lat.moe.ops((64, 64), 0, True, 48)
    assert {op.block for op in moe_ops} == {MOE} and [op.name for op in moe_ops] == [
        "router_gemm", "moe_all_gather", "topk_softmax", "fused_moe", "moe_reduce_scatter"]
    assert sum(op.total_ns for op in bd.ops[:-1]) == pytest.approx(lat.rank_gpu_ns(batch, FULL, (64, 64), 0))


def test_attention_op_of_an_idle_rank():
    """A dummy step runs attention only inside a FULL graph (it builds no attention metadata otherwise)."""
    lat = latency("kernels", model="Qwen/Qwen3-30B-A3B-Instruct-2507", hw="RTXPRO6000", tp=1, dp=2, ep_size=2)
    full = {op.name: op for op in lat.moe_explain(None, FULL, (8, 8), 1).ops}
    eager = {op.name: op for op in lat.moe_explain(None, EAGER, (1, 900), 0).ops}
    assert full["attention"].time_ns > 0 and eager["attention"].time_ns == 0.0
    assert "lm_head" not in full and "sampler" not in eager  # a dummy step samples nothing
    plan = lat.step_plan(EAGER, 1, 1, 0)
    assert lat.step_ops.attention(plan, None).kind == ATTENTION and lat.price(lat.step_ops.attention(plan, None)
                                                                              ).time_ns == 0.0


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(["analytical", "kernels"]), st.sampled_from(SHAPES), st.sampled_from([FULL, PIECEWISE, EAGER]),
       st.booleans(), st.integers(1, 1 << 16))
def test_token_wise_ops_built_for_one_token_scale_to_any_count(perf, shape, mode, fused, n):
    """Op.scaled of the ops built for one token (one sequence for the logits) are, exactly, those built for ``n``:
    what the roofline prices a new step shape from."""
    so = cached_latency(perf, *shape).step_ops

    def parts(m):
        return [*so.layer_parts(StepPlan(mode, m, m, m, fused)), *so.head_parts(StepPlan(mode, m, m, m, fused))]

    assert [[op.scaled(n) for op in part] for part in parts(1)] == parts(n)
    assert any(op.tokens == n and op.mem_bytes for part in parts(n) for op in part)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(SHAPES), st.sampled_from([FULL, PIECEWISE, EAGER]), st.integers(1, 1 << 16),
       st.integers(0, 1024))
def test_the_roofline_prices_a_new_shape_as_the_ops_built_for_it(shape, mode, n, rows):
    """The roofline's times of a new token count and logits row count, from the ops built once for one, equal
    (bit for bit) building that step's ops and pricing each."""
    lat = cached_latency("analytical", *shape)
    assert lat.token_times(mode, n) == StepModel.token_times(lat, mode, n)
    assert lat.logits_times(mode, rows) == StepModel.logits_times(lat, mode, rows)
    assert (lat.logits_times(mode, rows) == ()) == (rows == 0)
