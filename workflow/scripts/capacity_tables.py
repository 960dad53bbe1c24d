"""Rule ``aggregate`` of a capacity search: its tables (tpsim.campaign.capacity_tables)."""

from tpsim.campaign.capacity_tables import capacity_tables_logged

sm = snakemake  # noqa: F821  (the object Snakemake gives a script)
capacity_tables_logged(list(sm.input.results), {key: sm.output[key] for key in sm.params.tables}, sm.log[0])
