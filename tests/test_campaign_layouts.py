"""Campaign matrix keys dp_size and ep_size (tpsim/campaign/layouts.py): derivation, load-time problems,
unchanged runs for campaigns without them, the tables' layout columns and the layouts_by_gpus figure.

The end-to-end run (Snakemake, an MoE model in two layouts on two GPUs) is at the bottom.
"""

import hashlib
import json
import subprocess
import sys

import pytest
import yaml
from conftest import REPO, checkout_env, snakemake_cmd, write_trace

from tpsim.campaign import layouts
from tpsim.campaign.derive import derive_cluster_config, hardware_memory
from tpsim.campaign.outputs import LAYOUT_FIGURE, figures_of, layout_figure
from tpsim.campaign.spec import CampaignError, load_campaign
from tpsim.campaign.tables import run_row
from tpsim.io.summary import RunSummary

ROOTS = [REPO]
MOE_BASE = "configs/cluster/rtxpro6000_qwen3_30b_a3b_dp2_ep2.json"
MOE = "Qwen/Qwen3-30B-A3B"


def moe_doc(**matrix) -> dict:
    return {"name": "lay", "cluster": MOE_BASE, "workload": {"generate": {"preset": "sharegpt", "num_reqs": 20}},
            "matrix": {"model": [MOE], **matrix}}


def load(doc):
    return load_campaign(doc, source="c.yaml", roots=ROOTS)


def problems(doc) -> list[str]:
    with pytest.raises(CampaignError) as exc:
        load(doc)
    return str(exc.value).splitlines()


# ----------------------------------------------------------------------------- derivation


def _instance(tp: int, **layout) -> dict:
    """The base's instance as a derived run writes it (key order included)."""
    return {"model_name": MOE, "hardware": "RTXPRO6000",
            "npu_mem": {"mem_size": 96, "mem_bw": 1597, "mem_latency": 0},
            "num_npus": tp, "tp_size": tp, "pd_type": None, "pp_size": 1, **layout}


def _derived(instances: list[dict]) -> dict:
    return {"num_nodes": 1, "link_bw": 16, "link_latency": 20000,
            "nodes": [{"num_instances": len(instances), "cpu_mem": {"mem_size": 512, "mem_bw": 256, "mem_latency": 0},
                       "instances": instances}]}


@pytest.mark.parametrize(("dp", "tp", "ep", "layout"), [
    (2, 2, 4, {"ep_size": 4, "dp_group": "dp"}),
    (2, 1, 1, {"enable_expert_parallel": False, "dp_group": "dp"}),  # EP off in a group: tpsim reads ep_size 1 as wrong
    (1, 2, 2, {"ep_size": 2}),  # one instance: no group
])
def test_a_dp_ep_run_derives_one_dp_group_exactly(dp, tp, ep, layout):
    camp = load(moe_doc(dp_size=[dp], tp_size=[tp], ep_size=[ep]))
    (run,) = camp.runs
    assert run.id == f"model=Qwen--Qwen3-30B-A3B/dp={dp}/tp={tp}/ep={ep}"
    assert (run.params["dp_size"], run.params["tp_size"], run.params["ep_size"]) == (dp, tp, ep)
    assert run.params["num_instances"] == dp and run.params["num_npus"] == tp
    assert list(run.params)[4:8] == ["dp_size", "tp_size", "ep_size", "pp_size"]
    doc = derive_cluster_config(camp.base, run.params)
    assert json.dumps(doc) == json.dumps(_derived([_instance(tp, **layout) for _ in range(dp)]))


def test_ep_size_alone_keeps_the_bases_group_and_dp_size_alone_its_ep():
    (run,) = load(moe_doc(tp_size=[1], ep_size=[2])).runs  # the base: DP 2 x EP 2, group "A"
    assert run.id == "model=Qwen--Qwen3-30B-A3B/tp=1/ep=2" and run.params["dp_size"] == 2
    doc = derive_cluster_config(load(moe_doc(tp_size=[1], ep_size=[2])).base, run.params)
    assert doc == _derived([_instance(1, ep_size=2, dp_group="dp")] * 2)
    camp = load(moe_doc(dp_size=[2], tp_size=[2]))
    (run,) = camp.runs
    assert "ep_size" not in run.params
    assert derive_cluster_config(camp.base, run.params) == _derived([_instance(2, ep_size=2, dp_group="dp")] * 2)
    # the base's ep_size 2 stays: a multiple of 4 DP ranks it is not, so tpsim's loader refuses it at load
    with pytest.raises(CampaignError, match=r"matrix.dp_size: the layout dp_size 4 x tp_size 1 is not one tpsim runs: "
                                            r"ep_size \(2\) must be a multiple of the 4 DP ranks"):
        load(moe_doc(dp_size=[2, 4], tp_size=[1]))


