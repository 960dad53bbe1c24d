"""DP lockstep of an MoE group (tpsim/sim/lockstep.py) and vLLM's DP load balancer: no rank ever runs
ahead, every rank runs every step (its own or a dummy), tokens are conserved across ranks, the fast
path equals the reference path, the group pauses only at a 32-step check, requests are balanced on
stale counts, and a dense model's DP ranks stay independent engines."""

from __future__ import annotations

import json
import random
from itertools import pairwise

import jsonschema
from conftest import write_trace
from hypothesis import given, settings
from hypothesis import strategies as st

from tpsim import run
from tpsim.config.run import RunConfig
from tpsim.io.results import ListSink
from tpsim.io.summary import schema
from tpsim.sim.lockstep import WAVE_CHECK_STEPS
from tpsim.sim.router import DPBalancer

MOE = "Qwen/Qwen3-30B-A3B-Instruct-2507"


def cluster(tmp_path, dp=2, model=MOE, ep=True, tp=1, **extra):
    inst = {"model_name": model, "hardware": "RTXPRO6000", "npu_mem": {"mem_size": 96, "mem_bw": 1597},
            "num_npus": tp, "tp_size": tp, "pd_type": None, "data_parallel_size": dp,
            "enable_expert_parallel": ep, **extra}
    doc = {"num_nodes": 1, "link_bw": 16, "link_latency": 20000,
           "nodes": [{"num_instances": 1, "cpu_mem": {"mem_size": 512, "mem_bw": 256, "mem_latency": 0},
                      "instances": [inst]}]}
    path = tmp_path / f"c{random.random()}.json"
    path.write_text(json.dumps(doc))
    return str(path)


def workload(seed, n=40, span_ns=2_000_000_000):
    rng = random.Random(seed)
    return [{"input_toks": rng.randint(1, 3000), "output_toks": rng.randint(1, 300),
             "arrival_time_ns": rng.randint(0, span_ns)} for _ in range(n)]


def simulate(tmp_path, reqs, perf_model="analytical", **kw):
    trace = write_trace(tmp_path / f"t{random.random()}.jsonl", sorted(reqs, key=lambda r: r["arrival_time_ns"]))
    sink = ListSink()
    result = run(RunConfig(cluster_config=kw.pop("cfg", None) or cluster(tmp_path), dataset=str(trace),
                           perf_model=perf_model, **kw), sink=sink)
    return result, sink


def check_lockstep(result, reqs):
    sim = result.sim
    (group,) = sim.groups
    ends = group.ends
    assert all(a < b for a, b in pairwise(ends)), "group steps overlap or go back in time"
    step_ends = set(ends)
    for rank, inst in enumerate(group.members):
        assert set(inst.iter_ends) <= step_ends, "a rank ended a step the group did not"
        assert len(inst.iter_ends) + group.dummy_steps[rank] == group.steps, "a rank skipped a group step"
        for r in inst.finished:
            assert r.first_token in step_ends and r.finish in step_ends
    # token conservation across the DP ranks
    done = [r for inst in group.members for r in inst.finished]
    assert sorted(r.rid for r in done) == list(range(len(reqs)))
    assert sum(inst.tokens_generated for inst in group.members) == sum(r["output_toks"] for r in reqs)
    assert sum(r.output for r in done) == sum(r["output_toks"] for r in reqs)


@settings(max_examples=6, deadline=None)
@given(st.integers(0, 10_000))
def test_no_rank_runs_ahead_and_tokens_are_conserved(tmp_path_factory, seed):
    tmp = tmp_path_factory.mktemp("ls")
    reqs = workload(seed)
    fast, fast_sink = simulate(tmp, reqs)
    check_lockstep(fast, reqs)
    _, ref_sink = simulate(tmp, reqs, fast_forward=False)
    assert fast_sink.rows == ref_sink.rows, "the reference path disagrees with the fast path"
    _, again = simulate(tmp, reqs)
    strip = lambda text: {k: v for k, v in json.loads(text).items() if k not in ("timing", "provenance")}  # noqa: E731
    assert again.rows == fast_sink.rows and strip(again.summary_json) == strip(fast_sink.summary_json)


