"""What a campaign asks of its hardware and its environment: hardware sweeps take each GPU's catalogued
link (tpsim/campaign/links.py) and warn when a run asks for more; measured runs named in a campaign
are checked when it loads (tpsim/campaign/measured_runs.py); leftover CHANGE_ME placeholders, in a
campaign or in a workflow profile, are refused before anything runs."""

import json
import subprocess

import pytest
import yaml
from conftest import REPO, checkout_env, snakemake_cmd

from tpsim.campaign import links, measured_runs
from tpsim.campaign.spec import CampaignError, load_campaign
from tpsim.campaign.workflow import placeholder_problems

CATALOG = {"A100": (300, 5000), "H100": (450, 3100), "B200": (900, 5150), "RTXPRO6000": (16, 20000)}


def load(doc):
    return load_campaign(doc, source="c.yaml", roots=[REPO])


def errors_of(doc) -> str:
    with pytest.raises(CampaignError) as exc:
        load(doc)
    return str(exc.value)


def sweep(**matrix) -> dict:
    return {"name": "hw", "cluster": "configs/cluster/h100_tp2_nvlink.json",
            "workload": {"generate": {"preset": "sharegpt", "num_reqs": 10}},
            "matrix": {"model": ["Qwen/Qwen3-8B"], "tp_size": [2], **matrix}}


def test_a_hardware_sweep_takes_each_gpus_catalogued_link():
    camp = load(sweep(hardware=["A100", "H100", "B200"]))
    got = {r.params["hardware"]: (r.params["link_bw"], r.params["link_latency"]) for r in camp.runs}
    assert got == {hw: CATALOG[hw] for hw in ("A100", "H100", "B200")}  # not the base config's 450 GB/s / 3.1 us
    assert {r.params["link_source"] for r in camp.runs} == {"catalog"}
    assert [r.id for r in camp.runs] == [f"model=Qwen--Qwen3-8B/hardware={hw}/tp=2" for hw in ("A100", "H100", "B200")]
    assert camp.warnings == []
    for hw, (bw, lat) in CATALOG.items():  # the numbers above are the catalog's
        link = links.catalog_link(str(REPO / f"configs/hardware/{hw}.yaml"))
        assert (link.link_bw_gbps, link.link_latency_ns) == (bw, lat)


def test_a_link_in_the_matrix_wins_and_a_faster_one_than_the_gpu_has_is_a_warning():
    camp = load(sweep(hardware=["A100", "H100"], link_bw=[100, 450]))
    got = {(r.params["hardware"], r.params["link_bw"]): (r.params["link_latency"], r.params["link_source"])
           for r in camp.runs}
    assert got[("A100", 450)] == (5000, "link_bw: matrix, link_latency: catalog")
    assert camp.warnings == [("campaign c.yaml: warning: link_bw 450 GB/s is more than A100's catalogued NVLink 3 "
                             "(NVSwitch) (300 GB/s per direction): 1 run is a what-if on a faster link than the GPU "
                             "has")]
    camp = load(sweep(hardware=["RTXPRO6000"], link_latency=[1000, 30000]))
    assert camp.warnings == [("campaign c.yaml: warning: link_latency 1000 ns is below RTXPRO6000's catalogued PCIe "
                             "Gen5 x16 (20000 ns): 1 run is a what-if on a faster link than the GPU has")]


def test_without_a_hardware_sweep_the_base_configs_link_stays():
    camp = load(sweep())
    (run,) = camp.runs
    assert (run.params["link_bw"], run.params["link_latency"], run.params["link_source"]) == (450, 3100, "base config")
    assert run.id == "model=Qwen--Qwen3-8B/tp=2"
    assert "link_bw: not a key of this campaign's matrix" in errors_of(dict(sweep(), exclude=[{"link_bw": 450}]))


