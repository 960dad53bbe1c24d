"""Line figures: one run statistic against the campaign's x axis (link bandwidth; else the GPU, the
request rate, ...), one line per TP degree, one panel per model, one row of panels per facet row.

Every panel shares one y scale and range (log when the figure's values span more than 30 times);
points are means over seeds with 95 % bootstrap intervals; overloaded runs are drawn hollow;
infeasible TP degrees are named in the panel; measured runs are black stars.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tpsim.campaign.figure_axes import figure_scale, log_axis
from tpsim.campaign.figure_context import AXIS_LABELS, Context, same_value, x_tick
from tpsim.campaign.figure_parts import (
    MEASURED_COLOR,
    MEASURED_MARKER,
    fit_legend,
    grid,
    hide_inner_labels,
    infeasible_label,
    interval_handle,
    line_handle,
    measured_handle,
    note_panel,
    overloaded_handle,
    plt,
    row_notes,
    save,
    series_style,
    set_ylabel,
    write_csv,
)
from tpsim.campaign.figure_stats import seed_stats

#: how far apart (in category widths) the TP degrees' points sit over a categorical x axis
CATEGORY_DODGE = 0.12


class Metric:
    """What a line figure plots: a ``runs`` column, its axis label, a scale factor (1 or 100 for
    percent), a fixed axis range (None: from the data), whether the axis must be linear from 0 (a
    value that can be 0, such as goodput, would vanish from a log axis), and whether measured runs
    have it."""

    def __init__(self, column: str, label: str, factor: float = 1.0, fixed: tuple | None = None,
                 linear: bool = False, measured: bool = False):
        self.column, self.label, self.factor, self.fixed = column, label, factor, fixed
        self.linear, self.measured = linear, measured


METRICS = {
    "ttft": Metric("ttft_p50_ms", "median TTFT (ms)", measured=True),
    "tpot": Metric("tpot_p50_ms", "median TPOT (ms)", measured=True),
    "throughput": Metric("output_tokens_per_s_per_gpu", "output tokens/s per GPU"),
    "slo_attainment": Metric("slo_attainment", "SLO attainment (% of requests)", factor=100.0, fixed=(0, 105)),
    "goodput": Metric("goodput_output_tokens_per_s_per_gpu", "goodput (output tokens/s per GPU)", linear=True),
}


def ordered_frame(ctx: Context, df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """``df`` sorted by ``keys`` in the campaign's order (matrix lists), stable."""
    orders = {"model": ctx.models, "tp_size": ctx.tps, ctx.x_key: ctx.x_values}
    for k, row_values in zip(ctx.row_keys, zip(*ctx.rows)) if ctx.rows and ctx.rows[0] else ():
        orders[k] = list(dict.fromkeys(row_values))

    def rank(col: pd.Series) -> pd.Series:
        order = orders.get(col.name)
        if order is None:
            return col
        return col.map(lambda v: next((i for i, o in enumerate(order) if same_value(o, v)), len(order)))

    return df.sort_values(keys, kind="stable", key=rank).reset_index(drop=True)



def x_position(ctx: Context, value) -> float:
    """Where a value sits on the x axis: itself (numeric), else its index in the campaign's order."""
    if ctx.x_numeric:
        return float(value)
    return float(next(i for i, v in enumerate(ctx.x_values) if same_value(v, value)))


def line_data(ctx: Context, runs: pd.DataFrame, metric: Metric) -> pd.DataFrame:
    keys = [*ctx.row_keys, "model", "tp_size", ctx.x_key]
    data = seed_stats(runs, keys, metric.column)
    data = data.rename(columns={"value": metric.column})
    for col in (metric.column, "ci_low", "ci_high"):
        data[col] = data[col] * metric.factor
    data["source"] = "simulated"
    return ordered_frame(ctx, data, keys)


def _measured_rows(ctx: Context, metric: Metric) -> pd.DataFrame:
    m = ctx.measured_runs
    if not metric.measured or m is None or m.empty:
        return pd.DataFrame()
    cols = [*ctx.row_keys, "model", "tp_size", ctx.x_key]
    rows = m[[c for c in cols if c in m] + ["label", metric.column]].copy()
    rows["status"], rows["source"] = "measured", "measured"
    return rows


