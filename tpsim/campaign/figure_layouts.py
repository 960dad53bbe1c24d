"""``layouts_by_gpus``: tensor- against expert-parallel layouts at equal GPU count.

Drawn for a campaign whose matrix has ``dp_size`` or ``ep_size`` and more than one layout at some GPU
count (:func:`tpsim.campaign.outputs.layout_figure`).  Three columns of panels -- mean TTFT, mean TPOT
and output tokens/s per GPU -- and one row per model (and per facet row and end of the x axis, as in
``ttft_by_tp``); in each panel the GPU counts (``num_gpus`` = DP x TP x PP) side by side, one bar per
layout ("TP4", "TP4·EP4", "DP2·TP2·EP4", "DP4·EP4": :func:`tpsim.campaign.layouts.label`), in the
order GPUs, DP, EP, so that TP-only comes first.  Each metric column has its own y scale (linear from
0, log when its values span more than 30 times); means over seeds with 95 % bootstrap intervals;
overloaded runs outlined; infeasible layouts a cross in their colour.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from tpsim.campaign.figure_axes import figure_scale
from tpsim.campaign.figure_bars import BAR_GROUP, bar_columns
from tpsim.campaign.figure_context import Context, same_value, value_label
from tpsim.campaign.figure_parts import (
    bar_handle,
    draw_bar,
    fit_legend,
    grid,
    infeasible_handle,
    infeasible_label,
    interval_handle,
    mark_infeasible,
    overloaded_handle,
    save,
    series_style,
    set_ylabel,
    write_csv,
)
from tpsim.campaign.figure_stats import seed_stats
from tpsim.campaign.layouts import label

#: the columns of panels: runs column, axis label
METRICS = (("ttft_mean_ms", "mean TTFT (ms)"), ("tpot_mean_ms", "mean TPOT (ms)"),
           ("output_tokens_per_s_per_gpu", "output tokens/s per GPU"))
LAYOUT = ("num_gpus", "dp_size", "tp_size", "ep_size", "pp_size")


def _int(value) -> int | None:
    return None if value is None or pd.isna(value) else int(value)


def with_layouts(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` with a ``layout`` label per run (an unknown EP degree, of a run tpsim could not lay
    out, is "EP?")."""
    out = runs.copy()
    for col in ("dp_size", "ep_size"):
        if col not in out:
            out[col] = np.nan
    out["dp_size"] = out["dp_size"].fillna(out["num_instances"])

    def name(r) -> str:
        ep = _int(r["ep_size"])
        text = label(_int(r["dp_size"]) or 1, int(r["tp_size"]), ep or 1, _int(r["pp_size"]) or 1)
        return text + ("\u00b7EP?" if ep is None else "")

    out["layout"] = [name(r) for _, r in out.iterrows()] if len(out) else []
    return out


def layout_order(runs: pd.DataFrame) -> list[tuple[int, str]]:
    """(GPUs, label) of every layout, ordered by GPUs, then DP, then EP (TP-only first)."""
    keys = runs[[*LAYOUT, "layout"]].drop_duplicates("layout")
    keys = keys.assign(_ep=keys["ep_size"].fillna(0)).sort_values(["num_gpus", "dp_size", "_ep", "pp_size"],
                                                                   kind="stable")
    return [(int(g), lay) for g, lay in zip(keys["num_gpus"], keys["layout"])]


class LayoutBars:
    """Draws one panel's bars and collects what the legend must list."""

    def __init__(self, order: list[tuple[int, str]]):
        self.order = order
        self.gpus = sorted({g for g, _ in order})
        self.style = series_style([lay for _, lay in order])
        widest = max(sum(1 for g, _ in order if g == n) for n in self.gpus)
        self.width = BAR_GROUP / widest
        self.drawn, self.crossed = set(), set()
        self.overloaded = self.intervals = False
        self.n_seeds = 0

    def draw(self, ax, d: pd.DataFrame) -> list[float]:
        values = []
        for g, gpus in enumerate(self.gpus):
            here = [lay for n, lay in self.order if n == gpus]
            for i, lay in enumerate(here):
                sel = d[d["layout"] == lay]
                if not sel.empty:
                    values += self._bar(ax, sel.iloc[0], g + (i - (len(here) - 1) / 2) * self.width, lay)
        ax.set_xticks(range(len(self.gpus)), [f"{g} GPU{'s' if g > 1 else ''}" for g in self.gpus])
        ax.set_xlim(-0.5, len(self.gpus) - 0.5)
        return values

    def _bar(self, ax, r, x: float, lay: str) -> list[float]:
        st, v = self.style[lay], r["value"]
        if r["status"] != "ok" or not np.isfinite(v):
            mark_infeasible(ax, x, st["color"])
            self.crossed.add(lay)
            return []
        ends, overloaded = draw_bar(ax, x, v, r, st, self.width)
        values = [v] + ends
        if ends:
            self.intervals, self.n_seeds = True, max(self.n_seeds, int(r["n_runs"]))
        self.overloaded |= overloaded
        self.drawn.add(lay)
        return values

    def handles(self, runs: pd.DataFrame) -> list:
        handles = []
        for _, lay in self.order:
            if lay in self.drawn:
                handles.append(bar_handle(self.style[lay], lay))
            elif lay in self.crossed:
                handles.append(infeasible_handle(f"{lay}: {infeasible_label(runs[runs['layout'] == lay])}",
                                                 self.style[lay]["color"]))
        if self.crossed & self.drawn:
            handles.append(infeasible_handle(infeasible_label(runs[runs["layout"].isin(self.crossed & self.drawn)])))
        if self.overloaded:
            handles.append(overloaded_handle("bar"))
        if self.intervals:
            handles.append(interval_handle(self.n_seeds))
        return handles


