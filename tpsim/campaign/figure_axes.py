"""Log axes for the campaign figures: labelled across their data, with plain (not mathtext) labels."""

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


def log_axis(ax, which: str = "y") -> None:
    """A log axis labelled across its data (call it after plotting): under one decade round linear
    steps (10, 12, 14, 16), under two 1-2-5 (20, 50, 100, 200), otherwise the decades; plain labels."""
    from matplotlib import ticker

    axis = ax.yaxis if which == "y" else ax.xaxis
    (ax.set_yscale if which == "y" else ax.set_xscale)("log")
    lo, hi = (ax.dataLim.intervaly if which == "y" else ax.dataLim.intervalx)
    if np.isfinite(lo) and np.isfinite(hi) and lo > 0:  # short ranges: more labelled ticks
        decades = math.log10(hi / lo)
        if decades < 1:
            axis.set_major_locator(ticker.FixedLocator(short_range_ticks(lo, hi)))
        elif decades < 2:
            axis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(ticker.FuncFormatter(tick_label))
    axis.set_minor_formatter(ticker.NullFormatter())


def log_if_wide(ax, values) -> None:
    v = [x for x in values if x is not None and np.isfinite(x) and x > 0]
    if v and max(v) / min(v) > 30:
        log_axis(ax, "y")
