"""The parts every campaign figure is made of: labels, facets (rows of panels), TP styles, notes for
infeasible runs, the grid of panels, and writing a figure (PDF + PNG without timestamps) and its
numbers (CSV) so that a rerun gives byte-identical files."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import pandas as pd

from tpsim.io.writing import AtomicFiles

matplotlib.use("Agg")  # files only, never a display; before any figure exists

FACET_KEYS = ("hardware", "link_latency", "rate", "max_num_seqs", "max_num_batched_tokens")
MEMORY_FACET_KEYS = ("hardware", "max_num_seqs", "max_num_batched_tokens")
HATCHES = ("", "////", "....", "xxxx", "\\\\\\\\", "oo", "++", "--")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
DASHES = ("-", "--", "-.", ":")
DOES_NOT_FIT = "does not fit"


def short_model(name: str, all_names) -> str:
    """The model's label: its last path part unless two models share it; '$' escaped (matplotlib
    would read text between two '$' as math, and fail on some)."""
    short = name.rsplit("/", 1)[-1]
    clash = sum(1 for n in all_names if n.rsplit("/", 1)[-1] == short) > 1
    return (name if clash else short).replace("$", r"\$")


def fmt_num(x) -> str:
    if x is None or pd.isna(x):
        return "n/a"
    x = float(x)
    return str(int(x)) if x.is_integer() else f"{x:g}"


def facet_columns(runs: pd.DataFrame, keys=FACET_KEYS) -> list[str]:
    return [k for k in keys if runs[k].nunique(dropna=False) > 1]


def facet_label(row, cols) -> str:
    return ", ".join(f"{c}={row[c] if isinstance(row[c], str) else fmt_num(row[c])}" for c in cols)


def ordered(values) -> list:
    """Distinct values in first-seen order (the campaign's matrix order)."""
    seen = []
    for v in values:
        if v not in seen:
            seen.append(v)
    return seen


def with_facets(runs: pd.DataFrame, cols) -> pd.DataFrame:
    runs = runs.copy()
    runs["facet"] = [facet_label(r, cols) for _, r in runs.iterrows()] if cols else ""
    return runs


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


def tp_style(tps: list) -> dict:
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return {tp: {"color": colors[i % len(colors)], "hatch": HATCHES[i % len(HATCHES)],
                 "marker": MARKERS[i % len(MARKERS)]} for i, tp in enumerate(tps)}


def grid(nrows: int, ncols: int, width: float = 7.0, row_height: float = 2.0, sharey=False):
    ncols = max(ncols, 1)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width if ncols > 1 else 3.4, row_height * nrows + 0.4),
                             squeeze=False, layout="constrained", sharey=sharey)
    return fig, axes


def mark_infeasible(ax, x: float, color) -> None:
    """A cross at the bottom of the panel where a bar or point would be."""
    ax.plot([x], [0.04], marker="x", color=color, markersize=5, markeredgewidth=1.2,
            transform=ax.get_xaxis_transform(), clip_on=False, linestyle="none")


def infeasible_label(runs: pd.DataFrame) -> str:
    """"does not fit" for memory, "infeasible" for other reasons; both joined when both occur."""
    bad = runs[runs["status"] != "ok"]
    reasons = bad["reason"].fillna("") if "reason" in bad else pd.Series([""] * len(bad), dtype=object)
    labels = sorted({DOES_NOT_FIT if "does not fit" in r else "infeasible" for r in reasons},
                    key=lambda x: x != DOES_NOT_FIT)
    return " / ".join(labels) or DOES_NOT_FIT


def infeasible_handle(label: str, color="0.3"):
    return plt.Line2D([], [], marker="x", color=color, linestyle="none", markersize=5, label=label)


def note_panel(ax, notes: list[str]) -> None:
    """Name the infeasible series of a panel ("TP=1: does not fit"): bottom right under the drawn lines,
    or, when nothing is drawn, alone in the middle of a panel without ticks (no axis for no data)."""
    if ax.lines:
        if notes:
            ax.text(0.98, 0.04, "\n".join(notes), transform=ax.transAxes, fontsize=6, color="0.3", ha="right",
                    va="bottom")
        return
    ax.set_xticks([])
    ax.set_yticks([])
    ax.text(0.5, 0.5, "\n".join(notes) or "no data", transform=ax.transAxes, fontsize=6, color="0.3",
            ha="center", va="center")


def empty_figure(pdf, png, message):
    fig, ax = plt.subplots(figsize=(3.4, 1.2))
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes)
    save(fig, pdf, png)
