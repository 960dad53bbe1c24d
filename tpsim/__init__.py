"""tpsim: a fast simulator of LLM serving with tensor parallelism.

The typed run API::

    import tpsim
    result = tpsim.run(tpsim.RunConfig(dataset="workloads/example_trace.jsonl", output="out/run.csv"))
    result.summary.metric("ttft", "p50")

The package is split the way Vidur splits it: typed configs validated at the
edge (``tpsim.config``), time predictors behind one small interface
(``tpsim.perf``), entities / schedulers / the event loop (``tpsim.sim``), and
file formats (``tpsim.io``).  Nothing on the simulation path imports numpy,
pandas or matplotlib, so a run starts in well under a tenth of a second.
"""

__version__ = "0.1.0"

__all__ = ["RunConfig", "EngineOptions", "run", "__version__"]


def run(config, sink=None, console=None, argv=None):
    """Simulate ``config`` (a :class:`RunConfig`); see :func:`tpsim.api.run`."""
    from tpsim.api import run as _run

    return _run(config, sink=sink, console=console, argv=argv)


def __getattr__(name):  # RunConfig and EngineOptions without importing them for `tpsim --version`
    if name in ("RunConfig", "EngineOptions"):
        from tpsim.config import run as _config

        return getattr(_config, name)
    raise AttributeError(f"module 'tpsim' has no attribute {name!r}")
