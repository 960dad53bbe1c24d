"""Comparison statistics: one side's per-request values -> mean and percentiles, the difference of
the two sides in %, and the paired errors (MAPE, MAE) over requests present on both.

Percentiles interpolate linearly between order statistics (numpy's default, and tpsim's summary);
the difference is ``(sim - measured) / measured * 100``; the paired error pairs measured
``bench-<i>`` with the simulated ``request id`` i.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tpsim.stats import percentile_sorted
from tpsim.validation.by_arrival import DEFAULT_GROUPS, by_arrival

#: metrics in report order: key -> label
METRICS = {"ttft": "TTFT", "tpot": "TPOT", "latency": "latency", "queuing_delay": "queuing delay",
           "ttft_from_arrival": "TTFT from arrival", "latency_from_arrival": "latency from arrival"}
STATS = ("mean", "p50", "p90", "p99")
#: metrics whose relative error is not meaningful per request -> why
NO_MAPE = {"queuing_delay": "MAPE not reported: requests admitted at once have measured delays of microseconds, "
                            "so relative errors explode; see mae_ms"}
DEFINITIONS = {
    "measured": {
        "ttft": "first_token_ts - queued_ts",
        "tpot": "(last_token_ts - first_token_ts) / (output_toks - 1); requests with output_toks <= 1 skipped",
        "latency": "last_token_ts - queued_ts",
        "queuing_delay": "scheduled_ts - queued_ts (vLLM: first scheduling)",
        "ttft_from_arrival": "first_token_ts - (arrival_time + c): TTFT from the request's arrival at the server, as "
                             "the simulators measure it; arrival_time is wall-clock and the other stamps monotonic, "
                             "so c = min over requests of (queued_ts - arrival_time) aligns the clocks at the "
                             "fastest pickup. queued_ts is when vLLM's engine loop takes the request from its "
                             "input queue, which happens only between steps, so TTFT from queued_ts leaves out that "
                             "wait (pickup_delay_ms)",
        "latency_from_arrival": "last_token_ts - (arrival_time + c), c as for ttft_from_arrival",
    },
    "sim": {
        "ttft": "CSV TTFT / 1e6",
        "tpot": "CSV TPOT / 1e6; requests with output <= 1 skipped",
        "latency": "CSV latency / 1e6",
        "queuing_delay": "CSV queuing_delay / 1e6 (tpsim: first scheduling; LLMServingSim: schedule of the last "
                         "prefill chunk)",
        "ttft_from_arrival": "CSV TTFT / 1e6 (measured from arrival)",
        "latency_from_arrival": "CSV latency / 1e6 (measured from arrival)",
    },
    "unit": "ms",
    "percentiles": "linear interpolation between order statistics (numpy's default)",
    "diff_pct": "(sim - measured) / measured * 100",
    "mape_pct": "mean over paired requests of |sim - measured| / measured * 100 (pairs with measured == 0 skipped; "
                "not reported for the queuing delay)",
    "mae_ms": "mean over paired requests of |sim - measured|",
    "pairing": "measured request_id 'bench-<i>' <-> sim 'request id' i",
    "by_arrival": "the paired requests with a TTFT on both sides, ordered by measured queued_ts (ties by id), in "
                  "groups of consecutive requests whose sizes differ by at most one; per group and metric: both "
                  "sides' means, diff_pct of the means, the group's MAPE, and mape_points = the group's sum of "
                  "|sim - measured| / measured over the metric's pairs in all groups * 100 (a metric's points add up "
                  "to its MAPE over these requests); queued_from_s / queued_to_s: queued_ts after the first request's",
}


#: the simulated side's definitions when the run measured TTFT from its modelled pickup (--ttft-origin pickup)
SIM_FROM_PICKUP = {
    "ttft": "CSV TTFT / 1e6: from the engine's modelled pickup (tpsim --ttft-origin pickup), like queued_ts",
    "latency": "CSV latency / 1e6: from the engine's modelled pickup",
    "queuing_delay": "CSV queuing_delay / 1e6: first scheduling - modelled pickup",
    "ttft_from_arrival": "(CSV TTFT + end_time - arrival - latency) / 1e6: the wait for pickup added back",
    "latency_from_arrival": "(CSV latency + end_time - arrival - latency) / 1e6",
}


def definitions(sim_origin: str = "arrival") -> dict:
    """The metric definitions of a comparison whose simulated TTFT starts at ``sim_origin``."""
    if sim_origin != "pickup":
        return DEFINITIONS
    return {**DEFINITIONS, "sim": {**DEFINITIONS["sim"], **SIM_FROM_PICKUP}}


@dataclass
class Side:
    """One side of the comparison: per-request values in ms, keyed by request index."""

    path: str
    requests: int = 0
    values: dict = field(default_factory=dict)  # metric -> {request index: ms}
    tokens: dict = field(default_factory=dict)  # request index -> (input or None, output)
    unfinished: list = field(default_factory=list)
    emissions: list | None = None  # per request: token emission times (ns), only when asked for
    pickup_delay_ms: dict | None = None  # each request's wait for vLLM's engine loop to take it (measured or modelled)
    queued_s: dict = field(default_factory=dict)  # measured side: request -> queued_ts in s after the first one


def describe(values) -> dict | None:
    """n, mean, p50, p90, p99 (linear interpolation)."""
    s = sorted(values)
    if not s:
        return None
    return {"n": len(s), "mean": sum(s) / len(s), **{f"p{q}": percentile_sorted(s, q) for q in (50, 90, 99)}}


def pct_diff(sim: float | None, measured: float | None) -> float | None:
    if sim is None or measured is None or measured == 0:
        return None
    return (sim - measured) / measured * 100.0


def mape(pairs) -> tuple[float | None, int]:
    """Mean absolute percentage error of (measured, sim) pairs; pairs with measured == 0 are skipped."""
    errs = [abs(s - m) / abs(m) for m, s in pairs if m != 0]
    return (sum(errs) / len(errs) * 100.0 if errs else None), len(errs)


def mae(pairs) -> float | None:
    """Mean absolute error of (measured, sim) pairs, in their unit."""
    return sum(abs(s - m) for m, s in pairs) / len(pairs) if pairs else None


def round_floats(x, nd=6):
    """Floats (also inside dicts) rounded to ``nd`` places: stable JSON for the validation document."""
    if x is None:
        return None
    if isinstance(x, dict):
        return {k: round_floats(v, nd) for k, v in x.items()}
    if isinstance(x, list):
        return [round_floats(v, nd) for v in x]
    if isinstance(x, float):
        return round(x, nd)
    return x


def compare(measured: Side, sim: Side, arrival_groups: int = DEFAULT_GROUPS) -> dict:
    """Per-metric statistics of both sides, their % differences, the paired MAPE, and the paired errors in
    ``arrival_groups`` runs of consecutive arrivals (:mod:`tpsim.validation.by_arrival`; 0: none)."""
    m_ids, s_ids = set(measured.tokens), set(sim.tokens)
    paired = sorted(m_ids & s_ids)
    only_m, only_s = sorted(m_ids - s_ids), sorted(s_ids - m_ids)
    out_mismatch = [i for i in paired if measured.tokens[i][1] != sim.tokens[i][1]]
    in_mismatch = [i for i in paired if measured.tokens[i][0] is not None and measured.tokens[i][0] != sim.tokens[i][0]]
    metrics = {}
    for key, label in METRICS.items():
        mv, sv = measured.values.get(key, {}), sim.values.get(key, {})
        if not mv or not sv:
            continue
        md, sd = describe(mv.values()), describe(sv.values())
        pairs = [(mv[i], sv[i]) for i in paired if i in mv and i in sv]
        err, _ = mape(pairs)
        paired_stats = {"n": len(pairs), "mape_pct": err, "mae_ms": mae(pairs)}
        if key in NO_MAPE:
            paired_stats["mape_pct"] = None
            paired_stats["note"] = NO_MAPE[key]
        metrics[key] = {
            "label": label,
            "measured": md,
            "sim": sd,
            "diff_pct": {st: pct_diff(sd[st], md[st]) for st in STATS},
            "paired": paired_stats,
        }
    return {
        "pairing": {
            "measured_requests": measured.requests,
            "sim_requests": sim.requests,
            "paired": len(paired),
            "measured_only": len(only_m),
            "sim_only": len(only_s),
            "measured_only_ids": only_m[:20],
            "sim_only_ids": only_s[:20],
            "measured_unfinished": len(measured.unfinished),
            "output_tokens_mismatch": len(out_mismatch),
            "input_tokens_mismatch": len(in_mismatch),
        },
        "pickup_delay_ms": describe(measured.pickup_delay_ms.values()) if measured.pickup_delay_ms else None,
        "sim_pickup_delay_ms": describe(sim.pickup_delay_ms.values()) if sim.pickup_delay_ms else None,
        "metrics": metrics,
        "by_arrival": by_arrival(measured, sim, paired, arrival_groups),
    }
