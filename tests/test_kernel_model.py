"""The kernel-table latency model (--perf-model kernels): vLLM 0.19's step from measured kernels."""

from __future__ import annotations

import json

import pytest
from conftest import REPO, run_subprocess, write_trace
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import batch_shapes

from tpsim.build import standalone
from tpsim.errors import InputError
from tpsim.kernels import load_kernel_tables
from tpsim.perf.base import BatchShape
from tpsim.perf.kernels import KernelModel
from tpsim.perf.vllm_exec import EAGER, FULL, PIECEWISE, GraphPolicy, capture_sizes


def model(name="meta-llama/Llama-3.1-8B", hw="H100", tp=1, **kw):
    return standalone(name, hw, tp=tp, perf_model="kernels", **kw)[3]


def test_capture_sizes_and_graph_modes_follow_vllm():
    assert capture_sizes(512)[:6] == (1, 2, 4, 8, 16, 24) and capture_sizes(512)[-2:] == (496, 512)
    assert len(capture_sizes(512)) == 51  # vLLM logs 51 sizes with the defaults
    policy = GraphPolicy.of(max_num_seqs=128, max_num_batched_tokens=2048)
    assert policy.max_size == 256  # min(2 x max_num_seqs, 512, max_num_batched_tokens)
    assert policy.mode(9, True) == (FULL, 16)
    assert policy.mode(9, False) == (PIECEWISE, 16)
    assert policy.mode(257, True) == (EAGER, 257)


@pytest.mark.parametrize("max_num_seqs, max_num_batched_tokens, largest", [(130, 8192, 256), (5, 8192, 8), (64, 3, 2)])
def test_the_graph_bound_is_the_largest_captured_size(max_num_seqs, max_num_batched_tokens, largest):
    """vLLM truncates max_cudagraph_capture_size to its largest capture size: a step between that size and
    min(2 x max_num_seqs, 512, max_num_batched_tokens) runs eager (it used to fall off the size list: an
    IndexError found by the flag fuzzer with --max-num-batched-tokens 3)."""
    policy = GraphPolicy.of(max_num_seqs, max_num_batched_tokens)
    assert policy.max_size == largest == policy.sizes[-1]
    nominal = min(2 * max_num_seqs, 512, max_num_batched_tokens)
    for tokens in range(largest + 1, nominal + 1):
        assert policy.mode(tokens, False) == (EAGER, tokens)
    assert policy.mode(largest, False) == (PIECEWISE, largest)


def test_dense_ops_run_at_the_padded_token_count_and_match_the_table():
    m = model()
    tables = load_kernel_tables("H100")
    bd = m.explain(BatchShape((), 9, 9 * 500, 500, 9))  # 9 decodes -> a FULL graph of 16
    qkv = next(op for op in bd.ops if op.name == "qkv_proj")
    assert qkv.time_ns == tables.gemm(16, 4096 + 2 * 1024, 4096).time_ns
    assert qkv.source in ("measured", "interpolated")


@settings(max_examples=60, deadline=None)
@given(batch_shapes(max_ctx=4000), st.sampled_from(["H100", "B200", "RTXPRO6000", "A100"]))
def test_fast_paths_equal_the_breakdown(batch, hw):
    """iteration_ns / decode_iteration_ns (cached hot paths) equal explain()'s total for any batch."""
    m = model(hw=hw)
    assert m.iteration_ns(batch) == m.explain(batch).total_ns
    if not batch.prefill:
        assert m.decode_iteration_ns(batch.num_decode, batch.decode_ctx_sum, batch.decode_ctx_max) == \
            m.explain(batch).total_ns


