"""What a campaign writes beside its runs: the tables, the figures and the style sheet they are drawn
with.  Light on purpose (no pandas, no matplotlib): the workflow reads it while Snakemake parses."""

from __future__ import annotations

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
#: the figures of a matrix campaign, in drawing order; each is NAME.pdf, NAME.png and NAME.csv in
#: results/<campaign>/figures/
FIGURES = ("ttft_by_tp", "ttft_vs_link_bw", "tpot_vs_link_bw", "throughput_vs_link_bw", "memory_by_tp",
           "ttft_tpot_cdf")
#: figures added by a campaign's slo:
SLO_FIGURES = ("slo_attainment_vs_link_bw", "goodput_vs_link_bw")
#: the figures of a capacity search
CAPACITY_FIGURES = ("capacity_by_tp", "pareto_throughput_latency", "attainment_vs_rate")
#: the one style sheet of every campaign figure (package data: read beside this module)
STYLE = Path(__file__).with_name("tpsim.mplstyle")
#: campaign.json, run.json and cluster.json are indented by one space (as the pipeline has always written them)
JSON_INDENT = 1


def figures_of(doc: dict) -> tuple[str, ...]:
    """The figures a campaign (its validated document) draws."""
    if "capacity" in doc:
        return CAPACITY_FIGURES
    return FIGURES + (SLO_FIGURES if doc.get("slo") else ())


def table_files(doc: dict) -> dict:
    """aggregate's outputs for a campaign: key -> file name."""
    if "capacity" in doc:
        return dict(CAPACITY_TABLE_FILES)
    return {k: v for k, v in TABLE_FILES.items() if doc.get("requests_csv") or k not in CSV_ONLY_ON_REQUEST}
