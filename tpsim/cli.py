"""Command-line entry point: ``tpsim <command> ...`` (also ``python -m tpsim``).

Each command lives in ``tpsim/commands/<name>.py`` and exposes
``register(subparsers)``; modules import their heavy dependencies inside the
handler so ``tpsim run`` starts fast.  Any :class:`~tpsim.errors.InputError`
becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from tpsim import __version__
from tpsim.argspec import Parser
from tpsim.console import silence_stdout
from tpsim.errors import InputError

#: command modules, in the order ``tpsim --help`` lists them
COMMANDS = ("run", "trace", "sort-trace", "step", "profile", "calibrate", "validate", "replay", "import_tables")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="tpsim", description="Simulate LLM serving with tensor parallelism.")
    parser.add_argument("--version", action="version", version=f"tpsim {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"tpsim.commands.{name.replace('-', '_')}")
        except ModuleNotFoundError as exc:
            if exc.name == f"tpsim.commands.{name.replace('-', '_')}":
                continue  # command not part of this build
            raise
        module.register(sub)
    return parser


def run_handler(func, args) -> int:
    try:
        code = int(func(args) or 0)
        sys.stdout.flush()
        return code
    except InputError as exc:
        sys.stderr.write(f"tpsim: error: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("tpsim: interrupted\n")
        return 130
    except BrokenPipeError:
        silence_stdout()
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return run_handler(args.func, args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
