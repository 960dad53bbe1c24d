"""A run's report: the banner, the run summary (:class:`~tpsim.io.summary.RunSummary`) and the
closing lines.  Everything here reads a finished (or refused) run; nothing here simulates."""

from __future__ import annotations

from tpsim import __version__
from tpsim.build import InstanceSetup
from tpsim.console import Console
from tpsim.io.summary import RunSummary
from tpsim.sim.engine import SimResult
from tpsim.sim.instance import Instance
from tpsim.units import GB, NS_PER_S, GiB

#: what every run approximates, stated once in each summary
APPROXIMATIONS = [
    "Iteration latency is predicted per step from batch shape (prefill chunks with their context, decode count "
    "and total context); kernels are not executed.",
    "Tensor parallelism: two ring all-reduces per decoder layer (after o_proj and down_proj) plus the embedding "
    "all-reduce and the logits gather, costed as 2(n-1)*link_latency + 2(n-1)/n*S/link_bw with link_bw in GB/s "
    "(1e9 B/s); no overlap of communication with compute, no NCCL protocol switching, no link contention.",
    "Engine steps run back to back. Host-side work is a fixed per-step plus per-request overhead; with async "
    "scheduling (vLLM >= 0.12's default) it overlaps the GPU and only its excess over the GPU time is charged, "
    "and a request arriving while a step runs is first scheduled one step later (pp = 1: the next step was already "
    "planned); without async scheduling, host work is charged in series.",
    "Outputs are exactly output_toks tokens (ignore_eos); sampling parameters, speculative decoding, LoRA and "
    "structured output are not modelled.",
    "KV capacity = mem_size (GiB, as LLMServingSim reads it) x mem_util - weights - an estimated activation peak - "
    "the hardware entry's reserve; vLLM measures these by profiling, so capacity can differ by a few percent.",
    "queuing_delay is measured to the first scheduling of the request (LLMServingSim measures to the last prefill "
    "chunk).",
]
DECODE_SKEW_APPROXIMATION = (
    "Kernel model on FlashAttention 2 GPUs: a pure-decode step of uneven contexts adds the time its longest "
    "sequences' CTAs run alone (a fluid model of the kernel's schedule, FA2's split heuristic and its DRAM and per-SM "
    "rates from the tables, over a two-class batch matched to the contexts' count, mean, variance and maximum; "
    "tpsim/perf/decode_skew.py). Mixed prefill + decode steps, FA3 / FlashInfer GPUs and the analytical model "
    "price decode attention at the batch's mean context.")
PICKUP_APPROXIMATION = (
    "TTFT, latency and queuing_delay start at vLLM's engine pickup (--ttft-origin pickup; vLLM's queued_ts), not at "
    "the arrival: the engine loop takes requests from its input queue between steps, so a request arriving while a "
    "step runs is taken when that step ends, one finding the engine idle at once; the front end's own time "
    "(HTTP, tokenisation, IPC) is not modelled. The CSV's arrival column is the arrival: end_time - arrival - "
    "latency is each request's wait for pickup (metrics_ms.pickup_delay).")
MOE_APPROXIMATION = ("Mixture of experts, memory: routed experts placed by vLLM's linear expert map (the first E % ep "
                     "EP ranks hold one more), each expert's width split over DP x TP / EP GPUs; routers and "
                     "shared-expert gates replicated at 16 bits; the fused-MoE activation peak estimated on "
                     "DP x max_num_batched_tokens all-gathered rows.")
MOE_LATENCY_APPROXIMATION = (
    "Mixture of experts, latency: each MoE layer is vLLM 0.19's: the replicated router GEMM; with DP, an all-gather "
    "of hidden states and router logits over the DP group before top-k and a reduce-scatter after the experts (its "
    "default allgather_reducescatter backend; over DP x TP with sequence parallelism when EP is on, TP > 1 and "
    "DP > 1), sized at the DP-padded token counts; top-k softmax; the fused experts on every gathered token; a TP "
    "all-reduce where partial sums remain; shared experts on the rank's own tokens. Unequal token counts (eager "
    "steps, which vLLM runs as one broadcast per rank) are costed as an all-gather / reduce-scatter of the largest "
    "rank's share from every rank. Expert routing: {routing}; the slowest EP rank sets the layer's time. The fused "
    "experts come from the instance's latency model: the GPU's MoE kernel table (AIConfigurator's fused_experts, "
    "balanced routing; other policies scaled by the roofline's ratio), LLMServingSim's moe.csv (the whole MoE block, "
    "read at its per-rank token and expert counts), or a roofline (each reached expert's weights read once, token x "
    "top-k work, five kernels). No overlap of the dispatch with compute or of shared with routed experts; router "
    "logits at the activation dtype.")
