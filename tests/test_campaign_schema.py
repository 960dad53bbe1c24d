"""Campaign YAML validation (tpsim/campaign/campaign.schema.yaml + tpsim.campaign's checks).

Every shipped campaign loads; every kind of mistake is rejected with a message that names the
offending key; the matrix expands into the expected runs (exclude rules, Hive-style run ids,
model names encoded for paths, numbers written canonically).
"""

import itertools
import subprocess

import pytest
import yaml
from conftest import REPO, checkout_env, shared_path, snakemake_cmd

from tpsim.campaign import derive, spec
from tpsim.campaign import runs as runs_mod
from tpsim.campaign.form import SCHEMA
from tpsim.campaign.spec import CampaignError, load_campaign

ROOTS = [REPO]


def good(**over) -> dict:
    doc = {
        "name": "t",
        "cluster": "configs/cluster/single_node_single_instance.json",
        "workload": {"generate": {"preset": "sharegpt", "num_reqs": 20, "rate": 2}},
        "matrix": {"model": ["Qwen/Qwen3-32B", "Qwen/Qwen3-8B"], "tp_size": [1, 2, 4], "link_bw": [16, 450]},
    }
    for key, value in over.items():
        if value is None:
            doc.pop(key)
        else:
            doc[key] = value
    return doc


def load(doc):
    return load_campaign(doc, source="c.yaml", roots=ROOTS)


def errors_of(doc) -> str:
    with pytest.raises(CampaignError) as exc:
        load(doc)
    return str(exc.value)


# ----------------------------------------------------------------------------- good campaigns


