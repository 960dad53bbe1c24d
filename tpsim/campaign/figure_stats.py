"""The statistics the campaign figures plot: means over seeds with Student-t confidence intervals,
and empirical CDFs thinned to a fixed number of points."""

import math

import numpy as np
import pandas as pd

CDF_MAX_POINTS = 1000
# two-sided 95 % Student-t quantiles by degrees of freedom (no scipy needed)
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
        10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110,
        18: 2.101, 19: 2.093, 20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064, 25: 2.060,
        26: 2.056, 27: 2.052, 28: 2.048, 29: 2.045, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980}


def t975(df: int) -> float:
    if df <= 0:
        return float("nan")
    return T975[max(k for k in T975 if k <= df)] if df <= 120 else 1.960


def mean_ci(values) -> tuple[float, float, float, int]:
    """(mean, ci_low, ci_high, n) of the finite values; CI empty (NaN) for n < 2."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    n = len(v)
    if n == 0:
        return float("nan"), float("nan"), float("nan"), 0
    m = float(v.mean())
    if n < 2:
        return m, float("nan"), float("nan"), n
    half = t975(n - 1) * float(v.std(ddof=1)) / math.sqrt(n)
    return m, m - half, m + half, n


def seed_stats(runs: pd.DataFrame, keys: list[str], metric: str) -> pd.DataFrame:
    """One row per ``keys`` group: status, mean over seeds of ``metric`` and its 95 % CI."""
    rows = []
    for key, grp in runs.groupby(keys, sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        ok = grp[grp["status"] == "ok"]
        m, lo, hi, n = mean_ci(ok[metric].tolist())
        rows.append({**dict(zip(keys, key)), "status": "ok" if len(ok) else "infeasible",
                     "value": m, "ci_low": lo, "ci_high": hi, "n_runs": n if len(ok) else len(grp)})
    return pd.DataFrame(rows)


def ecdf_points(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted values and their cumulative fractions; above CDF_MAX_POINTS, that many quantiles."""
    v = np.sort(np.asarray(values, dtype=float))
    n = len(v)
    if n <= CDF_MAX_POINTS:
        return v, np.arange(1, n + 1) / n
    idx = np.unique(np.ceil(np.linspace(1, n, CDF_MAX_POINTS)).astype(int)) - 1
    return v[idx], (idx + 1) / n
