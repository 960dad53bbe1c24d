"""The MoE layer as vLLM 0.19 runs it, in all three latency models: the kernel table read exactly at
a grid point, the collectives' sizes by hand, DP graph synchronisation, routing loads, the roofline
of the fused experts by hand, LLMServingSim's moe.csv, mixed dense/MoE layers, shared experts, and
the fast paths agreeing with the breakdown."""

from __future__ import annotations

import json
import random

import pytest
from conftest import REPO, run_subprocess, run_tpsim
from hypothesis import given, settings
from hypothesis import strategies as st
from test_profile_bundle import llmservingsim

from tpsim.build import standalone
from tpsim.config.model import parse_model_config
from tpsim.kernels import load_kernel_tables
from tpsim.perf.base import BatchShape
from tpsim.perf.bundle import read_bundle
from tpsim.perf.moe import ExpertLoad, Routing, expert_roofline, plan_collectives
from tpsim.perf.moe_costs import moe_weights_floor
from tpsim.perf.vllm_exec import EAGER, FULL, PIECEWISE, dp_synchronize

MOE = "Qwen/Qwen3-30B-A3B-Instruct-2507"
H, E, INTER, K = 2048, 128, 768, 8


def shared_layout_model(perf_model="kernels", routing="BALANCED", **kw):
    """The shared real run's layout: DP 2 with EP 2 (LLMServingSim's ep_size), TP 1, RTX PRO 6000."""
    return standalone(MOE, "RTXPRO6000", tp=kw.pop("tp", 1), dp=kw.pop("dp", 2), ep_size=kw.pop("ep_size", 2),
                      perf_model=perf_model, routing=routing, engine_keys={"max_num_seqs": 128}, **kw)[3]


def ops_of(bd) -> dict:
    return {op.name: op for op in bd.ops}


# ----------------------------------------------------------------------------- kernel table, exactly
def test_fused_moe_is_the_kernel_table_at_the_gathered_token_count():
    """64 decodes on each of 2 DP ranks (a capture size: no padding) -> 128 tokens into the experts; AIC's
    moe_perf at (H, INTER, k, E) = Qwen3-30B-A3B, moe tp 1, ep 2, balanced, 128 tokens is a measured node."""
    lat = shared_layout_model()
    batch = BatchShape((), 64, 64 * 1500, 1500, 64)
    mode, tokens = dp_synchronize([lat.graph_plan(batch)] * 2)
    assert (mode, tokens) == (FULL, (64, 64))
    op = ops_of(lat.moe_explain(batch, mode, tokens, 0))["fused_moe"]
    est = load_kernel_tables("RTXPRO6000").moe(128, H, INTER, K, E, 1, 2, "bfloat16", "balanced")
    assert est.source == "measured" and op.source == "measured"
    assert op.time_ns == est.time_ns and op.count == 48


def test_every_moe_op_carries_a_source_and_the_slowest_rank_is_reported():
    lat = shared_layout_model()
    batch = BatchShape(((700, 300),), 20, 20 * 900, 900, 21)
    mode, tokens = dp_synchronize([lat.graph_plan(batch), lat.graph_plan(None)])
    assert mode == EAGER and tokens == (720, 1)  # above the largest capture size: eager, unpadded
    ops = ops_of(lat.moe_explain(batch, mode, tokens, 0))
    for name in ("router_gemm", "moe_all_gather", "topk_softmax", "fused_moe", "moe_reduce_scatter"):
        assert ops[name].source in ("measured", "interpolated", "extrapolated", "modelled", "analytical"), name
    assert "gate_up_proj" not in ops and "all_reduce_mlp" not in ops  # every layer of this model is MoE
    assert lat.moe_load(tokens).imbalance == pytest.approx(1.0, abs=1e-3)


