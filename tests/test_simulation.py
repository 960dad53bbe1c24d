"""The simulator's invariants, on random workloads (hypothesis) and on hand-built scenarios.

Every random case runs twice: on the fast path (decode cohort, fast-forward)
and on the reference path (every request explicit, one step at a time).  The
two must produce byte-identical CSVs, and both must conserve tokens and KV
blocks, never exceed the KV capacity, and satisfy Little's law exactly.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import random

import pytest
from conftest import write_cluster, write_trace
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tpsim
from tpsim.api import simulate
from tpsim.commands.run import add_run_arguments, config_from_args
from tpsim.config.engine import DEFAULTS, resolve_engine
from tpsim.config.model import load_model
from tpsim.config.run import RunConfig
from tpsim.io.results import HEADER, ListSink
from tpsim.memory import activation_peak_bytes, kv_bytes_per_token, weights_per_gpu_bytes
from tpsim.prepare import prepare
from tpsim.report import summarize
from tpsim.sim.recorder import Recorder
from tpsim.units import GiB

MODEL = "Qwen/Qwen3-0.6B"


def parse_args(argv):
    p = argparse.ArgumentParser()
    add_run_arguments(p)
    return p.parse_args(argv)


def mem_size_for_blocks(blocks: int, block_size: int, tp: int = 1, **engine) -> float:
    """npu_mem.mem_size (GiB) giving about ``blocks`` KV blocks on TESTGPU (no reserve)."""
    m = load_model(MODEL)
    e = resolve_engine(dict(DEFAULTS, block_size=block_size, **engine), {}, m.torch_dtype, m.max_position_embeddings,
                       None, "t")
    need = weights_per_gpu_bytes(m, tp, 1, 2) + activation_peak_bytes(m, tp, e)
    need += (blocks + 0.5) * block_size * kv_bytes_per_token(m, tp, 1, 2)
    return need / 0.9 / GiB


def run_case(tmp_path, trace, flags, fast: bool, cluster_kw=None):
    cfg = write_cluster(tmp_path / "c.json", model=MODEL, **(cluster_kw or {}))
    t = write_trace(tmp_path / "t.jsonl", trace)
    args = parse_args(["--cluster-config", str(cfg), "--dataset", str(t), "--log-interval", "0.05", *flags,
                       "--fast-forward" if fast else "--no-fast-forward"])
    run = prepare(config_from_args(args), [])
    lines = []
    sink = ListSink()
    recorder = Recorder(len(run.setups), sink)
    result = simulate(run, lines.append, on_finish=recorder)
    recorder.close()
    summary = summarize(run, result, recorder.metrics, 1.0).to_dict()
    return sink.csv_text(), summary, result, lines


def check_invariants(text, summary, result, trace):
    rows = list(csv.DictReader(io.StringIO(text)))
    assert text.startswith(HEADER)
    totals = summary["totals"]
    assert totals["finished"] == len(rows)
    assert totals["finished"] + totals["rejected"] == len(trace)
    assert len({r["request id"] for r in rows}) == len(rows)
    latency_sum = 0
    for r in rows:
        rid = int(r["request id"])
        src = trace[rid]
        inp, out = int(r["input"]), int(r["output"])
        assert (inp, out) == (src["input_toks"], src["output_toks"])
        itl = json.loads(r["ITL"])
        arrival, end, lat = int(r["arrival"]), int(r["end_time"]), int(r["latency"])
        ttft, tpot, queue = int(r["TTFT"]), int(r["TPOT"]), int(r["queuing_delay"])
        assert arrival == src["arrival_time_ns"]
        assert len(itl) == out - 1  # one gap per generated token after the first
        assert all(g > 0 for g in itl)
        assert ttft + sum(itl) == lat == end - arrival
        assert 0 <= queue < ttft
        assert tpot == ((lat - ttft) // (out - 1) if out > 1 else 0)
        latency_sum += lat
    # token conservation: every sampled token is credited once, every prompt once
    gen = sum(result.gen_bins.values())
    prompt = sum(result.prompt_bins.values())
    assert gen == sum(int(r["output"]) for r in rows) == totals["output_tokens"]
    assert prompt == sum(int(r["input"]) for r in rows) == totals["input_tokens"]
    # Little's law, exactly: the time-integral of requests in the system = the sum of their latencies
    assert result.occupancy_ns == latency_sum
    for inst, isum in zip(result.instances, summary["instances"]):
        kv = inst.kv
        assert 0 <= isum["peak_kv_blocks_used"] <= kv.num_blocks  # never above capacity
        assert kv.num_free == kv.num_blocks  # every block returned at the end
        if kv.caching:
            assert all(ref == 0 for ref in kv.ref)
            # every block ever used is back in the free queue; the rest were never created
            assert len(kv.free_queue) == len(kv.ref) and len(kv.ref) + kv.fresh == kv.num_blocks
            assert len(kv.ref) >= isum["peak_kv_blocks_used"]  # a used block was created first
        assert not inst.running and not inst.prefillers and inst.n_dec == 0 and not inst.waiting


@st.composite
def workloads(draw):
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    n = draw(st.integers(1, 24))
    block = draw(st.sampled_from([1, 4, 16]))
    # shared token sequences: a later prompt may extend an earlier prompt and its output (as an agentic
    # turn does), so blocks filled while decoding are looked up too
    prefixes = [[rng.randrange(1000) for _ in range(rng.randint(0, 260))] for _ in range(3)]
    # token ids on none, on the prompts only (a decoding request runs past its ids: nothing more of it is
    # registered), or on prompts and outputs
    with_ids = draw(st.sampled_from(["none", "input", "both"]))
    trace = []
    t = 0
    for _ in range(n):
        t += rng.choice([0, 0, rng.randint(1, 5_000_000), rng.randint(1, 60_000_000)])
        inp = rng.randint(1, 200)
        out = rng.randint(1, 40)
        req = {"input_toks": inp, "output_toks": out, "arrival_time_ns": t}
        if with_ids != "none":
            full = rng.choice(prefixes)[:inp + out]
            full = full + [rng.randrange(1000) for _ in range(inp + out - len(full))]
            req["input_tok_ids"] = full[:inp]
            if with_ids == "both":
                req["output_tok_ids"] = full[inp:]
        trace.append(req)
    flags = [
        "--block-size", str(block),
        "--max-num-seqs", str(draw(st.integers(1, 12))),
        "--max-num-batched-tokens", str(draw(st.sampled_from([8, 32, 64, 256, 2048]))),
        "--long-prefill-token-threshold", str(draw(st.sampled_from([0, 0, 16, 48]))),
        "--enable-chunked-prefill" if draw(st.booleans()) else "--no-enable-chunked-prefill",
        "--enable-prefix-caching" if draw(st.booleans()) else "--no-enable-prefix-caching",
        "--reserve-full-isl" if draw(st.integers(0, 3)) == 0 else "--no-reserve-full-isl",
        "--async-scheduling" if draw(st.booleans()) else "--no-async-scheduling",
    ]
    blocks = draw(st.integers(4, 400)) * (16 // block)
    return trace, flags, {"mem_size": mem_size_for_blocks(blocks, block)}


@settings(max_examples=int(os.environ.get("TPSIM_FUZZ_EXAMPLES", 150)), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(workloads())
def test_fast_path_equals_reference_and_invariants_hold(tmp_path, test_configs, case):
    trace, flags, cluster_kw = case
    fast = run_case(tmp_path, trace, flags, True, cluster_kw)
    ref = run_case(tmp_path, trace, flags, False, cluster_kw)
    assert fast[0] == ref[0]  # byte-identical CSV
    strip = lambda s: {k: v for k, v in s.items() if k not in ("timing", "provenance")}  # noqa: E731
    assert strip(fast[1]) == strip(ref[1])
    assert fast[3] == ref[3]  # identical throughput lines
    check_invariants(fast[0], fast[1], fast[2], trace)
    check_invariants(ref[0], ref[1], ref[2], trace)


def steady_trace(n, rate_per_s, inp, out, seed=0, ids=False):
    rng = random.Random(seed)
    t = 0.0
    trace = []
    for _ in range(n):
        t += rng.expovariate(rate_per_s)
        req = {"input_toks": inp, "output_toks": out, "arrival_time_ns": int(t * 1e9)}
        trace.append(req)
    return trace


def test_preemption_under_memory_pressure(tmp_path, test_configs):
    trace = [{"input_toks": 100, "output_toks": 200, "arrival_time_ns": i * 1000} for i in range(12)]
    kw = {"mem_size": mem_size_for_blocks(60, 16)}  # 60 blocks: not enough for all 12 at once
    text, summary, result, _ = run_case(tmp_path, trace, ["--max-num-seqs", "12"], True, kw)
    assert summary["totals"]["preemptions"] > 0
    assert summary["totals"]["recomputed_tokens"] > 0
    check_invariants(text, summary, result, trace)
    ref = run_case(tmp_path, trace, ["--max-num-seqs", "12"], False, kw)
    assert ref[0] == text


def test_prefix_cache_hits_shared_prefix(tmp_path, test_configs):
    prefix = list(range(1000, 1064))  # 4 full blocks of 16
    trace = []
    for i in range(5):
        ids = prefix + [5000 + 100 * i + j for j in range(36)]
        trace.append({"input_toks": 100, "output_toks": 4, "arrival_time_ns": i * 1_000_000_000,
                      "input_tok_ids": ids, "output_tok_ids": [1, 2, 3, 4]})
    text, summary, result, _ = run_case(tmp_path, trace, [], True)
    assert summary["totals"]["prefix_hit_tokens"] == 4 * 64  # every later request reuses the 64-token prefix
    off = run_case(tmp_path, trace, ["--no-enable-prefix-caching"], True)
    assert off[1]["totals"]["prefix_hit_tokens"] == 0
    ttft_on = [int(r["TTFT"]) for r in csv.DictReader(io.StringIO(text))]
    ttft_off = [int(r["TTFT"]) for r in csv.DictReader(io.StringIO(off[0]))]
    assert ttft_on[0] == ttft_off[0] and all(a < b for a, b in zip(ttft_on[1:], ttft_off[1:]))


def test_repeated_prompt_hits_all_but_last_token(tmp_path, test_configs):
    ids = list(range(64))
    trace = [{"input_toks": 64, "output_toks": 2, "arrival_time_ns": i * 10**9, "input_tok_ids": ids} for i in range(2)]
    _, summary, _, _ = run_case(tmp_path, trace, [], True)
    assert summary["totals"]["prefix_hit_tokens"] == 48  # capped: at least one token is recomputed


def test_chunked_prefill_splits_long_prompts(tmp_path, test_configs):
    trace = [{"input_toks": 1000, "output_toks": 3, "arrival_time_ns": 0}]
    text, summary, result, _ = run_case(tmp_path, trace, ["--max-num-batched-tokens", "256"], True)
    assert summary["totals"]["iterations"] == 4 + 2  # ceil(1000/256) prefill steps, then 2 decodes
    no_chunking = ["--max-num-batched-tokens", "256", "--no-enable-chunked-prefill"]
    text2, summary2, _, _ = run_case(tmp_path, trace, no_chunking, True)
    assert summary2["totals"]["rejected"] == 1
    assert "chunked prefill disabled" in summary2["rejected_requests"][0]["reason"]


def test_long_prefill_threshold_interleaves_decodes(tmp_path, test_configs):
    trace = [{"input_toks": 10, "output_toks": 30, "arrival_time_ns": 0},
             {"input_toks": 600, "output_toks": 2, "arrival_time_ns": 1}]
    base = run_case(tmp_path, trace, ["--max-num-batched-tokens", "2048"], True)
    capped = run_case(tmp_path, trace, ["--max-num-batched-tokens", "2048", "--long-prefill-token-threshold", "100"],
                      True)
    rows = {int(r["request id"]): r for r in csv.DictReader(io.StringIO(capped[0]))}
    rows0 = {int(r["request id"]): r for r in csv.DictReader(io.StringIO(base[0]))}
    assert int(rows[1]["TTFT"]) > int(rows0[1]["TTFT"])  # the long prompt now takes 6 steps
    # request 0 keeps decoding beside 100-token chunks instead of stalling behind one 600-token chunk
    assert max(json.loads(rows[0]["ITL"])) < max(json.loads(rows0[0]["ITL"]))


def test_too_long_requests_are_rejected_not_hung(tmp_path, test_configs):
    kw = {"mem_size": mem_size_for_blocks(10, 16)}
    trace = [{"input_toks": 50, "output_toks": 5, "arrival_time_ns": 0},
             {"input_toks": 300, "output_toks": 5, "arrival_time_ns": 0},  # 304 tokens > 10 blocks
             {"input_toks": 40000, "output_toks": 2000, "arrival_time_ns": 0}]  # beyond the context window
    text, summary, result, _ = run_case(tmp_path, trace, [], True, kw)
    rej = {r["request_id"]: r["reason"] for r in summary["rejected_requests"]}
    assert set(rej) == {1, 2}
    assert "KV cache holds 10 blocks" in rej[1]
    assert "exceeds max_model_len 40960" in rej[2]
    check_invariants(text, summary, result, trace)


def test_agentic_session_follow_up_waits_for_tool(tmp_path, test_configs):
    trace = [{"session_id": "s", "arrival_time_ns": 0, "sub_requests": [
        {"input_toks": 20, "output_toks": 3, "tool_duration_ns": 5_000_000},
        {"input_toks": 40, "output_toks": 2}]}]
    cfg = write_cluster(tmp_path / "c.json", model=MODEL)
    t = tmp_path / "t.jsonl"
    t.write_text(json.dumps(trace[0]) + "\n")
    sink = ListSink()
    tpsim.run(RunConfig(cluster_config=str(cfg), dataset=str(t)), sink=sink)
    rows = sink.rows
    assert [r.request_id for r in rows] == [0, 1]
    assert rows[1].arrival == rows[0].end_time + 5_000_000


@pytest.mark.parametrize("policy", ["LOAD", "RR", "RAND"])
def test_routing_spreads_over_instances(tmp_path, test_configs, policy):
    trace = steady_trace(40, 200, 50, 20)
    text, summary, result, _ = run_case(tmp_path, trace, ["--request-routing-policy", policy], True,
                                        {"instances": 2})
    per = [i["finished"] for i in summary["instances"]]
    assert sum(per) == 40 and min(per) >= 10
    if policy == "RR":
        assert per == [20, 20]
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["instance id"] for r in rows] == sorted(r["instance id"] for r in rows)  # grouped by instance


def test_pipeline_parallel_instance_runs(tmp_path, test_configs):
    trace = steady_trace(30, 50, 100, 20)
    text, summary, result, _ = run_case(tmp_path, trace, [], True, {"tp": 1, "pp": 2})
    check_invariants(text, summary, result, trace)
    assert summary["instances"][0]["pp_size"] == 2
    assert any("Pipeline parallelism" in a for a in summary["approximations"])


def test_little_law_in_steady_state(tmp_path, test_configs):
    """Windowed Little's law, L = lambda x W, on a stable (not overloaded) run."""
    trace = steady_trace(600, 20, 64, 16, seed=3)
    text, summary, result, _ = run_case(tmp_path, trace, [], True)
    rows = [(int(r["arrival"]), int(r["end_time"])) for r in csv.DictReader(io.StringIO(text))]
    t0, t1 = 5e9, 25e9
    inside = [(a, e) for a, e in rows if t0 <= a < t1]
    lam = len(inside) / (t1 - t0)
    w = sum(e - a for a, e in inside) / len(inside)
    samples = 4000
    l_time = sum(sum(1 for a, e in rows if a <= t < e) for t in
                 (t0 + (t1 - t0) * k / samples for k in range(samples))) / samples
    assert l_time == pytest.approx(lam * w, rel=0.1)
    assert summary["mean_requests_in_system"] == pytest.approx(sum(e - a for a, e in rows) / result.end_ns, rel=1e-9)