# Run ids, parameters and derived configs of two campaigns without the new keys, hashed as
# json.dumps([run.id, run.params, derived config]) per run, computed with the code before dp_size /
# ep_size existed (main at 51041c5).  Recompute them the same way if a base config or catalog entry changes.
UNCHANGED = {
    "dense": ({"name": "g1", "cluster": "configs/cluster/single_node_single_instance.json",
               "workload": {"generate": {"preset": "sharegpt", "num_reqs": 20, "rate": 2}},
               "matrix": {"model": ["Qwen/Qwen3-32B", "Qwen/Qwen3-8B"], "tp_size": [1, 2, 4], "link_bw": [16, 450],
                          "hardware": ["RTXPRO6000", "H100"], "seed": [0, 1], "max_num_seqs": [64]},
               "exclude": [{"model": "Qwen/Qwen3-8B", "tp_size": [4]}]},
              40, "2c8959dee930b27b5e34f522074e2c8737d964b6991a6f38772122d33e5a2cb7"),
    "moe": ({"name": "g2", "cluster": MOE_BASE, "workload": {"generate": {"preset": "sharegpt", "num_reqs": 20,
                                                                          "rate": 5}},
             "matrix": {"model": [MOE, "Qwen/Qwen3-30B-A3B-Instruct-2507"], "tp_size": [1, 2], "link_bw": [16, 128],
                        "rate": [2, 5]}},
            16, "029386ee966c143be2d811ba5700fe162d47fb53cbdc0b2d5b4b886288b1ee80"),
}


@pytest.mark.parametrize("name", sorted(UNCHANGED))
def test_campaigns_without_the_keys_derive_what_they_did_before(name):
    doc, count, digest = UNCHANGED[name]
    camp = load(json.loads(json.dumps(doc)))
    h = hashlib.sha256()
    for run in camp.runs:
        assert "dp_size" not in run.params and "ep_size" not in run.params  # their run keys hash the params
        hw = hardware_memory(run.hardware_override) if run.hardware_override else None
        h.update(json.dumps([run.id, run.params, derive_cluster_config(camp.base, run.params, hw,
                                                                       run.model_config)]).encode())
    assert (len(camp.runs), h.hexdigest()) == (count, digest)


# ----------------------------------------------------------------------------- bad combinations


@pytest.mark.parametrize(("matrix", "line"), [
    ({"dp_size": [1], "tp_size": [1], "ep_size": [2]},
     "campaign c.yaml: matrix.ep_size: the layout dp_size 1 x tp_size 1 x ep_size 2 is not one tpsim runs: ep_size (2) "
     "> tp_size (1) needs a dp_group (then ep_size is the group's total EP degree); set ep_size <= tp_size or "
     "dp_size > 1; leave it out with exclude: [{dp_size: 1, tp_size: 1, ep_size: 2}]"),
    ({"dp_size": [2], "tp_size": [1], "ep_size": [4]},
     "campaign c.yaml: matrix.ep_size: the layout dp_size 2 x tp_size 1 x ep_size 4 is not one tpsim runs: ep_size (4) "
     "over 2 DP ranks is 2 EP ranks per instance, more than its tp_size (1) GPUs; set ep_size <= 2; leave it out "
     "with exclude: [{dp_size: 2, tp_size: 1, ep_size: 4}]"),
    ({"dp_size": [4], "tp_size": [2], "ep_size": [2]},
     "campaign c.yaml: matrix.ep_size: the layout dp_size 4 x tp_size 2 x ep_size 2 is not one tpsim runs: ep_size (2) "
     "must be a multiple of the 4 DP ranks of dp_group 'dp' (it is the group's total EP degree); set ep_size to 8 for "
     "expert parallelism over the group, or set ep_size to 1 for experts sharded by width (vLLM's default); leave "
     "it out with exclude: [{dp_size: 4, tp_size: 2, ep_size: 2}]"),
])
def test_a_layout_tpsims_loader_refuses_is_one_line_at_load(matrix, line):
    assert problems(moe_doc(**matrix)) == [line]


def test_every_refused_layout_is_named_once_and_the_exclude_rule_it_names_removes_it():
    doc = moe_doc(dp_size=[1, 2, 4], tp_size=[1, 2], ep_size=[1, 2, 4])
    lines = problems(doc)
    assert len(lines) == len(set(lines)) == 6
    rules = [yaml.safe_load(line.rsplit("exclude: ", 1)[1]) for line in lines]
    doc["exclude"] = [rule for listed in rules for rule in listed]
    assert len(load(doc).runs) == 3 * 2 * 3 - 6


