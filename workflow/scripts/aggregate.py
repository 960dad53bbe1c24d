"""Rule ``aggregate``: the campaign's tables (tpsim.campaign.aggregate) from the rule's inputs."""

from tpsim.campaign.aggregate import aggregate_logged

sm = snakemake  # noqa: F821  (the object Snakemake gives a script)
aggregate_logged(list(sm.input.runs), list(sm.input.requests), list(sm.input.summaries),
                 {key: sm.output[key] for key in sm.params.tables}, sm.log[0], slo=sm.params.slo)
