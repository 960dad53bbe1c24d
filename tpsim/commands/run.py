"""``tpsim run`` (and ``python -m serving``): simulate a cluster serving a trace.

The flags are generated from :class:`tpsim.config.run.RunConfig` and keep LLMServingSim's names
and defaults.  Its flags for features tpsim does not model are accepted by the parser only to be
rejected with a clear "not supported" error; flags that change nothing here (ASTRA-Sim input
handling) are accepted and listed as ignored in the run summary.
"""

from __future__ import annotations

import argparse
import sys

from tpsim.argspec import Parser, add_arguments, from_namespace
from tpsim.config.run import RunConfig


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    add_arguments(p, RunConfig)


def register(subparsers) -> None:
    p = subparsers.add_parser("run", help="simulate a cluster serving a trace",
                              description="Simulate LLM serving (vLLM V1 scheduling, paged KV cache, tensor "
                                          "parallelism) and write the per-request CSV and a run summary.")
    add_run_arguments(p)
    p.set_defaults(func=handle)


def config_from_args(args: argparse.Namespace, **objects) -> RunConfig:
    return from_namespace(RunConfig, args, **objects)


def handle(args) -> int:
    from tpsim.api import run
    from tpsim.console import Console

    config = config_from_args(args)
    run(config, console=Console(config.log_level), argv=sys.argv[1:])
    return 0


def main_serving(argv: list[str]) -> int:
    """``python -m serving ...``: the same as ``tpsim run ...``."""
    from tpsim.cli import run_handler

    parser = Parser(prog="python -m serving", description="LLMServingSim-compatible alias of `tpsim run`.")
    add_run_arguments(parser)
    args = parser.parse_args(argv)
    return run_handler(handle, args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main_serving(sys.argv[1:]))