DP_LOCKSTEP_APPROXIMATION = (
    "DP groups of an MoE model step in lockstep: a step lasts as long as the slowest rank's GPU work plus the host "
    "time none of them hides, and ends on every rank at once; a rank with nothing scheduled runs a 1-token dummy "
    "step padded like the others (attention only in a full-graph dummy, no LM head); graph modes and padding are "
    "synchronised as vLLM's coordinate_batch_across_dp does (lowest mode, pad to the largest count unless eager); "
    "after the last request a group keeps stepping to the next multiple of 32 steps before it pauses. vLLM's DP "
    "load balancer (lowest 4 x waiting + running from rank 0, +1 waiting per request it sends) sees the ranks' "
    "counts as published every 100 ms of simulated time (at multiples of 100 ms: the coordinator's phase is not "
    "known); the cluster-level routing policy chooses among groups and lone instances. Each step of a group is "
    "planned by the schedulers' fast path (decode cohorts) but runs of decode steps are not fast-forwarded; with "
    "pp > 1 a group runs one batch at a time.")
EP_DEFAULT_APPROXIMATION = ("ep_size absent for an MoE model: LLMServingSim's default ep_size = tp_size (experts split "
                            "whole over the instance's GPUs); vLLM's own default is expert parallelism off (every "
                            "expert sharded by width), which holds the same bytes per GPU.")
PP_APPROXIMATION = ("Pipeline parallelism: a batch takes the full-model latency plus pp-1 hidden-state transfers; "
                    "the next batch may start after one stage's share (balanced stages assumed).")


def banner(console: Console, cluster, setups: list[InstanceSetup], trace_desc: str) -> None:
    """What is about to run: the cluster, each instance's parallelism, memory per GPU and KV capacity."""
    console.line(f"tpsim {__version__}: {len(setups)} instance(s) from {cluster.path}; "
                 f"link_bw {cluster.link_bw_gbps:g} GB/s, link_latency {cluster.link_latency_ns:g} ns; {trace_desc}")
    for s in setups:
        c, m, e = s.config, s.memory, s.engine
        console.line(
            f"Instance [{c.index}] {c.model_name} on {c.num_npus}x {c.hardware} (tp={c.tp_size}, pp={c.pp_size}), "
            f"{e.dtype}, perf model {s.latency.name}"
        )
        console.line(
            f"  per GPU: weights {m.weights_bytes / GB:.2f} GB ({m.weights_bytes / GiB:.2f} GiB), activations "
            f"{m.activation_bytes / GB:.2f} GB, reserve {m.reserve_bytes / GB:.2f} GB, "
            f"budget {m.budget_bytes / GB:.2f} GB "
            f"({c.npu_mem.mem_size_gib:g} GiB x {e.mem_util:g})"
        )
        console.line(
            f"  KV cache: {m.kv_capacity_bytes / GB:.2f} GB/GPU = {m.num_blocks:,} blocks x {m.block_size} = "
            f"{m.kv_capacity_tokens:,} tokens ({m.kv_bytes_per_token:,} B/token/GPU, {e.kv_cache_dtype})"
            + ("" if m.estimated_blocks is None else
               f"; blocks set by num_gpu_blocks_override (tpsim's estimate: {m.estimated_blocks:,})")
        )
        for line in layout_lines(s.layout, m):
            console.line(line)


def layout_lines(layout, memory) -> list[str]:
    """The banner's data/expert-parallel lines of one instance (none for a plain dense instance)."""
    lines = []
    if layout.dp_size > 1:
        members = ", ".join(str(i) for i in layout.group)
        kind = "MoE layers in lockstep" if layout.lockstep else "dense: independent engines"
        lines.append(f"  DP rank {layout.dp_rank} of {layout.dp_size} (dp_group {layout.dp_group!r}: instances "
                     f"{members}; {kind}); attention, embedding and LM head on each DP rank (TP {layout.tp_size}), "
                     "KV cache per DP rank")
    x = memory.experts
    if x is not None:
        how = (f"EP {layout.ep_size} over DP {layout.dp_size} x TP {layout.tp_size}" if layout.expert_parallel
               else f"EP off: sharded by width over DP {layout.dp_size} x TP {layout.tp_size}")
        source = {"default": "ep_size defaults to tp_size", "ep_size": "ep_size",
                  "enable_expert_parallel": "enable_expert_parallel"}.get(layout.ep_source, layout.ep_source)
        lines.append(f"  experts {x.experts_per_gpu} of {x.num_experts} on this GPU at width {x.width_per_gpu} of "
                     f"{x.width} ({how}; {source}): {x.bytes / GB:.2f} GB of the weights; routers replicated")
    return lines


