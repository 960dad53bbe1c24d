"""Everything one simulation run is configured by: :class:`RunConfig`, the typed run API's input.

The dataclasses below are the single home of every ``tpsim run`` setting, its default and its
help text; the command line (``tpsim run``, ``python -m serving``, ``tpsim replay``) is
generated from them (:mod:`tpsim.argspec`), and Python callers build them directly::

    from tpsim import RunConfig, run
    result = run(RunConfig(cluster_config="configs/cluster/h100_tp2_nvlink.json",
                           dataset="workloads/example_trace.jsonl", output="out/run.csv"))

Engine settings (:class:`EngineOptions`) apply to every instance unless the cluster config's
instance sets the same key.  Model configs and hardware entries may be given as objects
(``models=``, ``hardware=``), which then win over the catalog for those names.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from tpsim.argspec import flag, flag_values
from tpsim.errors import InputError, NotSupportedError
from tpsim.perf.moe import ROUTING_POLICIES

DEFAULT_CLUSTER = "configs/cluster/single_node_single_instance.json"
#: simulated horizon (--max-sim-time): no realistic run reaches it; it bounds hostile traces
DEFAULT_MAX_SIM_TIME_S = 1e7
#: shortest --log-interval: finer bins say nothing a step (tens of microseconds at least) can fill
MIN_LOG_INTERVAL_S = 1e-6

_IO = "inputs and outputs"
_ENGINE = "engine (per instance; a key in the cluster config's instance overrides these)"
_SIM = "simulation"
_COMPAT = "LLMServingSim flags that tpsim rejects or ignores"

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
}


def parquet_path(csv_path: str) -> str:
    """``out/run.csv`` -> ``out/run.parquet`` (the per-request rows as Parquet)."""
    return (csv_path[:-4] if csv_path.lower().endswith(".csv") else csv_path) + ".parquet"


@dataclass(frozen=True)
class EngineOptions:
    """vLLM's scheduler and cache knobs; a cluster config's instance key of the same name wins."""

    dtype: str | None = field(default=None, metadata=flag(
        "weight dtype (default: the model's torch_dtype)", group=_ENGINE,
        choices=("float16", "bfloat16", "float32", "fp8", "int8")))
    kv_cache_dtype: str = field(default="auto", metadata=flag(
        "KV cache dtype: auto = the weight dtype, fp8 = 1 byte per element (default auto)", group=_ENGINE,
        choices=("auto", "fp8")))
    block_size: int = field(default=16, metadata=flag("KV block size in tokens (default 16)", group=_ENGINE))
    max_num_seqs: int = field(default=128, metadata=flag(
        "max running requests (default 128; 0 = unlimited)", group=_ENGINE))
    max_num_batched_tokens: int = field(default=2048, metadata=flag(
        "token budget per step (default 2048; 0 = unlimited)", group=_ENGINE))
    long_prefill_token_threshold: int = field(default=0, metadata=flag(
        "cap on tokens one request takes per step (default 0 = off)", group=_ENGINE))
    enable_chunked_prefill: bool = field(default=True, metadata=flag(
        "split long prompts over steps (default on)", group=_ENGINE, kind="switch"))
    enable_prefix_caching: bool = field(default=True, metadata=flag(
        "reuse KV blocks of shared prompt prefixes, by token ids in the trace (default on)", group=_ENGINE,
        kind="switch"))
    reserve_full_isl: bool = field(default=False, metadata=flag(
        "admit a request only if its whole prompt fits in free blocks (LLMServingSim's default; vLLM does not, "
        "so tpsim's default is off)", group=_ENGINE, kind="switch"))
    async_scheduling: bool = field(default=True, metadata=flag(
        "host work of the next step overlaps the current GPU step (vLLM's default since 0.12); "
        "--no-async-scheduling charges it in series (default on)", group=_ENGINE, kind="switch"))
    max_model_len: int | None = field(default=None, metadata=flag(
        "longest context (prompt + output) a request may reach, as vLLM's --max-model-len; a longer request is "
        "rejected (default: the model's max_position_embeddings)", group=_ENGINE, metavar="TOKENS"))
    num_gpu_blocks_override: int | None = field(default=None, metadata=flag(
        "KV-cache blocks per GPU, as vLLM's --num-gpu-blocks-override: the KV capacity a run had, instead of "
        "tpsim's estimate from memory (default: the estimate; tpsim replay takes vLLM's recorded "
        "kv_cache.num_gpu_blocks)", group=_ENGINE, metavar="BLOCKS"))
    npu_memory_utilization: float = field(default=0.9, metadata=flag(
        "fraction of npu_mem.mem_size for weights, activations and KV (vLLM gpu_memory_utilization; default 0.9)",
        group=_ENGINE))

    def as_engine_keys(self) -> dict:
        """The settings under the cluster config's instance key names (``mem_util`` for the utilisation)."""
        keys = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "npu_memory_utilization"}
        keys["mem_util"] = self.npu_memory_utilization
        return keys


