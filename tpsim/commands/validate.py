"""``tpsim validate``: compare a simulated run with a measured vLLM replay.

Example::

    tpsim validate --measured ../shared/validation/rtxpro6000-llama-3.1-8b-tp1 \\
        --sim outputs/replay.csv --out outputs/replay.validation

prints a Markdown table (mean/p50/p90/p99 of TTFT, TPOT, latency and queuing
delay on both sides, their difference in %, and the per-request MAPE of the
requests paired by id) and, with ``--out``, writes ``validation.json``,
``validation.md`` and the figures ``cdf.{pdf,png}`` and
``throughput.{pdf,png}``.  ``--sim`` takes any CSV in LLMServingSim's
12-column format, so a peer's ``sim.csv`` can be scored the same way.
Definitions: :mod:`tpsim.validation` and ``docs/validation.md``.
"""

from __future__ import annotations

import json
import sys


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "validate", help="compare a simulated run with a measured vLLM replay",
        description="Compare a per-request CSV (tpsim's or LLMServingSim's) with a measured vLLM replay directory "
                    "(vllm/requests.jsonl, vllm/timeseries.csv): TTFT, TPOT, latency, queuing delay; mean and "
                    "percentiles of both sides, their difference in %, and the paired per-request MAPE.")
    p.add_argument("--measured", required=True, metavar="DIR",
                   help="measured replay directory "
                        "(vllm/requests.jsonl; vllm/timeseries.csv for the throughput figure)")
    p.add_argument("--sim", required=True, metavar="CSV",
                   help="simulated per-request CSV (12 columns); a tpsim run summary <name>.summary.json beside it "
                        "supplies the throughput timeline and the label")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="write validation.json, validation.md and the figures here (default: print only)")
    p.add_argument("--label", default=None,
                   help="name of the simulator in tables and figures (default: tpsim-<perf model> from the run "
                        "summary, else the CSV's file name)")
    p.add_argument("--arrival-groups", type=int, default=5, metavar="N",
                   help="also split the paired TTFT and TPOT errors into N groups of consecutive arrivals, to see "
                        "where a run's error sits: cold start, light load, the queue (default 5; 0: none)")
    p.add_argument("--json", action="store_true", help="print the validation JSON instead of the Markdown table")
    p.add_argument("--no-figures", dest="figures", action="store_false",
                   help="with --out: skip the figures (no matplotlib needed)")
    p.set_defaults(func=handle)


def handle(args) -> int:
    from pathlib import Path

    from tpsim.errors import InputError
    from tpsim.io.writing import atomic_write_json, atomic_write_text
    from tpsim.validation.by_arrival import MAX_GROUPS
    from tpsim.validation.figures import write_figures
    from tpsim.validation.report import markdown, validate

    if not 0 <= args.arrival_groups <= MAX_GROUPS:
        raise InputError(f"--arrival-groups must be between 0 and {MAX_GROUPS}, got {args.arrival_groups}")
    want_figures = args.out is not None and args.figures
    doc, data = validate(args.measured, args.sim, label=args.label, with_itl=want_figures,
                         arrival_groups=args.arrival_groups)
    if args.out is not None:
        out = Path(args.out)
        if out.exists() and not out.is_dir():
            raise InputError(f"--out {args.out}: exists and is not a folder")
        out.mkdir(parents=True, exist_ok=True)
        if want_figures:
            doc["figures"] = write_figures(doc, data, out)
        atomic_write_json(out / "validation.json", doc)
        atomic_write_text(out / "validation.md", markdown(doc))
    if args.json:
        sys.stdout.write(json.dumps(doc, indent=2, allow_nan=False) + "\n")
    else:
        sys.stdout.write(markdown(doc))
        if args.out is not None:
            sys.stdout.write(f"\nwrote {Path(args.out) / 'validation.json'}"
                             + (f" and {len(doc['figures'])} figure files" if doc["figures"] else "") + "\n")
    return 0
