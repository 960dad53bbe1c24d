"""Paired errors by arrival: where in a run a simulator's error sits.

A run's mean error mixes phases that fail for different reasons: requests served at once on a warm
engine, requests that queue behind a saturated one (whose TTFT is a wait for a slot, the step-time
error amplified), the first requests on a cold engine.  Splitting the paired requests into groups of
consecutive arrivals shows which.  Groups have equal request counts (their sizes differ by at most
one), so each contributes to the run's MAPE in proportion to its own; ``mape_points`` is that
contribution, and a metric's points over all groups add up to its MAPE over the run.
"""

from __future__ import annotations

#: metrics split by arrival, in report order
BY_ARRIVAL_METRICS = ("ttft", "tpot")
DEFAULT_GROUPS = 5
MAX_GROUPS = 100


def split_even(items: list, groups: int) -> list[list]:
    """``items`` in order as ``groups`` consecutive runs whose lengths differ by at most one (longer first)."""
    size, extra = divmod(len(items), groups)
    out, start = [], 0
    for g in range(groups):
        end = start + size + (1 if g < extra else 0)
        out.append(items[start:end])
        start = end
    return out


def by_arrival(measured, sim, paired: list[int], groups: int) -> list[dict] | None:
    """Paired requests in ``groups`` runs of consecutive measured arrivals (vLLM's ``queued_ts``, ties by
    id): per run the queue-time range, and per metric both sides' means, their % difference, the MAPE and
    the run's share of the whole MAPE in points.  None when ``groups`` is 0 or nothing is paired."""
    ordered = sorted((i for i in paired if i in measured.values.get("ttft", {}) and i in sim.values.get("ttft", {})),
                     key=lambda i: (measured.queued_s[i], i))
    if groups <= 0 or not ordered:
        return None
    totals = {}
    for key in BY_ARRIVAL_METRICS:
        mv, sv = measured.values.get(key, {}), sim.values.get(key, {})
        totals[key] = sum(1 for i in ordered if i in mv and i in sv and mv[i] != 0)
    rows = []
    for part in split_even(ordered, min(groups, len(ordered))):
        row = {"n": len(part), "queued_from_s": measured.queued_s[part[0]], "queued_to_s": measured.queued_s[part[-1]]}
        for key in BY_ARRIVAL_METRICS:
            row[key] = _group_stats(measured.values.get(key, {}), sim.values.get(key, {}), part, totals[key])
        rows.append(row)
    return rows


def _group_stats(mv: dict, sv: dict, part: list[int], total_pairs: int) -> dict | None:
    pairs = [(mv[i], sv[i]) for i in part if i in mv and i in sv]
    if not pairs:
        return None
    m_mean = sum(m for m, _ in pairs) / len(pairs)
    s_mean = sum(s for _, s in pairs) / len(pairs)
    errs = [abs(s - m) / abs(m) for m, s in pairs if m != 0]
    return {
        "n": len(pairs),
        "measured_mean": m_mean,
        "sim_mean": s_mean,
        "diff_pct": (s_mean - m_mean) / m_mean * 100.0 if m_mean else None,
        "mape_pct": sum(errs) / len(errs) * 100.0 if errs else None,
        "mape_points": sum(errs) / total_pairs * 100.0 if total_pairs else None,
    }