def _instance_summary(s: InstanceSetup, inst: Instance | None, lockstep: dict | None = None) -> dict:
    c = s.config
    out = {
        "instance": c.index,
        "node": c.node,
        "model": c.model_name,
        "hardware": c.hardware,
        "tp_size": c.tp_size,
        "pp_size": c.pp_size,
        "num_npus": c.num_npus,
        "perf_model": s.latency.name,
        "engine": {k: getattr(s.engine, k) for k in s.engine.__struct_fields__},
        "memory": s.memory.as_dict(),
        "latency_model": s.latency.describe(),
    }
    if not s.layout.plain:
        out["parallel"] = s.layout.as_dict()
    if lockstep is not None:
        out["lockstep"] = lockstep
    if inst is not None:
        peak = inst.kv.peak_used
        out.update({
            "peak_kv_blocks_used": peak,
            "peak_kv_utilization": round(peak / inst.kv.num_blocks, 6),
            "peak_npu_mem_gb": round(
                (s.memory.weights_bytes + peak * s.memory.block_size * s.memory.kv_bytes_per_token) / GB, 4),
            "iterations": len(inst.iter_ends),
            "finished": inst.num_finished,
            "preemptions": inst.preemptions,
            "recomputed_tokens": inst.recomputed_tokens,
            "prefix_hit_tokens": inst.prefix_hit_tokens,
            "prefix_queried_tokens": inst.kv.queried_tokens,
        })
    return out


#: the summary's timeline has at most this many bins; a longer run gets wider bins
MAX_TIMELINE_BINS = 10_000