@dataclass(frozen=True)
class LLMServingSimFlags:
    """LLMServingSim's flags for features tpsim does not model (rejected) or that change nothing here
    (accepted and listed as ignored in the summary); hidden from ``--help``."""

    enable_prefix_sharing: bool | None = field(default=None, metadata=flag(group=_COMPAT, kind="store_true",
                                                                           hidden=True))
    enable_local_offloading: bool | None = field(default=None, metadata=flag(group=_COMPAT, kind="store_true",
                                                                             hidden=True))
    enable_attn_offloading: bool | None = field(default=None, metadata=flag(group=_COMPAT, kind="store_true",
                                                                            hidden=True))
    enable_sub_batch_interleaving: bool | None = field(default=None, metadata=flag(
        group=_COMPAT, kind="store_true", hidden=True))
    skip_prefill: bool | None = field(default=None, metadata=flag(group=_COMPAT, kind="store_true", hidden=True))
    prefix_storage: str | None = field(default=None, metadata=flag(group=_COMPAT, hidden=True))
    network_backend: str | None = field(default=None, metadata=flag(group=_COMPAT, hidden=True))
    enable_block_copy: bool | None = field(default=None, metadata=flag(group=_COMPAT, kind="switch", hidden=True))
    inputs_root: str | None = field(default=None, metadata=flag(group=_COMPAT, hidden=True))
    cleanup_inputs: bool | None = field(default=None, metadata=flag(group=_COMPAT, kind="switch", hidden=True))

    def check(self) -> list[str]:
        """Raise on an unsupported feature; return the 'ignored' lines for the summary."""
        for key, what in UNSUPPORTED_FLAGS.items():
            if getattr(self, key):
                raise NotSupportedError(f"--{key.replace('_', '-')}: {what} is not supported by tpsim; remove the flag")
        if self.prefix_storage not in (None, "None"):
            raise NotSupportedError(f"--prefix-storage {self.prefix_storage}: second-tier prefix storage is not "
                                    "supported; remove the flag")
        if self.network_backend not in (None, "analytical"):
            raise NotSupportedError(f"--network-backend {self.network_backend} is not supported: tpsim costs the "
                                    "network analytically; remove the flag or pass --network-backend analytical")
        return [f"--{key.replace('_', '-')}: ignored ({why})" for key, why in IGNORED_FLAGS.items()
                if getattr(self, key) is not None]


