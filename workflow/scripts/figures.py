"""Rule ``figures``: the campaign's figures (tpsim.campaign.figures) from its tables and record."""

from tpsim.campaign.figures import make_figures_logged

sm = snakemake  # noqa: F821  (the object Snakemake gives a script)
outputs = {name: {"pdf": sm.output.pdf[i], "png": sm.output.png[i], "csv": sm.output.csv[i]}
           for i, name in enumerate(sm.params.names)}
tables = {key: sm.input[key] for key in ("runs", "requests", "capacity", "probes") if key in sm.input.keys()}
make_figures_logged(tables, sm.input.campaign, outputs, sm.input.style, sm.log[0], processes=sm.threads)
