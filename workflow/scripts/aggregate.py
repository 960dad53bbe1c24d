"""Rule ``aggregate``: the campaign's tables (tpsim.campaign.aggregate) from the rule's inputs."""

from tpsim.campaign.aggregate import aggregate_logged
from tpsim.campaign.outputs import TABLE_FILES

sm = snakemake  # noqa: F821  (the object Snakemake gives a script)
aggregate_logged(list(sm.input.runs), list(sm.input.csv), list(sm.input.summaries),
                 {key: sm.output[key] for key in TABLE_FILES}, sm.log[0])
