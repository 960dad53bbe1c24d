"""``tpsim run`` (and ``python -m serving``): simulate a cluster serving a trace.

Flags keep LLMServingSim's names and defaults.  Its flags for features tpsim
does not model are accepted by the parser only to be rejected with a clear
"not supported" error; flags that change nothing here (ASTRA-Sim input
handling) are accepted and listed as ignored in the run summary.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

DEFAULT_CLUSTER = "configs/cluster/single_node_single_instance.json"
#: simulated horizon (--max-sim-time): no realistic run reaches it; it bounds hostile traces
DEFAULT_MAX_SIM_TIME_S = 1e7
#: shortest --log-interval: finer bins say nothing a step (tens of microseconds at least) can fill
MIN_LOG_INTERVAL_S = 1e-6

#: LLMServingSim flags for features tpsim does not model -> what they are
UNSUPPORTED_FLAGS = {
    "enable_prefix_sharing": "second-tier prefix sharing (CPU/CXL)",
    "enable_local_offloading": "weight offloading",
    "enable_attn_offloading": "attention offloading to PIM",
    "enable_sub_batch_interleaving": "sub-batch interleaving (NPU/PIM overlap)",
    "skip_prefill": "--skip-prefill",
}
#: LLMServingSim flags that have no effect in tpsim -> why
IGNORED_FLAGS = {
    "enable_block_copy": "LLMServingSim's trace-generation shortcut; tpsim has no traces to copy",
    "inputs_root": "tpsim generates no ASTRA-Sim inputs",
    "cleanup_inputs": "tpsim generates no ASTRA-Sim inputs",
    "expert_routing_policy": "expert routing only matters for MoE models, which tpsim rejects",
}


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    B = argparse.BooleanOptionalAction
    g = p.add_argument_group("inputs and outputs")
    g.add_argument("--cluster-config", default=DEFAULT_CLUSTER, metavar="JSON",
                   help=f"LLMServingSim cluster config (default: {DEFAULT_CLUSTER})")
    g.add_argument("--dataset", metavar="JSONL",
                   help="request trace (LLMServingSim JSONL); default: 16 requests of 64+64 tokens at t=0 per instance")
    g.add_argument("--output", metavar="CSV",
                   help="per-request CSV; the run summary goes beside it as <name>.summary.json; "
                        "'{run_id}' is replaced by --run-id")
    g.add_argument("--num-reqs", type=int, default=0, help="only the first N requests: trace lines, or built-in requests (default 0 = all)")
    g.add_argument("--run-id", default=None, help="name substituted for '{run_id}' in --output")
    g.add_argument("--record-infeasible", action="store_true",
                   help="if the model does not fit / parallelism is impossible, write a header-only CSV and a "
                        "summary with status 'infeasible' and exit 0 (for campaigns)")
    e = p.add_argument_group("engine (per instance; a key in the cluster config's instance overrides these)")
    e.add_argument("--dtype", choices=["float16", "bfloat16", "float32", "fp8", "int8"], default=None,
                   help="weight dtype (default: the model's torch_dtype)")
    e.add_argument("--kv-cache-dtype", choices=["auto", "fp8"], default="auto",
                   help="KV cache dtype: auto = the weight dtype, fp8 = 1 byte per element (default auto)")
    e.add_argument("--block-size", type=int, default=16, help="KV block size in tokens (default 16)")
    e.add_argument("--max-num-seqs", type=int, default=128, help="max running requests (default 128; 0 = unlimited)")
    e.add_argument("--max-num-batched-tokens", type=int, default=2048, help="token budget per step (default 2048; 0 = unlimited)")
    e.add_argument("--long-prefill-token-threshold", type=int, default=0,
                   help="cap on tokens one request takes per step (default 0 = off)")
    e.add_argument("--enable-chunked-prefill", action=B, default=True, help="split long prompts over steps (default on)")
    e.add_argument("--enable-prefix-caching", action=B, default=True,
                   help="reuse KV blocks of shared prompt prefixes, by token ids in the trace (default on)")
    e.add_argument("--reserve-full-isl", action=B, default=False,
                   help="admit a request only if its whole prompt fits in free blocks (LLMServingSim's default; "
                        "vLLM does not, so tpsim's default is off)")
    e.add_argument("--async-scheduling", action=B, default=True,
                   help="host work of the next step overlaps the current GPU step (vLLM's default since 0.12); "
                        "--no-async-scheduling charges it in series (default on)")
    e.add_argument("--npu-memory-utilization", type=float, default=0.9,
                   help="fraction of npu_mem.mem_size for weights, activations and KV (vLLM gpu_memory_utilization; default 0.9)")
    s = p.add_argument_group("simulation")
    s.add_argument("--request-routing-policy", choices=["LOAD", "RR", "RAND", "CUSTOM"], default="LOAD",
                   help="across instances: least loaded, round robin or random (default LOAD)")
    s.add_argument("--perf-model", choices=["analytical", "profile", "auto"], default="auto",
                   help="iteration latency: roofline from the hardware catalog, a measured profile bundle, "
                        "or auto (profile when a bundle exists, else analytical; default auto)")
    s.add_argument("--profile-dir", default=None,
                   help="folder of measured profile bundles (<hardware>/<model>/<variant>/tp<N>/)")
    s.add_argument("--seed", type=int, default=42, help="seed for RAND routing (default 42)")
    s.add_argument("--log-interval", type=float, default=1.0,
                   help="simulated seconds between throughput lines and of the summary's timeline bins "
                        f"(default 1.0; 0 = neither; at least {MIN_LOG_INTERVAL_S:g})")
    s.add_argument("--max-sim-time", type=float, default=DEFAULT_MAX_SIM_TIME_S, metavar="SECONDS",
                   help="simulated horizon: a trace arrival later than this, or a simulation running past it, is an "
                        f"error (default {DEFAULT_MAX_SIM_TIME_S:g} s, about 116 days)")
    s.add_argument("--log-level", choices=["ERROR", "WARNING", "INFO", "DEBUG"], default="WARNING",
                   help="WARNING (default) and INFO show warnings on stderr, ERROR hides them, DEBUG adds one "
                        "line per scheduled step; the banner, throughput lines and final summary always print")
    s.add_argument("--fast-forward", action=B, default=True,
                   help="compute runs of identical decode steps in one go (identical results; default on; off only to debug)")
    u = p.add_argument_group("LLMServingSim flags that tpsim rejects or ignores")
    for flag in ("enable-prefix-sharing", "enable-local-offloading", "enable-attn-offloading",
                 "enable-sub-batch-interleaving", "skip-prefill"):
        u.add_argument(f"--{flag}", action="store_true", default=None, help=argparse.SUPPRESS)
    u.add_argument("--prefix-storage", default=None, help=argparse.SUPPRESS)
    u.add_argument("--network-backend", default=None, help=argparse.SUPPRESS)
    u.add_argument("--enable-block-copy", action=B, default=None, help=argparse.SUPPRESS)
    u.add_argument("--inputs-root", default=None, help=argparse.SUPPRESS)
    u.add_argument("--cleanup-inputs", action=B, default=None, help=argparse.SUPPRESS)
    u.add_argument("--expert-routing-policy", default=None, help=argparse.SUPPRESS)


def register(subparsers) -> None:
    p = subparsers.add_parser("run", help="simulate a cluster serving a trace",
                              description="Simulate LLM serving (vLLM V1 scheduling, paged KV cache, tensor "
                                          "parallelism) and write the per-request CSV and a run summary.")
    add_run_arguments(p)
    p.set_defaults(func=handle)


def _check_flags(args) -> list[str]:
    from tpsim.errors import NotSupportedError

    for key, what in UNSUPPORTED_FLAGS.items():
        if getattr(args, key):
            raise NotSupportedError(f"--{key.replace('_', '-')}: {what} is not supported by tpsim; remove the flag")
    if args.prefix_storage not in (None, "None"):
        raise NotSupportedError(f"--prefix-storage {args.prefix_storage}: second-tier prefix storage is not supported; remove the flag")
    if args.network_backend not in (None, "analytical"):
        raise NotSupportedError(f"--network-backend {args.network_backend} is not supported: tpsim costs the network "
                                f"analytically; remove the flag or pass --network-backend analytical")
    if args.request_routing_policy == "CUSTOM":
        raise NotSupportedError("--request-routing-policy CUSTOM is not supported; choose LOAD, RR or RAND")
    ignored = []
    for key, why in IGNORED_FLAGS.items():
        if getattr(args, key) is not None:
            ignored.append(f"--{key.replace('_', '-')}: ignored ({why})")
    return ignored


def _validate_numbers(args) -> None:
    from tpsim.errors import InputError

    checks = [
        ("--num-reqs", args.num_reqs, 0), ("--block-size", args.block_size, 1), ("--max-num-seqs", args.max_num_seqs, 0),
        ("--max-num-batched-tokens", args.max_num_batched_tokens, 0),
        ("--long-prefill-token-threshold", args.long_prefill_token_threshold, 0),
    ]
    for flag, value, minimum in checks:
        if value < minimum:
            raise InputError(f"{flag} must be >= {minimum}, got {value}")
    if not 1 <= args.max_sim_time <= 1e9:  # 1e9 s = 31.7 years: ns times stay far below 2^63
        raise InputError(f"--max-sim-time must be between 1 and 1e9 seconds, got {args.max_sim_time}")
    if not 0 < args.npu_memory_utilization <= 1:
        raise InputError(f"--npu-memory-utilization must be in (0, 1], got {args.npu_memory_utilization}")
    if not (args.log_interval == 0 or MIN_LOG_INTERVAL_S <= args.log_interval <= args.max_sim_time):
        raise InputError(f"--log-interval must be 0 (no lines, no timeline) or between {MIN_LOG_INTERVAL_S:g} s and "
                         f"--max-sim-time ({args.max_sim_time:g} s), got {args.log_interval}")


def _output_path(args) -> str | None:
    """The CSV path (``{run_id}`` filled in), checked with its summary path before anything runs."""
    from tpsim.errors import InputError
    from tpsim.io.output import check_output_path

    if args.output is None:
        return None
    out = args.output
    if "{run_id}" in out:
        if not args.run_id:
            raise InputError("--output contains '{run_id}' but no --run-id was given")
        out = out.replace("{run_id}", args.run_id)
    inputs = [args.cluster_config, args.dataset]
    check_output_path(out, "--output", inputs)
    spath = summary_path(out)
    if os.path.isdir(spath):
        raise InputError(f"--output {args.output}: its summary path {spath} is a folder; "
                         "remove it or choose another --output")
    check_output_path(spath, "--output's summary", inputs)
    return out


def summary_path(csv_path: str) -> str:
    return (csv_path[:-4] if csv_path.lower().endswith(".csv") else csv_path) + ".summary.json"


def handle(args) -> int:
    from tpsim.runner import execute

    t0 = time.perf_counter()
    ignored = _check_flags(args)
    _validate_numbers(args)
    out = _output_path(args)
    return execute(args, out, ignored, t0)


def main_serving(argv: list[str]) -> int:
    """``python -m serving ...``: the same as ``tpsim run ...``."""
    from tpsim.cli import _Parser, run_handler

    parser = _Parser(prog="python -m serving",
                     description="LLMServingSim-compatible alias of `tpsim run`.")
    add_run_arguments(parser)
    args = parser.parse_args(argv)
    return run_handler(handle, args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main_serving(sys.argv[1:]))
