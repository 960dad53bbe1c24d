"""The columns of a campaign's tables and one run's row of ``runs``.

``runs`` has one row per run: its parameters (:data:`PARAMS`, from ``run.json``), then what tpsim's
run summary says (:data:`RESULTS`; the per-request statistics are computed by DuckDB from the
requests, and the SLO, goodput and overload columns by :mod:`~tpsim.campaign.slo`, and slotted in
between, see :mod:`~tpsim.campaign.aggregate`).  An infeasible run keeps its memory needs as
numbers: weights, activations, reserve and budget per GPU, and ``memory_needed_gb`` (their sum plus
one KV block), from the summary's ``memory_needed``.  ``requests`` has the
run's parameters and the 12 columns of tpsim's CSV (:mod:`tpsim.io.results`), renamed with units.

One run's odd number must not cost a campaign its tables: integer columns that take values from
outside the campaign's own checks (the base config's pp_size and engine limits, tpsim's engine
settings) are BIGINT, and a value that still does not fit its column (or has the wrong JSON type)
is stored as NULL with a warning in the log (:func:`fit`).
"""

from __future__ import annotations

import sys

from tpsim.io.summary import RunSummary

# Run parameters, in the order they appear in both tables.
PARAMS = {
    "campaign": "VARCHAR",
    "run_id": "VARCHAR",
    "model": "VARCHAR",
    "hardware": "VARCHAR",
    "tp_size": "INTEGER",
    "pp_size": "BIGINT",
    "num_npus": "BIGINT",
    "num_instances": "INTEGER",
    "dp_size": "INTEGER",
    "ep_size": "INTEGER",
    "num_gpus": "BIGINT",
    "link_bw": "DOUBLE",
    "link_latency": "DOUBLE",
    "link_source": "VARCHAR",
    "rate": "DOUBLE",
    "seed": "INTEGER",
    "max_num_seqs": "BIGINT",
    "max_num_batched_tokens": "BIGINT",
    "perf_model": "VARCHAR",
    "workload": "VARCHAR",
}
# Per-run results taken from the summary.
RESULTS = {
    "status": "VARCHAR",
    "reason": "VARCHAR",
    "requests": "BIGINT",
    "finished": "BIGINT",
    "rejected": "BIGINT",
    "input_tokens": "BIGINT",
    "output_tokens": "BIGINT",
    "preemptions": "BIGINT",
    "recomputed_tokens": "BIGINT",
    "prefix_hit_tokens": "BIGINT",
    "iterations": "BIGINT",
    "simulated_time_s": "DOUBLE",
    "throughput_rps": "DOUBLE",
    "input_tokens_per_s": "DOUBLE",
    "output_tokens_per_s": "DOUBLE",
    "total_tokens_per_s": "DOUBLE",
    "weights_gb": "DOUBLE",
    "weights_gib": "DOUBLE",
    "activation_peak_gb": "DOUBLE",
    "reserve_gb": "DOUBLE",
    "budget_gb": "DOUBLE",
    "memory_needed_gb": "DOUBLE",
    "kv_capacity_gb": "DOUBLE",
    "kv_capacity_gib": "DOUBLE",
    "kv_capacity_tokens": "BIGINT",
    "kv_capacity_blocks": "BIGINT",
    "kv_bytes_per_token": "BIGINT",
    "block_size": "BIGINT",
    "peak_kv_blocks_used": "BIGINT",
    "peak_kv_utilization": "DOUBLE",
    "peak_npu_mem_gb": "DOUBLE",
    "engine_max_num_seqs": "BIGINT",
    "engine_max_num_batched_tokens": "BIGINT",
    "engine_dtype": "VARCHAR",
    "tpsim_version": "VARCHAR",
    "git_commit": "VARCHAR",
    "git_dirty": "BOOLEAN",
    "cluster_config_sha256": "VARCHAR",
    "dataset_sha256": "VARCHAR",
    "model_config_sha256": "VARCHAR",
    "hardware_sha256": "VARCHAR",
    "n_warnings": "INTEGER",
    "sim_wall_time_s": "DOUBLE",
    "run_dir": "VARCHAR",
}
#: the summary's memory block, copied as it is
MEMORY_KEYS = ("weights_gb", "weights_gib", "activation_peak_gb", "reserve_gb", "budget_gb", "kv_capacity_gb",
               "kv_capacity_gib", "kv_capacity_tokens", "kv_capacity_blocks", "kv_bytes_per_token", "block_size")
#: the summary's totals block, copied as it is
TOTALS_KEYS = ("requests", "finished", "rejected", "input_tokens", "output_tokens", "preemptions",
               "recomputed_tokens", "prefix_hit_tokens", "iterations")
METRICS = ("ttft", "tpot", "itl", "latency", "queuing_delay")
QUANTILES = (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))  # tpsim's summary reports the same
INT_RANGE = {"INTEGER": (-(2**31), 2**31 - 1), "BIGINT": (-(2**63), 2**63 - 1)}


class AggregateError(RuntimeError):
    pass


def _fits(value, sql_type: str) -> tuple[bool, object]:
    """(whether ``value`` fits a column of ``sql_type``, the value as stored)."""
    if sql_type in INT_RANGE:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        lo, hi = INT_RANGE[sql_type]
        return isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi, value
    if sql_type == "DOUBLE":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                return True, float(value)
            except OverflowError:  # an integer past 1.8e308
                pass
        return False, value
    if sql_type == "BOOLEAN":
        return isinstance(value, bool), value
    return isinstance(value, str), value