def test_an_idle_rank_runs_dummy_steps_and_the_group_pauses_at_the_32_step_check(tmp_path):
    reqs = [{"input_toks": 100, "output_toks": 5, "arrival_time_ns": 0}]
    result, sink = simulate(tmp_path, reqs)
    (group,) = result.sim.groups
    assert group.steps == WAVE_CHECK_STEPS  # 5 steps of work, then dummies until the check at step 32
    assert group.dummy_steps == [WAVE_CHECK_STEPS - 5, WAVE_CHECK_STEPS]  # rank 0 took the request
    assert len(sink.rows) == 1 and sink.rows[0].instance_id == 0
    # a request arriving during those dummy steps waits for the one in flight, then starts at a group step end
    late = group.ends[10] - 1
    result2, _ = simulate(tmp_path, reqs + [{"input_toks": 100, "output_toks": 5, "arrival_time_ns": late}])
    g2 = result2.sim.groups[0]
    second = next(r for inst in g2.members for r in inst.finished if r.rid == 1)
    assert second.first_scheduled in g2.ends and second.first_scheduled >= late
    check_lockstep(result2, reqs + [{"input_toks": 100, "output_toks": 5, "arrival_time_ns": late}])


def test_the_summary_reports_the_lockstep_and_validates(tmp_path):
    result, sink = simulate(tmp_path, workload(3, n=12))
    doc = json.loads(sink.summary_json)
    jsonschema.validate(doc, schema())
    blocks = [i["lockstep"] for i in doc["instances"]]
    assert [b["group_steps"] for b in blocks] == [result.sim.groups[0].steps] * 2
    assert all(0 <= b["mean_wait_for_slowest_rank"] < 1 for b in blocks)
    assert any("step in lockstep" in a for a in doc["approximations"])
    assert any("Mixture of experts, latency" in a for a in doc["approximations"])


def test_dense_dp_ranks_are_independent_engines(tmp_path):
    cfg = cluster(tmp_path, model="Qwen/Qwen3-8B", ep=None)
    result, _ = simulate(tmp_path, workload(1, n=12), cfg=cfg)
    assert result.sim.groups == []
    doc = result.summary.to_dict()
    assert not any("lockstep" in i for i in doc["instances"])


def test_expert_routing_policy_is_honoured_for_moe_and_ignored_for_dense(tmp_path):
    reqs = workload(2, n=10)
    a, _ = simulate(tmp_path, reqs)
    b, _ = simulate(tmp_path, reqs, expert_routing_policy="RAND")
    assert a.summary.metrics_ms["tpot"] != b.summary.metrics_ms["tpot"]
    assert any("RAND (uniform random" in x for x in b.summary.approximations)
    dense, _ = simulate(tmp_path, reqs, cfg=cluster(tmp_path, model="Qwen/Qwen3-8B", ep=None),
                        expert_routing_policy="RR")
    assert any(line.startswith("--expert-routing-policy RR: ignored") for line in dense.summary.ignored)


class FakeRank:
    def __init__(self, index, waiting=0, running=0):
        self.index = index
        self.waiting = [None] * waiting
        self.num_running = running


def test_dp_balancer_scores_stale_counts_and_counts_its_own_requests():
    ranks = [FakeRank(0), FakeRank(1)]
    lb = DPBalancer(ranks)
    lb.refresh()
    # idle ranks: ties go to rank 0, then its own +1 waiting (score 4) sends the next to rank 1
    assert [lb.pick({0, 1}) for _ in range(4)] == [0, 1, 0, 1]
    # the engines' real queues are not seen until the next refresh
    ranks[0].waiting, ranks[1].num_running = [], 9
    assert lb.counts == [[2, 0], [2, 0]]
    lb.refresh()
    assert lb.counts == [[0, 0], [0, 9]] and lb.pick({0, 1}) == 0
    assert lb.pick({1}) == 1  # only rank 1 can hold this request


def test_requests_spread_over_the_ranks(tmp_path):
    reqs = [{"input_toks": 500, "output_toks": 50, "arrival_time_ns": i * 10_000_000} for i in range(40)]
    _, sink = simulate(tmp_path, reqs)
    per_rank = [sum(1 for r in sink.rows if r.instance_id == i) for i in (0, 1)]
    assert per_rank == [20, 20]
