"""The statistics the campaign figures plot: means over seeds with bootstrap intervals that stay
inside the data, and empirical CDFs thinned to a fixed number of points.

The interval is the 95 % percentile bootstrap of the mean over a point's seeds: every resample's
mean lies between the smallest and the largest seed, so the interval can never leave the data's
support (a latency interval never goes below zero, as a Student-t interval over three seeds of
3970 / 229 / 234 ms did).  With up to :data:`EXACT_MAX_SEEDS` seeds every resample is enumerated
(exact and deterministic; for three seeds the interval is close to the seeds' range); with more, a
fixed-seed generator draws :data:`RESAMPLES` of them, so reruns give the same numbers.
"""

import itertools

import numpy as np
import pandas as pd

CDF_MAX_POINTS = 1000
LEVEL = 0.95
EXACT_MAX_SEEDS = 6  # 6^6 = 46,656 resamples
RESAMPLES = 20_000
INTERVAL = "bootstrap95"  # what the figure CSVs' "interval" column says
#: one line for a legend or caption: how the error bars were made
INTERVAL_TEXT = "95 % CI, {n} seeds (bootstrap)"


def bootstrap_means(values: np.ndarray) -> np.ndarray:
    """The means of the bootstrap resamples of ``values``: all of them for a few values, else a
    fixed-seed sample."""
    n = len(values)
    if n <= EXACT_MAX_SEEDS:
        idx = np.array(list(itertools.product(range(n), repeat=n)))
        return values[idx].mean(axis=1)
    rng = np.random.default_rng(20260101)
    return values[rng.integers(0, n, size=(RESAMPLES, n))].mean(axis=1)


def mean_ci(values) -> tuple[float, float, float, int]:
    """(mean, ci_low, ci_high, n) of the finite values; the 95 % percentile bootstrap interval of the
    mean (within [min, max] of the values); empty (NaN) for n < 2."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    n = len(v)
    if n == 0:
        return float("nan"), float("nan"), float("nan"), 0
    m = float(v.mean())
    if n < 2:
        return m, float("nan"), float("nan"), n
    lo, hi = np.quantile(bootstrap_means(v), [(1 - LEVEL) / 2, 1 - (1 - LEVEL) / 2])
    return m, float(min(lo, m)), float(max(hi, m)), n


def seed_stats(runs: pd.DataFrame, keys: list[str], metric: str) -> pd.DataFrame:
    """One row per ``keys`` group, in the groups' first-seen order: status, mean over seeds of
    ``metric`` with its interval, the feasible runs counted (``n_runs``) and how many of them were
    overloaded (``overloaded_runs``; the ``load`` column, :mod:`~tpsim.campaign.slo`)."""
    rows = []
    for key, grp in runs.groupby(keys, sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        ok = grp[grp["status"] == "ok"]
        m, lo, hi, n = mean_ci(ok[metric].tolist())
        overloaded = int((ok["load"] == "overloaded").sum()) if "load" in ok else 0
        rows.append({**dict(zip(keys, key)), "status": "ok" if len(ok) else "infeasible",
                     "value": m, "ci_low": lo, "ci_high": hi, "interval": INTERVAL if n > 1 else "",
                     "n_runs": n if len(ok) else len(grp), "overloaded_runs": overloaded})
    return pd.DataFrame(rows)


def ecdf_points(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted values and their cumulative fractions; above CDF_MAX_POINTS, that many quantiles."""
    v = np.sort(np.asarray(values, dtype=float))
    n = len(v)
    if n <= CDF_MAX_POINTS:
        return v, np.arange(1, n + 1) / n
    idx = np.unique(np.ceil(np.linspace(1, n, CDF_MAX_POINTS)).astype(int)) - 1
    return v[idx], (idx + 1) / n
