"""SLOs, goodput and overload (tpsim/campaign/slo.py): the per-request rule, the per-run numbers in the
runs table (checked against an independent SQL computation over the requests), and the overload
criterion on synthetic queues and on real runs of one trace at a low and a high rate."""

import json

import pytest
from conftest import REPO
from hypothesis import given, settings
from hypothesis import strategies as st
from test_campaign_scripts import build_runs, query, run_aggregate

from tpsim.campaign import slo
from tpsim.campaign.spec import CampaignError, load_campaign

MS = 1_000_000


def test_a_request_meets_the_slo_only_below_every_threshold():
    s = slo.SLO(ttft_ms=100, tpot_ms=20)
    assert s.met_by(100 * MS, 20 * MS, 10**12, 50)  # at the thresholds: met; latency has none
    assert not s.met_by(100 * MS + 1, 1, 0, 50)
    assert not s.met_by(0, 20 * MS + 1, 0, 50)
    assert s.met_by(0, 10**12, 0, 1)  # a one-token answer has no TPOT to meet
    assert not slo.SLO(latency_ms=5).met_by(0, 0, 5 * MS + 1, 3)
    assert s.describe() == "TTFT <= 100 ms, TPOT <= 20 ms for 90 % of requests"


def test_run_stats_count_every_request_of_the_trace():
    """Attainment over all requests (the 2 rejected ones never meet it); goodput over the simulated time."""
    req = {"arrival_ns": [0, 1, 2, 3], "ttft_ns": [10 * MS, 10 * MS, 300 * MS, 10 * MS],
           "tpot_ns": [5 * MS, 50 * MS, 5 * MS, 5 * MS], "latency_ns": [1, 1, 1, 1], "output_tokens": [10, 20, 30, 1]}
    out = slo.run_stats(req, slo.SLO(ttft_ms=100, tpot_ms=20, attainment=0.5), requests=6, simulated_time_s=2.0,
                        output_tokens_per_s=30.0, gpus=4)
    assert out["slo_attainment"] == pytest.approx(2 / 6)  # requests 0 and 3 meet both thresholds
    assert out["slo_met"] is False
    assert out["goodput_rps"] == pytest.approx(1.0)
    assert out["goodput_output_tokens_per_s"] == pytest.approx((10 + 1) / 2)
    assert out["goodput_output_tokens_per_s_per_gpu"] == pytest.approx(5.5 / 4)
    assert out["output_tokens_per_s_per_gpu"] == pytest.approx(7.5)
    none = slo.run_stats(req, None, 6, 2.0, 30.0, 4)  # no SLO: no attainment or goodput, the rest stays
    assert none["slo_attainment"] is None and none["goodput_rps"] is None and none["output_tokens_per_s_per_gpu"] == 7.5


@settings(max_examples=200, deadline=None)
@given(k=st.floats(-0.5, 3.0), c=st.integers(0, 10**10), n=st.integers(16, 400), gap=st.integers(10**5, 10**9))
def test_ttft_growth_is_the_slope_of_ttft_over_arrivals(k, c, n, gap):
    """TTFT that grows by k s per s of arrivals gives ttft_growth k."""
    arrivals = [i * gap for i in range(n)]
    growth, _ = slo.overload(arrivals, [c + k * a for a in arrivals])
    assert growth == pytest.approx(k, rel=1e-6, abs=1e-9)


@settings(max_examples=200, deadline=None)
@given(k=st.floats(0.0, 3.0), n=st.integers(16, 400), gap=st.integers(10**5, 10**9))
def test_a_queue_growing_from_empty_is_overloaded_exactly_above_the_threshold(k, n, gap):
    """TTFT = k x time since the first arrival (a queue filling at rate k): overloaded iff k > 0.05."""
    if abs(k - slo.OVERLOAD_GROWTH) < 1e-6:
        return
    arrivals = [i * gap for i in range(n)]
    _, load = slo.overload(arrivals, [k * a for a in arrivals])
    assert load == ("overloaded" if k > slo.OVERLOAD_GROWTH else "stable")


def test_jitter_that_does_not_double_the_ttft_is_not_a_queue():
    """A short trace whose TTFT rises by less than its first-half level over the second half: stable,
    though the slope passes 0.05; a rise of three times that level: overloaded."""
    arrivals = [i * 100 * MS for i in range(30)]  # 2.9 s of arrivals, 100 ms of TTFT before the middle
    ttft = [100 * MS + (0.2 * a if a >= 1.5e9 else 0) for a in arrivals]  # +0.29 s over the second half
    growth, load = slo.overload(arrivals, ttft)
    assert growth == pytest.approx(0.2) and growth * 1.45e9 > 100 * MS and load == "overloaded"
    small = [100 * MS + (0.06 * (a - 1.5e9) if a >= 1.5e9 else 0) for a in arrivals]  # +87 ms over the half
    growth, load = slo.overload(arrivals, small)
    assert growth == pytest.approx(0.06) and load == "stable"


def test_one_trace_is_stable_at_a_low_rate_and_overloaded_at_a_high_one(tmp_path):
    doc = {"name": "load", "cluster": "configs/cluster/single_node_single_instance.json",
           "workload": {"generate": {"preset": "sharegpt", "num_reqs": 20}},
           "matrix": {"model": ["Qwen/Qwen3-8B"], "tp_size": [1], "link_bw": [16], "rate": [0.5, 200]}}
    _, dirs = build_runs(tmp_path, doc)
    run_aggregate(dirs, tmp_path / "agg", slo={"ttft_ms": 2000})
    rows = dict(query(tmp_path / "agg/campaign.duckdb", "SELECT rate, load FROM runs"))
    assert rows == {0.5: "stable", 200.0: "overloaded"}