def test_ep_on_a_dense_model_is_refused_naming_its_exclude_rule():
    doc = moe_doc(dp_size=[2], tp_size=[1], ep_size=[1, 2])
    doc["matrix"]["model"].append("Qwen/Qwen3-0.6B")
    assert problems(doc) == [
        "campaign c.yaml: matrix.ep_size: Qwen/Qwen3-0.6B is dense (no experts to place): ep_size 2 would run as "
        "EP 1, a copy of its ep_size 1 run; leave it out with exclude: [{model: Qwen/Qwen3-0.6B, ep_size: [2]}]"]
    doc["exclude"] = [{"model": "Qwen/Qwen3-0.6B", "ep_size": [2]}]
    dense = [r for r in load(doc).runs if r.params["model"] == "Qwen/Qwen3-0.6B"]
    assert [r.params["dp_size"] for r in dense] == [2]  # a dense DP group: independent engines


@pytest.mark.parametrize(("over", "line"), [
    ({"dp_size": [0]}, "campaign c.yaml: matrix.dp_size[0]: 0 is less than the minimum, 1"),
    ({"dp_size": [4097]}, "campaign c.yaml: matrix.dp_size[0]: 4097 is more than the maximum, 4,096"),
    ({"ep_size": ["4"]}, "matrix.ep_size[0]: expected integer, got '4'"),
    ({"ep_size": [2, 2.0]}, "matrix.ep_size: values must be unique"),
])
def test_the_schema_bounds_the_new_keys(over, line):
    lines = problems(moe_doc(tp_size=[1], **over))
    assert any(line in msg for msg in lines), lines


def test_an_exclude_rule_over_a_layout_key_the_matrix_lacks_is_refused():
    doc = moe_doc(tp_size=[1, 2], dp_size=[2], ep_size=[2])
    doc["exclude"] = [{"ep_size": 4}, {"pp_size": 1}]
    lines = problems(doc)
    assert "campaign c.yaml: exclude[0].ep_size: 4 is not in matrix.ep_size [2]" in lines
    assert any(line.startswith("campaign c.yaml: exclude[1].pp_size: unknown key (allowed here: dp_size, ep_size, ")
               for line in lines), lines


def test_a_base_with_independent_instances_cannot_take_a_layout(tmp_path):
    from conftest import write_cluster

    base = write_cluster(tmp_path / "two.json", model=MOE, hardware="RTXPRO6000", mem_size=96, instances=2)
    doc = moe_doc(tp_size=[1], dp_size=[2], ep_size=[2])
    doc["cluster"] = str(base)
    assert problems(doc) == [f"campaign c.yaml: cluster: {base}: matrix.dp_size and matrix.ep_size lay out one DP "
                             "group, but the base config has 2 instances that are not one dp_group; use a base "
                             "config with one instance"]


def test_a_layout_the_models_experts_forbid_loads_and_runs_as_infeasible(tmp_path):
    """128 experts over EP 3: tpsim's InfeasibleError, which the campaign records like a model that does not fit."""
    camp = load(moe_doc(dp_size=[3], tp_size=[1], ep_size=[3]))
    (run,) = camp.runs
    cfg = tmp_path / "cluster.json"
    cfg.write_text(json.dumps(derive_cluster_config(camp.base, run.params)))
    trace = write_trace(tmp_path / "t.jsonl", [{"input_toks": 8, "output_toks": 2, "arrival_time_ns": 0}])
    out = tmp_path / "r.csv"
    proc = subprocess.run([sys.executable, "-m", "tpsim", "run", "--cluster-config", str(cfg), "--dataset", str(trace),
                           "--output", str(out), "--record-infeasible"], capture_output=True, text=True, cwd=REPO,
                          env=checkout_env(), check=False)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(out.with_suffix(".summary.json").read_text())
    assert summary["status"] == "infeasible" and "does not divide" in summary["reason"] and "128" in summary["reason"]


# ----------------------------------------------------------------------------- tables and figure choice


def _summary(status="ok", instances=None) -> RunSummary:
    return RunSummary(status=status, tpsim_version="0", provenance={},
                      instances=instances if instances is not None else [])


@pytest.mark.parametrize(("params", "instances", "status", "expected"), [
    ({"dp_size": 2, "ep_size": 4, "num_npus": 2, "num_instances": 2}, [{"parallel": {"dp_size": 2, "ep_size": 4}}],
     "ok", (2, 4, 4)),
    ({"num_npus": 1, "num_instances": 2}, [{"parallel": {"dp_size": 2, "ep_size": 2}}], "ok", (2, 2, 2)),
    ({"num_npus": 4, "num_instances": 1}, [{}], "ok", (1, 1, 4)),  # a plain dense instance
    ({"num_npus": 8, "num_instances": 1}, [], "infeasible", (None, None, 8)),  # stopped before its layout
    ({"dp_size": 4, "ep_size": 4, "num_npus": 1, "num_instances": 4}, [], "infeasible", (4, 4, 4)),
])
def test_runs_rows_carry_the_layout(params, instances, status, expected):
    row = run_row(params, _summary(status, instances), "runs/x")
    assert (row["dp_size"], row["ep_size"], row["num_gpus"]) == expected


