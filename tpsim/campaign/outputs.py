"""What a campaign writes beside its runs: the tables, the figures and the style sheet they are drawn
with.  Light on purpose (no pandas, no matplotlib): the workflow reads it while Snakemake parses."""

from __future__ import annotations

import itertools
from pathlib import Path

#: aggregate's outputs: key (the rule's output name) -> file name in results/<campaign>/
TABLE_FILES = {
    "db": "campaign.duckdb",
    "runs_parquet": "runs.parquet",
    "runs_csv": "runs.csv",
    "requests_parquet": "requests.parquet",
    "requests_csv": "requests.csv",
}
#: the outputs only a campaign with ``requests_csv: true`` writes (about 2 MB per 300-request run)
CSV_ONLY_ON_REQUEST = ("requests_csv",)
TABLES = ("runs", "requests")
#: a capacity search's tables: one row per configuration, one per probe
CAPACITY_TABLE_FILES = {
    "db": "campaign.duckdb",
    "capacity_parquet": "capacity.parquet",
    "capacity_csv": "capacity.csv",
    "probes_parquet": "probes.parquet",
    "probes_csv": "probes.csv",
}
CAPACITY_TABLES = ("capacity", "probes")
#: a run folder's per-request rows (tpsim run --requests-format parquet; the CSV only on request)
RUN_REQUESTS = "requests.parquet"
RUN_CSV = "requests.csv"
#: candidates for the x axis of a matrix campaign's line figures, in order of preference: the first
#: the matrix varies (link bandwidth if it does)
X_KEYS = ("link_bw", "hardware", "rate", "link_latency", "max_num_seqs", "max_num_batched_tokens")
#: the line figures (METRIC_vs_X), by metric; the SLO ones only for a campaign with slo:
LINE_FIGURES = ("ttft", "tpot", "throughput")
SLO_LINE_FIGURES = ("slo_attainment", "goodput")
#: tensor- against expert-parallel layouts at equal GPU count (a matrix with dp_size or ep_size)
LAYOUT_FIGURE = "layouts_by_gpus"
#: the figures of a capacity search
CAPACITY_FIGURES = ("capacity_by_tp", "pareto_throughput_latency", "attainment_vs_rate")
#: the one style sheet of every campaign figure (package data: read beside this module)
STYLE = Path(__file__).with_name("tpsim.mplstyle")
#: campaign.json, run.json and cluster.json are indented by one space (as the pipeline has always written them)
JSON_INDENT = 1


def x_key(doc: dict) -> str:
    """The x axis of a campaign's line figures: the first of X_KEYS its matrix varies."""
    matrix = doc.get("matrix") or {}
    return next((k for k in X_KEYS if len(matrix.get(k) or []) > 1), "link_bw")


def figures_of(doc: dict) -> tuple[str, ...]:
    """The figures a campaign (its validated document) draws, in drawing order; each is NAME.pdf,
    NAME.png and NAME.csv in results/<campaign>/figures/."""
    if "capacity" in doc:
        return CAPACITY_FIGURES
    x = x_key(doc)
    lines = LINE_FIGURES + (SLO_LINE_FIGURES if doc.get("slo") else ())
    layouts = (LAYOUT_FIGURE,) if layout_figure(doc) else ()
    return ("ttft_by_tp", *(f"{m}_vs_{x}" for m in lines), "memory_by_tp", "ttft_tpot_cdf", *layouts)


def layout_figure(doc: dict) -> bool:
    """Whether a campaign draws :data:`LAYOUT_FIGURE`: its matrix has ``dp_size`` or ``ep_size`` and
    more than one (DP, TP, EP) layout at some GPU count (DP x TP; the base's pp_size is common to all),
    once the exclude rules that name only these keys are applied (a rule naming another key too, a
    model, leaves the layout to the other runs)."""
    matrix = doc.get("matrix") or {}
    if "dp_size" not in matrix and "ep_size" not in matrix:
        return False
    keys = ("dp_size", "tp_size", "ep_size")
    lists = [matrix.get(k) or [None] for k in keys]
    rules = [r for r in doc.get("exclude") or [] if isinstance(r, dict) and r and set(r) <= set(keys)]
    by_gpus: dict = {}
    for combo in itertools.product(*lists):
        values = dict(zip(keys, combo))
        if any(all(values[k] in (v if isinstance(v, list) else [v]) for k, v in r.items()) for r in rules):
            continue
        by_gpus.setdefault((combo[0] or 1) * combo[1], set()).add(combo)
    return any(len(layouts) > 1 for layouts in by_gpus.values())


#: the figures of the default-shaped campaign (link_bw varies, no slo:)
FIGURES = figures_of({"matrix": {"link_bw": [1, 2]}})


def table_files(doc: dict) -> dict:
    """aggregate's outputs for a campaign: key -> file name."""
    if "capacity" in doc:
        return dict(CAPACITY_TABLE_FILES)
    return {k: v for k, v in TABLE_FILES.items() if doc.get("requests_csv") or k not in CSV_ONLY_ON_REQUEST}


def caption_of(name: str) -> str:
    """The report caption file (``workflow/report/<caption>.rst``) of a figure: one per kind, whatever
    its x axis (``ttft_vs_link_bw`` and ``ttft_vs_hardware`` share ``ttft_vs``)."""
    if name in CAPACITY_FIGURES or "_vs_" not in name:
        return name
    return name.rsplit("_vs_", 1)[0] + "_vs"