@pytest.fixture(scope="module")
def slo_campaign(tmp_path_factory):
    root = tmp_path_factory.mktemp("slo")
    doc = {"name": "slo", "cluster": "configs/cluster/single_node_single_instance.json",
           "workload": {"generate": {"preset": "sharegpt", "num_reqs": 20}},
           "matrix": {"model": ["Qwen/Qwen3-8B", "meta-llama/Llama-3.1-70B"], "tp_size": [1, 2], "link_bw": [16],
                      "rate": [1, 8]}}
    _, dirs = build_runs(root, doc)
    spec = {"ttft_ms": 200, "tpot_ms": 25, "attainment": 0.8}
    run_aggregate(dirs, root / "agg", slo=spec)
    return root / "agg/campaign.duckdb", spec


def test_runs_table_slo_columns_match_an_independent_count(slo_campaign):
    db, spec = slo_campaign
    expected = query(db, f"""
        SELECT run_id,
               count(*) FILTER (WHERE ttft_ns <= {spec['ttft_ms']} * 1e6
                                 AND (output_tokens <= 1 OR tpot_ns <= {spec['tpot_ms']} * 1e6)) AS good,
               sum(output_tokens) FILTER (WHERE ttft_ns <= {spec['ttft_ms']} * 1e6
                                 AND (output_tokens <= 1 OR tpot_ns <= {spec['tpot_ms']} * 1e6)) AS good_tokens
        FROM requests GROUP BY run_id""")
    runs = {r[0]: r[1:] for r in query(db, """
        SELECT run_id, requests, simulated_time_s, num_npus * num_instances, slo_attainment, slo_met, goodput_rps,
               goodput_output_tokens_per_s, goodput_output_tokens_per_s_per_gpu, output_tokens_per_s,
               output_tokens_per_s_per_gpu FROM runs WHERE status = 'ok'""")}
    assert len(runs) == len(expected) == 6
    assert len({round(r[3], 6) for r in runs.values()}) > 1  # the thresholds separate the runs
    for run_id, good, good_tokens in expected:
        n, t, gpus, att, met, gp_rps, gp_tok, gp_tok_gpu, tok, tok_gpu = runs[run_id]
        assert att == pytest.approx(good / n)
        assert met == (good / n >= spec["attainment"])
        assert gp_rps == pytest.approx(good / t)
        assert gp_tok == pytest.approx((good_tokens or 0) / t)
        assert gp_tok_gpu == pytest.approx((good_tokens or 0) / t / gpus)
        assert tok_gpu == pytest.approx(tok / gpus)


def test_infeasible_runs_have_no_slo_numbers(slo_campaign):
    db, _ = slo_campaign
    rows = query(db, "SELECT slo_attainment, goodput_rps, load FROM runs WHERE status = 'infeasible'")
    assert rows and all(r == (None, None, None) for r in rows)


def good(**over) -> dict:
    doc = {"name": "t", "cluster": "configs/cluster/single_node_single_instance.json",
           "workload": {"generate": {"preset": "sharegpt", "num_reqs": 20, "rate": 2}},
           "matrix": {"model": ["Qwen/Qwen3-8B"], "tp_size": [1, 2], "link_bw": [16]}}
    doc.update(over)
    return doc


def errors_of(doc) -> str:
    with pytest.raises(CampaignError) as exc:
        load_campaign(doc, source="c.yaml", roots=[REPO])
    return str(exc.value)


@pytest.mark.parametrize("over, message", [
    ({"slo": {}}, "slo: give at least one threshold (ttft_ms, tpot_ms, latency_ms)"),
    ({"slo": {"attainment": 0.9}}, "slo: give at least one threshold"),
    ({"slo": {"ttft_ms": 0}}, "slo.ttft_ms"),
    ({"slo": {"ttft_ms": 10, "attainment": 1.5}}, "slo.attainment"),
    ({"slo": {"ttft_ms": 10, "p99": 3}}, "slo"),
    ({"capacity": {}}, "capacity: needs slo:"),
    ({"capacity": {}, "slo": {"ttft_ms": 10}, "workload": {"trace": "workloads/example_trace.jsonl"}},
     "capacity: needs a generated workload"),
    ({"capacity": {"min_rate": 5, "max_rate": 5}, "slo": {"ttft_ms": 10}},
     "capacity: min_rate 5 must be below max_rate 5"),
    ({"capacity": {"tolerance": 0}, "slo": {"ttft_ms": 10}}, "capacity.tolerance"),
    ({"capacity": {}, "slo": {"ttft_ms": 10}, "measured": ["x"]}, "measured: a capacity search's figures have no"),
])
def test_slo_and_capacity_mistakes_name_their_key(over, message):
    assert message in errors_of(good(**over))


def test_a_capacity_search_chooses_the_rate_itself():
    doc = good(slo={"ttft_ms": 10}, capacity={})
    doc["matrix"]["rate"] = [1, 2]
    assert "matrix.rate: a capacity search chooses the rate itself" in errors_of(doc)


def test_slo_and_capacity_load_with_their_defaults():
    camp = load_campaign(good(slo={"tpot_ms": 50}, capacity={}), source="c.yaml", roots=[REPO])
    assert camp.capacity and [r.trace for r in camp.runs] == [None, None] and camp.traces == {}
    assert all(r.params["rate"] is None for r in camp.runs)
    assert slo.SLO.from_doc(camp.doc["slo"]) == slo.SLO(tpot_ms=50, attainment=0.9)
    assert json.loads(json.dumps(camp.doc))["capacity"] == {}
