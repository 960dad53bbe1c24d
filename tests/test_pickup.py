"""``--ttft-origin pickup``: TTFT, latency and queuing delay measured from the moment vLLM's engine loop takes a
request from its input queue (vLLM's ``queued_ts``), as the publishers of the shared measured runs define them
(tpsim/sim/recorder.py ``_InstanceRows.pickup``).  The simulation itself must not change: only where the three
columns start."""

from __future__ import annotations

import json
import random

from conftest import write_cluster, write_trace
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_simulation import mem_size_for_blocks

from tpsim.api import run
from tpsim.config.run import RunConfig
from tpsim.io.results import ListSink
from tpsim.stats import describe

MODEL = "Qwen/Qwen3-0.6B"


def _runs(tmp_path, reqs, **kw):
    cfg = write_cluster(tmp_path / "c.json", model=MODEL, instances=kw.pop("instances", 1),
                        mem_size=kw.pop("mem_size", 24))
    t = write_trace(tmp_path / "t.jsonl", reqs)
    out = {}
    for origin in ("arrival", "pickup"):
        sink = ListSink()
        res = run(RunConfig(cluster_config=str(cfg), dataset=str(t), perf_model="analytical", log_interval=0,
                            ttft_origin=origin, **kw), sink=sink)
        out[origin] = (sink, res)
    return out


def test_a_request_arriving_during_a_step_is_taken_when_that_step_ends(tmp_path, test_configs):
    """A finds the engine idle (taken at once); B arrives 1 ns later, during A's first step, and is taken at its
    end -- that is B's whole difference between the two origins."""
    reqs = [{"input_toks": 500, "output_toks": 4, "arrival_time_ns": 0},
            {"input_toks": 20, "output_toks": 4, "arrival_time_ns": 1}]
    runs = _runs(tmp_path, reqs)
    (arr, _), (pick, res) = runs["arrival"], runs["pickup"]
    first_end = res.sim.instances[0].iter_ends[0]
    a_arr, b_arr = sorted(arr.rows, key=lambda r: r.request_id)
    a_pick, b_pick = sorted(pick.rows, key=lambda r: r.request_id)
    assert a_pick.ttft == a_arr.ttft and a_pick.latency == a_arr.latency
    assert b_arr.ttft - b_pick.ttft == first_end - 1 > 0
    assert b_pick.end_time - b_pick.arrival - b_pick.latency == first_end - 1
    assert b_pick.queuing_delay == b_arr.queuing_delay - (first_end - 1) >= 0


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), n=st.integers(1, 60), gap_ms=st.sampled_from([0, 1, 5, 40]),
       instances=st.sampled_from([1, 2]), small_kv=st.booleans(), fast_forward=st.booleans(),
       async_scheduling=st.booleans())
def test_pickup_only_moves_where_the_three_columns_start(tmp_path_factory, test_configs, seed, n, gap_ms, instances,
                                                         small_kv, fast_forward, async_scheduling):
    rng = random.Random(seed)
    t = 0
    reqs = []
    for _ in range(n):
        t += rng.randint(0, gap_ms * 1_000_000)
        reqs.append({"input_toks": rng.randint(1, 400), "output_toks": rng.randint(1, 40), "arrival_time_ns": t})
    from tpsim.config.run import EngineOptions

    runs = _runs(tmp_path_factory.mktemp("pickup"), reqs, instances=instances,
                 mem_size=mem_size_for_blocks(40, 16) if small_kv else 24, fast_forward=fast_forward,
                 engine=EngineOptions(async_scheduling=async_scheduling))
    (arr, _), (pick, res) = runs["arrival"], runs["pickup"]
    assert len(pick.rows) == len(arr.rows) == n
    waits = []
    for a, p in zip(arr.rows, pick.rows):
        assert (a.instance_id, a.request_id, a.arrival, a.end_time, a.tpot, a.itl_text) == \
               (p.instance_id, p.request_id, p.arrival, p.end_time, p.tpot, p.itl_text)
        wait = p.end_time - p.arrival - p.latency
        assert a.ttft == p.ttft + wait and a.latency == p.latency + wait and a.queuing_delay == p.queuing_delay + wait
        assert 0 <= wait and p.queuing_delay >= 0  # taken at or after arrival, never after its first scheduling
        if wait:  # taken at the end of the step running at its arrival: the first step end after it
            ends = list(res.sim.instances[p.instance_id].iter_ends)
            taken = p.arrival + wait
            assert taken in ends and not any(p.arrival <= e < taken for e in ends)
        waits.append(wait)
    doc_a, doc_p = json.loads(arr.summary_json), json.loads(pick.summary_json)
    assert "pickup_delay" not in doc_a["metrics_ms"]
    assert doc_p["metrics_ms"]["pickup_delay"] == describe(waits, 1e-6)
    assert doc_p["metrics_ms"]["ttft"] == describe([r.ttft for r in pick.rows], 1e-6)
    assert any("--ttft-origin pickup" in line for line in doc_p["approximations"])
    assert not any("--ttft-origin pickup" in line for line in doc_a["approximations"])
    assert doc_p["totals"] == doc_a["totals"] and doc_p["simulated_time_s"] == doc_a["simulated_time_s"]