@pytest.mark.parametrize(("matrix", "exclude", "drawn"), [
    ({"tp_size": [1, 2, 4]}, [], False),  # no layout key
    ({"dp_size": [1, 2], "tp_size": [1, 2], "ep_size": [2]}, [], True),  # DP2·EP2 and TP2·EP2 at two GPUs
    ({"dp_size": [2], "tp_size": [1, 2], "ep_size": [2]}, [], False),  # one layout per GPU count
    ({"dp_size": [1, 2], "tp_size": [1, 2]}, [{"dp_size": 2, "tp_size": 1}], False),
    ({"dp_size": [1, 2], "tp_size": [1, 2]}, [{"model": "m", "dp_size": 2, "tp_size": 1}], True),
])
def test_the_layout_figure_is_drawn_only_with_two_layouts_at_some_gpu_count(matrix, exclude, drawn):
    doc = {"matrix": {"model": ["m"], **matrix}, "exclude": exclude}
    assert layout_figure(doc) is drawn
    assert (LAYOUT_FIGURE in figures_of(doc)) is drawn


@pytest.mark.parametrize(("layout", "text"), [((1, 4, 1), "TP4"), ((1, 1, 1), "TP1"), ((2, 1, 1), "DP2"),
                                              ((2, 2, 4), "DP2\u00b7TP2\u00b7EP4"), ((4, 1, 4), "DP4\u00b7EP4"),
                                              ((1, 2, 2), "TP2\u00b7EP2")])
def test_layout_labels(layout, text):
    assert layouts.label(*layout) == text


# ----------------------------------------------------------------------------- end to end


def test_an_moe_campaign_with_two_layouts_on_two_gpus_draws_the_layout_figure(tmp_path):
    """TP2 against DP2·EP2 for Qwen3-30B-A3B on RTX PRO 6000, 20 requests each, through Snakemake."""
    doc = moe_doc(dp_size=[1, 2], tp_size=[1, 2], ep_size=[1, 2])
    doc["name"] = "lay"
    doc["exclude"] = [{"dp_size": 1, "tp_size": 1}, {"dp_size": 2, "tp_size": 2}, {"dp_size": 1, "ep_size": 2},
                      {"dp_size": 2, "ep_size": 1}]
    cfg = tmp_path / "lay.yaml"
    cfg.write_text(yaml.safe_dump(doc, sort_keys=False))
    proc = subprocess.run(snakemake_cmd("--directory", str(tmp_path), "--cores", "2", "--config", f"campaign={cfg}"),
                          capture_output=True, text=True, timeout=600, cwd=REPO, env=checkout_env(), check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    import duckdb

    res = tmp_path / "results" / "lay"
    with duckdb.connect(str(res / "campaign.duckdb"), read_only=True) as con:
        runs = con.execute("SELECT run_id, status, dp_size, tp_size, ep_size, num_instances, num_gpus FROM runs "
                           "ORDER BY run_id").fetchall()
        ranks = con.execute("SELECT run_id, count(DISTINCT instance_id), count(*) FROM requests GROUP BY ALL "
                            "ORDER BY ALL").fetchall()
    assert runs == [("model=Qwen--Qwen3-30B-A3B/dp=1/tp=2/ep=1", "ok", 1, 2, 1, 1, 2),
                    ("model=Qwen--Qwen3-30B-A3B/dp=2/tp=1/ep=2", "ok", 2, 1, 2, 2, 2)]
    assert ranks == [("model=Qwen--Qwen3-30B-A3B/dp=1/tp=2/ep=1", 1, 20),
                     ("model=Qwen--Qwen3-30B-A3B/dp=2/tp=1/ep=2", 2, 20)]
    cluster = json.loads((res / "runs/model=Qwen--Qwen3-30B-A3B/dp=2/tp=1/ep=2/cluster.json").read_text())
    assert [i["dp_group"] for i in cluster["nodes"][0]["instances"]] == ["dp", "dp"]
    import pandas as pd

    fig = pd.read_csv(res / "figures" / f"{LAYOUT_FIGURE}.csv")
    assert list(fig["layout"].unique()) == ["TP2", "DP2\u00b7EP2"]
    assert set(fig["num_gpus"]) == {2} and set(fig["status"]) == {"ok"}
    assert list(fig["metric"].unique()) == ["ttft_mean_ms", "tpot_mean_ms", "output_tokens_per_s_per_gpu"]
    assert (fig["value"] > 0).all()
    for ext in ("pdf", "png"):
        assert (res / "figures" / f"{LAYOUT_FIGURE}.{ext}").stat().st_size > 1000
