"""Axes for the campaign figures: one scale for a whole figure (log when its data span more than
:data:`WIDE` times), log axes labelled across their data with plain (not mathtext) labels."""

import math

import numpy as np


def tick_label(v, _pos=None) -> str:
    """Plain tick labels (no mathtext: parsing it dominates the drawing time): 10, 300, 20k, 1.5M."""
    for limit, div, suffix in ((1e6, 1e6, "M"), (1e4, 1e3, "k")):
        if abs(v) >= limit:
            return f"{v / div:g}{suffix}"
    return f"{v:g}"


def short_range_ticks(lo: float, hi: float) -> list[float]:
    """3-6 evenly spaced round ticks (steps 1, 2, 5 x 10^k) inside [lo, hi], for a log axis spanning
    less than a decade, where 1..9 x 10^k would label one or two ticks (9.4-18 ms: only 10)."""
    from matplotlib import ticker

    ticks = [lo]
    for nbins in range(4, 9):
        ticks = [t for t in ticker.MaxNLocator(nbins=nbins, steps=[1, 2, 5, 10]).tick_values(lo, hi)
                 if lo <= t <= hi]
        if len(ticks) >= 3:
            break
    return ticks or [lo]


def log_axis(ax, which: str = "y", lo: float | None = None, hi: float | None = None) -> None:
    """A log axis labelled across its data, or across [lo, hi] when given (the data of every panel
    that shares it): under one decade round linear steps (10, 12, 14, 16), under two 1-2-5 (20, 50,
    100, 200), otherwise the decades; plain labels.  Call it after plotting."""
    from matplotlib import ticker

    axis = ax.yaxis if which == "y" else ax.xaxis
    (ax.set_yscale if which == "y" else ax.set_xscale)("log")
    if lo is None or hi is None:
        lo, hi = (ax.dataLim.intervaly if which == "y" else ax.dataLim.intervalx)
    if np.isfinite(lo) and np.isfinite(hi) and lo > 0:  # short ranges: more labelled ticks
        decades = math.log10(hi / lo)
        if decades < 1:
            axis.set_major_locator(ticker.FixedLocator(short_range_ticks(lo, hi)))
        elif decades < 2:
            axis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(ticker.FuncFormatter(tick_label))
    axis.set_minor_formatter(ticker.NullFormatter())


WIDE = 30  # max / min of a figure's values above which its axis is logarithmic


def positive(values) -> list[float]:
    return [float(x) for x in values if x is not None and np.isfinite(x) and x > 0]


def is_wide(values) -> bool:
    v = positive(values)
    return bool(v) and max(v) / min(v) > WIDE


def figure_scale(ax, values, which: str = "y", force_linear: bool = False) -> bool:
    """One scale for every panel sharing ``ax``'s axis, from all their ``values`` (points and interval
    ends): log when they span more than WIDE times, else linear from zero.  Returns whether it is log."""
    v = positive(values)
    if not v:
        return False
    if not force_linear and is_wide(v):
        log_axis(ax, which, min(v), max(v))
        return True
    if which == "y":
        ax.set_ylim(bottom=0)
    else:
        ax.set_xlim(left=0)
    return False


def log_if_wide(ax, values) -> None:
    if is_wide(values):
        v = positive(values)
        log_axis(ax, "y", min(v), max(v))
