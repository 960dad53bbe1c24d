# tpsim campaigns: a matrix of `tpsim run`s -> DuckDB tables -> paper figures.
#   snakemake --cores all                                        # configs/campaigns/tp_vs_linkbw.yaml
#   snakemake --cores all --configfile configs/campaigns/NAME.yaml
#   snakemake --report results/NAME/report.html
# See README.md, section "Campaigns".
from snakemake.utils import min_version

min_version("9.27")


include: "workflow/rules/common.smk"
include: "workflow/rules/workload.smk"
include: "workflow/rules/simulate.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/validate.smk"


report: "workflow/report/workflow.rst"


rule all:
    default_target: True
    input:
        all_outputs(),
