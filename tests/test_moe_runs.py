"""The shipped mixture-of-experts models run end to end on the shipped MoE cluster configs, with every
latency model that applies, and write complete, schema-valid outputs."""

from __future__ import annotations

import json

import jsonschema
import pytest
from conftest import REPO, read_csv_rows, run_tpsim, write_trace

from tpsim.io.results import HEADER
from tpsim.io.summary import schema

TRACE = [{"input_toks": 50 + 37 * i, "output_toks": 3 + i % 7, "arrival_time_ns": i * 20_000_000} for i in range(16)]

CASES = [
    ("rtxpro6000_qwen3_30b_a3b_dp2_ep2", None, 2),
    ("rtxpro6000_qwen3_30b_a3b_dp2_ep2", "Qwen/Qwen3-30B-A3B", 2),
    ("h100_mixtral_8x7b_tp2", None, 1),
    ("h200_qwen3_235b_a22b_dp8_ep8", None, 8),
]


@pytest.mark.parametrize("perf_model", ["auto", "analytical"])
@pytest.mark.parametrize("config,model,instances", CASES, ids=[f"{c}-{m or 'as-shipped'}" for c, m, _ in CASES])
def test_shipped_moe_models_run_end_to_end(tmp_path, capsys, config, model, instances, perf_model):
    cfg = REPO / "configs" / "cluster" / f"{config}.json"
    if model:
        doc = json.loads(cfg.read_text())
        for inst in doc["nodes"][0]["instances"]:
            inst["model_name"] = model
        cfg = tmp_path / "cluster.json"
        cfg.write_text(json.dumps(doc))
    trace = write_trace(tmp_path / "t.jsonl", TRACE)
    out = tmp_path / "out.csv"
    assert run_tpsim(["run", "--cluster-config", str(cfg), "--dataset", str(trace), "--output", str(out),
                      "--perf-model", perf_model, "--log-interval", "0"]) == 0
    capsys.readouterr()
    assert out.read_text().splitlines()[0] == HEADER.strip()
    rows = read_csv_rows(out)
    assert sorted(int(r["request id"]) for r in rows) == list(range(len(TRACE)))
    assert all(int(r["TTFT"]) > 0 and int(r["latency"]) >= int(r["TTFT"]) for r in rows)
    summary = json.loads(out.with_suffix(".summary.json").read_text())
    jsonschema.validate(summary, schema())
    assert len(summary["instances"]) == instances and summary["totals"]["finished"] == len(TRACE)
    assert all(i["latency_model"]["moe"]["experts"] > 0 for i in summary["instances"])
    expected = "kernels" if perf_model == "auto" else "analytical"
    assert {i["perf_model"] for i in summary["instances"]} == {expected}
    assert any(a.startswith("Mixture of experts, latency") for a in summary["approximations"])
    assert (instances > 1) == any("step in lockstep" in a for a in summary["approximations"])
