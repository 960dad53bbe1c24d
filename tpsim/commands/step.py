"""``tpsim step``: explain the predicted latency of one engine iteration.

Example::

    tpsim step --model Qwen/Qwen3-32B --hardware RTXPRO6000 --tp 2 \\
        --link-bw 16 --link-latency 20000 --prefill 512@1024 --decode 32@2000

prints each operation's time on one GPU (per decoder layer, then once per
step), the split into compute / communication / head / overhead, and where
each number came from.  ``--json`` prints the same as one JSON object.

A mixture-of-experts model's MoE layers show the router, the dispatch and combine collectives, the
fused experts and their sources; ``--dp``, ``--ep`` / ``--enable-expert-parallel`` and
``--expert-routing-policy`` place its experts as a cluster config would, every DP rank running the
given batch, and the ``moe`` block says which expert load the slowest EP rank carries (the per-rank
imbalance)::

    tpsim step --model Qwen/Qwen3-30B-A3B-Instruct-2507 --hardware RTXPRO6000 --dp 2 --ep 2 --decode 64@1500
"""

from __future__ import annotations

import argparse
import json
import re

_PAIR = re.compile(r"^(\d+)(?:@(\d+))?$")


def _pair(text: str, flag: str, need_ctx: bool) -> tuple[int, int]:
    from tpsim.errors import InputError

    m = _PAIR.match(text.strip())
    if not m or (need_ctx and m.group(2) is None):
        form = "N@CTX" if need_ctx else "LEN[@CTX]"
        raise InputError(f"{flag} {text!r}: expected {form} with non-negative integers, e.g. {flag} 512@1024")
    a, b = int(m.group(1)), int(m.group(2) or 0)
    if a <= 0:
        raise InputError(f"{flag} {text!r}: the first number must be >= 1")
    if need_ctx and b <= 0:
        raise InputError(f"{flag} {text!r}: a decoding request's context must be >= 1 token")
    return a, b


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "step", help="explain one iteration's predicted latency, op by op",
        description="Predict and break down the latency of one engine step on one instance.")
    p.add_argument("--model", required=True, help="model name (configs/model/<name>.json) or a config.json path")
    p.add_argument("--hardware", required=True, help="hardware catalog entry (configs/hardware/<NAME>.yaml)")
    p.add_argument("--tp", type=int, default=1, help="tensor-parallel size")
    p.add_argument("--pp", type=int, default=1, help="pipeline-parallel size")
    p.add_argument("--link-bw", type=float, default=None, help="GB/s per direction (default: the catalog's)")
    p.add_argument("--link-latency", type=float, default=None, help="ns per ring step (default: the catalog's)")
    p.add_argument("--mem-bw", type=float, default=None, help="GPU memory bandwidth, GB/s (default: the catalog's)")
    p.add_argument("--prefill", action="append", default=[], metavar="LEN[@CTX]",
                   help="a prefill chunk of LEN new tokens after CTX cached ones (repeatable)")
    p.add_argument("--decode", action="append", default=[], metavar="N@CTX",
                   help="N decoding requests at context length CTX (repeatable)")
    p.add_argument("--dtype", choices=["float16", "bfloat16", "float32", "fp8"], default=None)
    p.add_argument("--kv-cache-dtype", choices=["auto", "fp8"], default="auto")
    p.add_argument("--perf-model", choices=["analytical", "profile", "kernels", "auto"], default="auto",
                   help="latency model (default auto: a bundle, else kernel tables, else analytical)")
    p.add_argument("--comm-model", choices=["measured", "analytical", "auto"], default="auto",
                   help="collectives of the kernels model (default auto: measured on the GPU's catalogued link)")
    p.add_argument("--profile-dir", default=None)
    p.add_argument("--dp", type=int, default=1, help="MoE: data-parallel ranks, each running this batch (default 1)")
    p.add_argument("--ep", type=int, default=None,
                   help="MoE: LLMServingSim's ep_size, the total EP degree over the DP ranks (default tp)")
    p.add_argument("--enable-expert-parallel", action=argparse.BooleanOptionalAction, default=None,
                   help="MoE: vLLM's expert parallelism over DP x TP GPUs (off: experts sharded by width)")
    p.add_argument("--expert-routing-policy", choices=["BALANCED", "RR", "RAND"], default="BALANCED",
                   help="MoE: how tokens reach experts (default BALANCED)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.set_defaults(func=handle)


def explain_step(args) -> dict:
    from tpsim.build import standalone
    from tpsim.config import typed
    from tpsim.config.cluster import (
        MAX_GPUS,
        MAX_INSTANCES,
        MAX_LATENCY_NS,
        MAX_LINK_BW_GBPS,
        MAX_MEM_BW_GBPS,
    )
    from tpsim.errors import InputError
    from tpsim.perf.base import BatchShape

    typed.integer(args.tp, "--tp", 1, MAX_GPUS)
    typed.integer(args.pp, "--pp", 1, MAX_GPUS)
    typed.integer(args.dp, "--dp", 1, MAX_INSTANCES)
    if args.ep is not None:
        typed.integer(args.ep, "--ep", 1, MAX_GPUS)
    for flag, value, most in (("--link-bw", args.link_bw, MAX_LINK_BW_GBPS),
                              ("--mem-bw", args.mem_bw, MAX_MEM_BW_GBPS)):
        if value is not None:
            typed.positive(value, f"{flag} (GB/s)", most)
    if args.link_latency is not None:
        typed.number(args.link_latency, "--link-latency (ns)", 0.0, MAX_LATENCY_NS)
    prefill = [_pair(t, "--prefill", False) for t in args.prefill]
    decode = [_pair(t, "--decode", True) for t in args.decode]
    if not prefill and not decode:
        raise InputError("give a batch: at least one --prefill LEN[@CTX] or --decode N@CTX")
    model, hw, engine, latency = standalone(
        args.model, args.hardware, tp=args.tp, pp=args.pp,
        engine_keys={"dtype": args.dtype, "kv_cache_dtype": args.kv_cache_dtype}, perf_model=args.perf_model,
        comm_model=args.comm_model,
        mem_bw_gbps=args.mem_bw, link_bw_gbps=args.link_bw, link_latency_ns=args.link_latency,
        profile_dir=args.profile_dir, where=f"--model {args.model} --tp {args.tp} --pp {args.pp}", dp=args.dp,
        ep_size=args.ep, enable_expert_parallel=args.enable_expert_parallel, routing=args.expert_routing_policy)
    if (args.dp > 1 or args.ep is not None or args.enable_expert_parallel is not None) and not model.is_moe:
        raise InputError(f"--dp, --ep and --enable-expert-parallel place experts; {model.name} is dense (a dense "
                         "model's DP ranks are independent engines: explain one with --tp)")
    for q, c in prefill:
        if q + c > model.max_position_embeddings:
            raise InputError(f"--prefill {q}@{c}: {q + c} tokens exceed {model.name}'s context of "
                             f"{model.max_position_embeddings}")
    for n, c in decode:
        if c > model.max_position_embeddings or n > typed.MAX_INT32:
            raise InputError(f"--decode {n}@{c}: at most {typed.MAX_INT32:,} requests, each within {model.name}'s "
                             f"context of {model.max_position_embeddings}")
    link_bw = args.link_bw if args.link_bw is not None else hw.link_bw_gbps
    link_lat = args.link_latency if args.link_latency is not None else hw.link_latency_ns
    mem_bw = args.mem_bw if args.mem_bw is not None else hw.memory_bw_gbps
    batch = BatchShape.parse(prefill, decode)
    moe = None
    if latency.moe is not None:
        bd, moe = _moe_step(latency, batch, args.dp)
    else:
        bd = latency.explain(batch)
    out = {
        "model": model.name,
        "hardware": hw.name,
        "tp": args.tp,
        "pp": args.pp,
        "dtype": engine.dtype,
        "link_bw_gbps": link_bw,
        "link_latency_ns": link_lat,
        "mem_bw_gbps": mem_bw,
        "perf_model": latency.name,
        "batch": {"prefill": [{"tokens": q, "context": c} for q, c in prefill],
                  "decode": [{"requests": n, "context": c} for n, c in decode],
                  "num_tokens": batch.num_tokens, "num_sampled": batch.num_sampled},
        "total_ns": bd.total_ns,
        "iteration_ns": latency.iteration_ns(batch),
        "per_layer_compute_ns": round(bd.per_layer_compute_ns, 3),
        "per_layer_comm_ns": round(bd.per_layer_comm_ns, 3),
        "num_layers": bd.num_layers,
        "components_ns": {k: round(v, 3) for k, v in bd.by_component().items()},
        "share_by_source": bd.by_source(),
        "ops": [
            {"name": op.name, "component": op.component, "time_ns": round(op.time_ns, 3), "count": op.count,
             "total_ns": round(op.total_ns, 3), "flops": op.flops, "bytes": op.bytes, "bound": op.bound,
             "source": op.source}
            for op in bd.ops
        ],
    }
    if moe is not None:
        out["iteration_ns"] = bd.total_ns
        out["moe"] = moe
    return out


def _moe_step(latency, batch, dp: int):
    """DP rank 0's breakdown when every DP rank runs ``batch``, and the MoE layer's facts."""
    from tpsim.perf.vllm_exec import dp_synchronize

    mode, tokens = dp_synchronize([latency.graph_plan(batch)] * dp)
    bd = latency.moe_explain(batch, mode, tokens, 0)
    load = latency.moe_load(tokens)
    layer = latency.moe
    info = {**layer.describe(), "dp": dp, "graph_mode": mode, "tokens_per_rank": tokens[0],
            "tokens_into_experts": layer.gathered(tokens, 0), "moe_layers": latency.model.moe.num_moe_layers,
            "slowest_ep_rank": {"token_expert_pairs": round(load.pairs, 3), "mean_pairs": round(load.mean_pairs, 3),
                                "experts_reached": round(load.experts, 3), "imbalance": round(load.imbalance, 4)}}
    return bd, info


def _table(d: dict) -> str:
    lines = [
        f"{d['model']} on {d['hardware']}, tp={d['tp']} pp={d['pp']}, {d['dtype']}, perf model {d['perf_model']}; "
        f"mem_bw {d['mem_bw_gbps']:g} GB/s, link {d['link_bw_gbps']:g} GB/s / {d['link_latency_ns']:g} ns",
        f"batch: {d['batch']['num_tokens']} tokens, {d['batch']['num_sampled']} sequences sampling",
        "",
        f"{'op':28s} {'per op (us)':>12s} {'x':>4s} {'total (us)':>11s} {'share':>6s}  {'bound':8s} source",
    ]
    total = d["total_ns"] or 1
    for op in d["ops"]:
        lines.append(f"{op['name']:28s} {op['time_ns'] / 1e3:12.2f} {op['count']:>4d} {op['total_ns'] / 1e3:11.1f} "
                     f"{op['total_ns'] / total:6.1%}  {op['bound']:8s} {op['source']}")
    lines.append("")
    for comp, ns in d["components_ns"].items():
        lines.append(f"{comp:28s} {ns / 1e3:12.1f} us  {ns / total:6.1%}")
    lines.append(f"{'per layer: compute':28s} {d['per_layer_compute_ns'] / 1e3:12.2f} us")
    lines.append(f"{'per layer: communication':28s} {d['per_layer_comm_ns'] / 1e3:12.2f} us")
    lines.append(f"{'iteration total':28s} {d['total_ns'] / 1e6:12.3f} ms  ({d['num_layers']} layers)")
    lines.append("GPU time by source: " + ", ".join(f"{k} {v:.1%}" for k, v in d["share_by_source"].items()))
    m = d.get("moe")
    if m:
        r = m["slowest_ep_rank"]
        lines.append(f"MoE: {m['moe_layers']} MoE layers, {m['experts']} experts top-{m['top_k']}, EP {m['ep_size']} "
                     f"(width {m['expert_width_per_gpu']} per GPU), DP {m['dp']}, {m['graph_mode']} step at "
                     f"{m['tokens_per_rank']} tokens per rank; {m['tokens_into_experts']} tokens into the experts; "
                     f"dispatch: {m['dispatch']}")
        lines.append(f"MoE routing {m['routing']} ({m['skew_model']}): slowest EP rank {r['token_expert_pairs']:g} "
                     f"token-expert pairs on {r['experts_reached']:g} experts, mean {r['mean_pairs']:g}, "
                     f"imbalance {r['imbalance']:.3f}")
    return "\n".join(lines)


def handle(args) -> int:
    d = explain_step(args)
    print(json.dumps(d, indent=2) if args.json else _table(d))
    return 0