def test_the_workflow_prints_the_link_warning(tmp_path):
    cfg = tmp_path / "hw.yaml"
    cfg.write_text(yaml.safe_dump(sweep(hardware=["A100"], link_bw=[600])))
    proc = subprocess.run(snakemake_cmd("-n", "--directory", str(tmp_path), "--config", f"campaign={cfg}"), cwd=REPO,
                          capture_output=True, text=True, timeout=120, check=False, env=checkout_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "warning: link_bw 600 GB/s is more than A100's catalogued NVLink 3" in proc.stderr


# ----------------------------------------------------------------------------- measured runs


def measured_dir(root, *, model="Qwen/Qwen3-8B", hardware="RTXPRO6000", tp=1, link_bw=16, n=12) -> str:
    """A measured run in the ../shared/validation layout (made up: TTFT 50 + i ms, TPOT 20 ms)."""
    d = root / f"measured-{tp}-{hardware}"
    (d / "vllm").mkdir(parents=True)
    cluster = json.loads((REPO / "configs/cluster/single_node_single_instance.json").read_text())
    cluster["link_bw"] = link_bw
    inst = cluster["nodes"][0]["instances"][0]
    inst.update(model_name=model, hardware=hardware, tp_size=tp, num_npus=tp)
    (d / "config.json").write_text(json.dumps(cluster))
    (d / "vllm/meta.json").write_text(json.dumps({"engine_kwargs": {"max_num_seqs": 128,
                                                                    "max_num_batched_tokens": 2048}}))
    lines = [{"request_id": f"bench-{i}", "input_toks": 100, "output_toks": 11, "queued_ts": 10.0 + i,
              "scheduled_ts": 10.0 + i, "first_token_ts": 10.05 + i + i / 1000, "last_token_ts": 10.25 + i + i / 1000}
             for i in range(n)]
    (d / "vllm/requests.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return str(d)


def overlay(path, **matrix) -> dict:
    return {"name": "m", "cluster": "configs/cluster/single_node_single_instance.json",
            "workload": {"generate": {"preset": "sharegpt", "num_reqs": 10}},
            "matrix": {"model": ["Qwen/Qwen3-8B"], "tp_size": [1, 2], "link_bw": [16, 64], **matrix},
            "measured": [path]}


def test_a_measured_run_loads_and_is_read_as_the_figures_read_it(tmp_path):
    path = measured_dir(tmp_path)
    camp = load(overlay(path))
    assert camp.doc["measured"] == [{"path": path, "label": measured_runs.DEFAULT_LABEL}]
    runs, reqs = measured_runs.load(camp.doc)
    row = runs.iloc[0]
    assert (row["model"], row["tp_size"], row["link_bw"], row["hardware"]) == ("Qwen/Qwen3-8B", 1, 16, "RTXPRO6000")
    assert row["ttft_p50_ms"] == pytest.approx(50 + 5.5 * 1.0, abs=0.01)  # queued -> first token, ms
    assert row["tpot_p50_ms"] == pytest.approx(20.0)
    assert len(reqs) == 12 and reqs["ttft_ns"].min() == pytest.approx(50e6)


@pytest.mark.parametrize("kw, matrix, message", [
    ({"model": "Qwen/Qwen3-32B"}, {}, "its model 'Qwen/Qwen3-32B' is not in matrix.model"),
    ({"tp": 4}, {}, "its tp_size 4 is not in matrix.tp_size"),
    ({"hardware": "H100"}, {}, "it ran on H100, the campaign on RTXPRO6000"),
    ({}, {"rate": [1, 2]}, "the matrix varies rate; give measured[...].rate"),
    ({}, {"max_num_seqs": [64, 256]}, "its max_num_seqs 128 is not in matrix.max_num_seqs"),
])
def test_a_measured_run_that_could_be_drawn_nowhere_is_refused(tmp_path, kw, matrix, message):
    assert message in errors_of(overlay(measured_dir(tmp_path, **kw), **matrix))


def test_a_measured_folder_that_is_not_one_names_what_is_missing(tmp_path):
    (tmp_path / "empty").mkdir()
    msg = errors_of(overlay(str(tmp_path / "empty")))
    assert "measured[0]:" in msg and "vllm/requests.jsonl" in msg
    assert "measured[0]: nowhere does not exist" in errors_of(overlay("nowhere"))


# ----------------------------------------------------------------------------- placeholders


def test_a_leftover_placeholder_in_a_campaign_is_refused():
    doc = overlay("x")
    doc.pop("measured")
    doc["tpsim_args"] = ["--profile-dir", "CHANGE_ME"]
    assert "tpsim_args[1]: the value 'CHANGE_ME' holds the placeholder CHANGE_ME; replace it" in errors_of(doc)


def test_a_workflow_profile_with_placeholders_is_refused_when_the_workflow_loads(tmp_path):
    assert placeholder_problems(["mem_mb=1000", "slurm_account=CHANGE_ME"], {"simulate": {"slurm_partition": "x"}}) \
        == [("workflow profile: default-resources slurm_account=CHANGE_ME is a placeholder; set slurm_account in the "
            "profile (workflow/profiles/slurm/config.yaml) or pass --default-resources slurm_account=VALUE")]
    assert placeholder_problems(None, {"simulate": {"runtime": "CHANGE_ME"}})[0].startswith(
        "workflow profile: set-resources simulate:runtime=CHANGE_ME")
    # the shipped Slurm template, unedited: refused at parse time, nothing submitted
    proc = subprocess.run(snakemake_cmd("-n", "--directory", str(tmp_path), "--workflow-profile",
                                        str(REPO / "workflow/profiles/slurm")), cwd=REPO, capture_output=True,
                          text=True, timeout=120, check=False, env=checkout_env())
    out = proc.stdout + proc.stderr
    if "executor" in out and "slurm" in out and "not" in out and "CHANGE_ME" not in out:
        pytest.skip(f"the slurm executor plugin is not installed: {out[-300:]}")
    assert proc.returncode != 0
    assert "default-resources slurm_account=CHANGE_ME is a placeholder" in out, out[-3000:]
    assert not (tmp_path / "results").exists()
