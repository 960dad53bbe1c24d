"""Bar figures: median TTFT by TP degree (``ttft_by_tp``) and memory per GPU by TP degree
(``memory_by_tp``).

``ttft_by_tp`` has one column of panels per end of the x axis (the slowest and fastest link; every
GPU of a hardware sweep, up to four), bars grouped by model, one per TP; means over seeds with 95 %
bootstrap intervals; overloaded runs outlined; infeasible runs a cross in the TP's colour; measured
runs a black star on their bar.  ``memory_by_tp`` stacks weights, activations + reserve and
KV-cache capacity to the memory budget; a run that does not fit shows what it needs (weights and
activations + reserve, no KV cache) above the budget line, with a cross.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tpsim.campaign.figure_axes import figure_scale
from tpsim.campaign.figure_context import (
    MEMORY_ROW_KEYS,
    Context,
    same_value,
    value_label,
)
from tpsim.campaign.figure_lines import ordered_frame
from tpsim.campaign.figure_parts import (
    MEASURED_COLOR,
    MEASURED_MARKER,
    bar_handle,
    blank_y,
    draw_bar,
    fit_legend,
    grid,
    hide_inner_labels,
    infeasible_handle,
    infeasible_label,
    interval_handle,
    mark_infeasible,
    measured_handle,
    overloaded_handle,
    plt,
    save,
    series_style,
    set_ylabel,
    write_csv,
)
from tpsim.campaign.figure_stats import seed_stats

BAR_GROUP = 0.8  # width of one model's group of bars
MAX_CATEGORY_COLUMNS = 4


def x_ends(ctx: Context) -> list:
    """The two ends of the x axis (the slowest and the fastest link; the first and the last GPU)."""
    xs = ctx.x_values
    return [xs[0], xs[-1]] if len(xs) > 1 else list(xs)


def bar_columns(ctx: Context) -> list:
    """The x values that get a column: both ends of a numeric axis, up to four categories."""
    if ctx.x_numeric or len(ctx.x_values) > MAX_CATEGORY_COLUMNS:
        return x_ends(ctx)
    return list(ctx.x_values)


class Bars:
    """Draws the TTFT bars of the panels and collects what the legend must list."""

    def __init__(self, ctx: Context):
        self.ctx, self.style = ctx, series_style(ctx.tps)
        self.bar_tps, self.cross_tps = set(), set()
        self.values, self.overloaded, self.intervals, self.measured, self.n_seeds = [], False, False, False, 0
        self.width = BAR_GROUP / max(len(ctx.tps), 1)

    def x_of(self, m: int, i: int) -> float:
        return m + (i - (len(self.ctx.tps) - 1) / 2) * self.width

    def draw(self, ax, d: pd.DataFrame, row: tuple, x_value) -> None:
        for m, model in enumerate(self.ctx.models):
            for i, tp in enumerate(self.ctx.tps):
                sel = d[(d["model"] == model) & (d["tp_size"] == tp)]
                if not sel.empty:
                    self._bar(ax, sel.iloc[0], self.x_of(m, i), tp)
            self._measured(ax, model, m, row, x_value)
        ax.set_xticks(np.arange(len(self.ctx.models)), [self.ctx.model_label(m) for m in self.ctx.models])
        ax.set_xlim(-0.5, len(self.ctx.models) - 0.5)

    def _bar(self, ax, r, x: float, tp) -> None:
        st, v = self.style[tp], r["ttft_p50_ms"]
        if r["status"] != "ok" or not np.isfinite(v):
            mark_infeasible(ax, x, st["color"])
            self.cross_tps.add(tp)
            return
        ends, overloaded = draw_bar(ax, x, v, r, st, self.width)
        if ends:
            self.values += ends
            self.intervals, self.n_seeds = True, max(self.n_seeds, int(r["n_runs"]))
        self.overloaded |= overloaded
        self.values.append(v)
        self.bar_tps.add(tp)

    def _measured(self, ax, model, m: int, row: tuple, x_value) -> None:
        found = self.ctx.measured(model, row)
        for _, meas in found.iterrows():
            if self.ctx.x_key in meas and not same_value(meas[self.ctx.x_key], x_value):
                continue
            i = next((j for j, tp in enumerate(self.ctx.tps) if tp == meas["tp_size"]), None)
            if i is None or meas.get("ttft_p50_ms") is None:
                continue
            ax.plot([self.x_of(m, i)], [meas["ttft_p50_ms"]], linestyle="none", marker=MEASURED_MARKER,
                    color=MEASURED_COLOR, markersize=7, zorder=4)
            self.values.append(meas["ttft_p50_ms"])
            self.measured = True

    def handles(self, runs: pd.DataFrame) -> list:
        handles = []
        for tp in self.ctx.tps:
            if tp in self.bar_tps:
                handles.append(bar_handle(self.style[tp], f"TP={tp}"))
            elif tp in self.cross_tps:
                label = infeasible_label(runs[runs["tp_size"] == tp])
                handles.append(infeasible_handle(f"TP={tp}: {label}", self.style[tp]["color"]))
        if self.cross_tps & self.bar_tps:
            both = runs[runs["tp_size"].isin(self.cross_tps & self.bar_tps)]
            handles.append(infeasible_handle(infeasible_label(both)))
        if self.overloaded:
            handles.append(overloaded_handle("bar"))
        if self.measured:
            handles += [measured_handle(label) for label in self.ctx.measured_runs["label"].drop_duplicates()]
        if self.intervals:
            handles.append(interval_handle(self.n_seeds))
        return handles



def fig_ttft_by_tp(ctx: Context, runs: pd.DataFrame, out: dict) -> None:
    cols = bar_columns(ctx)
    sel = runs[runs[ctx.x_key].map(lambda v: any(same_value(v, c) for c in cols))]
    keys = [*ctx.row_keys, ctx.x_key, "model", "tp_size"]
    data = seed_stats(sel, keys, "ttft_p50_ms").rename(columns={"value": "ttft_p50_ms"})
    data = ordered_frame(ctx, data, keys)
    write_csv(data, out["csv"])
    fig, axes = grid([ctx.row_label(r) for r in ctx.rows], len(cols), sharex=False)
    bars = Bars(ctx)
    for r, row in enumerate(ctx.rows):
        for c, x_value in enumerate(cols):
            ax = axes[r][c]
            d = ctx.select(data[data[ctx.x_key].map(lambda v, x=x_value: same_value(v, x))], row)
            bars.draw(ax, d, row, x_value)
            ax.set_title(value_label(ctx.x_key, x_value) if ctx.x_key != "link_bw"
                         else f"link {value_label(ctx.x_key, x_value)}")
            if c == 0:
                set_ylabel(ax, "median TTFT (ms)")
    if bars.values:
        figure_scale(axes[0][0], bars.values)
    else:
        blank_y(axes)
    hide_inner_labels(axes)
    fit_legend(fig, bars.handles(sel))
    save(fig, out["pdf"], out["png"])


MEMORY_PARTS = (("weights_gb", "weights", 0, ""), ("activation_reserve_gb", "activations + reserve", None, ""),
                ("kv_capacity_gb", "KV-cache capacity", 1, "////"))


def memory_data(ctx: Context, runs: pd.DataFrame, keys: list) -> pd.DataFrame:
    rows = []
    for key, grp in runs.groupby([*keys, "model", "tp_size"], sort=False, dropna=False):
        ok = grp[grp["status"] == "ok"]
        src = (ok if len(ok) else grp).iloc[0]
        needs = len(ok) == 0 and pd.notna(src.get("weights_gb"))
        rows.append({**dict(zip([*keys, "model", "tp_size"], key)), "status": "ok" if len(ok) else "infeasible",
                     "weights_gb": src["weights_gb"],
                     "activation_reserve_gb": src["activation_peak_gb"] + src["reserve_gb"],
                     "kv_capacity_gb": src["kv_capacity_gb"] if len(ok) else np.nan, "budget_gb": src["budget_gb"],
                     "memory_needed_gb": src.get("memory_needed_gb"), "kv_capacity_tokens": src["kv_capacity_tokens"],
                     "needs_known": bool(len(ok) or needs)})
    return ordered_frame(ctx, pd.DataFrame(rows), [*keys, "model", "tp_size"])


def fig_memory_by_tp(ctx: Context, runs: pd.DataFrame, out: dict) -> None:
    keys = [k for k in MEMORY_ROW_KEYS if k in ctx.row_keys or (k == ctx.x_key and k == "hardware")]
    rows = ctx.rows_for(keys)
    data = memory_data(ctx, runs, keys)
    write_csv(data.drop(columns=["needs_known"]), out["csv"])
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    parts = [(k, label, colors[c] if c is not None else "0.7", hatch) for k, label, c, hatch in MEMORY_PARTS]
    fig, axes = grid([ctx.row_label(r, keys) for r in rows], len(ctx.models), sharex=False)
    crosses = budget = False
    values = []
    for r, row in enumerate(rows):
        for c, model in enumerate(ctx.models):
            ax = axes[r][c]
            d = ctx.select(data[data["model"] == model], row, keys)
            for x, tp in enumerate(ctx.tps):
                sel = d[d["tp_size"] == tp]
                if sel.empty:
                    continue
                top = _memory_bar(ax, sel.iloc[0], x, parts)
                crosses |= sel.iloc[0]["status"] != "ok"
                values.append(top)
            budgets = d["budget_gb"].dropna().round(3).unique()
            if len(budgets) == 1:
                ax.axhline(budgets[0], color="black", linestyle=":", linewidth=0.8)
                budget = True
                values.append(budgets[0])
            ax.set_xticks(range(len(ctx.tps)), [f"TP={tp}" for tp in ctx.tps])
            ax.set_xlim(-0.5, len(ctx.tps) - 0.5)
            ax.set_title(ctx.model_label(model))
            if c == 0:
                set_ylabel(ax, "memory per GPU (GB)")
    axes[0][0].set_ylim(0, max([v for v in values if np.isfinite(v)] or [1]) * 1.08)
    hide_inner_labels(axes)
    handles = [plt.Rectangle((0, 0), 1, 1, facecolor=color, hatch=hatch, edgecolor="black", linewidth=0.4, label=label)
               for _, label, color, hatch in parts]
    if budget:
        handles.append(plt.Line2D([], [], color="black", linestyle=":", linewidth=0.8,
                                  label="budget (memory x mem_util)"))
    if crosses:
        handles.append(infeasible_handle(infeasible_label(runs) + " (its needs, no KV cache)"))
    fit_legend(fig, handles)
    save(fig, out["pdf"], out["png"])


def _memory_bar(ax, row, x: int, parts) -> float:
    """One stacked bar; its top (GB).  A run that does not fit: what it needs and a cross above it."""
    bottom = 0.0
    for key, _label, color, hatch in parts:
        value = row[key]
        if not np.isfinite(value):
            continue
        ax.bar(x, value, 0.6, bottom=bottom, color=color, hatch=hatch, edgecolor="black", linewidth=0.4)
        bottom += value
    if row["status"] != "ok":
        if bottom > 0:
            ax.plot([x], [bottom * 1.03], marker="x", color="0.3", markersize=5, markeredgewidth=1.2, linestyle="none")
        else:
            mark_infeasible(ax, x, "0.3")
    return bottom * 1.03