def test_every_op_says_where_its_time_comes_from():
    m = model(tp=2)
    bd = m.explain(BatchShape(((600, 1200),), 40, 40 * 900, 900, 41))
    sources = {op.name: op.source for op in bd.ops}
    assert sources["attention"] == "modelled"  # chunk with cached context + decodes: not in any table
    assert sources["gate_up_proj"] in ("measured", "interpolated")
    assert sources["lm_head"] == "interpolated"  # n = 128256 / 2 lies inside the GEMM grid (n <= 65536)
    tp1 = {op.name: op.source for op in model().explain(BatchShape((), 8, 8000, 1000, 8)).ops}
    assert tp1["lm_head"] == "extrapolated"  # n = 128256: beyond the grid, roofline-scaled
    assert sources["rotary_emb"] == "analytical"
    assert sources["all_reduce_rmsnorm_attn"] in ("measured", "interpolated")  # H100 TP2: fused with RMSNorm; table
    assert set(sources.values()) <= {"measured", "interpolated", "extrapolated", "modelled", "analytical"}


def test_fused_allreduce_rmsnorm_on_hopper_small_steps_only():
    m = model(tp=2)
    small = {op.name for op in m.explain(BatchShape((), 8, 8000, 1000, 8)).ops}
    assert "all_reduce_rmsnorm_attn" in small and "input_layernorm" not in small
    a100 = model(hw="A100", tp=2)  # SM 8.0: no fusion
    assert "input_layernorm" in {op.name for op in a100.explain(BatchShape((), 8, 8000, 1000, 8)).ops}


def test_chunk_with_context_is_causal_differencing_bounded_below():
    m = model()
    alone = m._chunk_ns(512, 0)[0]
    with_ctx = m._chunk_ns(512, 4096)[0]
    assert with_ctx >= alone
    assert with_ctx == pytest.approx(max(m._context_ns(4608) - m._context_ns(4096), alone,
                                         4608 * m.roofline.kv_bytes_per_token / m.roofline.attn_bw))


def test_fa2_mixed_decodes_cost_more_than_pure_decodes():
    """vllm#58013: on FlashAttention 2 a decode in a mixed step takes a whole query tile, no GQA packing."""
    fa2 = model(hw="RTXPRO6000")
    pure = fa2._decode_ns(64, 64 * 2000)
    assert fa2._fa2_mixed_decode_ns(pure, 64, 64 * 2000) > 1.5 * pure
    fa3 = model(hw="H100")
    mixed = fa3._attention(BatchShape(((256, 0),), 64, 64 * 2000, 2000, 65), PIECEWISE)
    parts = fa3._chunk_ns(256, 0)[0] + fa3._decode_ns(64, 64 * 2000)
    assert mixed == pytest.approx(parts - fa3._floor())  # one varlen kernel, one launch floor


def test_step_time_is_monotone_in_link_bandwidth():
    times = [model("Qwen/Qwen3-32B", "H100", tp=4, link_bw_gbps=bw, link_latency_ns=3100).decode_iteration_ns(
        64, 64 * 1500, 1500) for bw in (10, 50, 200, 450, 900, 3600)]
    assert times == sorted(times, reverse=True)


def test_auto_choice_order_and_errors():
    assert standalone("meta-llama/Llama-3.1-8B", "H100", perf_model="auto")[3].name == "kernels"
    assert standalone("meta-llama/Llama-3.1-8B", "L40S", perf_model="auto")[3].name == "analytical"
    assert standalone("meta-llama/Llama-3.1-8B", "H100", perf_model="auto",
                      engine_keys={"dtype": "float32"})[3].name == "analytical"  # no fp32 tables
    with pytest.raises(InputError, match="no kernel tables"):
        standalone("meta-llama/Llama-3.1-8B", "L40S", perf_model="kernels")
    assert isinstance(standalone("Qwen/Qwen3-8B", "B200", perf_model="kernels")[3], KernelModel)


