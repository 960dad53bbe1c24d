"""Capacity search (tpsim/campaign/capacity.py, capacity_job.py, capacity_tables.py): the search finds
a pass/fail threshold to its tolerance in a bounded number of probes, says when it cannot; a job that
is stopped resumes from its record of probes and ends where an uninterrupted one would; a capacity
campaign runs end to end through Snakemake into its tables and figures."""

import hashlib
import json
import math
from pathlib import Path

import pytest
from conftest import REPO
from hypothesis import given, settings
from hypothesis import strategies as st
from test_campaign_e2e import ok, query, snakemake, write_campaign

from tpsim.campaign import capacity, capacity_job, derive
from tpsim.campaign.spec import load_campaign

GENERATE = {"preset": "sharegpt", "duration_s": 8, "rate": 1}
SLO = {"ttft_ms": 500, "tpot_ms": 40, "attainment": 0.9}


def run_search(s: capacity.Settings, threshold: float):
    asked = []

    def probe(rate):
        asked.append(rate)
        return rate <= threshold

    state, status = capacity.search(s, probe)
    return state, status, asked


@settings(max_examples=300, deadline=None)
@given(threshold=st.floats(0.05, 5000), start=st.floats(0.01, 1000), tol=st.floats(0.01, 0.5))
def test_the_search_brackets_a_threshold_to_its_tolerance(threshold, start, tol):
    s = capacity.Settings(start_rate=start, tolerance=tol)
    state, status, asked = run_search(s, threshold)
    assert status == "ok"
    assert state.passed <= threshold < state.failed
    assert state.failed - state.passed <= tol * state.passed * (1 + 1e-9)
    # bracketing takes |log2(threshold / start)| + 2 probes at most, bisection log2(1 / tol) + 1
    bound = abs(math.log2(threshold / start)) + 2 + math.log2(1 / tol) + 2
    assert len(asked) <= bound, (asked, bound)
    assert len(set(asked)) == len(asked)  # no rate probed twice


def test_the_search_says_when_no_rate_or_every_rate_passes():
    s = capacity.Settings(start_rate=4, min_rate=0.5, max_rate=64)
    state, status, asked = run_search(s, threshold=0.1)
    assert status == "unattainable" and state.passed is None and asked == [4, 2, 1, 0.5]
    state, status, asked = run_search(s, threshold=1e6)
    assert status == "above_max_rate" and state.passed == 64 and asked == [4, 8, 16, 32, 64]
    state, status, asked = run_search(capacity.Settings(start_rate=1, max_probes=3), threshold=100)
    assert status == "max_probes" and len(asked) == 3 and (state.passed, state.failed) == (4, None)


def test_settings_start_within_the_rate_limits():
    assert capacity.Settings.from_doc({"max_rate": 10}, 50).start_rate == 10
    assert capacity.Settings.from_doc({"min_rate": 2}, 1).start_rate == 2
    assert capacity.Settings.from_doc({}, 3) == capacity.Settings(start_rate=3)


def derive_config(root: Path, model="Qwen/Qwen3-8B", tp=1) -> tuple[Path, Path]:
    doc = {"name": "cap", "cluster": "configs/cluster/single_node_single_instance.json",
           "workload": {"generate": GENERATE}, "matrix": {"model": [model], "tp_size": [tp], "link_bw": [16]},
           "slo": SLO, "capacity": {}}
    run = load_campaign(doc, source="cap.yaml", roots=[REPO]).runs[0]
    root.mkdir(parents=True, exist_ok=True)
    assert derive.main(["--base", str(REPO / "configs/cluster/single_node_single_instance.json"), "--params",
                        json.dumps(run.params), "--cluster-out", str(root / "cluster.json"), "--run-out",
                        str(root / "run.json")]) == 0
    return root / "cluster.json", root / "run.json"


def job_args(root: Path, slo=None) -> list[str]:
    return ["--cluster", str(root / "cluster.json"), "--run", str(root / "run.json"), "--generate",
            json.dumps(GENERATE), "--slo", json.dumps(slo or SLO), "--capacity", json.dumps({"tolerance": 0.1}),
            "--perf-model", "analytical", "--probes", str(root / "probes.jsonl"), "--out", str(root / "capacity.json")]


def counting(monkeypatch) -> list:
    calls = []
    real = capacity_job.Prober.__call__

    def call(self, rate):
        calls.append(rate)
        return real(self, rate)

    monkeypatch.setattr(capacity_job.Prober, "__call__", call)
    return calls