def facets(ctx: Context, runs: pd.DataFrame) -> tuple[list[str], list[tuple]]:
    """The keys of a row of panels (model, the facet rows' keys, the x axis when it varies) and the
    rows that have runs, in the campaign's order."""
    cols = bar_columns(ctx) if len(ctx.x_values) > 1 else []
    keys = ["model", *ctx.row_keys, *([ctx.x_key] if cols else [])]
    rows = [(m, *row, *x) for m, row, x in itertools.product(ctx.models, ctx.rows, [(c,) for c in cols] or [()])]
    return keys, [row for row in rows if _row_index([row], keys, runs) is not None]


def _facet_label(ctx: Context, keys: list[str], row: tuple) -> str:
    parts = [ctx.model_label(row[0])]
    for k, v in zip(keys[1:], row[1:]):
        parts.append(f"link {value_label(k, v)}" if k == "link_bw" else value_label(k, v))
    return ", ".join(parts)


def layout_data(runs: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """One row per facet, layout and metric: mean over seeds, interval, status (the figure's CSV)."""
    frames = []
    for column, axis in METRICS:
        stats = seed_stats(runs, [*keys, *LAYOUT, "layout"], column)
        frames.append(stats.assign(metric=column, unit=axis[axis.rfind("(") + 1:-1] if "(" in axis else axis))
    return pd.concat(frames, ignore_index=True)


def fig_layouts_by_gpus(ctx: Context, runs: pd.DataFrame, out: dict) -> None:
    runs = with_layouts(runs)
    keys, rows = facets(ctx, runs)
    data = layout_data(runs, keys)
    order = layout_order(runs)
    data = data.assign(_row=[_row_of(rows, keys, r) for _, r in data.iterrows()],
                       _lay=data["layout"].map({lay: i for i, (_, lay) in enumerate(order)}),
                       _met=data["metric"].map({c: i for i, (c, _) in enumerate(METRICS)}))
    data = data.sort_values(["_row", "_met", "_lay"], kind="stable").drop(columns=["_row", "_lay", "_met"])
    write_csv(data.reset_index(drop=True), out["csv"])
    labels = [_facet_label(ctx, keys, r) for r in rows]
    # one row of panels: its label is the middle panel's title (a row title would sit under the legend)
    fig, axes = grid(labels if len(rows) > 1 else [""], len(METRICS), sharex=False, sharey="col")
    if len(rows) == 1:
        axes[0][len(METRICS) // 2].set_title(labels[0])
    bars = LayoutBars(order)
    values: dict[int, list[float]] = {c: [] for c in range(len(METRICS))}
    for r, row in enumerate(rows):
        sel = data
        for k, v in zip(keys, row):
            sel = sel[sel[k].map(lambda x, v=v: same_value(x, v))]
        for c, (column, axis) in enumerate(METRICS):
            values[c] += bars.draw(axes[r][c], sel[sel["metric"] == column])
            set_ylabel(axes[r][c], axis)
    for c in range(len(METRICS)):
        figure_scale(axes[0][c], values[c])
    fit_legend(fig, bars.handles(runs))
    save(fig, out["pdf"], out["png"])


def _row_of(rows: list[tuple], keys: list[str], r) -> int:
    """The index of the row of panels holding ``r`` (a row of the data)."""
    return next((i for i, row in enumerate(rows) if all(same_value(r[k], v) for k, v in zip(keys, row))), len(rows))


def _row_index(rows: list[tuple], keys: list[str], runs: pd.DataFrame) -> int | None:
    """The first of ``rows`` some run of ``runs`` is in, or None."""
    for i, row in enumerate(rows):
        mask = pd.Series(True, index=runs.index)
        for k, v in zip(keys, row):
            mask &= runs[k].map(lambda x, v=v: same_value(x, v))
        if mask.any():
            return i
    return None
