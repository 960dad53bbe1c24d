"""Everything a run needs, loaded and validated before the first simulated nanosecond.

:func:`prepare` reads the cluster config, builds each instance (model, hardware, engine settings,
memory plan, latency model: :mod:`tpsim.build`), opens the trace and records the provenance of
every input.  Any problem is an ``InputError`` (``InfeasibleError`` when the model cannot run at
all) raised here, so a run either starts with everything known good or not at all -- except for
trace lines past the reader's first window (:data:`~tpsim.io.trace.REORDER_WINDOW` requests), which
are read and checked as the simulation reaches them (an error there still writes nothing).
"""

from __future__ import annotations

import msgspec

from tpsim.build import InstanceSetup, build_instances
from tpsim.config.cluster import IGNORED_INSTANCE_KEYS, ClusterConfig, load_cluster
from tpsim.config.run import RunConfig
from tpsim.io.trace import TraceFile, TraceReader, scan_trace
from tpsim.provenance import file_ref, git_commit
from tpsim.sim.arrivals import Arrivals, request_from_trace
from tpsim.sim.request import Request
from tpsim.units import NS_PER_S


class Workload:
    """The requests of a run, handed to the event loop in arrival order (:meth:`arrivals`): a trace,
    streamed, or LLMServingSim's built-in workload (16 x (64 in, 64 out) at t=0 per instance)."""

    def __init__(self, config: RunConfig, n_instances: int):
        self.config = config
        self.reader: TraceReader | None = None
        if config.dataset:
            self.file: TraceFile | None = scan_trace(config.dataset)
            self.reader = self._open()
            self.reader.fill()  # the first window's lines are checked before the run starts
            self.may_have_token_ids = self.file.may_have_token_ids
            if self.reader.exhausted:
                self.desc = f"{self.reader.requests} requests from {self.file.path}"
            else:
                self.desc = f"requests from {self.file.path} ({self.file.lines:,} lines, streamed)"
        else:
            self.file = None
            n = 16 * n_instances
            self._builtin = n if not config.num_reqs else min(n, config.num_reqs)
            self.may_have_token_ids = False
            self.desc = f"{self._builtin} built-in requests (no --dataset)"

    def _open(self) -> TraceReader:
        return TraceReader(self.file, self.config.num_reqs, int(self.config.max_sim_time * NS_PER_S))

    def arrivals(self) -> Arrivals:
        """A fresh pass over the requests (the trace is read again after the first one)."""
        if self.file is None:
            return Arrivals(Request(i, 0, 64, 64, None, 0) for i in range(self._builtin))
        reader = self.reader if self.reader is not None and not self.reader.started else self._open()
        self.reader = reader
        return Arrivals(map(request_from_trace, reader))

    @property
    def requests(self) -> int:
        """Requests read so far (every one, once a run has ended)."""
        return self.reader.requests if self.reader is not None else self._builtin

    @property
    def expected_requests(self) -> int:
        """Requests the run should see, for progress lines: exact once the trace was read whole,
        else its line count (an upper bound: --num-reqs and --max-sim-time may stop it earlier)."""
        if self.file is None or self.reader is None or self.reader.exhausted:
            return self.requests
        return self.file.lines

    @property
    def has_token_ids(self) -> bool:
        return self.reader is not None and self.reader.has_token_ids


class PreparedRun(msgspec.Struct, frozen=True):
    """A validated run: the config it came from, its instances, its workload and their provenance."""

    config: RunConfig
    cluster: ClusterConfig
    setups: list[InstanceSetup]
    workload: Workload
    provenance: dict
    warnings: list[str] = msgspec.field(default_factory=list)
    ignored: list[str] = msgspec.field(default_factory=list)

    @property
    def trace_desc(self) -> str:
        return self.workload.desc

    def after_run_warnings(self) -> list[str]:
        """Warnings only the whole trace tells (printed, like the others, once the run has succeeded)."""
        if self.workload.has_token_ids and not any(s.engine.enable_prefix_caching for s in self.setups):
            return ["the trace has token ids but prefix caching is off; they are unused"]
        return []


def prepare(config: RunConfig, ignored: list[str], argv: list[str] | None = None) -> PreparedRun:
    """Load and validate every input of ``config`` (see the module docstring)."""
    cluster = load_cluster(config.cluster_config)
    warnings: list[str] = []
    if cluster.unknown_keys:
        warnings.append(f"{cluster.path}: unknown keys ignored: {', '.join(cluster.unknown_keys)}")
    warnings.extend(cluster.notes)
    ignored = list(ignored) + [
        f"{cluster.path}: instance {i.index}: key '{k}' ignored ({IGNORED_INSTANCE_KEYS[k]})"
        for i in cluster.instances for k in i.ignored_keys
    ]
    setups = build_instances(cluster, config.engine.as_engine_keys(), config.perf_model, config.profile_dir,
                             models=config.models, hardware=config.hardware, comm_model=config.comm_model,
                             notes=ignored, routing=config.expert_routing_policy or "BALANCED")
    if config.expert_routing_policy is not None and not any(s.model.is_moe for s in setups):
        ignored.append(f"--expert-routing-policy {config.expert_routing_policy}: ignored (no mixture-of-experts model "
                       "in the cluster config)")
    inputs = {
        "cluster_config": file_ref(cluster.path, cluster.sha256),
        "models": {s.model.name: file_ref(s.model.source, s.model.sha256) for s in setups},
        "hardware": {s.hardware.name: file_ref(s.hardware.source, s.hardware.sha256) for s in setups},
    }
    provenance = {"git_commit": git_commit(), "argv": argv, "flags": config.flags(), "seed": config.seed,
                  "inputs": inputs}
    workload = Workload(config, len(setups))
    inputs["dataset"] = file_ref(workload.file.path, workload.file.sha256) if workload.file is not None else None
    return PreparedRun(config, cluster, setups, workload, provenance, warnings, ignored)