@pytest.mark.parametrize("path", sorted((REPO / "configs" / "campaigns").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_campaigns_load(path):
    if "../shared" in path.read_text():
        shared_path("validation")  # a campaign over the shared measurements: skips where they are absent
    camp = spec.load_campaign_file(path, roots=ROOTS)
    m = camp.doc["matrix"]
    expected = 1
    for values in m.values():
        expected *= len(values)
    if camp.doc["exclude"]:  # moe_tp_vs_ep: its exclude rules leave seven layouts of 27 combinations
        excluded = runs_mod.exclusions(camp.doc["exclude"], list(m))
        kept = [c for c in itertools.product(*m.values())
                if not any(tuple(runs_mod.match_key(c[i]) for i in idx) in combos for idx, combos in excluded.items())]
        assert 0 < len(kept) < expected
        expected = len(kept)
    assert len(camp.runs) == expected
    assert len({r.id for r in camp.runs}) == len(camp.runs)
    assert camp.name == path.stem


def test_default_campaign_is_the_documented_one():
    camp = spec.load_campaign_file(REPO / "configs" / "campaigns" / "tp_vs_linkbw.yaml", roots=ROOTS)
    m = camp.doc["matrix"]
    assert "Qwen/Qwen3-32B" in m["model"] and len(m["model"]) >= 2
    assert m["tp_size"] == [1, 2, 4]
    assert min(m["link_bw"]) == 16 and max(m["link_bw"]) == 450
    assert {r.params["hardware"] for r in camp.runs} == {"RTXPRO6000"}


def test_h100_campaign_runs_on_h100():
    camp = spec.load_campaign_file(REPO / "configs" / "campaigns" / "h100_nvlink.yaml", roots=ROOTS)
    assert {r.params["hardware"] for r in camp.runs} == {"H100"}
    assert "seed" in camp.dims
    # as its comments say: no matrix.hardware, so the runs keep the base's npu_mem (80 GiB), not the catalog's
    assert all(r.hardware_override is None for r in camp.runs)
    derived = derive.derive_cluster_config(camp.base, camp.runs[0].params)
    assert derived["nodes"][0]["instances"][0]["npu_mem"]["mem_size"] == 80
    assert derive.hardware_memory(REPO / "configs/hardware/H100.yaml")[0] == 79.65  # the other route


def test_runs_expand_with_hive_ids_and_parameters():
    camp = load(good())
    assert len(camp.runs) == 2 * 3 * 2
    run = camp.runs[0]
    assert run.id == "model=Qwen--Qwen3-32B/tp=1/link_bw=16"
    p = run.params
    assert (p["model"], p["tp_size"], p["num_npus"], p["pp_size"], p["link_bw"]) == ("Qwen/Qwen3-32B", 1, 1, 1, 16)
    assert p["link_latency"] == 20000 and p["hardware"] == "RTXPRO6000"  # from the base config
    assert p["rate"] == 2 and p["seed"] == 0  # generator defaults
    assert run.trace == "results/t/workloads/rate=2/seed=0/trace.jsonl"
    assert run.model_config.endswith("configs/model/Qwen/Qwen3-32B.json")
    assert run.hardware_override is None


def test_optional_dimensions_join_the_run_id_in_a_fixed_order():
    doc = good(matrix={"seed": [1, 2], "model": ["Qwen/Qwen3-8B"], "tp_size": [2], "link_bw": [16.0, 12.5],
                       "rate": [1, 4], "hardware": ["H100"], "link_latency": [3000]})
    camp = load(doc)
    assert len(camp.runs) == 2 * 2 * 2
    assert camp.runs[0].id == "model=Qwen--Qwen3-8B/hardware=H100/tp=2/link_bw=16/link_latency=3000/rate=1/seed=1"
    assert camp.runs[4].id.endswith("link_bw=12.5/link_latency=3000/rate=1/seed=1")
    assert camp.runs[0].params["link_bw"] == 16 and isinstance(camp.runs[0].params["link_bw"], int)
    assert camp.runs[0].hardware_override.endswith("configs/hardware/H100.yaml")
    assert set(camp.traces) == {("1", "1"), ("1", "2"), ("4", "1"), ("4", "2")}


def test_exclude_rules_remove_matching_runs():
    camp = load(good(exclude=[{"model": "Qwen/Qwen3-8B", "tp_size": [2, 4]}, {"link_bw": 450, "tp_size": 1}]))
    ids = {r.id for r in camp.runs}
    assert len(camp.runs) == 12 - 4 - 2
    assert "model=Qwen--Qwen3-8B/tp=2/link_bw=16" not in ids
    assert "model=Qwen--Qwen3-32B/tp=1/link_bw=450" not in ids
    assert "model=Qwen--Qwen3-8B/tp=1/link_bw=16" in ids


def test_trace_workload_as_string_and_mapping():
    for workload in ("workloads/example_trace.jsonl", {"trace": "workloads/example_trace.jsonl"}):
        camp = load(good(workload=workload))
        assert camp.trace.endswith("workloads/example_trace.jsonl") and camp.generate is None
        assert camp.runs[0].params["rate"] is None and camp.runs[0].params["seed"] is None
        assert camp.runs[0].trace == camp.trace


def test_defaults_are_filled_in():
    camp = load(good())
    assert camp.doc["perf_model"] == "auto" and camp.doc["tpsim_args"] == [] and camp.doc["exclude"] == []
    assert camp.doc["requests_csv"] is False and "slo" not in camp.doc and "capacity" not in camp.doc


def test_schema_file_is_json_schema_2020_12():
    import jsonschema

    schema = yaml.safe_load(SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"].endswith("2020-12/schema")


# ----------------------------------------------------------------------------- bad campaigns


@pytest.mark.parametrize("doc, needle", [
    (good(name=None), "name: missing (required)"),
    (good(matrix={"model": ["Qwen/Qwen3-8B"], "link_bw": [16]}), "matrix.tp_size: missing (required)"),
    (good(matrix={"model": ["Qwen/Qwen3-8B"], "tp_size": [1, "two"], "link_bw": [16]}),
     "matrix.tp_size[1]: expected integer, got 'two'"),
    (good(matrix={"model": ["Qwen/Qwen3-8B"], "tp_size": [0], "link_bw": [16]}), "matrix.tp_size[0]: 0 is less than"),
    (good(matrix={"model": ["Qwen/Qwen3-8B"], "tp_size": 2, "link_bw": [16]}), "matrix.tp_size: expected array"),
    (good(matrix={"model": ["Qwen/Qwen3-8B"], "tp_size": [1], "link_bw": [-16]}), "matrix.link_bw[0]"),
    (good(matrix={"model": ["Qwen/Qwen3-8B"], "tp_size": [1], "link_bw": []}), "matrix.link_bw: must not be empty"),
    (good(matrix={"model": ["Qwen/Qwen3-8B"], "tp_size": [1, 1], "link_bw": [16]}),
     "matrix.tp_size: values must be unique"),
    (good(matrix={"model": ["Qwen/Qwen3-8B"], "tp": [1], "tp_size": [1], "link_bw": [16]}), "matrix.tp: unknown key"),
    (good(clustr="x"), "clustr: unknown key"),
    (good(name="my campaign"), "name: 'my campaign' may only contain"),
    (good(perf_model="roofline"), "perf_model: 'roofline' is not one of"),
    (good(workload={"generate": {"num_reqs": 10, "rte": 3}}), "workload.generate.rte: unknown key"),
    (good(workload={"generate": {"num_reqs": 0}}), "workload.generate.num_reqs: 0 is less than"),
    (good(workload={"trace": "a.jsonl", "generate": {"num_reqs": 3}}), "workload: give exactly one of"),
    (good(workload=42), "workload: expected string or object"),
    (good(exclude=[{"tp": 1}]), "exclude[0].tp: unknown key"),
    (good(tpsim_args="--seed 3"), "tpsim_args: expected array"),
])
def test_schema_errors_name_the_key(doc, needle):
    msg = errors_of(doc)
    assert needle in msg, msg
    assert msg.startswith("campaign c.yaml: ")


@pytest.mark.parametrize("doc, needle", [
    (good(cluster="configs/cluster/nope.json"), "cluster: configs/cluster/nope.json does not exist"),
    (good(workload="nope.jsonl"), "workload.trace: nope.jsonl does not exist"),
    (good(matrix={"model": ["Qwen/Qwen3-33B"], "tp_size": [1], "link_bw": [16]}),
     "matrix.model[0]: unknown model 'Qwen/Qwen3-33B'"),
    (good(matrix={"model": ["Qwen/Qwen3-8B"], "tp_size": [1], "link_bw": [16], "hardware": ["H100", "H900"]}),
     "matrix.hardware[1]: unknown hardware 'H900'"),
    (good(workload="workloads/example_trace.jsonl",
          matrix={"model": ["Qwen/Qwen3-8B"], "tp_size": [1], "link_bw": [16], "rate": [1]}),
     "matrix.rate: only for a generated workload"),
    (good(matrix={"model": ["Qwen/Qwen3-8B"], "tp_size": [1], "link_bw": [16, 16.0]}),
     "matrix.link_bw: values must be unique"),
    (good(workload={"generate": {"preset": "sharegpt"}}), "workload.generate: give num_reqs or duration_s"),
    (good(exclude=[{"seed": 1}]), "exclude[0].seed: not a key of this campaign's matrix"),
    (good(exclude=[{"tp_size": 8}]), "exclude[0].tp_size: 8 is not in matrix.tp_size"),
    (good(exclude=[{"tp_size": [1, 2, 4]}]), "exclude: the rules remove all 12 runs"),
    (good(tpsim_args=["--output", "x.csv"]), "tpsim_args[0]: --output is set by the pipeline"),
    (good(tpsim_args=["--max-num-seq", "4"]), "tpsim_args[0]: --max-num-seq abbreviates --max-num-seqs"),
    (good(tpsim_args=["--log-interval", "0", "--cluster=x.json"]),
     "tpsim_args[2]: --cluster abbreviates --cluster-config"),
    (good(tpsim_args=["--out", "x.csv"]), "tpsim_args[0]: --out abbreviates --output"),
    (good(tpsim_args=["--data", "t.jsonl"]), "tpsim_args[0]: --data abbreviates --dataset"),
    (good(tpsim_args=["--max-num-seq=4"]), "tpsim_args[0]: --max-num-seq abbreviates --max-num-seqs"),
    (good(tpsim_args=["--perf=profile"]), "tpsim_args[0]: --perf abbreviates --perf-model"),
    (good(tpsim_args=["--r", "x"]), "tpsim_args[0]: --r abbreviates --run-id or --record-infeasible"),
    (good(tpsim_args=["--seed=3"]), "tpsim_args[0]: --seed is set by the pipeline"),
    (good(exclude=[{"tp_size": "1"}]), "exclude[0].tp_size: '1' is not in matrix.tp_size"),
    (good(matrix={"model": ["../configs/model/Qwen/Qwen3-8B"], "tp_size": [1], "link_bw": [16]}),
     "matrix.model[0]: model name ../configs/model/Qwen/Qwen3-8B is not a catalog name"),
    (good(matrix={"model": ["Qwen/Qwen3-8B"], "tp_size": [1], "link_bw": [16], "hardware": ["x" * 129]}),
     "matrix.hardware[0]: longer than 128 characters"),
    (good(matrix={"model": ["nope/config.json"], "tp_size": [1], "link_bw": [16]}),
     "matrix.model[0]: nope/config.json does not exist"),
])
def test_semantic_errors_name_the_key(doc, needle):
    msg = errors_of(doc)
    assert needle in msg, msg


M = {"model": ["Qwen/Qwen3-8B"], "tp_size": [1], "link_bw": [16]}


@pytest.mark.parametrize("over, line", [
    ({"link_bw": [float("nan")]}, "matrix.link_bw[0]: expected a finite number, got nan"),
    ({"link_bw": [16, float("inf")]}, "matrix.link_bw[1]: expected a finite number, got inf"),
    ({"link_bw": [-float("inf")]}, "matrix.link_bw[0]: expected a finite number, got -inf"),
    ({"link_bw": [0]}, "matrix.link_bw[0]: 0 must be more than 0"),
    ({"link_bw": [-3.5]}, "matrix.link_bw[0]: -3.5 must be more than 0"),
    ({"link_latency": [float("nan")]}, "matrix.link_latency[0]: expected a finite number, got nan"),
    ({"rate": [float("inf")]}, "matrix.rate[0]: expected a finite number, got inf"),
    ({"tp_size": [2147483648]}, "matrix.tp_size[0]: 2147483648 is more than the maximum, 65,536"),
    ({"tp_size": [1e300]}, "matrix.tp_size[0]: 1e+300 is more than the maximum, 65,536"),
    ({"link_bw": [2e6]}, "matrix.link_bw[0]: 2000000.0 is more than the maximum, 1,000,000"),
    ({"link_latency": [1e11]}, "matrix.link_latency[0]: 100000000000.0 is more than the maximum, 10,000,000,000"),
    ({"rate": [1e-9]}, "matrix.rate[0]: 1e-09 is less than the minimum, 1e-06"),
    ({"max_num_seqs": [10**11]}, "matrix.max_num_seqs[0]: 100000000000 is more than the maximum, 2,147,483,647"),
    ({"max_num_batched_tokens": [0]}, "matrix.max_num_batched_tokens[0]: 0 is less than the minimum, 1"),
    ({"seed": [2**31]}, "matrix.seed[0]: 2147483648 is more than the maximum, 2,147,483,647"),
    ({"seed": [True]}, "matrix.seed[0]: expected integer, got True"),
    ({"tp_size": [10**5000]}, "matrix.tp_size[0]: <int of 5001 digits> is too large (numbers must be below 1e300)"),
    ({"link_bw": [10**400]}, "matrix.link_bw[0]: <int of 401 digits> is too large (numbers must be below 1e300)"),
    ({"link_bw": [10**299]}, "matrix.link_bw[0]: <int of 300 digits> is more than the maximum, 1,000,000"),
])
def test_numbers_are_finite_and_in_range(over, line):
    doc = good(matrix={**M, **over})
    if "rate" in over:
        doc["workload"] = {"generate": {"num_reqs": 3}}
    assert errors_of(doc).splitlines() == [f"campaign c.yaml: {line}"]


@pytest.mark.parametrize("generate, line", [
    ({"num_reqs": 2**31}, "workload.generate.num_reqs: 2147483648 is more than the maximum, 10,000,000"),
    ({"duration_s": 2e9}, "workload.generate.duration_s: 2000000000.0 is more than the maximum, 1,000,000,000"),
    ({"num_reqs": 3, "seed": -1}, "workload.generate.seed: -1 is less than the minimum, 0"),
    ({"duration_s": float("inf")}, "workload.generate.duration_s: expected a finite number, got inf"),
    ({"num_reqs": 3, "rate": float("nan")}, "workload.generate.rate: expected a finite number, got nan"),
])
def test_generator_numbers_are_finite_and_in_range(generate, line):
    assert errors_of(good(workload={"generate": generate})).splitlines() == [f"campaign c.yaml: {line}"]


def test_ranges_are_tpsims_own():
    """The schema's ranges are the ones tpsim enforces: a campaign the schema accepts is not refused
    by tpsim for a number in range, and one tpsim would refuse is refused before anything runs."""
    from tpsim import tracegen
    from tpsim.config import cluster, typed

    schema = yaml.safe_load(SCHEMA.read_text())
    m, gen, defs = schema["properties"]["matrix"]["properties"], \
        schema["properties"]["workload"]["properties"]["generate"]["properties"], schema["$defs"]
    assert m["tp_size"]["items"]["maximum"] == cluster.MAX_GPUS
    assert m["link_bw"]["items"]["maximum"] == cluster.MAX_LINK_BW_GBPS
    assert m["link_latency"]["items"]["maximum"] == cluster.MAX_LATENCY_NS
    assert (defs["rate"]["minimum"], defs["rate"]["maximum"]) == (tracegen.MIN_RATE, tracegen.MAX_RATE)
    assert gen["num_reqs"]["maximum"] == tracegen.MAX_REQUESTS
    assert gen["duration_s"]["maximum"] == gen["start_s"]["maximum"] == tracegen.MAX_SECONDS
    assert defs["count"]["maximum"] == m["seed"]["items"]["maximum"] == typed.MAX_INT32


def test_tp_times_the_base_pp_stays_within_tpsims_gpus():
    doc = good(cluster="configs/cluster/single_node_tp2_pp2.json",
               matrix={"model": ["Qwen/Qwen3-8B"], "tp_size": [2, 65536], "link_bw": [16]})
    assert errors_of(doc).splitlines() == [
        ("campaign c.yaml: matrix.tp_size[1]: 65536 x the base config's pp_size 2 = 131,072 GPUs per instance, "
        "more than tpsim takes (65,536)")]


def test_the_matrix_size_is_checked_before_anything_walks_it():
    """A million runs are refused from the list lengths alone, before the schema or the expansion."""
    doc = good(matrix={"model": ["x"], "tp_size": list(range(100)), "link_bw": list(range(100)), "seed": [None] * 100},
               clustr="typo")
    assert errors_of(doc) == (
        "campaign c.yaml: matrix: 1,000,000 runs (model 1 x tp_size 100 x link_bw 100 x seed 100), more than "
        "limits.max_runs = 10,000; make the matrix smaller, or raise the limit in the campaign: limits: {max_runs: N}")
    m = {"model": ["Qwen/Qwen3-8B", "Qwen/Qwen3-4B"], "tp_size": [1, 2, 4], "link_bw": [16, 32, 64, 128, 450]}
    assert "30 runs" in errors_of(good(matrix=m, limits={"max_runs": 29}))
    assert len(load(good(matrix=m, limits={"max_runs": 30})).runs) == 30
    assert len(load(good(matrix=m, exclude=[{"tp_size": 4}], limits={"max_runs": 30})).runs) == 20
    assert "limits.max_runs: 0 is less than the minimum, 1" in errors_of(good(limits={"max_runs": 0}))


def test_many_problems_are_cut_to_a_readable_count():
    doc = good(matrix={"model": ["Qwen/Qwen3-8B"], "tp_size": ["x"] * 30, "link_bw": [16]})
    lines = errors_of(doc).splitlines()
    assert len(lines) == spec.MAX_PROBLEMS + 1
    assert lines[-1] == "campaign c.yaml: ... and 10 more problems"


def test_every_message_is_one_line_whatever_the_values_hold():
    odd = "a\u2028b\x85c\nd" + "x" * 500
    doc = good(name=odd, perf_model=odd, description=odd, tpsim_args=[odd], **{odd: 1},
               matrix={"model": [odd], "tp_size": [1], "link_bw": [16], odd: [1]})
    lines = errors_of(doc).split("\n")
    assert all(line.isprintable() and len(line) < 400 for line in lines), lines
    assert not any(line.startswith("campaign c.yaml: description") for line in lines)  # free text may hold them


def test_all_errors_are_reported_at_once():
    doc = good(matrix={"model": ["Qwen/Qwen3-8B"], "tp_size": ["x"], "link_bw": [0]}, perf_model="x")
    msg = errors_of(doc)
    assert "matrix.tp_size[0]" in msg and "matrix.link_bw[0]" in msg and "perf_model" in msg
    assert len(msg.splitlines()) == 3


def test_semantic_problems_are_reported_together():
    """A missing cluster file does not hide an unknown model or a missing trace."""
    doc = good(cluster="configs/cluster/nope.json", workload="nope.jsonl",
               matrix={"model": ["Qwen/Qwen3-33B"], "tp_size": [1], "link_bw": [16]})
    msg = errors_of(doc)
    assert "cluster: configs/cluster/nope.json does not exist" in msg
    assert "workload.trace: nope.jsonl does not exist" in msg and "matrix.model[0]: unknown model" in msg


def test_unreserved_flags_pass():
    """Only reserved flags and their abbreviations are refused, not flags that merely share a start."""
    args = ["--no-enable-prefix-caching", "--block-size=32", "--log-level", "INFO", "--profile-dir", "p",
            "--max-num-batched", "--", "-o"]
    msg = errors_of(good(tpsim_args=args))
    assert msg.splitlines() == [
        ("campaign c.yaml: tpsim_args[6]: --max-num-batched abbreviates --max-num-batched-tokens, which the "
         "pipeline sets; flags may not be abbreviated")], msg
    assert load(good(tpsim_args=args[:6])).doc["tpsim_args"] == args[:6]


def test_schema_errors_do_not_hide_the_other_problems():
    """Every problem at once: the checks beyond the schema still run on what the schema accepted."""
    # three bad exclude rules: one the schema refuses, two that do not fit the matrix
    msg = errors_of(good(exclude=[{"tp": 1}, {"tp_size": 8}, {"seed": 1}]))
    assert msg.splitlines() == [
        ("campaign c.yaml: exclude[0].tp: unknown key (allowed here: dp_size, ep_size, hardware, link_bw, "
         "link_latency, max_num_batched_tokens, max_num_seqs, model, rate, seed, tp_size)"),
        "campaign c.yaml: exclude[1].tp_size: 8 is not in matrix.tp_size [1, 2, 4]",
        "campaign c.yaml: exclude[2].seed: not a key of this campaign's matrix (model, tp_size, link_bw)"], msg
    # schema errors (tp_size, perf_model, one model) beside a missing cluster file, an unknown model and
    # hardware, a missing generator setting, a reserved flag and an exclude value not in the matrix
    doc = good(cluster="configs/cluster/nope.json", perf_model="fast",
               workload={"generate": {"preset": "sharegpt", "rte": 2}},
               matrix={"model": ["Qwen/Qwen3-33B", 5], "tp_size": ["two"], "link_bw": [16], "hardware": ["H900"]},
               tpsim_args=["--out", "x.csv"], exclude=[{"link_bw": 17}])
    lines = [line.removeprefix("campaign c.yaml: ") for line in errors_of(doc).splitlines()]
    expected = ["matrix.model[1]: expected string, got 5", "matrix.tp_size[0]: expected integer, got 'two'",
                "perf_model: 'fast' is not one of", "workload.generate.rte: unknown key",
                "cluster: configs/cluster/nope.json does not exist", "workload.generate: give num_reqs or duration_s",
                "matrix.model[0]: unknown model 'Qwen/Qwen3-33B'", "matrix.hardware[0]: unknown hardware 'H900'",
                "tpsim_args[0]: --out abbreviates --output", "exclude[0].link_bw: 17 is not in matrix.link_bw [16]"]
    assert len(lines) == len(expected) and all(line.startswith(e) for line, e in zip(lines, expected)), lines
    # a part the schema refused is not checked again (no second message for the same value)
    msg = errors_of(good(matrix={"model": ["Qwen/Qwen3-8B"], "tp_size": [1], "link_bw": [16, 16.0]},
                         exclude=[{"link_bw": 17}]))
    assert msg.splitlines() == ["campaign c.yaml: matrix.link_bw: values must be unique, got [16, 16.0]"], msg


def test_exclude_matches_numbers_by_value():
    camp = load(good(matrix={"model": ["Qwen/Qwen3-8B"], "tp_size": [1, 2], "link_bw": [16, 450]},
                     exclude=[{"link_bw": 16.0}]))
    assert sorted(r.params["link_bw"] for r in camp.runs) == [450, 450]


def test_malformed_yaml_names_the_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("name: x\nmatrix:\n  model: [a\n")
    with pytest.raises(CampaignError, match=r"bad.yaml:\d+: malformed YAML"):
        spec.load_campaign_file(p, roots=ROOTS)


@pytest.mark.parametrize("how", ["--config", "--configfile"])
def test_snakemake_reports_a_bad_campaign_with_the_key(tmp_path, how):
    """The same message reaches the user of `snakemake --config campaign=FILE` (and of the older
    `--configfile FILE`), and no job runs."""
    bad = good(matrix={"model": ["Qwen/Qwen3-8B"], "tp_size": [1, "two"], "link_bw": [16]})
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump(bad))
    choose = ["--config", f"campaign={cfg}"] if how == "--config" else ["--configfile", str(cfg)]
    proc = subprocess.run(snakemake_cmd("--directory", str(tmp_path), *choose, "-n"), capture_output=True, text=True,
                          timeout=120, check=False, env=checkout_env())
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "matrix.tp_size[1]: expected integer, got 'two'" in out
    assert "bad.yaml" in out
    assert not (tmp_path / "results").exists()


def test_readme_error_sample_is_what_snakemake_prints(tmp_path):
    """README, Campaigns: the sample campaign with mistakes and the output shown for it, line numbers included."""
    import re

    readme = (REPO / "README.md").read_text()
    sample = re.search(r"```yaml\n# configs/campaigns/mine.yaml\n(.*?)```", readme, re.DOTALL).group(1)
    shown = re.search(r"```\n\$ snakemake -n --config campaign=configs/campaigns/mine.yaml\n(.*?)```", readme,
                      re.DOTALL).group(1)
    (tmp_path / "configs/campaigns").mkdir(parents=True)
    (tmp_path / "configs/campaigns/mine.yaml").write_text(sample)
    proc = subprocess.run(snakemake_cmd("-n", "--config", "campaign=configs/campaigns/mine.yaml"), cwd=tmp_path,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120, check=False,
                          env=checkout_env())
    assert proc.returncode != 0
    printed = proc.stdout.replace(f'"{REPO}/', '".../').replace(f"{REPO}/", "")
    assert printed == shown, printed
    assert not (tmp_path / "results").exists()