def _frozen(mapping) -> Mapping:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True)
class RunConfig:
    """One run: inputs, outputs, engine settings and simulation options (see the module docstring)."""

    cluster_config: str = field(default=DEFAULT_CLUSTER, metadata=flag(
        f"LLMServingSim cluster config (default: {DEFAULT_CLUSTER})", group=_IO, metavar="JSON"))
    dataset: str | None = field(default=None, metadata=flag(
        "request trace (LLMServingSim JSONL); default: 16 requests of 64+64 tokens at t=0 per instance",
        group=_IO, metavar="JSONL"))
    output: str | None = field(default=None, metadata=flag(
        "per-request CSV; the run summary goes beside it as <name>.summary.json; '{run_id}' is replaced by --run-id",
        group=_IO, metavar="CSV"))
    requests_format: str = field(default="csv", metadata=flag(
        "per-request results as LLMServingSim's CSV, as Parquet beside it (<name>.parquet; columns as the campaign "
        "tables, ITL a list; needs DuckDB), or both (default csv)", group=_IO, choices=("csv", "parquet", "both")))
    itl_format: str = field(default="list", metadata=flag(
        "the ITL column: every inter-token gap, '[g1, g2, ...]' (default list), or 'none' for huge runs: '[]', "
        "about 6.6 kB less per request of 650 output tokens (TTFT, TPOT, latency and the summary's exact ITL "
        "percentiles are kept)", group=_IO, choices=("list", "none")))
    ttft_origin: str = field(default="arrival", metadata=flag(
        "where TTFT, latency and queuing_delay start: the request's arrival (default; LLMServingSim's CSV) or "
        "'pickup', when vLLM's engine loop takes it from its input queue (vLLM's queued_ts: the end of the step "
        "running at arrival, or the arrival at an idle engine); the arrival column is kept, so end_time - arrival "
        "- latency is the wait for pickup (tpsim replay's default: the measured runs define TTFT from queued_ts)",
        group=_IO, choices=("arrival", "pickup")))
    num_reqs: int = field(default=0, metadata=flag(
        "only the first N requests: trace lines, or built-in requests (default 0 = all)", group=_IO))
    run_id: str | None = field(default=None, metadata=flag("name substituted for '{run_id}' in --output", group=_IO))
    record_infeasible: bool = field(default=False, metadata=flag(
        "if the model does not fit / parallelism is impossible, write a header-only CSV and a summary with status "
        "'infeasible' and exit 0 (for campaigns)", group=_IO, kind="store_true"))
    engine: EngineOptions = field(default_factory=EngineOptions, metadata={"flags_from": True})
    request_routing_policy: str = field(default="LOAD", metadata=flag(
        "across instances: least loaded, round robin or random (default LOAD)", group=_SIM,
        choices=("LOAD", "RR", "RAND", "CUSTOM")))
    perf_model: str = field(default="auto", metadata=flag(
        "iteration latency: roofline from the hardware catalog, a measured profile bundle of the model, the GPU's "
        "measured kernel tables, or auto (a bundle if one exists, else kernel tables if the GPU has them, else "
        "analytical; default auto)", group=_SIM, choices=("analytical", "profile", "kernels", "auto")))
    comm_model: str = field(default="auto", metadata=flag(
        "collectives of the kernels model: measured (vLLM's all-reduce and NCCL from the GPU's tables), analytical "
        "(alpha-beta on the cluster config's link_bw / link_latency) or auto (measured when the link is the GPU's "
        "catalogued interconnect, else analytical; default auto)", group=_SIM,
        choices=("measured", "analytical", "auto")))
    expert_routing_policy: str | None = field(default=None, metadata=flag(
        "mixture-of-experts models: how tokens reach experts (LLMServingSim's policies): BALANCED (default: every EP "
        "rank gets its share), RR (round robin, the same loads as BALANCED) or RAND (uniform random: the slowest EP "
        "rank sets the step)", group=_SIM, choices=ROUTING_POLICIES))
    profile_dir: str | None = field(default=None, metadata=flag(
        "folder of measured profile bundles (<hardware>/<model>/<variant>/tp<N>/)", group=_SIM))
    seed: int = field(default=42, metadata=flag("seed for RAND routing (default 42)", group=_SIM))
    log_interval: float = field(default=1.0, metadata=flag(
        "simulated seconds between throughput lines and of the summary's timeline bins "
        f"(default 1.0; 0 = neither; at least {MIN_LOG_INTERVAL_S:g})", group=_SIM))
    max_sim_time: float = field(default=DEFAULT_MAX_SIM_TIME_S, metadata=flag(
        "simulated horizon: a trace arrival later than this, or a simulation running past it, is an error "
        f"(default {DEFAULT_MAX_SIM_TIME_S:g} s, about 116 days)", group=_SIM, metavar="SECONDS"))
    log_level: str = field(default="WARNING", metadata=flag(
        "WARNING (default) and INFO show warnings on stderr, ERROR hides them, DEBUG adds one line per scheduled "
        "step; the banner, throughput lines and final summary always print", group=_SIM,
        choices=("ERROR", "WARNING", "INFO", "DEBUG")))
    fast_forward: bool = field(default=True, metadata=flag(
        "compute runs of identical decode steps in one go (identical results; default on; off only to debug)",
        group=_SIM, kind="switch"))
    compat: LLMServingSimFlags = field(default_factory=LLMServingSimFlags, metadata={"flags_from": True})
    #: model specs by the name a cluster config uses; they win over the catalog (not flags)
    models: Mapping[str, Any] = field(default_factory=dict)
    #: hardware specs by name; they win over the catalog (not flags)
    hardware: Mapping[str, Any] = field(default_factory=dict)
    #: extra top-level blocks for the run summary (e.g. ``replay``), written after the standard ones
    summary_extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        for name in ("models", "hardware", "summary_extra"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))

    def replace(self, **changes) -> RunConfig:
        """A copy with some fields changed (``engine=...`` takes an EngineOptions)."""
        return replace(self, **changes)

    def flags(self) -> dict:
        """Every flag's value by destination name, sorted: the summary's ``provenance.flags``."""
        return flag_values(self)

    def check(self) -> list[str]:
        """Validate the flags that need no file; return the 'ignored' lines for the summary."""
        ignored = self.compat.check()
        if self.request_routing_policy == "CUSTOM":
            raise NotSupportedError("--request-routing-policy CUSTOM is not supported; choose LOAD, RR or RAND")
        e = self.engine
        for flag_name, value, minimum in (
                ("--num-reqs", self.num_reqs, 0), ("--block-size", e.block_size, 1),
                ("--max-num-seqs", e.max_num_seqs, 0), ("--max-num-batched-tokens", e.max_num_batched_tokens, 0),
                ("--long-prefill-token-threshold", e.long_prefill_token_threshold, 0)):
            if value < minimum:
                raise InputError(f"{flag_name} must be >= {minimum}, got {value}")
        if not 1 <= self.max_sim_time <= 1e9:  # 1e9 s = 31.7 years: ns times stay far below 2^63
            raise InputError(f"--max-sim-time must be between 1 and 1e9 seconds, got {self.max_sim_time}")
        if not 0 < e.npu_memory_utilization <= 1:
            raise InputError(f"--npu-memory-utilization must be in (0, 1], got {e.npu_memory_utilization}")
        if not (self.log_interval == 0 or MIN_LOG_INTERVAL_S <= self.log_interval <= self.max_sim_time):
            raise InputError(f"--log-interval must be 0 (no lines, no timeline) or between {MIN_LOG_INTERVAL_S:g} s "
                             f"and --max-sim-time ({self.max_sim_time:g} s), got {self.log_interval}")
        return ignored

    def output_path(self) -> str | None:
        """``--output`` with ``{run_id}`` filled in, checked with its summary path before anything runs."""
        from tpsim.io.summary import summary_path
        from tpsim.io.writing import check_output_path

        if self.output is None:
            return None
        out = self.output
        if "{run_id}" in out:
            if not self.run_id:
                raise InputError("--output contains '{run_id}' but no --run-id was given")
            out = out.replace("{run_id}", self.run_id)
        inputs = [self.cluster_config, self.dataset]
        check_output_path(out, "--output", inputs)
        spath = summary_path(out)
        if os.path.isdir(spath):
            raise InputError(f"--output {self.output}: its summary path {spath} is a folder; "
                             "remove it or choose another --output")
        check_output_path(spath, "--output's summary", inputs)
        if self.requests_format != "csv":
            check_output_path(parquet_path(out), "--output's Parquet file", inputs)
        return out
