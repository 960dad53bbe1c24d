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
TABLES = ("runs", "requests")
#: the figures, in drawing order; each is NAME.pdf, NAME.png and NAME.csv in results/<campaign>/figures/
FIGURES = ("ttft_by_tp", "ttft_vs_link_bw", "tpot_vs_link_bw", "memory_by_tp", "ttft_tpot_cdf")
#: the one style sheet of every campaign figure (package data: read beside this module)
STYLE = Path(__file__).with_name("tpsim.mplstyle")
#: campaign.json, run.json and cluster.json are indented by one space (as the pipeline has always written them)
JSON_INDENT = 1
