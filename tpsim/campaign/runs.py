"""A validated campaign expanded into its runs: the :class:`Campaign` and :class:`Run` records, the
exclude rules, and the ``tpsim trace`` flags of a generated workload.

Every combination of the matrix values (in the fixed key order of :data:`run_ids.PATH_KEYS`) is one
run unless an exclude rule matches it; a run's parameters are what ``run.json`` records and the
tables show.
"""

from __future__ import annotations

import functools
import itertools
import os
from dataclasses import dataclass, field

from tpsim.campaign.checks import Checks, first_pp, rel_path
from tpsim.campaign.derive import derive_cluster_config
from tpsim.campaign.layouts import base_dp, has_layout
from tpsim.campaign.layouts import problems as layout_problems
from tpsim.campaign.links import run_link
from tpsim.campaign.links import warnings as link_warnings
from tpsim.campaign.provenance import latency_inputs
from tpsim.campaign.reading import CampaignError
from tpsim.campaign.run_ids import (
    ALWAYS_IN_PATH,
    PATH_KEYS,
    canonical_number,
    fmt_value,
    match_key,
    run_id,
)


@dataclass
class Run:
    id: str
    params: dict  # JSON-serialisable: what run.json records and the tables show
    trace: str | None  # path of the trace this run reads (None: a capacity search generates its own)
    model_config: str
    hardware_config: str
    hardware_override: str | None  # catalog entry to read npu_mem from (None: keep the base's)
    latency_inputs: dict = field(default_factory=dict)  # name -> folder the latency model may read


@dataclass
class Campaign:
    name: str
    source: str
    doc: dict  # validated, defaults filled in
    cluster: str  # resolved path of the base cluster config
    base: dict
    dims: list  # optional matrix keys present (in path order)
    runs: list = field(default_factory=list)
    trace: str | None = None  # resolved trace path, or None for a generated workload
    generate: dict | None = None  # generator settings (without rate and seed)
    traces: dict = field(default_factory=dict)  # (rate, seed) -> path, generated workloads only
    warnings: list = field(default_factory=list)  # what the workflow prints when it loads the campaign

    @property
    def results(self) -> str:
        return f"results/{self.name}"

    @property
    def capacity(self) -> bool:
        """A capacity search (``capacity:``): each run is one configuration's search over rates."""
        return "capacity" in self.doc

    def run(self, rid: str) -> Run:
        return self._by_id[rid]

    def add(self, run: Run) -> None:
        self.runs.append(run)
        self._by_id[run.id] = run

    def __post_init__(self):
        self._by_id = {}


def expand(doc: dict, checks: Checks, source: str, prefix: str) -> Campaign:
    """The runs of a campaign without problems (``checks`` has resolved what it names)."""
    matrix, generate = checks.matrix, checks.generate
    dims = [k for k in PATH_KEYS if k in matrix and k not in ALWAYS_IN_PATH]
    camp = Campaign(name=doc["name"], source=source, doc=doc, cluster=rel_path(checks.cluster), base=checks.base,
                    dims=dims, trace=rel_path(checks.trace) if checks.trace else None, generate=generate)
    keys = [k for k in PATH_KEYS if k in matrix]
    excluded = exclusions(doc["exclude"], keys)
    n_excluded = 0
    for combo in itertools.product(*(matrix[k] for k in keys)):
        mk = [match_key(v) for v in combo]
        if any(tuple(mk[i] for i in idx) in combos for idx, combos in excluded.items()):
            n_excluded += 1
            continue
        values = {k: (v if isinstance(v, str) else canonical_number(v)) for k, v in zip(keys, combo)}
        camp.add(_run(camp, checks, values))
    if not camp.runs:
        raise CampaignError(f"{prefix}: exclude: the rules remove all {n_excluded} runs of the matrix")
    if has_layout(matrix):
        refused = layout_problems(camp.runs, checks.base, checks.model_paths, derive_cluster_config)
        if refused:
            shown = refused[:20] + ([f"... and {len(refused) - 20} more problems"] if len(refused) > 20 else [])
            raise CampaignError("\n".join(f"{prefix}: {line}" for line in shown))
    camp.warnings = link_warnings(camp.runs, checks.hardware_paths, prefix)
    return camp