def _timeline(result: SimResult) -> tuple[list[dict], float | None]:
    """Throughput per bin of ``--log-interval`` (merged ``k`` at a time past MAX_TIMELINE_BINS bins)."""
    if not result.gen_bins and not result.prompt_bins:
        return [], None
    last = max(max(result.gen_bins, default=0), max(result.prompt_bins, default=0))
    k = -(-(last + 1) // MAX_TIMELINE_BINS)
    prompt: dict[int, int] = {}
    gen: dict[int, int] = {}
    for src, dst in ((result.prompt_bins, prompt), (result.gen_bins, gen)):
        for b, tokens in src.items():
            dst[b // k] = dst.get(b // k, 0) + tokens
    sec = result.interval_ns * k / NS_PER_S
    return [
        {"t_s": round((b + 1) * sec, 6),
         "prompt_tokens_per_s": round(prompt.get(b, 0) / sec, 3),
         "generation_tokens_per_s": round(gen.get(b, 0) / sec, 3)}
        for b in range(last // k + 1)
    ], round(sec, 9)


def summarize(run, result: SimResult, metrics, wall_s: float) -> RunSummary:
    """The summary of a finished run (``run``: the :class:`~tpsim.prepare.PreparedRun`; ``metrics``: the
    :class:`~tpsim.sim.recorder.RunMetrics` its recorder kept)."""
    setups, instances = run.setups, result.instances
    sim_s = result.end_ns / NS_PER_S
    finished = metrics.finished
    in_tok, out_tok = metrics.input_tokens, metrics.output_tokens
    warnings = list(run.warnings) + run.after_run_warnings()
    warnings += [f"request {rej.request_id} rejected: {rej.reason}" for rej in result.rejected]
    if result.num_rejected > len(result.rejected):
        warnings.append(f"... and {result.num_rejected - len(result.rejected):,} more requests rejected "
                        f"(the summary lists the first {len(result.rejected):,})")
    approximations = list(APPROXIMATIONS)
    if run.config.ttft_origin == "pickup":
        approximations.append(PICKUP_APPROXIMATION)
    if any(s.latency.describe().get("decode_skew") for s in setups):
        approximations.append(DECODE_SKEW_APPROXIMATION)
    if any(s.config.pp_size > 1 for s in setups):
        approximations.append(PP_APPROXIMATION)
    if any(s.model.is_moe for s in setups):
        approximations.append(MOE_APPROXIMATION)
        routing = next(s.latency.moe.describe() for s in setups if s.latency.moe is not None)
        approximations.append(MOE_LATENCY_APPROXIMATION.format(
            routing=f"{routing['routing']} ({routing['skew_model']})"))
    if result.groups:
        approximations.append(DP_LOCKSTEP_APPROXIMATION)
    if any(s.layout.ep_source == "default" for s in setups):
        approximations.append(EP_DEFAULT_APPROXIMATION)
    if any(s.engine.dtype == "fp8" and s.hardware.peak_tflops.get("fp8") is None for s in setups):
        approximations.append("fp8 on a GPU without FP8 tensor cores: weight-only fp8 (16-bit math, 1-byte weights).")
    for s in setups:
        approximations.append(f"instance {s.config.index}: latency model '{s.latency.name}' "
                              f"({s.latency.describe().get('source', s.hardware.source)})")
    lockstep = {}
    for g in result.groups:
        for rank, idx in enumerate(g.indices):
            lockstep[idx] = {"group_steps": g.steps, "dummy_steps": g.dummy_steps[rank],
                             "mean_wait_for_slowest_rank": g.summary()["mean_wait_for_slowest_rank"]}
    timeline, timeline_bin_s = _timeline(result)
    if timeline_bin_s is not None and result.interval_ns != int(round(timeline_bin_s * NS_PER_S)):
        approximations.append(f"timeline: bins of {timeline_bin_s:g} s, not --log-interval's "
                              f"{result.interval_ns / NS_PER_S:g} s, to keep at most {MAX_TIMELINE_BINS:,} bins")
    return RunSummary(
        status="ok",
        tpsim_version=__version__,
        provenance=run.provenance,
        instances=[_instance_summary(s, inst, lockstep.get(s.config.index)) for s, inst in zip(setups, instances)],
        totals={
            "requests": run.workload.requests,
            "finished": finished,
            "rejected": result.num_rejected,
            "input_tokens": in_tok,
            "output_tokens": out_tok,
            "prefix_hit_tokens": sum(i.prefix_hit_tokens for i in instances),
            "preemptions": sum(i.preemptions for i in instances),
            "recomputed_tokens": sum(i.recomputed_tokens for i in instances),
            "iterations": result.iterations,
        },
        simulated_time_s=round(sim_s, 9),
        mean_requests_in_system=round(result.occupancy_ns / result.end_ns, 9) if result.end_ns else 0.0,
        throughput={
            "requests_per_s": round(finished / sim_s, 6) if sim_s else 0.0,
            "input_tokens_per_s": round(in_tok / sim_s, 6) if sim_s else 0.0,
            "output_tokens_per_s": round(out_tok / sim_s, 6) if sim_s else 0.0,
            "total_tokens_per_s": round((in_tok + out_tok) / sim_s, 6) if sim_s else 0.0,
        },
        metrics_ms=metrics.describe_ms(),
        timeline_bin_s=timeline_bin_s,
        timeline=timeline,
        rejected_requests=[{"request_id": r.request_id, "reason": r.reason} for r in result.rejected],
        approximations=approximations,
        ignored=list(run.ignored),
        warnings=warnings,
        timing=timing(wall_s, sim_s),
        extra=dict(run.config.summary_extra),
    )


def timing(wall_s: float, sim_s: float | None) -> dict:
    speedup = round(sim_s / wall_s, 3) if sim_s is not None and wall_s > 0 else None
    return {"wall_time_s": round(wall_s, 6), "speedup": speedup}


def infeasible_summary(config, reason: str, ignored: list[str], provenance: dict, wall_s: float,
                       memory_needed: dict | None = None) -> RunSummary:
    """--record-infeasible: why the run cannot happen (the CSV beside it has only its header), and,
    when memory is the reason, what it needs per GPU as numbers (``memory_needed``)."""
    extra = {"memory_needed": memory_needed} if memory_needed else {}
    return RunSummary(status="infeasible", reason=reason, tpsim_version=__version__, provenance=provenance,
                      totals=None, ignored=list(ignored), timing=timing(wall_s, None),
                      extra={**extra, **config.summary_extra})


def final_lines(console: Console, s: dict, written: list[str]) -> None:
    """The closing summary on stdout: counts, throughput, latency statistics, wall time."""
    t = s["totals"]
    m = s["metrics_ms"]
    tp = s["throughput"]
    console.line("---- summary ----")
    console.line(f"requests: {t['finished']} finished, {t['rejected']} rejected of {t['requests']}; "
                 f"simulated time {s['simulated_time_s']:.3f} s in {t['iterations']:,} iterations; "
                 f"preemptions {t['preemptions']}, prefix-cache hits {t['prefix_hit_tokens']:,} tokens")
    console.line(f"throughput: {tp['requests_per_s']:.3f} req/s, prompt {tp['input_tokens_per_s']:.1f} tok/s, "
                 f"generation {tp['output_tokens_per_s']:.1f} tok/s")
    for key, label in (("ttft", "TTFT"), ("tpot", "TPOT"), ("itl", "ITL"), ("latency", "latency")):
        d = m.get(key)
        if d:
            console.line(f"{label:8s} ms: mean {d['mean']:.2f}  p50 {d['p50']:.2f}  "
                         f"p90 {d['p90']:.2f}  p99 {d['p99']:.2f}")
    timing = s["timing"]
    console.line(f"wall time {timing['wall_time_s']:.3f} s ({timing['speedup']:,.0f}x faster than real time)"
                 if timing["speedup"] else f"wall time {timing['wall_time_s']:.3f} s")
    if written:
        console.line(f"wrote {' and '.join(written)}")

