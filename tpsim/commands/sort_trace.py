"""``tpsim sort-trace``: sort a JSONL trace by arrival with bounded memory (:mod:`tpsim.io.trace_sort`)."""

from __future__ import annotations

import sys


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "sort-trace", help="sort a JSONL trace by arrival time (bounded memory)",
        description="Write a trace's lines sorted by arrival_time_ns (equal arrivals keep their order; blank lines "
                    "dropped).  A run streams its trace and sorts it only within a window of 100,000 requests; sort "
                    "a longer trace that is out of order with this first.  Request ids follow the sorted file.")
    p.add_argument("input", metavar="TRACE", help="the JSONL trace to sort")
    p.add_argument("--output", required=True, metavar="PATH", help="where to write the sorted trace")
    p.add_argument("--chunk-mb", type=int, default=256, metavar="MB",
                   help="trace bytes sorted in memory at once (default 256); memory stays near this")
    p.set_defaults(func=handle)


def handle(args) -> int:
    from tpsim.errors import InputError
    from tpsim.io.trace_sort import sort_trace

    if args.chunk_mb < 1:
        raise InputError(f"--chunk-mb must be >= 1, got {args.chunk_mb}")
    counts = sort_trace(args.input, args.output, args.chunk_mb << 20,
                        progress=lambda msg: print(f"tpsim sort-trace: {msg}", file=sys.stderr))
    print(f"tpsim sort-trace: {counts['lines']:,} requests ({counts['out_of_order']:,} out of order) -> {args.output}")
    return 0
