# Shared setup: choose, load and validate the campaign, helper functions for the rules.
# The logic lives in the tpsim package (tpsim/campaign/); the workflow needs tpsim importable
# (README: pip install -e '.[workflow]'), and its jobs run that same tpsim.
import json
import math
import shlex
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

try:
    import tpsim
    from tpsim.campaign import batches, measured_runs, outputs, provenance, slo
    from tpsim.campaign.checks import rel_path
    from tpsim.campaign.reading import CampaignError
    from tpsim.campaign.runs import generate_flags
    from tpsim.campaign.workflow import (
        check_report_path,
        choose_campaign,
        placeholder_problems,
        report_path,
        tpsim_location_warning,
        warn,
        warned,
        warned_already,
    )
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
# Placeholders left in a workflow profile (CHANGE_ME in the Slurm template) and a report written into
# another campaign's folder are refused here, before any job runs.
try:
    CAMPAIGN, CAMPAIGN_SOURCE = choose_campaign(
        dict(config), workflow.overwrite_configfiles, roots=[Path("."), REPO]
    )
    check_report_path(report_path(sys.argv), CAMPAIGN, CAMPAIGN_SOURCE)
except CampaignError as exc:
    raise WorkflowError(str(exc)) from None
_PLACEHOLDERS = placeholder_problems(
    getattr(workflow.resource_settings.default_resources, "args", None),
    workflow.resource_settings.overwrite_resources,
)
if _PLACEHOLDERS:
    raise WorkflowError("\n".join(_PLACEHOLDERS))
warn(*CAMPAIGN.warnings)

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

CAPACITY = (
    CAMPAIGN.capacity
)  # a capacity search: one job per configuration, no matrix runs
# A matrix campaign's runs in batches, one `simulate` job each (tpsim/campaign/batches.py): batch
# name -> the specs of its runs.
BATCHES = (
    {}
    if CAPACITY
    else batches.plan(
        CAMPAIGN,
        TPSIM_VERSION,
        CAMPAIGN.doc.get("limits", {}).get("batch_seconds", batches.BATCH_SECONDS),
    )
)
FIGURES = list(outputs.figures_of(CAMPAIGN.doc))
TABLE_FILES = outputs.table_files(CAMPAIGN.doc)
STYLE = rel_path(outputs.STYLE)
MEASURED = [m["path"] for m in measured_runs.entries(CAMPAIGN.doc)]
# What the report shows (workflow/report/workflow.rst reads snakemake.config["_campaign"]).
config["_campaign"] = {
    "name": CAMPAIGN.name,
    "source": CAMPAIGN_SOURCE,
    "cluster": CAMPAIGN.cluster,
    "runs": len(RUN_IDS),
    "mode": "capacity search" if CAPACITY else "matrix",
    "slo": (
        slo.SLO.from_doc(CAMPAIGN.doc["slo"]).describe()
        if CAMPAIGN.doc.get("slo")
        else "none"
    ),
}


def run_of(wildcards):
    try:
        return CAMPAIGN.run(wildcards.run)
    except KeyError:
        raise WorkflowError(
            f"{wildcards.run} is not a run of campaign {CAMPAIGN.name} ({CAMPAIGN_SOURCE})"
        ) from None


def run_inputs(wildcards):
    """Everything a run reads: the base config, the trace (none for a capacity search, which makes
    its own), the model config, the hardware entry (and the catalog entry for npu_mem when the
    hardware differs from the base's)."""
    run = run_of(wildcards)
    files = {
        "base": CAMPAIGN.cluster,
        "model": run.model_config,
        "hardware_config": run.hardware_config,
    }
    if run.trace is not None:
        files["trace"] = run.trace
    if run.hardware_override:
        files["hardware"] = run.hardware_override
    return files


def input_sha256(wildcards):
    """SHA-256 of every file the run reads that the pipeline does not make (base config, model
    config, hardware entries, a given trace) and of the folders its latency model may read (the
    GPU's kernel tables, the model's profile bundles): editing one reruns the run through
    Snakemake's params trigger even when its modification time was kept.  Each is hashed once per
    invocation.  (A function of wildcards only: Snakemake leaves functions of input out of the
    params trigger.)"""
    run = run_of(wildcards)
    files = dict(run_inputs(wildcards), **run.latency_inputs)
    if CAMPAIGN.generate is not None:
        # the pipeline makes the trace (the trace job), so its mtime says enough
        files.pop("trace", None)
    return json.dumps(
        {name: provenance.file_sha256(path) for name, path in sorted(files.items())}
    )


def derive_args(wildcards, input):
    """tpsim.campaign.derive's arguments for a capacity search's configuration, joined with shlex.join
    ('--flag=value': a path that starts with '-' stays a value)."""
    run = run_of(wildcards)
    args = [f"--base={input.base}", "--params", json.dumps(run.params)]
    if "hardware" in input.keys():
        args += [f"--hardware={input.hardware}"]
    for name, path in batches.records_of(run).items():
        args += ["--record", f"{name}={path}"]
    return shlex.join(args)