def test_a_stopped_search_resumes_from_its_record_and_ends_where_a_whole_one_does(tmp_path, monkeypatch):
    whole = tmp_path / "whole"
    derive_config(whole)
    calls = counting(monkeypatch)
    assert capacity_job.main(job_args(whole)) == 0
    done = json.loads((whole / "capacity.json").read_text())
    n = len(calls)
    assert done["status"] == "ok" and n == len(done["probes"]) >= 4
    assert done["first_failing_rps"] - done["capacity_rps"] <= 0.1 * done["capacity_rps"] * (1 + 1e-9)
    assert done["at_capacity"]["rate"] == done["capacity_rps"] and done["at_capacity"]["slo_met"] is True
    # a job stopped after 3 probes (the last line torn) and started again
    part = tmp_path / "part"
    derive_config(part)
    lines = (whole / "probes.jsonl").read_text().splitlines(keepends=True)
    (part / "probes.jsonl").write_text("".join(lines[:3]) + lines[3][:20])
    calls.clear()
    assert capacity_job.main(job_args(part)) == 0
    assert len(calls) == n - 3  # only the missing probes ran
    assert (part / "capacity.json").read_bytes() == (whole / "capacity.json").read_bytes()
    assert len((part / "probes.jsonl").read_text().splitlines()) == n
    # other inputs (a different SLO): the record does not apply, every probe runs again
    calls.clear()
    assert capacity_job.main(job_args(part, slo=dict(SLO, ttft_ms=400))) == 0
    assert len(calls) == len(json.loads((part / "capacity.json").read_text())["probes"])


def test_a_configuration_that_does_not_fit_is_infeasible_with_its_memory_needs(tmp_path):
    derive_config(tmp_path, model="meta-llama/Llama-3.1-70B", tp=1)
    assert capacity_job.main(job_args(tmp_path)) == 0
    doc = json.loads((tmp_path / "capacity.json").read_text())
    assert doc["status"] == "infeasible" and doc["capacity_rps"] is None and len(doc["probes"]) == 1
    assert "does not fit" in doc["reason"] and doc["memory_needed"]["needed_gb"] > doc["memory_needed"]["budget_gb"]


def test_a_capacity_campaign_runs_end_to_end(tmp_path):
    doc = {"name": "capa", "cluster": "configs/cluster/single_node_single_instance.json",
           "workload": {"generate": GENERATE},
           "matrix": {"model": ["Qwen/Qwen3-8B", "meta-llama/Llama-3.1-70B"], "tp_size": [1, 2], "link_bw": [16]},
           "slo": SLO, "capacity": {"tolerance": 0.1}}
    cfg = write_campaign(tmp_path / "capa.yaml", doc)
    ok(snakemake(tmp_path, "--cores", "2", config=cfg))
    res = tmp_path / "results/capa"
    rows = query(res / "campaign.duckdb", """SELECT model, tp_size, status, capacity_rps, first_failing_rps,
                                              n_probes, cap_slo_met FROM capacity""")
    # Llama-3.1-70B at TP=2 over 16 GB/s decodes slower than the 40 ms TPOT threshold at any rate
    assert [r[:3] for r in rows] == [("Qwen/Qwen3-8B", 1, "ok"), ("Qwen/Qwen3-8B", 2, "ok"),
                                     ("meta-llama/Llama-3.1-70B", 1, "infeasible"),
                                     ("meta-llama/Llama-3.1-70B", 2, "unattainable")]
    for _, _, status, cap, fail, n, met in rows:
        if status == "ok":
            assert cap < fail <= cap * 1.1 * (1 + 1e-9) and met is True
        if status == "unattainable":  # halved from 1 req/s down to min_rate, every probe failing
            assert cap is None and fail == pytest.approx(1 / 64) and n == 7
    assert query(res / "campaign.duckdb", "SELECT count(*) FROM probes") == [(sum(r[5] for r in rows),)]
    for name in ("capacity_by_tp", "pareto_throughput_latency", "attainment_vs_rate"):
        for ext in ("pdf", "png", "csv"):
            assert (res / "figures" / f"{name}.{ext}").stat().st_size > 0
    dry = ok(snakemake(tmp_path, "-n", config=cfg))
    assert "Nothing to be done" in dry.stdout + dry.stderr
    digest = hashlib.sha256((res / "capacity.parquet").read_bytes()).hexdigest()
    ok(snakemake(tmp_path, "--cores", "2", "--forcerun", "aggregate", config=cfg))
    assert hashlib.sha256((res / "capacity.parquet").read_bytes()).hexdigest() == digest
