"""Rule ``aggregate``: the campaign's tables (tpsim.campaign.aggregate) from the run folders the rule
lists (its inputs are the batch records that finished them)."""

from tpsim.campaign.aggregate import aggregate_logged

sm = snakemake  # noqa: F821  (the object Snakemake gives a script)
aggregate_logged(list(sm.params.runs), list(sm.params.requests), list(sm.params.summaries),
                 {key: sm.output[key] for key in sm.params.tables}, sm.log[0], slo=sm.params.slo)
