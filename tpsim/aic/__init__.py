"""Import NVIDIA AIConfigurator's kernel database into tpsim's kernel tables.

AIConfigurator (github.com/ai-dynamo/aiconfigurator, Apache-2.0) publishes per-kernel
timings measured with the serving engines' own kernels, as parquet tables under
``systems/data/<system>/``.  ``tpsim import aic`` reads them (with DuckDB, imported only
here), cleans them by the rules in :mod:`tpsim.aic.clean` and writes the compact tables
that :mod:`tpsim.kernels` reads with the standard library.
"""
