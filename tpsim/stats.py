"""Summary statistics in plain Python (no numpy on the simulation path).

Percentiles interpolate linearly between order statistics, like numpy's
default and DuckDB's ``quantile_cont``.
"""

from __future__ import annotations


def percentile_sorted(values: list, q: float) -> float:
    """``q`` in [0, 100] of an already sorted list."""
    n = len(values)
    if n == 0:
        return float("nan")
    pos = (n - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, n - 1)
    frac = pos - lo
    return values[lo] + (values[hi] - values[lo]) * frac


def describe(values: list, scale: float = 1.0) -> dict | None:
    """mean, p50, p90, p99 of ``values`` multiplied by ``scale``."""
    if not values:
        return None
    s = sorted(values)
    return {
        "mean": round(sum(s) / len(s) * scale, 6),
        "p50": round(percentile_sorted(s, 50) * scale, 6),
        "p90": round(percentile_sorted(s, 90) * scale, 6),
        "p99": round(percentile_sorted(s, 99) * scale, 6),
    }


def weighted_percentile(pairs: list[tuple[float, int]], q: float) -> float:
    """Percentile of a distribution given as sorted (value, count) pairs, same interpolation."""
    total = sum(c for _, c in pairs)
    if total == 0:
        return float("nan")
    pos = (total - 1) * q / 100.0
    lo_rank = int(pos)
    frac = pos - lo_rank

    def at(rank: int) -> float:
        seen = 0
        for v, c in pairs:
            seen += c
            if rank < seen:
                return v
        return pairs[-1][0]

    lo = at(lo_rank)
    hi = at(min(lo_rank + 1, total - 1))
    return lo + (hi - lo) * frac


def describe_weighted(counts: dict, scale: float = 1.0) -> dict | None:
    pairs = sorted((v, c) for v, c in counts.items() if c > 0)
    total = sum(c for _, c in pairs)
    if total == 0:
        return None
    mean = sum(v * c for v, c in pairs) / total
    return {
        "mean": round(mean * scale, 6),
        "p50": round(weighted_percentile(pairs, 50) * scale, 6),
        "p90": round(weighted_percentile(pairs, 90) * scale, 6),
        "p99": round(weighted_percentile(pairs, 99) * scale, 6),
    }