def _run(camp: Campaign, checks: Checks, values: dict) -> Run:
    """One run from its matrix values; what the matrix does not set comes from the base config (the
    link: from the GPU's catalog entry in a hardware sweep)."""
    instances, generate, first = checks.instances, checks.generate, checks.instances[0]
    pp = first_pp(first)
    hardware = values.get("hardware", first["hardware"])
    link_bw, link_latency, link_source = run_link(values, checks.base, hardware, checks.hardware_paths[hardware],
                                                  sweep="hardware" in values)
    params = {
        "campaign": camp.name,
        "run_id": run_id(values, camp.dims),
        "model": values["model"],
        "hardware": hardware,
        "tp_size": values["tp_size"],
        "pp_size": pp,
        "num_npus": values["tp_size"] * pp,
        "num_instances": values.get("dp_size", len(instances)),
        "link_bw": link_bw,
        "link_latency": link_latency,
        "link_source": link_source,
        "rate": None if camp.capacity else values.get("rate", generate["rate"] if generate else None),
        "seed": values.get("seed", generate["seed"] if generate else None),
        "max_num_seqs": values.get("max_num_seqs", first.get("max_num_seqs")),
        "max_num_batched_tokens": values.get("max_num_batched_tokens", first.get("max_num_batched_tokens")),
        "perf_model": camp.doc["perf_model"],
        "workload": "generated" if generate else camp.trace,
    }
    if has_layout(values):  # only then: the parameters (and keys) of runs without them stay as they were
        params = _with_layout(params, values, checks.instances)
    trace_path = camp.trace
    if generate and not camp.capacity:
        rate_s, seed_s = fmt_value(params["rate"]), fmt_value(params["seed"])
        trace_path = f"{camp.results}/workloads/rate={rate_s}/seed={seed_s}/trace.jsonl"
        camp.traces[(rate_s, seed_s)] = trace_path
    elif camp.capacity:
        trace_path = None
    override = checks.hardware_paths[hardware] if "hardware" in values and any(
        inst["hardware"] != hardware for inst in instances) else None
    latency = _latency_inputs(camp.doc["perf_model"], hardware, values["model"])
    return Run(id=params["run_id"], params=params, trace=trace_path, model_config=checks.model_paths[values["model"]],
               hardware_config=checks.hardware_paths[hardware], hardware_override=override, latency_inputs=latency)


def _with_layout(params: dict, values: dict, instances: list[dict]) -> dict:
    """The run's DP ranks and EP degree beside its TP degree (``ep_size`` only when the matrix sets it:
    otherwise the base's, which may be LLMServingSim's default)."""
    out = {}
    for key, value in params.items():
        if key == "tp_size":
            out["dp_size"] = values.get("dp_size", base_dp(instances))
        out[key] = value
        if key == "tp_size" and "ep_size" in values:
            out["ep_size"] = values["ep_size"]
    return out


def _latency_inputs(perf_model: str, hardware: str, model: str) -> dict:
    """:func:`~tpsim.campaign.provenance.latency_inputs` relative to the working folder (a copy)."""
    return dict(_latency_found(perf_model, hardware, model, os.getcwd()))


@functools.lru_cache(maxsize=4096)
def _latency_found(perf_model: str, hardware: str, model: str, cwd: str) -> dict:
    """Found once per (GPU, model) and working folder: a 3,000-run campaign has a handful of them, and
    each search walks the catalog roots (1 s of a 3,000-run campaign's load time otherwise)."""
    return {name: rel_path(path) for name, path in latency_inputs(perf_model, hardware, model).items()}


def exclusions(rules: list[dict], keys: list[str]) -> dict[tuple, set]:
    """The excluded value combinations, by the positions in ``keys`` of the keys a rule names: a run
    is excluded when its values there are one of that rule's combinations.  Linear in the rules and
    runs (a rule's values are all in the matrix, so its combinations are at most the runs)."""
    out: dict[tuple, set] = {}
    for rule in rules:
        idx = tuple(i for i, k in enumerate(keys) if k in rule)
        wanted = [{match_key(v) for v in (rule[keys[i]] if isinstance(rule[keys[i]], list) else [rule[keys[i]]])}
                  for i in idx]
        out.setdefault(idx, set()).update(itertools.product(*wanted))
    return out


def generate_flags(generate: dict) -> list[str]:
    """``tpsim trace`` flags for the generator settings, without --rate/--seed/--output."""
    flags = []
    for key, value in generate.items():
        if key in ("rate", "seed"):
            continue
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            if key == "first_gap":
                if value:
                    flags.append(flag)
            else:
                flags.append(flag if value else f"--no-{key.replace('_', '-')}")
        else:
            flags += [flag, fmt_value(value)]
    return flags
