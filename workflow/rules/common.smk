# Shared setup: choose, load and validate the campaign, helper functions for the rules.
# The logic lives in the tpsim package (tpsim/campaign/); the workflow needs tpsim importable
# (README: pip install -e '.[workflow]'), and its jobs run that same tpsim.
import json
import shlex
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

try:
    import tpsim
    from tpsim.campaign import outputs, provenance
    from tpsim.campaign.checks import rel_path
    from tpsim.campaign.reading import CampaignError
    from tpsim.campaign.runs import generate_flags
    from tpsim.campaign.workflow import choose_campaign, tpsim_location_warning, warn
    from tpsim.io.writing import atomic_write_json
except ImportError as exc:
    raise WorkflowError(
        f"the campaign workflow needs the tpsim package ({exc}); install this checkout: "
        "pip install -e '.[workflow]'"
    ) from None

# this file is REPO/workflow/rules/common.smk
REPO = Path(workflow.current_basedir).parents[1]
warn(tpsim_location_warning(REPO))

# --config campaign=PATH (read by our own safe loader), else --configfile (parsed by Snakemake:
# compatibility only, see README "Campaigns"), else the default campaign.
try:
    CAMPAIGN, CAMPAIGN_SOURCE = choose_campaign(
        dict(config), workflow.overwrite_configfiles, roots=[Path("."), REPO]
    )
except CampaignError as exc:
    raise WorkflowError(str(exc)) from None

RES = CAMPAIGN.results  # results/<campaign name>
RUN_IDS = [run.id for run in CAMPAIGN.runs]
TPSIM_VERSION = tpsim.__version__
# The interpreter running Snakemake, unless jobs run in a conda env (--sdm conda).  Shell commands
# quote it ({params.python:q}) like every path; flag lists are joined with shlex.join.
PYTHON = (
    "python"
    if "conda" in str(workflow.deployment_settings.deployment_method).lower()
    else sys.executable
)

FIGURES = list(outputs.FIGURES)
TABLES = list(outputs.TABLES)
STYLE = rel_path(outputs.STYLE)


def run_of(wildcards):
    try:
        return CAMPAIGN.run(wildcards.run)
    except KeyError:
        raise WorkflowError(
            f"{wildcards.run} is not a run of campaign {CAMPAIGN.name} ({CAMPAIGN_SOURCE})"
        ) from None


def run_inputs(wildcards):
    """Everything a run reads: the base config, the trace, the model config, the hardware entry
    (and the catalog entry for npu_mem when the hardware differs from the base's)."""
    run = run_of(wildcards)
    files = {
        "base": CAMPAIGN.cluster,
        "trace": run.trace,
        "model": run.model_config,
        "hardware_config": run.hardware_config,
    }
    if run.hardware_override:
        files["hardware"] = run.hardware_override
    return files


def input_sha256(wildcards):
    """SHA-256 of every file the run reads that the pipeline does not make (base config, model
    config, hardware entries, a given trace): editing one reruns the run through Snakemake's params
    trigger even when its modification time was kept.  Each file is hashed once per invocation.
    (A function of wildcards only: Snakemake leaves functions of input out of the params trigger.)
    """
    files = run_inputs(wildcards)
    if CAMPAIGN.generate is not None:
        # the pipeline makes the trace (the trace job), so its mtime says enough
        del files["trace"]
    return json.dumps(
        {name: provenance.file_sha256(path) for name, path in sorted(files.items())}
    )


def derive_args(wildcards, input):
    """tpsim.campaign.derive's arguments, joined with shlex.join ('--flag=value': a path that starts
    with '-' stays a value)."""
    args = [f"--base={input.base}", "--params", json.dumps(run_of(wildcards).params)]
    if "hardware" in input.keys():
        args += [f"--hardware={input.hardware}"]
    args += [
        "--record",
        f"dataset={input.trace}",
        "--record",
        f"model_config={input.model}",
    ]
    args += ["--record", f"hardware={input.hardware_config}"]
    return shlex.join(args)


def run_params(wildcards):
    """The run's parameters: a change re-runs it (Snakemake's params trigger)."""
    return json.dumps(run_of(wildcards).params, sort_keys=True)


def simulate_flags(wildcards):
    run = run_of(wildcards)
    flags = ["--perf-model", CAMPAIGN.doc["perf_model"]]
    if run.params["seed"] is not None:
        flags += ["--seed", str(run.params["seed"])]
    return shlex.join(flags + list(CAMPAIGN.doc["tpsim_args"]))


def trace_flags(wildcards):
    if CAMPAIGN.generate is None:
        raise WorkflowError(
            f"campaign {CAMPAIGN.name} reads the trace {CAMPAIGN.trace}; it generates none"
        )
    return shlex.join(generate_flags(CAMPAIGN.generate))


def run_outputs(name):
    return [f"{RES}/runs/{rid}/{name}" for rid in RUN_IDS]


def campaign_record():
    doc = dict(CAMPAIGN.doc)
    doc["source"] = CAMPAIGN_SOURCE
    doc["runs"] = RUN_IDS
    return doc


def figure_outputs(ext):
    return [f"{RES}/figures/{name}.{ext}" for name in FIGURES]


def all_outputs():
    return (
        [f"{RES}/campaign.json", f"{RES}/campaign.duckdb"]
        + [f"{RES}/{t}.{ext}" for t in TABLES for ext in ("parquet", "csv")]
        + [f for ext in ("pdf", "png", "csv") for f in figure_outputs(ext)]
    )


wildcard_constraints:
    run=r"model=[^/]+(/[a-z_]+=[^/]+)+",
    rate=r"[0-9][0-9.e+-]*",
    seed=r"[0-9]+",
