"""The parts every campaign figure is made of: page widths, the grid of panels (one row of panels per
facet row, one axis scale and range per figure), series styles, legends that fit, marks for
infeasible, overloaded and measured points, and writing a figure (PDF + PNG without timestamps) and
its numbers (CSV) so that a rerun gives byte-identical files.

Figures are exactly one column (3.5 in) or two columns (7.16 in) wide, the widths of two-column
paper templates; everything drawn stays inside (constrained layout; the legend takes as many rows
as it needs).
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import pandas as pd

from tpsim.io.writing import AtomicFiles

matplotlib.use("Agg")  # files only, never a display; before any figure exists

SINGLE_COLUMN_IN = 3.5
DOUBLE_COLUMN_IN = 7.16
ROW_HEIGHT_IN = 1.9
HATCHES = ("", "////", "....", "xxxx", "\\\\\\\\", "oo", "++", "--")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
DASHES = ("-", "--", "-.", ":")
DOES_NOT_FIT = "does not fit"
OVERLOADED = "overloaded"
MEASURED_COLOR = "black"
MEASURED_MARKER = "*"
NOTE_COLOR = "0.3"
NOTE_SIZE = 6


def write_csv(df: pd.DataFrame, path: str) -> None:
    """The plotted numbers, written atomically (floats to 10 significant digits: stable across platforms)."""
    with AtomicFiles() as out:
        df.to_csv(out.open(path), index=False, lineterminator="\n", float_format="%.10g")


def save(fig, pdf: str, png: str) -> None:
    """PDF and PNG without timestamps or version strings: byte-identical on rerun.

    The layout is computed once, for the PDF; the PNG reuses it.  Both appear together (atomically)."""
    with AtomicFiles() as out:
        for path, meta in ((pdf, {"CreationDate": None, "ModDate": None, "Producer": None, "Creator": None}),
                           (png, {"Software": None})):
            fig.savefig(out.reserve(path, Path(path).suffix), metadata=meta)
            fig.set_layout_engine("none")
    plt.close(fig)


def series_style(values: list) -> dict:
    """Colour, hatch and marker per series value (TP degrees, links, ...), in the given order."""
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return {v: {"color": colors[i % len(colors)], "hatch": HATCHES[i % len(HATCHES)],
                "marker": MARKERS[i % len(MARKERS)], "dash": DASHES[i % len(DASHES)]} for i, v in enumerate(values)}


def grid(row_labels: list[str], ncols: int, *, sharex=True, sharey=True, row_height: float = ROW_HEIGHT_IN,
         width: float | None = None):
    """(figure, axes[row][col]): one row of panels per facet row (a sub-figure titled with its label),
    one column (3.5 in wide) or two (7.16 in).  ``sharey`` / ``sharex``: True shares the axis over the
    whole figure (one scale and range), "col" within each column, False not at all."""
    ncols = max(ncols, 1)
    nrows = max(len(row_labels), 1)
    width = width or (SINGLE_COLUMN_IN if ncols == 1 else DOUBLE_COLUMN_IN)
    titled = any(row_labels)
    fig = plt.figure(figsize=(width, nrows * (row_height + (0.15 if titled else 0)) + 0.45), layout="constrained")
    subs = fig.subfigures(nrows, 1, squeeze=False)[:, 0] if nrows > 1 else [fig]
    axes = []
    for sub, label in zip(subs, row_labels or [""]):
        row = sub.subplots(1, ncols, squeeze=False)[0]
        if titled and label:
            sub.suptitle(label, fontsize=plt.rcParams["axes.titlesize"], fontweight="bold")
        axes.append(list(row))
    _share(axes, sharex, "x")
    _share(axes, sharey, "y")
    return fig, axes


def _share(axes, mode, which: str) -> None:
    flat = [ax for row in axes for ax in row]
    for row in axes:
        for c, ax in enumerate(row):
            lead = flat[0] if mode is True else axes[0][c] if mode == "col" else None
            if lead is not None and ax is not lead:
                (ax.sharex if which == "x" else ax.sharey)(lead)


#: a y label longer than this (characters) is broken in two lines: it must fit a row of panels' height
YLABEL_CHARS = 26


def set_ylabel(ax, text: str) -> None:
    """The y label, on two lines when one would be taller than a row of panels: the quantity, then
    its unit in parentheses ("SLO attainment" / "(% of requests)")."""
    import textwrap

    if len(text) > YLABEL_CHARS:
        name, sep, unit = text.rpartition(" (")
        text = f"{name}\n({unit}" if sep and name else textwrap.fill(text, YLABEL_CHARS)
    ax.set_ylabel(text)


def blank_y(axes) -> None:
    """Nothing in the figure has a y value (every run infeasible): no y axis to read, only the marks."""
    for row in axes:
        for ax in row:
            ax.set_yticks([])
            ax.set_ylabel("")
            ax.spines["left"].set_visible(False)


def hide_inner_labels(axes, y=True) -> None:
    """Panels right of the first column repeat the shared y ticks without their labels."""
    for row in axes:
        for ax in row[1:]:
            if y:
                ax.tick_params(labelleft=False)


def fit_legend(fig, handles: list, title: str | None = None):
    """The figure's legend above the panels, in as many columns as fit its width (else more rows)."""
    if not handles:
        return None
    renderer = fig.canvas.get_renderer()
    limit = fig.bbox.width - 4
    for ncols in range(len(handles), 0, -1):
        leg = fig.legend(handles=row_major(handles, ncols), loc="outside upper center", ncols=ncols, title=title)
        if leg.get_window_extent(renderer).width <= limit or ncols == 1:
            return leg
        leg.remove()
    return None


