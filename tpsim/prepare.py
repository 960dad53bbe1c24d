"""Everything a run needs, loaded and validated before the first simulated nanosecond.

:func:`prepare` reads the cluster config, builds each instance (model, hardware, engine settings,
memory plan, latency model: :mod:`tpsim.build`), reads the trace into requests and records the
provenance of every input.  Any problem is an ``InputError`` (``InfeasibleError`` when the model
cannot run at all) raised here, so a run either starts with everything known good or not at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tpsim.build import InstanceSetup, build_instances
from tpsim.config.cluster import IGNORED_INSTANCE_KEYS, ClusterConfig, load_cluster
from tpsim.config.run import RunConfig
from tpsim.io.trace import load_trace
from tpsim.provenance import file_ref, git_commit
from tpsim.sim.request import Request
from tpsim.units import NS_PER_S


@dataclass(frozen=True)
class PreparedRun:
    """A validated run: the config it came from, its instances, its requests and their provenance."""

    config: RunConfig
    cluster: ClusterConfig
    setups: list[InstanceSetup]
    requests: list[Request]
    initial: list[Request]  # released at time 0 of the trace, sorted by (arrival, id)
    trace_desc: str
    provenance: dict
    warnings: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)


def _default_requests(n_instances: int) -> list[Request]:
    """LLMServingSim's built-in workload when no dataset is given: 16 x (64 in, 64 out) at t=0 per instance."""
    return [Request(i, 0, 64, 64, None, 0) for i in range(16 * n_instances)]


def _trace_requests(config: RunConfig, setups, inputs: dict, warnings: list) -> tuple[list, list, str]:
    trace = load_trace(config.dataset, config.num_reqs, int(config.max_sim_time * NS_PER_S))
    inputs["dataset"] = file_ref(trace.path, trace.sha256)
    by_trace = {}
    requests = []
    for tr in trace.requests:
        r = Request(tr.request_id, tr.arrival_ns, tr.input_toks, tr.output_toks, tr.token_ids,
                    tr.num_input_ids, tr if tr.session is not None else None)
        by_trace[id(tr)] = r
        requests.append(r)
    initial = [by_trace[id(tr)] for tr in trace.initial]
    if trace.has_token_ids and not any(s.engine.enable_prefix_caching for s in setups):
        warnings.append("the trace has token ids but prefix caching is off; they are unused")
    return requests, initial, f"{len(requests)} requests from {trace.path}"


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
    if config.dataset:
        requests, initial, desc = _trace_requests(config, setups, inputs, warnings)
    else:
        requests = _default_requests(len(setups))
        if config.num_reqs:
            requests = requests[:config.num_reqs]
        initial = list(requests)
        inputs["dataset"] = None
        desc = f"{len(requests)} built-in requests (no --dataset)"
    return PreparedRun(config, cluster, setups, requests, initial, desc, provenance, warnings, ignored)
