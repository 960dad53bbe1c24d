"""Campaigns: a YAML matrix of ``tpsim run``s turned into runs, tables and figures.

The Snakemake workflow (``workflow/``) calls into this package; nothing here is on ``tpsim run``'s
import path, and the heavy libraries (DuckDB, pandas, matplotlib) are imported only by the modules
that draw or aggregate.

=====================  ======================================================================
module                 concept
=====================  ======================================================================
``reading``            a campaign file read within bounds (size, nesting, values once aliases expand)
``form``               its form: the JSON Schema (``campaign.schema.yaml``) and what a schema cannot say
``checks``             what it names: files, catalog entries, the base config, ``tpsim_args``, excludes
``spec``               :func:`~tpsim.campaign.spec.load_campaign`: the steps above, then the expansion
``runs``               the expansion into runs (``Campaign``, ``Run``, exclude rules, trace flags)
``run_ids``            run folder names (``key=value`` segments, model names in a safe alphabet)
``links``              each run's GPU-to-GPU link (matrix, catalogued interconnect, base config)
``workflow``           which campaign a Snakemake invocation runs; profile placeholders; report path
``derive``             one run's cluster config and ``run.json`` (``python -m tpsim.campaign.derive``)
``provenance``         ``git_dirty`` and input hashes recorded per run (latency-model inputs too)
``slo``                SLO attainment, goodput, tokens/s per GPU, the overload criterion
``capacity``           capacity search: bracketing, then bisection to a tolerance
``capacity_job``       one configuration's search, resumable from its record of probes
``capacity_tables``    a capacity search's tables (``capacity``, ``probes``)
``measured_runs``      measured runs drawn beside the simulated ones (checks, reading)
``outputs``            the tables and figures a campaign writes, the style sheet
``tables``             the columns of ``runs`` / ``requests`` and one run's row
``aggregate``          the tables with DuckDB (Parquet, CSV)
``figures``            the figures; ``figure_context``, ``figure_parts``, ``figure_axes``,
                       ``figure_stats`` their pieces; ``figure_lines``, ``figure_bars``,
                       ``figure_cdf``, ``figure_capacity`` the kinds
=====================  ======================================================================
"""
