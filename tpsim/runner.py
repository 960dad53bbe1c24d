"""One simulation run from start to finish: load, simulate, report, write.

Kept apart from the argument parsing so campaigns and tests can call
:func:`execute` with a namespace, and apart from the event loop so that stays
small.
"""

from __future__ import annotations

import os
import sys
import time

from tpsim import __version__
from tpsim.build import InstanceSetup, build_instances
from tpsim.config.catalog import PACKAGE_ROOT
from tpsim.config.cluster import IGNORED_INSTANCE_KEYS, load_cluster
from tpsim.errors import InfeasibleError, InputError
from tpsim.hashing import sha256_file
from tpsim.io.output import HEADER, atomic_write_files, json_text, render_csv
from tpsim.io.trace import load_trace
from tpsim.sim.engine import SimResult, Simulation
from tpsim.sim.instance import Instance
from tpsim.sim.request import Request
from tpsim.sim.router import Router
from tpsim.stats import describe, describe_weighted
from tpsim.units import GB, GiB, NS_PER_S

SCHEMA_VERSION = 1

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
PP_APPROXIMATION = ("Pipeline parallelism: a batch takes the full-model latency plus pp-1 hidden-state transfers; "
                    "the next batch may start after one stage's share (balanced stages assumed).")


def _git_commit() -> str | None:
    """The checkout's HEAD commit, read from .git directly (no subprocess on the hot path)."""
    git = PACKAGE_ROOT / ".git"
    try:
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head or None
        ref = head[5:]
        ref_file = git / ref
        if ref_file.is_file():
            return ref_file.read_text().strip() or None
        packed = git / "packed-refs"
        if packed.is_file():
            for line in packed.read_text().splitlines():
                if line.endswith(" " + ref):
                    return line.split(" ", 1)[0]
    except OSError:
        return None
    return None


def _engine_cli(args) -> dict:
    return {
        "max_num_seqs": args.max_num_seqs,
        "max_num_batched_tokens": args.max_num_batched_tokens,
        "long_prefill_token_threshold": args.long_prefill_token_threshold,
        "block_size": args.block_size,
        "dtype": args.dtype,
        "kv_cache_dtype": args.kv_cache_dtype,
        "enable_chunked_prefill": args.enable_chunked_prefill,
        "enable_prefix_caching": args.enable_prefix_caching,
        "reserve_full_isl": args.reserve_full_isl,
        "async_scheduling": args.async_scheduling,
        "mem_util": args.npu_memory_utilization,
    }


def _flags(args) -> dict:
    return {k: v for k, v in sorted(vars(args).items()) if k not in ("func", "command")}


class Console:
    """Banner, throughput lines and the final summary on stdout; warnings on stderr."""

    def __init__(self, level: str):
        self.warn_enabled = level in ("WARNING", "INFO", "DEBUG")
        self.out = sys.stdout

    def line(self, text: str) -> None:
        if self.out is None:
            return
        try:
            self.out.write(text + "\n")
        except BrokenPipeError:
            # stdout's reader went away (| head): the run still finishes and writes its outputs
            from tpsim.cli import silence_stdout

            silence_stdout()
            self.out = None

    def debug(self, text: str) -> None:
        sys.stderr.write(f"tpsim: debug: {text}\n")

    def warn(self, text: str) -> None:
        if self.warn_enabled:
            sys.stderr.write(f"tpsim: warning: {text}\n")


def _banner(console: Console, cluster, setups: list[InstanceSetup], trace_desc: str) -> None:
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
            f"{m.activation_bytes / GB:.2f} GB, reserve {m.reserve_bytes / GB:.2f} GB, budget {m.budget_bytes / GB:.2f} GB "
            f"({c.npu_mem.mem_size_gib:g} GiB x {e.mem_util:g})"
        )
        console.line(
            f"  KV cache: {m.kv_capacity_bytes / GB:.2f} GB/GPU = {m.num_blocks:,} blocks x {m.block_size} = "
            f"{m.kv_capacity_tokens:,} tokens ({m.kv_bytes_per_token:,} B/token/GPU, {e.kv_cache_dtype})"
        )


def _default_requests(n_instances: int) -> list[Request]:
    """LLMServingSim's built-in workload when no dataset is given: 16 x (64 in, 64 out) at t=0 per instance."""
    return [Request(i, 0, 64, 64, None, 0) for i in range(16 * n_instances)]