def row_major(handles: list, ncols: int) -> list:
    """``handles`` ordered so that a legend of ``ncols`` columns (which matplotlib fills column by
    column) reads row by row, in the given order; blank entries fill the last row."""
    rows = -(-len(handles) // ncols)
    padded = list(handles) + [plt.Line2D([], [], linestyle="none", label=" ")] * (rows * ncols - len(handles))
    return [padded[r * ncols + c] for c in range(ncols) for r in range(rows)]


def bar_handle(style: dict, label: str):
    return plt.Rectangle((0, 0), 1, 1, facecolor=style["color"], hatch=style["hatch"], edgecolor="black",
                         linewidth=0.4, label=label)


def line_handle(style: dict, label: str, marker=True, dash=True):
    """A series' legend entry: its colour, marker and (``dash``) line style."""
    return plt.Line2D([], [], color=style["color"], marker=style["marker"] if marker else None,
                      linestyle=style["dash"] if dash else "-", label=label)


def infeasible_handle(label: str, color=NOTE_COLOR):
    return plt.Line2D([], [], marker="x", color=color, linestyle="none", markersize=5, label=label)


def overloaded_handle(kind: str = "line"):
    """Legend entry for overloaded points: hollow markers (lines) or outlined bars (bars)."""
    if kind == "bar":
        return plt.Rectangle((0, 0), 1, 1, facecolor="white", edgecolor=NOTE_COLOR, linewidth=0.8,
                             label="overloaded")
    return plt.Line2D([], [], marker="o", color=NOTE_COLOR, markerfacecolor="white", linestyle="none",
                      label="overloaded")


def measured_handle(label: str):
    return plt.Line2D([], [], marker=MEASURED_MARKER, color=MEASURED_COLOR, linestyle="none", markersize=7,
                      label=label)


def interval_handle(n_seeds: int):
    from tpsim.campaign.figure_stats import INTERVAL_TEXT

    return plt.Line2D([], [], color=NOTE_COLOR, marker="|", markersize=8, linestyle="none",
                      label=INTERVAL_TEXT.format(n=n_seeds))


def draw_bar(ax, x: float, value: float, run, style: dict, width: float) -> tuple[list[float], bool]:
    """One bar: ``value`` at ``x`` with its seeds' interval where ``run`` has one (``ci_low`` / ``ci_high``),
    drawn white with a coloured outline when one of its runs was overloaded.  Returns the interval's ends
    ([] without one) and whether it was overloaded."""
    ends = [run["ci_low"], run["ci_high"]] if math.isfinite(run["ci_low"]) else []
    yerr = [[value - ends[0]], [ends[1] - value]] if ends else None
    overloaded = bool(run["overloaded_runs"] > 0)
    ax.bar(x, value, width, yerr=yerr, color="white" if overloaded else style["color"], hatch=style["hatch"],
           edgecolor=style["color"] if overloaded else "black", linewidth=0.9 if overloaded else 0.4)
    return ends, overloaded


def mark_infeasible(ax, x: float, color) -> None:
    """A cross at the bottom of the panel where a bar or point would be (axes coordinates in y, so
    it never moves the axis range)."""
    ax.plot([x], [0.04], marker="x", color=color, markersize=5, markeredgewidth=1.2,
            transform=ax.get_xaxis_transform(), clip_on=False, linestyle="none")


def infeasible_label(runs: pd.DataFrame) -> str:
    """"does not fit" for memory, "infeasible" for other reasons; both joined when both occur."""
    bad = runs[runs["status"] != "ok"]
    reasons = bad["reason"].fillna("") if "reason" in bad else pd.Series([""] * len(bad), dtype=object)
    labels = sorted({DOES_NOT_FIT if "does not fit" in r else "infeasible" for r in reasons},
                    key=lambda x: x != DOES_NOT_FIT)
    return " / ".join(labels) or DOES_NOT_FIT


def note_panel(ax, notes: list[str]) -> list[str]:
    """A panel with nothing drawn shows its notes ("TP=1: does not fit") alone in the middle, without
    axes (no axis for no data), and returns []; a panel with data returns its notes for
    :func:`row_notes` (under the row: never over the data)."""
    if ax.lines or ax.patches or ax.collections:
        return list(notes)
    ax.set_axis_off()
    ax.text(0.5, 0.5, "\n".join(notes) or "no data", transform=ax.transAxes, fontsize=NOTE_SIZE, color=NOTE_COLOR,
            ha="center", va="center")
    return []


def row_notes(row_axes, notes: list[str]) -> None:
    """What a row of panels leaves out ("not drawn: TP=1: does not fit; ..."), as one text under the
    row, wrapped to the figure's width (constrained layout keeps it inside)."""
    import textwrap

    notes = list(dict.fromkeys(n for n in notes if n))
    if not notes:
        return
    sub = row_axes[0].get_figure(root=False)
    width_in = sub.get_figure(root=True).get_figwidth()
    chars = int(width_in * 72 / (NOTE_SIZE * 0.56))
    text = textwrap.fill("not drawn: " + "; ".join(notes), width=chars)
    sub.supxlabel(text, fontsize=NOTE_SIZE, color=NOTE_COLOR)


def empty_figure(pdf, png, message):
    fig, ax = plt.subplots(figsize=(SINGLE_COLUMN_IN, 1.2))
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes)
    save(fig, pdf, png)
