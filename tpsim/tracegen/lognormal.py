"""The truncated lognormal of ``--*-dist lognormal``: its mass between bounds, median and mean."""

from __future__ import annotations

import math

_NORMAL: list = []


def std_normal():
    """The standard normal distribution (``statistics`` is imported only when a lognormal is used)."""
    if not _NORMAL:
        from statistics import NormalDist

        _NORMAL.append(NormalDist())
    return _NORMAL[0]


def truncation(mu: float, sigma: float, lo: float, hi: float) -> tuple[float, float, float]:
    """(P(X < lo), P(X <= hi), mass in between) for X = exp(N(mu, sigma))."""
    n = std_normal()
    p_lo = n.cdf((math.log(lo) - mu) / sigma)
    p_hi = n.cdf((math.log(hi) - mu) / sigma)
    return p_lo, p_hi, p_hi - p_lo


def truncated_lognormal_stats(mean: float, sigma: float, lo: float, hi: float) -> tuple[float, float]:
    """Median and mean of a lognormal (untruncated ``mean``, shape ``sigma``) truncated to [lo, hi].

    Documents (and lets tests check) what a ``lognormal`` side with bounds draws.
    """
    mu = math.log(mean) - sigma * sigma / 2
    p_lo, p_hi, mass = truncation(mu, sigma, lo, hi)
    n = std_normal()
    median = math.exp(mu + sigma * n.inv_cdf(p_lo + mass / 2))
    a, b = (math.log(lo) - mu) / sigma, (math.log(hi) - mu) / sigma
    tmean = mean * (n.cdf(b - sigma) - n.cdf(a - sigma)) / mass
    return median, tmean