def fit(value, sql_type: str, what: str, log=sys.stdout):
    """``value`` as a column of ``sql_type`` takes it; None (NULL, with a warning on ``log``) when it
    does not fit: an integer out of range, a number that is not one, a list where text belongs."""
    if value is None:
        return None
    ok, stored = _fits(value, sql_type)
    if ok:
        return stored
    shown = repr(stored)
    print(f"aggregate: warning: {what}: {shown if len(shown) <= 80 else shown[:77] + '...'} does not fit "
          f"a {sql_type} column; stored as NULL", file=log)
    return None


def fitted(row: dict, columns: dict, run: str, log) -> list:
    return [fit(row[k], t, f"{run}: {k}", log) for k, t in columns.items()]


def _get(d, *keys):
    for k in keys:
        if d is None:
            return None
        d = d.get(k)
    return d


def _one_value(mapping: dict | None, key: str):
    """The sha256 of the only entry of provenance.inputs.models/hardware (several: joined)."""
    if not mapping:
        return None
    return ",".join(v.get(key, "") for _, v in sorted(mapping.items()))


def _input_hashes(summary: RunSummary, params: dict) -> dict:
    """What tpsim read, else (infeasible runs: tpsim stops after the cluster config) run.json's record."""
    inputs = (summary.provenance or {}).get("inputs") or {}
    recorded = params.get("inputs") or {}
    return {
        "cluster_config_sha256": _get(inputs, "cluster_config", "sha256") or _get(recorded, "cluster_config", "sha256"),
        "dataset_sha256": _get(inputs, "dataset", "sha256") or _get(recorded, "dataset", "sha256"),
        "model_config_sha256": _one_value(inputs.get("models"), "sha256") or _get(recorded, "model_config", "sha256"),
        "hardware_sha256": _one_value(inputs.get("hardware"), "sha256") or _get(recorded, "hardware", "sha256"),
    }


def run_row(params: dict, summary: RunSummary, run_dir: str) -> dict:
    """The run's row of ``runs`` without the per-request statistics (keys: PARAMS, then RESULTS)."""
    if summary.status not in ("ok", "infeasible"):
        raise AggregateError(f"{run_dir}: summary status {summary.status!r}; expected 'ok' or 'infeasible'")
    inst = (summary.instances or [None])[0] or {}
    mem = inst.get("memory") or {}
    engine = inst.get("engine") or {}
    totals = summary.totals or {}
    thr = summary.throughput or {}
    row = {k: params.get(k) for k in PARAMS}
    row.update(_layout(params, summary, inst))
    row.update(status=summary.status, reason=summary.reason)
    row.update({k: totals.get(k) for k in TOTALS_KEYS})
    row.update(
        simulated_time_s=summary.simulated_time_s,
        throughput_rps=thr.get("requests_per_s"),
        input_tokens_per_s=thr.get("input_tokens_per_s"),
        output_tokens_per_s=thr.get("output_tokens_per_s"),
        total_tokens_per_s=thr.get("total_tokens_per_s"),
        peak_kv_blocks_used=inst.get("peak_kv_blocks_used"),
        peak_kv_utilization=inst.get("peak_kv_utilization"),
        peak_npu_mem_gb=inst.get("peak_npu_mem_gb"),
        engine_max_num_seqs=engine.get("max_num_seqs"),
        engine_max_num_batched_tokens=engine.get("max_num_batched_tokens"),
        engine_dtype=engine.get("dtype"),
        tpsim_version=summary.tpsim_version,
        git_commit=(summary.provenance or {}).get("git_commit"),
        git_dirty=params.get("git_dirty"),
        **_input_hashes(summary, params),
        n_warnings=len(summary.warnings or []),
        sim_wall_time_s=_get(summary.timing, "wall_time_s"),
        run_dir=run_dir,
    )
    row.update({k: mem.get(k) for k in MEMORY_KEYS})
    row["memory_needed_gb"] = _memory_needed(mem, summary.extra.get("memory_needed"))
    if summary.status == "infeasible" and isinstance(summary.extra.get("memory_needed"), dict):
        row.update({k: summary.extra["memory_needed"].get(k) for k in NEEDED_KEYS})
    return row


def _layout(params: dict, summary: RunSummary, inst: dict) -> dict:
    """``dp_size`` and ``ep_size``: the run's parameters when the matrix sets them, else what tpsim
    resolved (the summary's ``parallel`` block; a plain dense instance has none: 1 and 1); unknown
    (NULL) for an infeasible run without them, which tpsim stopped before laying out.  ``num_gpus``:
    every GPU of the run, ``num_npus`` x ``num_instances`` (dp_size x tp_size x pp_size for one group)."""
    parallel = inst.get("parallel") or ({"dp_size": 1, "ep_size": 1} if summary.instances else {})
    npus, instances = params.get("num_npus"), params.get("num_instances")
    gpus = npus * instances if isinstance(npus, int) and isinstance(instances, int) else None
    return {"dp_size": params.get("dp_size", parallel.get("dp_size")),
            "ep_size": params.get("ep_size", parallel.get("ep_size")), "num_gpus": gpus}


#: what an infeasible run's summary says it needs, copied into the columns of the same name
NEEDED_KEYS = ("weights_gb", "activation_peak_gb", "reserve_gb", "budget_gb")


def _memory_needed(mem: dict, needed: dict | None):
    """GB per GPU before any KV cache beyond one block: the summary's number for an infeasible run,
    else weights + activations + reserve + one KV block of the memory plan."""
    if isinstance(needed, dict):
        return needed.get("needed_gb")
    try:
        return (mem["weights_gb"] + mem["activation_peak_gb"] + mem["reserve_gb"]
                + mem["kv_bytes_per_token"] * mem["block_size"] / 1e9)
    except (KeyError, TypeError):
        return None
