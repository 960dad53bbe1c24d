"""The typed run API: ``tpsim.run(RunConfig(...)) -> RunResult``.

The command line (``tpsim run``, ``python -m serving``, ``tpsim replay``), the campaign pipeline
and the tests all simulate through :func:`run`.  Per-request rows go to a *sink*
(:mod:`tpsim.io.results`): by default the CSV at ``config.output`` written together with its
summary, or nothing without an output; pass a :class:`~tpsim.io.results.ListSink` to keep them
in memory.  A :class:`~tpsim.console.Console` prints the banner, throughput lines and closing
summary; without one the API is silent.
"""

from __future__ import annotations

import time

import msgspec

from tpsim.config.run import RunConfig
from tpsim.console import Console
from tpsim.errors import InfeasibleError, InputError
from tpsim.io.results import CsvFileSink, RowSink
from tpsim.io.summary import RunSummary, summary_path
from tpsim.io.writing import check_output_path, json_text
from tpsim.prepare import PreparedRun, prepare
from tpsim.provenance import existing_inputs, git_commit
from tpsim.report import banner, final_lines, infeasible_summary, summarize
from tpsim.sim.engine import SimResult, Simulation
from tpsim.sim.instance import Instance
from tpsim.sim.recorder import Recorder, spool_folder
from tpsim.sim.router import Router
from tpsim.units import NS_PER_S


class RunResult(msgspec.Struct):
    """What :func:`run` returns: the summary, where the outputs went, and the simulation itself."""

    summary: RunSummary
    output: str | None  # the CSV path written (None without --output or with a custom sink)
    wall_s: float
    sim: SimResult | None = None  # None for an infeasible run

    @property
    def ok(self) -> bool:
        return self.summary.status == "ok"


def simulate(run: PreparedRun, log=None, debug=None, on_finish=None) -> SimResult:
    """Run the event loop over fresh instances of a prepared run; ``on_finish(instance, requests)`` receives the
    requests as they finish (a :class:`~tpsim.sim.recorder.Recorder` makes rows and metrics of them)."""
    config = run.config
    instances = [Instance(s.config.index, s.engine, s.memory, s.latency, s.config.model_name, s.config.pp_size,
                          config.fast_forward, run.workload.may_have_token_ids, lockstep=s.layout.lockstep)
                 for s in run.setups]
    groups = lockstep_groups(run.setups, instances)
    endpoints = len(instances) - sum(len(g.members) for g in groups) + len(groups)
    router = Router(config.request_routing_policy, endpoints, config.seed)
    interval_ns = int(round(config.log_interval * NS_PER_S))  # 0: no throughput lines, no timeline
    sim = Simulation(
        instances, router, run.workload.arrivals(), interval_ns,
        log=log if interval_ns else None, horizon_ns=int(config.max_sim_time * NS_PER_S),
        bytes_per_block=[s.memory.block_size * s.memory.kv_bytes_per_token for s in run.setups],
        weights_bytes=[s.memory.weights_bytes for s in run.setups],
        debug=debug, groups=groups, on_finish=on_finish,
    )
    return sim.run()


def lockstep_groups(setups, instances: list[Instance]) -> list:
    """The DP groups of MoE models, whose ranks step together (:mod:`tpsim.sim.lockstep`)."""
    if not any(s.layout.lockstep for s in setups):
        return []
    from tpsim.sim.lockstep import LockstepGroup

    groups, seen = [], set()
    for s in setups:
        layout = s.layout
        if layout.lockstep and layout.group not in seen:
            seen.add(layout.group)
            groups.append(LockstepGroup([instances[i] for i in layout.group]))
    return groups


def _check_outputs_against(run: PreparedRun, out: str) -> None:
    """Model configs and hardware entries are known only now: the outputs must not be one of them."""
    inputs = run.provenance["inputs"]
    sources = [v["path"] for v in inputs.get("models", {}).values()]
    sources += [v["path"] for v in inputs.get("hardware", {}).values()]
    check_output_path(out, "--output", sources)
    check_output_path(summary_path(out), "--output's summary", sources)