def test_higher_link_bw_never_slower_end_to_end(tmp_path, test_configs):
    trace = steady_trace(80, 40, 300, 60, seed=5)
    means = []
    for bw in (1, 4, 16, 64, 450):
        _, summary, _, _ = run_case(tmp_path, trace, [], True, {"tp": 2, "link_bw": bw})
        means.append((summary["metrics_ms"]["ttft"]["mean"], summary["metrics_ms"]["tpot"]["mean"],
                      summary["metrics_ms"]["latency"]["mean"]))
    for metric in range(3):
        series = [m[metric] for m in means]
        assert series == sorted(series, reverse=True)


def test_larger_tp_halves_weights_in_summary(tmp_path, test_configs):
    trace = steady_trace(5, 10, 30, 5)
    w = []
    for tp in (1, 2):
        _, summary, _, _ = run_case(tmp_path, trace, [], True, {"tp": tp})
        w.append(summary["instances"][0]["memory"]["weights_gb"])
    assert w[1] == pytest.approx(w[0] / 2, rel=0.01)


def test_async_scheduling_sees_arrivals_one_step_later(tmp_path, test_configs):
    """vLLM >= 0.12 plans step N+1 while step N runs: a request arriving during a busy step waits one more."""
    trace = [{"input_toks": 50, "output_toks": 400, "arrival_time_ns": 0},  # busy for ~1 s
             {"input_toks": 20, "output_toks": 2, "arrival_time_ns": 150_000_000}]
    sync = run_case(tmp_path, trace, ["--no-async-scheduling"], True)
    asyn = run_case(tmp_path, trace, ["--async-scheduling"], True)
    q = lambda text: {int(r["request id"]): int(r["queuing_delay"]) for r in csv.DictReader(io.StringIO(text))}  # noqa: E731
    qs, qa = q(sync[0]), q(asyn[0])
    assert qs[0] == qa[0] == 0  # an idle engine plans at once either way
    assert qa[1] > qs[1]  # busy engine: the second request is first scheduled a step later
    # an idle engine sees an arrival immediately in both modes
    lone = [{"input_toks": 20, "output_toks": 2, "arrival_time_ns": 5}]
    assert q(run_case(tmp_path, lone, ["--async-scheduling"], True)[0])[0] == 0


def test_throughput_lines_format(tmp_path, test_configs):
    trace = steady_trace(50, 20, 64, 32)
    _, _, _, lines = run_case(tmp_path, trace, [], True)
    import re

    pattern = re.compile(r"^\[INFO\] step=\d+ batch=\d+ "
                         r"prompt_t=[\d.]+k? tok/s decode_t=[\d.]+k? tok/s npu_mem=\d+\.\d GB$")
    assert lines and all(pattern.match(line) for line in lines), lines[:3]
