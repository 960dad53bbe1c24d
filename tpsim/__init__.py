"""tpsim: a fast simulator of LLM serving with tensor parallelism.

The package is split the way Vidur splits it: typed configs validated at the
edge (``tpsim.config``), time predictors behind one small interface
(``tpsim.perf``), entities / schedulers / the event loop (``tpsim.sim``), and
file formats (``tpsim.io``).  Nothing on the simulation path imports numpy,
pandas or matplotlib, so a run starts in well under a tenth of a second.
"""

__version__ = "0.1.0"