# ----------------------------------------------------------------------------- collectives by hand
def test_collective_sizes_by_hand():
    # DP 2, TP 1, EP on (the shared run): AG of hidden + router logits, RS of hidden, over the 2 DP ranks
    colls, g = plan_collectives(2, 1, True, H, E, (64, 64), 0)
    assert g == 128
    assert [(c.name, c.kind, c.group, c.elements) for c in colls] == [
        ("moe_all_gather", "all_gather", 2, 2 * 64 * (2048 + 128)),
        ("moe_reduce_scatter", "reduce_scatter", 2, 2 * 64 * 2048)]
    # DP 2, TP 2, EP off: the same over DP, then a TP all-reduce of the rank's own tokens
    colls, g = plan_collectives(2, 2, False, H, E, (64, 64), 1)
    assert g == 128 and [(c.name, c.group, c.elements) for c in colls] == [
        ("moe_all_gather", 2, 128 * 2176), ("moe_reduce_scatter", 2, 128 * 2048), ("moe_all_reduce", 2, 64 * 2048)]
    # DP 2, TP 2, EP on: sequence parallel, ceil(n / T) rows per GPU over all 4 GPUs, then a TP all-gather
    colls, g = plan_collectives(2, 2, True, H, E, (63, 63), 0)
    assert g == 4 * 32 and [(c.name, c.group, c.elements) for c in colls] == [
        ("moe_all_gather", 4, 128 * 2176), ("moe_reduce_scatter", 4, 128 * 2048), ("moe_tp_all_gather", 2, 64 * 2048)]
    # DP 1, TP 2 (EP on or off): no dispatch, a TP all-reduce
    assert [(c.name, c.elements) for c in plan_collectives(1, 2, True, H, E, (40,), 0)[0]] == [
        ("moe_all_reduce", 40 * 2048)]
    assert plan_collectives(1, 1, False, H, E, (40,), 0) == ([], 40)
    # eager, unequal counts: every rank's share costed at the largest; the experts see the true total
    colls, g = plan_collectives(2, 1, True, H, E, (720, 1), 1)
    assert g == 721 and colls[0].elements == 2 * 720 * 2176


def test_the_op_times_are_the_comm_models_at_those_sizes():
    lat = shared_layout_model()
    batch = BatchShape((), 64, 64 * 1500, 1500, 64)
    ops = ops_of(lat.moe_explain(batch, FULL, (64, 64), 0))
    assert ops["moe_all_gather"].time_ns == lat.comm.all_gather(2 * 64 * 2176, 2)[0]
    assert ops["moe_reduce_scatter"].time_ns == lat.comm.reduce_scatter(2 * 64 * 2048, 2)[0]
    assert ops["moe_all_gather"].bytes == 2 * 64 * 2176 * 2
    assert ops["moe_reduce_scatter"].source == load_kernel_tables("RTXPRO6000").nccl(
        "reduce_scatter", 2, 2 * 64 * 2048).source


# ----------------------------------------------------------------------------- DP synchronisation
def test_dp_synchronise_takes_the_lowest_mode_and_pads_to_the_largest():
    assert dp_synchronize([(FULL, 8, 5), (PIECEWISE, 64, 60)]) == (PIECEWISE, (64, 64))
    assert dp_synchronize([(FULL, 8, 5), (FULL, 16, 9)]) == (FULL, (16, 16))
    assert dp_synchronize([(FULL, 1, 1), (EAGER, 900, 900)]) == (EAGER, (1, 900))


def test_an_idle_rank_pays_the_padded_step_and_the_dp_collectives():
    lat = shared_layout_model()
    busy = BatchShape((), 100, 100 * 2000, 2000, 100)
    mode, tokens = dp_synchronize([lat.graph_plan(busy), lat.graph_plan(None)])
    assert tokens == (104, 104)  # the dummy's 1 token pads to the busy rank's capture size
    dummy = lat.moe_explain(None, mode, tokens, 1)
    real = lat.moe_explain(busy, mode, tokens, 0)
    d, r = ops_of(dummy), ops_of(real)
    assert d["fused_moe"].time_ns == r["fused_moe"].time_ns
    assert d["moe_all_gather"].time_ns == r["moe_all_gather"].time_ns
    assert "lm_head" not in d and d["attention"].time_ns < r["attention"].time_ns
    assert lat.rank_gpu_ns(None, mode, tokens, 1) < lat.rank_gpu_ns(busy, mode, tokens, 0)


