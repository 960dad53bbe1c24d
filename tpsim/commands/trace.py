"""``tpsim trace``: write a seeded synthetic request trace (LLMServingSim JSONL).

The generator lives in :mod:`tpsim.tracegen`; this module only maps flags to a
:class:`~tpsim.tracegen.TraceSpec`.  Every bad value is reported by the spec as
one ``tpsim: error:`` line naming the flag, before anything is written.
"""

from __future__ import annotations

import argparse

DESCRIPTION = """\
Write a synthetic request trace in LLMServingSim's JSONL format (one request per
line: input_toks, output_toks, arrival_time_ns, optional input_tok_ids /
output_tok_ids).  The same flags and --seed always give a byte-identical file.

Arrivals: Poisson at --rate req/s (default), Gamma with --cv (burstiness), or a
burst at --start-s.  The first request arrives at --start-s (default 0) unless
--first-gap is given.  Lengths: fixed, uniform or lognormal, set separately for
input and output, or --preset sharegpt (lognormal fit to the ShareGPT trace
bundled with LLMServingSim; see workloads/README.md).  --prefix-groups G
--prefix-len P gives every prompt one of G shared P-token prefixes (token ids
are then written so prefix caching can match them).
"""

EPILOG = """\
examples:
  python -m tpsim trace --preset sharegpt --num-reqs 100 --rate 4 --seed 0 \\
      --prefix-groups 4 --prefix-len 256 --output workloads/example_trace.jsonl
  python -m tpsim trace --num-reqs 1000 --arrival gamma --rate 10 --cv 3 \\
      --input-dist uniform --input-min 128 --input-max 2048 --output-len 256 --output t.jsonl
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "trace", help="write a seeded synthetic request trace (JSONL)",
        description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    o = p.add_argument_group("output and size")
    o.add_argument("--output", required=True, metavar="JSONL",
                   help="file to write (parent folders are created; written atomically)")
    n = o.add_mutually_exclusive_group(required=True)
    n.add_argument("--num-reqs", type=int, metavar="N", help="number of requests (>= 1)")
    n.add_argument("--duration-s", type=float, metavar="S",
                   help="instead of --num-reqs: every request arriving within S seconds of --start-s")
    o.add_argument("--seed", type=int, default=0, help="random seed (default 0)")

    a = p.add_argument_group("arrivals")
    a.add_argument("--arrival", default="poisson", metavar="{poisson,gamma,burst}",
                   help="inter-arrival process (default poisson); burst = all requests at --start-s")
    a.add_argument("--rate", type=float, default=1.0, metavar="R",
                   help="mean requests per second (default 1; 0 = all at --start-s)")
    a.add_argument("--cv", type=float, default=None, metavar="X",
                   help="gamma only: coefficient of variation of the gaps (default 1 = Poisson; > 1 burstier)")
    a.add_argument("--start-s", type=float, default=0.0, metavar="S",
                   help="arrival time of the first request in seconds (default 0)")
    a.add_argument("--first-gap", action="store_true",
                   help="draw one gap before the first request, as LLMServingSim's generator does")

    ln = p.add_argument_group(
        "lengths (tokens; the same flags exist for --output-*)",
        "fixed: --*-len.  uniform: --*-min..--*-max inclusive.  lognormal: --*-len is the mean, --*-sigma "
        "the shape (default 1), --*-min/--*-max truncate it (default 1 .. --max-total-toks - 1).  "
        "Defaults without a preset: fixed 128 input, 512 output (LLMServingSim's --fix-len).")
    ln.add_argument("--preset", default=None, metavar="{sharegpt}",
                    help="length distributions of a known workload; --*-min/--*-max/--*-len/--*-sigma you "
                         "give override single values, --input-dist/--output-dist replace that side")
    for side, default in (("input", 128), ("output", 512)):
        ln.add_argument(f"--{side}-dist", default=None, metavar="{fixed,uniform,lognormal}",
                        help=f"{side} length distribution (default fixed {default})")
        ln.add_argument(f"--{side}-len", type=float, default=None, metavar="T",
                        help=f"fixed {side} length, or the lognormal mean")
        ln.add_argument(f"--{side}-min", type=int, default=None, metavar="T", help=f"lowest {side} length")
        ln.add_argument(f"--{side}-max", type=int, default=None, metavar="T", help=f"highest {side} length")
        ln.add_argument(f"--{side}-sigma", type=float, default=None, metavar="S",
                        help=f"lognormal shape of the {side} length (std. dev. of its log)")
    ln.add_argument("--max-total-toks", type=int, default=16384, metavar="T",
                    help="cap on input + output per request; the output is shortened to fit (default 16384, "
                         "LLMServingSim's --max-kv-toks)")

    x = p.add_argument_group("shared prefixes and token ids")
    x.add_argument("--prefix-groups", type=int, default=0, metavar="G",
                   help="each request joins one of G groups (uniformly) whose prompts share a prefix (default 0)")
    x.add_argument("--prefix-len", type=int, default=None, metavar="P",
                   help="shared prefix tokens per group, counted inside input_toks")
    x.add_argument("--token-ids", action=argparse.BooleanOptionalAction, default=None,
                   help="write input_tok_ids/output_tok_ids (default: on with --prefix-groups, else off)")
    x.add_argument("--vocab-size", type=int, default=32000, metavar="V",
                   help="random token ids are drawn from [0, V) (default 32000)")
    p.set_defaults(func=handle)


def handle(args) -> int:
    from tpsim.tracegen import TraceSpec, TraceStats, iter_requests, write_jsonl

    spec = TraceSpec(
        num_reqs=args.num_reqs, duration_s=args.duration_s, rate=args.rate, arrival=args.arrival,
        cv=args.cv, start_s=args.start_s, first_gap=args.first_gap, seed=args.seed, preset=args.preset,
        input_dist=args.input_dist, input_len=args.input_len, input_min=args.input_min,
        input_max=args.input_max, input_sigma=args.input_sigma,
        output_dist=args.output_dist, output_len=args.output_len, output_min=args.output_min,
        output_max=args.output_max, output_sigma=args.output_sigma,
        max_total_toks=args.max_total_toks, prefix_groups=args.prefix_groups, prefix_len=args.prefix_len,
        token_ids=args.token_ids, vocab_size=args.vocab_size,
    )
    stats = TraceStats()
    nbytes = write_jsonl(stats.observe(iter_requests(spec)), args.output)  # streamed: memory stays flat
    s = stats.summary()
    print(f"tpsim trace: {s['requests']} requests, arrivals {s['first_arrival_s']:.3f}-{s['last_arrival_s']:.3f} s "
          f"(span {s['span_s']:.3f} s), mean input {s['mean_input_toks']:.1f} tok, "
          f"mean output {s['mean_output_toks']:.1f} tok -> {args.output} ({nbytes / 1e6:.2f} MB)")
    return 0
