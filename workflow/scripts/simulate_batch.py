"""Rule ``simulate``: one batch of runs (tpsim.campaign.batch_job) from the rule's params."""

from tpsim.campaign.batch_job import main_snakemake

main_snakemake(snakemake)  # noqa: F821  (the object Snakemake gives a script)