def test_run_and_step_end_to_end(tmp_path):
    trace = write_trace(tmp_path / "t.jsonl", [{"input_toks": 300 + 10 * i, "output_toks": 20,
                                                 "arrival_time_ns": i * 10 ** 7} for i in range(30)])
    out = tmp_path / "r.csv"
    proc = run_subprocess(["-m", "tpsim", "run", "--cluster-config", "configs/cluster/h100_tp2_nvlink.json",
                           "--dataset", str(trace), "--output", str(out), "--perf-model", "kernels"])
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(out.with_suffix(".summary.json").read_text())
    lat = summary["instances"][0]["latency_model"]
    assert summary["instances"][0]["perf_model"] == "kernels" and lat["comm"]["comm_model"] == "measured"
    assert lat["attention_backend"] == "fa3"
    assert summary["totals"]["finished"] == 30
    step = run_subprocess(["-m", "tpsim", "step", "--model", "Qwen/Qwen3-32B", "--hardware", "RTXPRO6000", "--tp", "2",
                           "--prefill", "512@1024", "--decode", "32@2000", "--perf-model", "kernels", "--json"],
                          cwd=REPO)
    assert step.returncode == 0, step.stderr
    doc = json.loads(step.stdout)
    assert doc["perf_model"] == "kernels" and doc["total_ns"] > 0


def test_decode_attention_streams_its_kv_from_dram_where_the_table_replayed_it_from_l2():
    """RTX PRO 6000 (128 MiB L2): the generation table's rows whose KV fits in L2 beat DRAM; in serving a layer's
    KV is read from DRAM: at least the table's fastest time plus the KV at the fastest rate the rows over twice
    the L2 stream it (tpsim.kernels.streaming)."""
    m = model("Qwen/Qwen3-30B-A3B-Instruct-2507", hw="RTXPRO6000")
    tables = load_kernel_tables("RTXPRO6000")
    grid = tables.table("generation_attention.bfloat16.kv_bfloat16").groups[(32, 4, 128)]
    token = 2 * 4 * 128 * 2  # K and V of one token, one layer, bf16
    big = [b * kv * token / (grid.measured((i, j)) - grid.floor_ns) for i, b in enumerate(grid.axes[0])
           for j, kv in enumerate(grid.axes[1]) if grid.measured((i, j)) and b * kv * token > 2 * 128 * 2 ** 20]
    floor = grid.floor_ns + 32 * 2047 * token / max(big)
    batch = BatchShape((), 32, 32 * 2047, 2047, 32)  # 134 MB of KV, a measured node just inside the 128 MiB L2
    attn = next(op for op in m.explain(batch).ops if op.name == "attention")
    assert attn.time_ns == pytest.approx(floor)
    assert attn.time_ns > tables.generation_attention(32, 2047, 32, 4, 128).time_ns and attn.source == "modelled"
    over = BatchShape((), 128, 128 * 2048, 2048, 128)  # 537 MB: the measured row streams from DRAM, no floor
    attn = next(op for op in m.explain(over).ops if op.name == "attention")
    assert attn.time_ns == pytest.approx(tables.generation_attention(128, 2048, 32, 4, 128).time_ns)
    assert attn.source == "measured"
    h100 = model("Qwen/Qwen3-30B-A3B-Instruct-2507", hw="H100")  # its table streams from DRAM here: unchanged
    attn = next(op for op in h100.explain(batch).ops if op.name == "attention")
    assert attn.time_ns == load_kernel_tables("H100").generation_attention(32, 2047, 32, 4, 128).time_ns


def test_element_wise_kernels_in_a_graph_take_at_least_the_fastest_graph_replayed_kernel():
    """A norm of a few tokens replayed from a CUDA graph costs no less than the GEMM table's fastest
    measurement (a 1-token GEMM replayed the same way); eagerly it costs the host's launch."""
    m = model(hw="RTXPRO6000")
    floor = load_kernel_tables("RTXPRO6000").table("gemm.bfloat16").groups[()].floor_ns
    full = {op.name: op for op in m.explain(BatchShape((), 2, 2 * 100, 100, 2)).ops}
    assert full["input_layernorm"].time_ns == floor == full["rotary_emb"].time_ns
    big = {op.name: op for op in m.explain(BatchShape((), 256, 256 * 100, 100, 256)).ops}
    assert big["input_layernorm"].time_ns > floor  # 4 MB moved: the roofline, not the floor
    eager = {op.name: op for op in m.explain(BatchShape(((600, 0),), 0, 0, 0, 1)).ops}  # above 512 tokens: eager
    assert eager["kv_cache_write"].time_ns >= m.launch_ns > floor