class LinePanel:
    """Draws one panel's lines and collects what the legend must list."""

    def __init__(self, ctx: Context, metric: Metric, style: dict):
        self.ctx, self.metric, self.style = ctx, metric, style
        self.drawn_tps, self.values = set(), []
        self.overloaded = self.intervals = self.measured = False
        self.n_seeds = 0

    def draw(self, ax, d: pd.DataFrame, sub_runs: pd.DataFrame, row: tuple, model) -> list[str]:
        """Draw the panel; return its notes for the row (what it leaves out)."""
        notes = []
        col = self.metric.column
        for tp in self.ctx.tps:
            line = d[d["tp_size"] == tp]
            okl = line[(line["status"] == "ok") & np.isfinite(line[col].astype(float))]
            if line.empty:
                continue
            if okl.empty:
                notes.append(f"TP={tp}: {infeasible_label(sub_runs[sub_runs['tp_size'] == tp])}")
                continue
            self._line(ax, okl, tp)
        self._measured(ax, row, model)
        return note_panel(ax, notes)

    def _line(self, ax, okl: pd.DataFrame, tp) -> None:
        """One TP's points: a line over a numeric x axis; over categories (GPUs) points side by side,
        unjoined (a line between two GPUs would mean nothing)."""
        col, st = self.metric.column, self.style[tp]
        dodge = 0.0 if self.ctx.x_numeric else CATEGORY_DODGE * (self.ctx.tps.index(tp) - (len(self.ctx.tps) - 1) / 2)
        xs = [x_position(self.ctx, v) + dodge for v in okl[self.ctx.x_key]]
        ys = okl[col].astype(float).to_numpy()
        lo, hi = okl["ci_low"].astype(float).to_numpy(), okl["ci_high"].astype(float).to_numpy()
        has_ci = np.isfinite(lo)
        yerr = np.vstack([np.where(has_ci, ys - lo, 0), np.where(has_ci, hi - ys, 0)]) if has_ci.any() else None
        ax.errorbar(xs, ys, yerr=yerr, color=st["color"], marker=st["marker"],
                    linestyle=st["dash"] if self.ctx.x_numeric else "none")
        hollow = (okl["overloaded_runs"] > 0).to_numpy()
        if hollow.any():
            ax.plot(np.asarray(xs)[hollow], ys[hollow], linestyle="none", marker=st["marker"], markerfacecolor="white",
                    markeredgecolor=st["color"], zorder=3)
            self.overloaded = True
        self.values += list(ys) + list(lo[has_ci]) + list(hi[has_ci])
        self.intervals |= bool(has_ci.any())
        self.n_seeds = max(self.n_seeds, int(okl["n_runs"].max()))
        self.drawn_tps.add(tp)

    def _measured(self, ax, row: tuple, model) -> None:
        if not self.metric.measured:
            return
        for _, m in self.ctx.measured(model, row).iterrows():
            value = m.get(self.metric.column)
            if value is None or not np.isfinite(value) or self.ctx.x_key not in m or pd.isna(m[self.ctx.x_key]):
                continue
            ax.plot([x_position(self.ctx, m[self.ctx.x_key])], [value], linestyle="none", marker=MEASURED_MARKER,
                    color=MEASURED_COLOR, markersize=7, zorder=4)
            self.values.append(value)
            self.measured = True

    def handles(self) -> list:
        handles = [line_handle(self.style[tp], f"TP={tp}") if self.ctx.x_numeric else
                   plt.Line2D([], [], color=self.style[tp]["color"], marker=self.style[tp]["marker"], linestyle="none",
                              label=f"TP={tp}") for tp in self.ctx.tps if tp in self.drawn_tps]
        if self.overloaded:
            handles.append(overloaded_handle("line"))
        if self.measured:
            labels = self.ctx.measured_runs["label"].drop_duplicates().tolist()
            handles += [measured_handle(label) for label in labels]
        if self.intervals:
            handles.append(interval_handle(self.n_seeds))
        return handles


def fig_vs_x(ctx: Context, runs: pd.DataFrame, out: dict, name: str) -> None:
    """The figure ``<name>_vs_<x>``: METRICS[name] against the campaign's x axis."""
    metric = METRICS[name]
    data = line_data(ctx, runs, metric)
    write_csv(pd.concat([data, _measured_rows(ctx, metric)], ignore_index=True), out["csv"])
    fig, axes = grid([ctx.row_label(r) for r in ctx.rows], len(ctx.models))
    panel = LinePanel(ctx, metric, series_style(ctx.tps))
    for r, row in enumerate(ctx.rows):
        notes = []
        for c, model in enumerate(ctx.models):
            ax = axes[r][c]
            sel = (data["model"] == model) & (data["source"] == "simulated")
            d = ctx.select(data[sel], row)
            found = panel.draw(ax, d, ctx.select(runs[runs["model"] == model], row), row, model)
            notes += [f"{ctx.model_label(model)} {n}" if len(ctx.models) > 1 else n for n in found]
            ax.set_title(ctx.model_label(model))
            if r == len(ctx.rows) - 1:
                ax.set_xlabel(AXIS_LABELS[ctx.x_key])
            if c == 0:
                set_ylabel(ax, metric.label)
        row_notes(axes[r], notes)
    _finish_axes(ctx, axes, panel, metric)
    fit_legend(fig, panel.handles() + _target_handle(ctx, name, axes))
    save(fig, out["pdf"], out["png"])


def _finish_axes(ctx: Context, axes, panel: LinePanel, metric: Metric) -> None:
    lead = axes[0][0]
    if metric.fixed:
        lead.set_ylim(*metric.fixed)
    else:
        figure_scale(lead, panel.values, force_linear=metric.linear)
    if ctx.x_numeric:
        xs = [float(v) for v in ctx.x_values]
        if ctx.x_key == "link_bw" or (xs and min(xs) > 0 and max(xs) / min(xs) > 8):
            log_axis(lead, "x", min(xs), max(xs))
        lead.set_xticks(xs, [x_tick(ctx.x_key, v) for v in ctx.x_values])
        lead.minorticks_off()
    else:
        lead.set_xticks(range(len(ctx.x_values)), [x_tick(ctx.x_key, v) for v in ctx.x_values])
        lead.set_xlim(-0.5, len(ctx.x_values) - 0.5)
    hide_inner_labels(axes)


def _target_handle(ctx: Context, name: str, axes) -> list:
    """The required attainment as a dotted line in every panel (SLO attainment only)."""
    if name != "slo_attainment" or ctx.slo is None:
        return []

    for row in axes:
        for ax in row:
            if ax.axison:
                ax.axhline(ctx.slo.attainment * 100, color="black", linestyle=":", linewidth=0.8)
    thresholds = ctx.slo.describe().split(" for ")[0].replace("<=", "\u2264")
    return [plt.Line2D([], [], color="black", linestyle=":", linewidth=0.8,
                       label=f"required: {ctx.slo.attainment * 100:g} %\n({thresholds})")]