# ----------------------------------------------------------------------------- routing
@settings(max_examples=60, deadline=None)
@given(st.integers(1, 20_000), st.sampled_from((8, 16, 64, 128, 256)), st.integers(1, 8),
       st.sampled_from((1, 2, 4, 8)))
def test_routing_loads(tokens, experts, top_k, ep):
    if experts % ep or top_k > experts:
        return
    bal, rr, rnd = (Routing(p, experts, top_k, ep) for p in ("BALANCED", "RR", "RAND"))
    b = bal.load(tokens)
    assert rr.load(tokens) == b
    assert b.pairs == pytest.approx(-(-tokens * top_k // ep)) and b.experts == min(experts // ep, b.pairs)
    r = rnd.load(tokens)
    assert r.mean_pairs == b.mean_pairs and r.pairs >= r.mean_pairs - 1e-9
    assert r.experts <= experts // ep and r.pairs <= tokens * min(top_k, experts // ep)
    assert (r.imbalance > 1.0) == (ep > 1 and top_k < experts)


def test_expert_roofline_by_hand():
    load = ExpertLoad(pairs=512.0, mean_pairs=512.0, experts=64.0)
    t, flops, nbytes = expert_roofline(load, 128, K, H, INTER, 2, 2, 400_000.0, 1500.0, lambda x: x + 1000.0)
    assert flops == 2 * 512 * H * 2 * INTER + 2 * 512 * INTER * H
    weights = 64 * 3 * H * INTER * 2
    acts = 512 * (H + 2 * INTER) * 2 + 512 * 3 * INTER * 2 + 512 * (INTER + H) * 2
    assert nbytes == weights + acts + 128 * 8 * (H * 2 + 8) + 128 * H * 2
    # memory-bound at this size: the weights dominate; five kernels' overheads
    assert t == pytest.approx((weights + acts + 128 * 8 * 8 + 128 * 8 * (H * 2 + 8) + 128 * H * 2) / 1500.0 + 5000.0)


def test_rand_routing_scales_the_table_by_the_rooflines_ratio():
    bal, rnd = shared_layout_model(), shared_layout_model(routing="RAND")
    batch = BatchShape((), 4, 4 * 100, 100, 4)
    tokens = (4, 4)
    b, r = ops_of(bal.moe_explain(batch, FULL, tokens, 0)), ops_of(rnd.moe_explain(batch, FULL, tokens, 0))
    assert r["fused_moe"].source == "modelled" and b["fused_moe"].source == "measured"
    assert r["fused_moe"].time_ns != b["fused_moe"].time_ns


def test_fused_moe_reads_the_touched_experts_from_dram_where_the_table_kept_them_in_l2():
    """One decode per DP rank: 2 gathered tokens reach 8 of a rank's experts (75 MB, inside the 128 MiB L2 the
    collector's replay kept them in); in serving the other layers' weights pass through L2 in between, so the
    kernel takes at least the table's fastest call plus those weights at its DRAM streaming rate."""
    lat = shared_layout_model()
    tables = load_kernel_tables("RTXPRO6000")
    floor = moe_weights_floor(tables, "moe.bfloat16", 128 * 2 ** 20)
    batch = BatchShape((), 1, 500, 500, 1)
    op = ops_of(lat.moe_explain(batch, FULL, (1, 1), 0))["fused_moe"]
    table = tables.moe(2, H, INTER, K, E, 1, 2, "bfloat16", "balanced").time_ns
    assert op.time_ns == pytest.approx(floor.ns(8 * 3 * H * INTER * 2)) and op.time_ns > 1.5 * table
    assert op.source == "modelled"
    big = BatchShape((), 128, 128 * 1500, 1500, 128)  # 256 tokens reach all 64 experts (604 MB): the table
    op = ops_of(lat.moe_explain(big, FULL, (128, 128), 0))["fused_moe"]
    assert op.source == "measured"
    assert op.time_ns == tables.moe(256, H, INTER, K, E, 1, 2, "bfloat16", "balanced").time_ns


# ----------------------------------------------------------------------------- three models, consistency
@pytest.mark.parametrize("perf_model", ["kernels", "analytical"])
@pytest.mark.parametrize("layout", [{"dp": 1, "ep_size": None, "tp": 2}, {"dp": 1, "ep_size": 1, "tp": 1}])
def test_single_instance_fast_paths_equal_the_breakdown(perf_model, layout):
    lat = shared_layout_model(perf_model, **layout)
    rng = random.Random(5)
    for _ in range(60):
        prefill = tuple((rng.randint(1, 1500), rng.randint(0, 3000)) for _ in range(rng.choice((0, 0, 1, 2))))
        n = rng.randint(0 if prefill else 1, 150)
        batch = BatchShape(prefill, n, n * 700, 700 if n else 0, n + len(prefill))
        assert abs(lat.explain(batch).total_ns - lat.iteration_ns(batch)) <= 1
        if not prefill:
            assert lat.decode_iteration_ns(n, n * 700, 700) == lat.iteration_ns(batch)


def mixed_model(shared=0):
    cfg = json.loads((REPO / "configs" / "model" / "Qwen" / "Qwen3-30B-A3B.json").read_text())
    cfg.update(num_hidden_layers=4, mlp_only_layers=[0])
    if shared:
        cfg.update(model_type="qwen2_moe", shared_expert_intermediate_size=shared)
    return parse_model_config(cfg, "t/mixed", "t.json")


def test_mixed_dense_and_moe_layers_and_shared_experts(monkeypatch):
    from tpsim.config.engine import DEFAULTS, resolve_engine
    from tpsim.config.hardware import load_hardware
    from tpsim.perf.analytical import AnalyticalModel

    hw = load_hardware("H100")
    for shared in (0, 1024):
        m = mixed_model(shared)
        eng = resolve_engine(dict(DEFAULTS), {}, m.torch_dtype, m.max_position_embeddings, None, "t")
        lat = AnalyticalModel(m, hw, eng, 1, 1, hw.memory_bw_gbps, hw.link_bw_gbps, hw.link_latency_ns)
        ops = ops_of(lat.explain(BatchShape((), 8, 800, 100, 8)))
        assert ops["qkv_proj"].count == 4 and ops["gate_up_proj"].count == 1 and ops["fused_moe"].count == 3
        assert ("shared_gate_up_proj" in ops) == bool(shared) and ("shared_expert_gate" in ops) == bool(shared)
        if shared:
            assert ops["shared_gate_up_proj"].flops == 2 * 8 * 2 * 1024 * m.hidden_size


def test_profile_model_reads_moe_csv_at_llmservingsims_per_rank_arguments(tmp_path):
    tp_dir = llmservingsim(tmp_path)
    (tp_dir / "moe.csv").write_text("tokens,activated_experts,time_us\n" + "".join(
        f"{t},{a},{10 + 0.01 * t + a:.4f}\n" for t in (1, 16, 128, 256) for a in (8, 16, 32, 64) if a <= 8 * t))
    bundle = read_bundle(tp_dir, 1)
    from tpsim.build import standalone_layout
    from tpsim.config.engine import DEFAULTS, resolve_engine
    from tpsim.config.hardware import load_hardware
    from tpsim.config.model import load_model
    from tpsim.perf.profile import ProfileModel

    m = load_model(MOE)
    hw = load_hardware("RTXPRO6000")
    eng = resolve_engine(dict(DEFAULTS), {}, m.torch_dtype, m.max_position_embeddings, None, "t")
    layout = standalone_layout(m, "RTXPRO6000", 1, 1, 2, 2, None, "t")
    pm = ProfileModel(bundle, model=m, hardware=hw, engine=eng, tp=1, pp=1, mem_bw_gbps=1597.0, link_bw_gbps=16.0,
                      link_latency_ns=20000.0, layout=layout)
    # 128 gathered tokens (64 per rank): LLMServingSim's local tokens round(128 (1 - (1/2)^8)) = 128, 64 experts
    ops = ops_of(pm.moe_explain(BatchShape((), 64, 64 * 300, 300, 64), FULL, (64, 64), 0))
    assert "router_gemm" not in ops and "topk_softmax" not in ops  # inside the measured block
    block = ops["moe_block"]
    assert block.source == "measured"
    assert block.time_ns == pm._kernel_cost("moe_block", (10 + 1.28 + 64) * 1000.0, True)
    assert pm.describe()["moe"]["moe_block"] == "bundle moe.csv" and bundle.describe()["moe_rows"] == 13


# ----------------------------------------------------------------------------- tpsim step
def test_step_shows_moe_ops_sources_and_the_imbalance(capsys):
    assert run_tpsim(["step", "--model", MOE, "--hardware", "RTXPRO6000", "--dp", "2", "--ep", "2",
                      "--decode", "64@1500", "--expert-routing-policy", "RAND", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    names = {op["name"]: op for op in d["ops"]}
    assert {"router_gemm", "moe_all_gather", "fused_moe", "moe_reduce_scatter"} <= set(names)
    assert names["fused_moe"]["source"] == "modelled" and names["moe_all_gather"]["component"] == "comm"
    m = d["moe"]
    assert (m["dp"], m["ep_size"], m["tokens_per_rank"], m["tokens_into_experts"]) == (2, 2, 64, 128)
    assert m["slowest_ep_rank"]["imbalance"] > 1.0 and m["routing"] == "RAND"
    assert d["iteration_ns"] == d["total_ns"] == round(sum(op["total_ns"] for op in d["ops"]))
    assert run_tpsim(["step", "--model", MOE, "--hardware", "RTXPRO6000", "--tp", "2", "--decode", "8@100"]) == 0
    table = capsys.readouterr().out
    assert "fused_moe" in table and "imbalance 1.000" in table and "moe_all_reduce" in table


@pytest.mark.parametrize("argv,message", [
    (["--model", "Qwen/Qwen3-8B", "--dp", "2"],
     "--dp, --ep and --enable-expert-parallel place experts; Qwen/Qwen3-8B is dense"),
    (["--model", MOE, "--dp", "2", "--ep", "3"], "ep_size (3) must be a multiple of the 2 DP ranks"),
    (["--model", MOE, "--dp", "0"], "--dp"),
    (["--model", MOE, "--ep", "2", "--enable-expert-parallel"], "ep_size"),
])
def test_step_bad_moe_layouts_are_one_line(argv, message):
    proc = run_subprocess(["-m", "tpsim", "step", "--hardware", "RTXPRO6000", "--decode", "8@100", *argv])
    assert proc.returncode == 2 and proc.stderr.startswith("tpsim: error: ") and proc.stderr.count("\n") == 1
    assert message in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("text,message", [
    ("tokens,activated_experts,time_us\n8,8,abc\n", ":2: column time_us must be a time in microseconds"),
    ("tokens,activated_experts,time_us\n0,8,5\n", ":2: tokens and activated_experts must be >= 1"),
    ("tokens,time_us\n8,5\n", ":1: header lacks column(s) activated_experts"),
    ("tokens,activated_experts,time_us\n", "no rows"),
])
def test_a_bad_moe_csv_is_one_error_naming_file_and_line(tmp_path, text, message):
    from tpsim.errors import InputError

    tp_dir = llmservingsim(tmp_path)
    (tp_dir / "moe.csv").write_text(text)
    with pytest.raises(InputError) as exc:
        read_bundle(tp_dir, 1)
    assert str(exc.value).startswith(str(tp_dir / "moe.csv")) and message in str(exc.value)