def _file_sink(config: RunConfig, out: str | None):
    """The default sink: the CSV (and/or Parquet, --requests-format) at ``out`` with the summary beside it."""
    if out is None:
        return None
    from tpsim.config.run import parquet_path

    parquet = parquet_path(out) if config.requests_format != "csv" else None
    return CsvFileSink(out, summary_path(out), parquet, keep_csv=config.requests_format != "parquet")


def _written_files(config: RunConfig, out: str | None) -> list[str]:
    if out is None:
        return []
    from tpsim.config.run import parquet_path

    files = [out] if config.requests_format != "parquet" else []
    if config.requests_format != "csv":
        files.append(parquet_path(out))
    return files + [summary_path(out)]


def run(config: RunConfig, sink: RowSink | None = None, console: Console | None = None,
        argv: list[str] | None = None) -> RunResult:
    """Simulate ``config``; raises ``InputError`` (one line, names the input) on any bad input.

    ``sink`` receives the per-request rows and, at the end, the summary's JSON (a custom sink
    replaces the CSV file; the summary is then not written to disk).  ``argv`` is recorded in the
    summary's provenance (the command line passes its own).
    """
    t0 = time.perf_counter()
    console = console or Console.silent()
    ignored = config.check()
    out = config.output_path()
    try:
        prepared = prepare(config, ignored, argv)
    except InfeasibleError as exc:
        if not config.record_infeasible:
            raise
        return _infeasible(config, out, sink, exc, ignored, argv, console, t0)
    if out is not None:
        _check_outputs_against(prepared, out)
    banner(console, prepared.cluster, prepared.setups, prepared.trace_desc)
    written = out if sink is None else None
    sink = sink or _file_sink(config, out)
    recorder = Recorder(len(prepared.setups), sink, spool_folder(out), itl=config.itl_format == "list",
                        progress=console.progress(prepared.workload.expected_requests),
                        pickup=config.ttft_origin == "pickup")
    try:
        result = simulate(prepared, console.line, console.debug if console.debug_enabled else None, recorder)
        recorder.close()  # the other instances' rows, in instance order
        summary = summarize(prepared, result, recorder.metrics, time.perf_counter() - t0)
        doc = summary.to_dict()  # once: the file and the closing lines read the same dict
        if sink is not None:
            sink.commit(json_text(doc))
    except BaseException as exc:
        recorder.discard()
        if sink is not None:
            sink.abort()
        if isinstance(exc, OSError):  # rows go out while the run goes on: a full disk is an input problem
            raise InputError(f"the run stopped on a file error ({exc.strerror or exc}); check the free space and "
                             f"permissions beside --output {out} and that the trace is still readable") from None
        raise
    for msg in prepared.warnings + prepared.after_run_warnings():  # a failing run prints one line only
        console.warn(msg)
    if result.num_rejected:
        first = result.rejected[0]
        console.warn(f"{result.num_rejected} request(s) rejected (see the run summary); first: "
                     f"request {first.request_id}: {first.reason}")
    final_lines(console, doc, _written_files(config, written))
    return RunResult(summary, written, time.perf_counter() - t0, result)


def _infeasible(config: RunConfig, out, sink, exc, ignored, argv, console: Console, t0: float) -> RunResult:
    """--record-infeasible: a header-only CSV and a summary saying why the run cannot happen."""
    console.line(f"tpsim: infeasible: {exc}")
    provenance = {"git_commit": git_commit(), "argv": argv, "flags": config.flags(), "seed": config.seed,
                  "inputs": existing_inputs(config.cluster_config, config.dataset)}
    summary = infeasible_summary(config, str(exc), ignored, provenance, time.perf_counter() - t0,
                                 getattr(exc, "memory_needed", None))
    written = out if sink is None else None
    sink = sink or _file_sink(config, out)
    if sink is not None:
        sink.commit(summary.to_json())
    return RunResult(summary, written, time.perf_counter() - t0)