def _instance_summary(s: InstanceSetup, inst: Instance | None) -> dict:
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
        "engine": {k: getattr(s.engine, k) for k in s.engine.__dataclass_fields__},
        "memory": s.memory.as_dict(),
        "latency_model": s.latency.describe(),
    }
    if inst is not None:
        peak = inst.kv.peak_used
        out.update({
            "peak_kv_blocks_used": peak,
            "peak_kv_utilization": round(peak / inst.kv.num_blocks, 6),
            "peak_npu_mem_gb": round((s.memory.weights_bytes + peak * s.memory.block_size * s.memory.kv_bytes_per_token) / GB, 4),
            "iterations": len(inst.iter_ends),
            "finished": len(inst.finished),
            "preemptions": inst.preemptions,
            "recomputed_tokens": inst.recomputed_tokens,
            "prefix_hit_tokens": inst.prefix_hit_tokens,
            "prefix_queried_tokens": inst.kv.queried_tokens,
        })
    return out


def _metrics(result: SimResult, itl_counts: dict) -> dict:
    done = [r for inst in result.instances for r in inst.finished]
    ttft = [r.first_token - r.arrival for r in done]
    tpot = [(r.finish - r.first_token) // (r.output - 1) for r in done if r.output > 1]
    lat = [r.finish - r.arrival for r in done]
    queue = [r.first_scheduled - r.arrival for r in done]
    ms = 1e-6
    return {
        "ttft": describe(ttft, ms),
        "tpot": describe(tpot, ms),
        "itl": describe_weighted(itl_counts, ms),
        "latency": describe(lat, ms),
        "queuing_delay": describe(queue, ms),
    }


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


def _write_outputs(out: str, csv_text: str, summary: dict) -> None:
    """The CSV and its summary, both or neither; an OS refusal is a one-line input error."""
    from tpsim.commands.run import summary_path

    try:
        atomic_write_files([(out, csv_text), (summary_path(out), json_text(summary))])
    except OSError as exc:
        raise InputError(f"--output {out}: cannot write it ({exc.strerror or exc}); "
                         "choose a writable file path") from None


def _infeasible_inputs(args) -> dict:
    """Hashes of the files an infeasible run was given (the run stopped before loading them all)."""
    inputs = {"cluster_config": {"path": args.cluster_config, "sha256": sha256_file(args.cluster_config)}}
    dataset = getattr(args, "dataset", None)
    if dataset and os.path.isfile(dataset):
        inputs["dataset"] = {"path": dataset, "sha256": sha256_file(dataset)}
    return inputs


def _infeasible(args, out, exc, ignored, console, t0) -> int:
    """--record-infeasible: a header-only CSV and a summary saying why the run cannot happen."""
    console.line(f"tpsim: infeasible: {exc}")
    if out is not None:
        _write_outputs(out, HEADER, {
            "schema_version": SCHEMA_VERSION,
            "status": "infeasible",
            "reason": str(exc),
            "tpsim_version": __version__,
            "provenance": {"git_commit": _git_commit(), "argv": sys.argv[1:], "flags": _flags(args), "seed": args.seed,
                           "inputs": _infeasible_inputs(args)},
            "instances": [],
            "totals": None,
            "simulated_time_s": None,
            "mean_requests_in_system": None,
            "throughput": None,
            "metrics_ms": None,
            "timeline_bin_s": None,
            "timeline": [],
            "rejected_requests": [],
            "approximations": [],
            "ignored": ignored,
            "warnings": [],
            "timing": {"wall_time_s": round(time.perf_counter() - t0, 6), "speedup": None},
        })
    return 0


class PreparedRun:
    """Everything a run needs, validated; built by :func:`prepare`."""

    def __init__(self, args, cluster, setups, requests, initial, provenance, warnings, ignored, trace_desc):
        self.args = args
        self.cluster = cluster
        self.setups: list[InstanceSetup] = setups
        self.requests: list[Request] = requests
        self.initial: list[Request] = initial
        self.provenance = provenance
        self.warnings = warnings
        self.ignored = ignored
        self.trace_desc = trace_desc


def prepare(args, ignored: list[str], console: Console) -> PreparedRun:
    """Load and validate every input; raises InputError (InfeasibleError if the model cannot run)."""
    cluster = load_cluster(args.cluster_config)
    warnings: list[str] = []
    if cluster.unknown_keys:
        msg = f"{cluster.path}: unknown keys ignored: {', '.join(cluster.unknown_keys)}"
        warnings.append(msg)
    warnings.extend(cluster.notes)
    ignored = list(ignored) + [
        f"{cluster.path}: instance {i.index}: key '{k}' ignored ({IGNORED_INSTANCE_KEYS[k]})"
        for i in cluster.instances for k in i.ignored_keys
    ]
    provenance = {
        "git_commit": _git_commit(),
        "argv": sys.argv[1:],
        "flags": _flags(args),
        "seed": args.seed,
        "inputs": {"cluster_config": {"path": cluster.path, "sha256": cluster.sha256}},
    }
    run = PreparedRun(args, cluster, [], [], [], provenance, warnings, ignored, "")
    run.setups = build_instances(cluster, _engine_cli(args), args.perf_model, args.profile_dir)
    provenance["inputs"]["models"] = {s.model.name: {"path": s.model.source, "sha256": s.model.sha256}
                                      for s in run.setups}
    provenance["inputs"]["hardware"] = {s.hardware.name: {"path": s.hardware.source, "sha256": s.hardware.sha256}
                                        for s in run.setups}
    if args.dataset:
        trace = load_trace(args.dataset, args.num_reqs, int(args.max_sim_time * NS_PER_S))
        provenance["inputs"]["dataset"] = {"path": trace.path, "sha256": trace.sha256}
        by_trace = {}
        for tr in trace.requests:
            r = Request(tr.request_id, tr.arrival_ns, tr.input_toks, tr.output_toks, tr.token_ids,
                        tr.num_input_ids, tr if tr.session is not None else None)
            by_trace[id(tr)] = r
            run.requests.append(r)
        run.initial = [by_trace[id(tr)] for tr in trace.initial]
        run.trace_desc = f"{len(run.requests)} requests from {trace.path}"
        if trace.has_token_ids and not any(s.engine.enable_prefix_caching for s in run.setups):
            warnings.append("the trace has token ids but prefix caching is off; they are unused")
    else:
        run.requests = _default_requests(len(run.setups))
        if args.num_reqs:
            run.requests = run.requests[:args.num_reqs]
        run.initial = list(run.requests)
        provenance["inputs"]["dataset"] = None
        run.trace_desc = f"{len(run.requests)} built-in requests (no --dataset)"
    return run


def simulate(run: PreparedRun, log=None, debug=None) -> SimResult:
    """Run the event loop over fresh instances."""
    args = run.args
    has_ids = any(r.token_ids is not None for r in run.requests)
    instances = [Instance(s.config.index, s.engine, s.memory, s.latency, s.config.model_name, s.config.pp_size,
                          args.fast_forward, has_ids) for s in run.setups]
    router = Router(args.request_routing_policy, len(instances), args.seed)
    interval_ns = int(round(args.log_interval * NS_PER_S))  # 0: no throughput lines, no timeline
    sim = Simulation(
        instances, router, run.requests, run.initial, interval_ns,
        log=log if interval_ns else None, horizon_ns=int(args.max_sim_time * NS_PER_S),
        bytes_per_block=[s.memory.block_size * s.memory.kv_bytes_per_token for s in run.setups],
        weights_bytes=[s.memory.weights_bytes for s in run.setups],
        debug=debug,
    )
    return sim.run()


def summarize(run: PreparedRun, result: SimResult, itl_counts: dict, wall_s: float) -> dict:
    setups, instances = run.setups, result.instances
    sim_s = result.end_ns / NS_PER_S
    done = [r for inst in instances for r in inst.finished]
    in_tok = sum(r.prompt for r in done)
    out_tok = sum(r.output for r in done)
    warnings = list(run.warnings) + [f"request {rej.request.rid} rejected: {rej.reason}" for rej in result.rejected]
    approximations = list(APPROXIMATIONS)
    if any(s.config.pp_size > 1 for s in setups):
        approximations.append(PP_APPROXIMATION)
    if any(s.engine.dtype == "fp8" and s.hardware.peak_tflops.get("fp8") is None for s in setups):
        approximations.append("fp8 on a GPU without FP8 tensor cores: weight-only fp8 (16-bit math, 1-byte weights).")
    for s in setups:
        approximations.append(f"instance {s.config.index}: latency model '{s.latency.name}' "
                              f"({s.latency.describe().get('source', s.hardware.source)})")
    timeline, timeline_bin_s = _timeline(result)
    if timeline_bin_s is not None and result.interval_ns != int(round(timeline_bin_s * NS_PER_S)):
        approximations.append(f"timeline: bins of {timeline_bin_s:g} s, not --log-interval's "
                              f"{result.interval_ns / NS_PER_S:g} s, to keep at most {MAX_TIMELINE_BINS:,} bins")
    return {
        "schema_version": SCHEMA_VERSION,
        "status": "ok",
        "reason": None,
        "tpsim_version": __version__,
        "provenance": run.provenance,
        "instances": [_instance_summary(s, inst) for s, inst in zip(setups, instances)],
        "totals": {
            "requests": len(run.requests),
            "finished": len(done),
            "rejected": len(result.rejected),
            "input_tokens": in_tok,
            "output_tokens": out_tok,
            "prefix_hit_tokens": sum(i.prefix_hit_tokens for i in instances),
            "preemptions": sum(i.preemptions for i in instances),
            "recomputed_tokens": sum(i.recomputed_tokens for i in instances),
            "iterations": result.iterations,
        },
        "simulated_time_s": round(sim_s, 9),
        "mean_requests_in_system": round(result.occupancy_ns / result.end_ns, 9) if result.end_ns else 0.0,
        "throughput": {
            "requests_per_s": round(len(done) / sim_s, 6) if sim_s else 0.0,
            "input_tokens_per_s": round(in_tok / sim_s, 6) if sim_s else 0.0,
            "output_tokens_per_s": round(out_tok / sim_s, 6) if sim_s else 0.0,
            "total_tokens_per_s": round((in_tok + out_tok) / sim_s, 6) if sim_s else 0.0,
        },
        "metrics_ms": _metrics(result, itl_counts),
        "timeline_bin_s": timeline_bin_s,
        "timeline": timeline,
        "rejected_requests": [{"request_id": r.request.rid, "reason": r.reason} for r in result.rejected],
        "approximations": approximations,
        "ignored": run.ignored,
        "warnings": warnings,
        "timing": {"wall_time_s": round(wall_s, 6), "speedup": round(sim_s / wall_s, 3) if wall_s > 0 else None},
    }


def execute(args, out: str | None, ignored: list[str], t0: float) -> int:
    console = Console(args.log_level)
    try:
        run = prepare(args, ignored, console)
    except InfeasibleError as exc:
        if not args.record_infeasible:
            raise
        return _infeasible(args, out, exc, ignored, console, t0)
    for msg in run.warnings:  # printed once every input is known good: a failing run prints one line
        console.warn(msg)
    if out is not None:
        from tpsim.commands.run import summary_path
        from tpsim.io.output import check_output_path

        sources = [v["path"] for v in run.provenance["inputs"].get("models", {}).values()]
        sources += [v["path"] for v in run.provenance["inputs"].get("hardware", {}).values()]
        check_output_path(out, "--output", sources)
        check_output_path(summary_path(out), "--output's summary", sources)
    _banner(console, run.cluster, run.setups, run.trace_desc)
    result = simulate(run, console.line, console.debug if args.log_level == "DEBUG" else None)
    itl_counts: dict = {}
    csv_text = render_csv(result.instances, itl_counts)  # also fills the ITL distribution
    if result.rejected:
        first = result.rejected[0]
        console.warn(f"{len(result.rejected)} request(s) rejected (see the run summary); first: "
                     f"request {first.request.rid}: {first.reason}")
    summary = summarize(run, result, itl_counts, time.perf_counter() - t0)
    if out is not None:
        _write_outputs(out, csv_text, summary)
    _final(console, summary, out)
    return 0


def _final(console: Console, s: dict, out: str | None) -> None:
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
            console.line(f"{label:8s} ms: mean {d['mean']:.2f}  p50 {d['p50']:.2f}  p90 {d['p90']:.2f}  p99 {d['p99']:.2f}")
    timing = s["timing"]
    console.line(f"wall time {timing['wall_time_s']:.3f} s ({timing['speedup']:,.0f}x faster than real time)"
                 if timing["speedup"] else f"wall time {timing['wall_time_s']:.3f} s")
    if out:
        from tpsim.commands.run import summary_path

        console.line(f"wrote {out} and {summary_path(out)}")