def run_params(wildcards):
    """The run's parameters: a change re-runs it (Snakemake's params trigger)."""
    return json.dumps(run_of(wildcards).params, sort_keys=True)


def trace_flags(wildcards):
    if CAMPAIGN.generate is None:
        raise WorkflowError(
            f"campaign {CAMPAIGN.name} reads the trace {CAMPAIGN.trace}; it generates none"
        )
    return shlex.join(generate_flags(CAMPAIGN.generate))


def batch_record(name):
    return f"{RES}/batches/{name}.json"


def batch_records():
    """Every batch's record: what the tables wait for (they read the run folders, listed in params)."""
    return [batch_record(name) for name in BATCHES]


def batch_of(wildcards):
    try:
        return BATCHES[wildcards.batch]
    except KeyError:
        raise WorkflowError(
            f"{wildcards.batch} is not a batch of campaign {CAMPAIGN.name}: its batches are "
            f"{', '.join(BATCHES)}"
        ) from None


def batch_inputs(wildcards):
    """The files the batch's runs read (a newer one, e.g. a regenerated trace, reruns the batch)."""
    specs = batch_of(wildcards)
    files = {"base": [CAMPAIGN.cluster], "traces": set(), "configs": set()}
    for spec in specs:
        files["traces"].add(spec["trace"])
        files["configs"].update(
            [spec["records"]["model_config"], spec["records"]["hardware"]]
        )
        if spec["hardware"]:
            files["configs"].add(spec["hardware"])
    return {name: sorted(paths) for name, paths in files.items()}


def batch_runtime(wildcards, threads):
    """Minutes for a batch job (Slurm --time): three times its estimated length, plus 10."""
    seconds = sum(spec["cost_s"] for spec in batch_of(wildcards)) / max(1, threads)
    return 10 + math.ceil(3 * seconds / 60)


def run_outputs(name):
    return [f"{RES}/runs/{rid}/{name}" for rid in RUN_IDS]


def campaign_record():
    doc = dict(CAMPAIGN.doc)
    doc["source"] = CAMPAIGN_SOURCE
    doc["runs"] = RUN_IDS
    return doc


def figure_outputs(ext):
    return [f"{RES}/figures/{name}.{ext}" for name in FIGURES]


def measured_inputs():
    """The files of the campaign's measured runs that the figures read (a change redraws them)."""
    files = []
    for path in MEASURED:
        files += [f"{path}/config.json", f"{path}/vllm/requests.jsonl"]
        if Path(path, "vllm", "meta.json").is_file():
            files.append(f"{path}/vllm/meta.json")
    return files


def all_outputs():
    return (
        [f"{RES}/campaign.json"]
        + [f"{RES}/{name}" for name in TABLE_FILES.values()]
        + [f for ext in ("pdf", "png", "csv") for f in figure_outputs(ext)]
    )


wildcard_constraints:
    run=r"model=[^/]+(/[a-z_]+=[^/]+)+",
    rate=r"[0-9][0-9.e+-]*",
    seed=r"[0-9]+",
    batch=r"[0-9]+-of-[0-9]+",


def capacity_args(wildcards):
    """tpsim.campaign.capacity_job's settings for one configuration (shlex.join)."""
    run = run_of(wildcards)
    args = {
        "generate": CAMPAIGN.generate,
        "slo": CAMPAIGN.doc["slo"],
        "capacity": CAMPAIGN.doc["capacity"],
        "tpsim-args": CAMPAIGN.doc["tpsim_args"],
    }
    flags = [f"--{k}={json.dumps(v, sort_keys=True)}" for k, v in args.items()]
    flags += [
        f"--perf-model={CAMPAIGN.doc['perf_model']}",
        f"--seed={run.params['seed']}",
    ]
    return shlex.join(flags)


def table_outputs():
    files = {key: f"{RES}/{name}" for key, name in TABLE_FILES.items()}
    table_csv = "capacity_csv" if CAPACITY else "runs_csv"
    files[table_csv] = report(
        files[table_csv],
        caption=f"../report/{table_csv.removesuffix('_csv')}.rst",
        category="Tables",
        labels={"table": table_csv.removesuffix("_csv")},
    )
    return files


def figure_inputs():
    files = {
        "campaign": f"{RES}/campaign.json",
        "style": STYLE,
        "measured": measured_inputs(),
    }
    for table in ("capacity", "probes") if CAPACITY else ("runs", "requests"):
        files[table] = f"{RES}/{table}.parquet"
    return files


# Said once per invocation (with the campaign's warnings above): the runs, the batches, what is not
# done; the processes Snakemake starts that load the workflow again stay quiet.
if BATCHES and not warned_already():
    warn(
        *batches.status_lines(CAMPAIGN, BATCHES, {b: batch_record(b) for b in BATCHES})
    )
warned()
