# Helpers for workflow/rules/validate.smk (fidelity against measured vLLM replays).
# Config keys (all optional):
#   validation_root      measured case directories, one per subfolder (default ../shared/validation)
#   validation_profiles  LLMServingSim-layout profile bundles (default ../shared/profiles/llmservingsim)
# The logic is in tpsim/validation/ (tpsim importable, as for the campaign: README, Campaigns).
import functools
import shlex
import sys
from pathlib import Path

from tpsim.provenance import code_digest
from tpsim.validation import cases as validation_cases

VAL_ROOT = config.get("validation_root", "../shared/validation")
VAL_PROFILES = config.get("validation_profiles", "../shared/profiles/llmservingsim")
VAL_OUT = "results/validation"
# The interpreter chosen in common.smk; when this file is included without common.smk, the one
# running Snakemake.
try:
    VAL_PYTHON = PYTHON
except NameError:
    VAL_PYTHON = sys.executable
VAL_CASES = validation_cases.discover_cases(VAL_ROOT)
VAL_PROFILE_OK = validation_cases.profile_model_available()


def validation_case_dir(case):
    return f"{VAL_ROOT}/{case}"


def validation_measured_dir(wildcards):
    return validation_case_dir(wildcards.case)


def validation_out_dir(wildcards, output):
    return str(Path(output.json).parent)


def validation_simulators(case):
    """The simulators scored on a case: tpsim's models that can run there, and the peer if present."""
    sims = ["tpsim-analytical"]
    if validation_cases.case_has_kernel_tables(validation_case_dir(case)):
        sims.insert(0, "tpsim-kernels")
    if VAL_PROFILE_OK and validation_cases.case_profile_bundle(
        validation_case_dir(case), VAL_PROFILES
    ):
        sims.append("tpsim-profile")
    if Path(validation_case_dir(case), "llmservingsim", "sim.csv").is_file():
        sims.append("LLMServingSim")
    return sims


def validation_reports():
    return [
        f"{VAL_OUT}/{case}/{sim}/validation.json"
        for case in VAL_CASES
        for sim in validation_simulators(case)
    ]


def validation_case_inputs(wildcards):
    d = validation_case_dir(wildcards.case)
    files = {
        "config": f"{d}/config.json",
        "trace": f"{d}/trace.jsonl",
        "requests": f"{d}/vllm/requests.jsonl",
    }
    for key, rel in (("meta", "vllm/meta.json"), ("model", "model_config.json")):
        if Path(d, rel).is_file():
            files[key] = f"{d}/{rel}"
    return files


@functools.cache
def validation_code_digest():
    """tpsim's code and catalogs (tpsim.provenance.code_digest): a replay reruns when they change, not only
    when its measured case does (once per Snakemake invocation, only when replays are in the DAG).
    """
    return code_digest()


def validation_replay_code(wildcards):
    return validation_code_digest()


def validation_replay_flags(wildcards):
    flags = ["--perf-model", wildcards.perf, "--log-interval", "1"]
    if wildcards.perf == "profile":
        flags += ["--profile-dir", VAL_PROFILES]
    return shlex.join(flags)


def validation_sim_inputs(wildcards):
    d = validation_case_dir(wildcards.case)
    files = {"requests": f"{d}/vllm/requests.jsonl"}
    if wildcards.simulator == "LLMServingSim":
        files["csv"] = f"{d}/llmservingsim/sim.csv"
    else:
        files["csv"] = f"{VAL_OUT}/{wildcards.case}/{wildcards.simulator}.csv"
        files["summary"] = (
            f"{VAL_OUT}/{wildcards.case}/{wildcards.simulator}.summary.json"
        )
    if Path(d, "vllm", "timeseries.csv").is_file():
        files["timeseries"] = f"{d}/vllm/timeseries.csv"
    return files
