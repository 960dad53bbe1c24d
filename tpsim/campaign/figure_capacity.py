"""A capacity search's figures, from its ``capacity`` and ``probes`` tables.

* ``capacity_by_tp``: per model, the goodput per GPU at each configuration's capacity (the highest
  request rate meeting the SLO), by TP degree, one bar per value of the campaign's x key (link
  bandwidth, GPU, ...) -- the figure that picks a TP degree; means over seeds with 95 % bootstrap
  intervals; a configuration that does not fit is a cross, one that meets the SLO at no rate an open
  circle on the axis, one still passing at ``max_rate`` an arrow (its capacity is at least that).
* ``pareto_throughput_latency``: per model, every stable probe of every configuration as output
  tokens/s per GPU against median TPOT, and the Pareto front over them (no other probe is both
  faster per token and higher in throughput per GPU); overloaded probes are left out and counted
  under the row.
* ``attainment_vs_rate``: per model, SLO attainment against the probed rates of each configuration,
  with the required attainment: how each search closed in on its capacity.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tpsim.campaign.figure_axes import figure_scale, log_axis
from tpsim.campaign.figure_bars import BAR_GROUP
from tpsim.campaign.figure_context import Context, same_value, value_label
from tpsim.campaign.figure_lines import ordered_frame
from tpsim.campaign.figure_parts import (
    DASHES,
    NOTE_COLOR,
    bar_handle,
    blank_y,
    fit_legend,
    grid,
    hide_inner_labels,
    infeasible_handle,
    interval_handle,
    line_handle,
    mark_infeasible,
    note_panel,
    plt,
    row_notes,
    save,
    series_style,
    set_ylabel,
    write_csv,
)
from tpsim.campaign.figure_stats import seed_stats

GOODPUT = "cap_goodput_output_tokens_per_s_per_gpu"


def _series_label(ctx: Context, value) -> str:
    return value_label(ctx.x_key, value)


class CapacityBars:
    def __init__(self, ctx: Context):
        self.ctx, self.style = ctx, series_style(ctx.x_values)
        self.width = BAR_GROUP / max(len(ctx.x_values), 1)
        self.values, self.drawn, self.marks, self.n_seeds = [], set(), set(), 0

    def draw(self, ax, d: pd.DataFrame) -> None:
        for t, tp in enumerate(self.ctx.tps):
            for j, xv in enumerate(self.ctx.x_values):
                sel = d[(d["tp_size"] == tp) & d[self.ctx.x_key].map(lambda v, xv=xv: same_value(v, xv))]
                if not sel.empty:
                    self._bar(ax, sel.iloc[0], t + (j - (len(self.ctx.x_values) - 1) / 2) * self.width, xv)
        ax.set_xticks(range(len(self.ctx.tps)), [f"TP={tp}" for tp in self.ctx.tps])
        ax.set_xlim(-0.5, len(self.ctx.tps) - 0.5)

    def _bar(self, ax, r, x: float, xv) -> None:
        st = self.style[xv]
        if r["status"] == "infeasible":
            mark_infeasible(ax, x, st["color"])
            self.marks.add("infeasible")
            return
        if r["status"] == "unattainable" or not np.isfinite(r[GOODPUT]):
            ax.plot([x], [0.04], marker="o", markerfacecolor="white", color=st["color"], markersize=4,
                    transform=ax.get_xaxis_transform(), clip_on=False, linestyle="none")
            self.marks.add("unattainable")
            return
        yerr = None
        if np.isfinite(r["ci_low"]):
            yerr = [[r[GOODPUT] - r["ci_low"]], [r["ci_high"] - r[GOODPUT]]]
            self.values += [r["ci_low"], r["ci_high"]]
            self.n_seeds = max(self.n_seeds, int(r["n_runs"]))
        ax.bar(x, r[GOODPUT], self.width, yerr=yerr, color=st["color"], hatch=st["hatch"], edgecolor="black",
               linewidth=0.4)
        if r["above_max_rate"]:
            ax.annotate("", xy=(x, r[GOODPUT] * 1.12), xytext=(x, r[GOODPUT]),
                        arrowprops={"arrowstyle": "->", "color": NOTE_COLOR, "lw": 0.8})
            self.marks.add("above")
        self.values.append(r[GOODPUT])
        self.drawn.add(xv)

    def handles(self) -> list:
        handles = [bar_handle(self.style[xv], _series_label(self.ctx, xv)) for xv in self.ctx.x_values
                   if xv in self.drawn]
        if "infeasible" in self.marks:
            handles.append(infeasible_handle("does not fit"))
        if "unattainable" in self.marks:
            handles.append(plt.Line2D([], [], marker="o", markerfacecolor="white", color=NOTE_COLOR, linestyle="none",
                                      markersize=4, label="SLO met at no rate"))
        if "above" in self.marks:
            handles.append(plt.Line2D([], [], marker=r"$\uparrow$", color=NOTE_COLOR, linestyle="none",
                                      label="still met at max_rate"))
        if self.n_seeds > 1:
            handles.append(interval_handle(self.n_seeds))
        return handles


def capacity_data(ctx: Context, capacity: pd.DataFrame) -> pd.DataFrame:
    keys = [*ctx.row_keys, "model", "tp_size", ctx.x_key]
    cap = capacity
    ok = cap.assign(status=np.where(cap["status"] == "infeasible", "infeasible", "ok"))
    data = seed_stats(ok, keys, GOODPUT).rename(columns={"value": GOODPUT})
    rates = seed_stats(ok, keys, "capacity_rps")
    data["capacity_rps"] = rates["value"].to_numpy()
    statuses = cap.groupby(keys, sort=False, dropna=False)["status"].agg(lambda s: "/".join(sorted(set(s))))
    data["search_status"] = statuses.to_numpy()
    data["above_max_rate"] = data["search_status"].str.contains("above_max_rate")
    data.loc[data["search_status"] == "unattainable", "status"] = "unattainable"
    return ordered_frame(ctx, data, keys)


def fig_capacity_by_tp(ctx: Context, capacity: pd.DataFrame, out: dict) -> None:
    data = capacity_data(ctx, capacity)
    write_csv(data.drop(columns=["above_max_rate"]), out["csv"])
    fig, axes = grid([ctx.row_label(r) for r in ctx.rows], len(ctx.models), sharex=False)
    bars = CapacityBars(ctx)
    for r, row in enumerate(ctx.rows):
        for c, model in enumerate(ctx.models):
            ax = axes[r][c]
            bars.draw(ax, ctx.select(data[data["model"] == model], row))
            ax.set_title(ctx.model_label(model))
            if c == 0:
                set_ylabel(ax, "goodput at capacity (output tokens/s per GPU)")
    if bars.values:
        figure_scale(axes[0][0], bars.values, force_linear=True)
    else:
        blank_y(axes)
    hide_inner_labels(axes)
    fit_legend(fig, bars.handles())
    save(fig, out["pdf"], out["png"])


def pareto_front(points: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """The points no other point beats on both (lower ``x``, higher ``y``), by ascending ``x``."""
    front, best = [], -np.inf
    for _, p in points.sort_values([x, y], ascending=[True, False], kind="stable").iterrows():
        if p[y] > best:
            front.append(p)
            best = p[y]
    return pd.DataFrame(front)


PARETO_X, PARETO_Y = "tpot_p50_ms", "output_tokens_per_s_per_gpu"


def _pareto_panel(ctx: Context, ax, d: pd.DataFrame, styles: tuple) -> tuple[pd.DataFrame, list[str]]:
    """One panel's stable probes and their front; returns (the stable probes drawn, notes)."""
    tp_style, x_style = styles
    stable = d[d["load"] != "overloaded"].dropna(subset=[PARETO_X, PARETO_Y])
    for (tp, xv), pts in stable.groupby(["tp_size", ctx.x_key], sort=False):
        j = next(i for i, v in enumerate(ctx.x_values) if same_value(v, xv))
        ax.plot(pts[PARETO_X], pts[PARETO_Y], linestyle="none", marker=x_style[ctx.x_values[j]]["marker"],
                color=tp_style[tp]["color"], markersize=3.5, alpha=0.85)
    front = pareto_front(stable, PARETO_X, PARETO_Y)
    if not front.empty:
        ax.step(front[PARETO_X], front[PARETO_Y], where="post", color="black", linewidth=0.9)
    n_over = int((d["load"] == "overloaded").sum())
    notes = [f"{n_over} overloaded probe{'s' if n_over != 1 else ''}"] if n_over else []
    return stable.assign(on_front=stable.index.isin(front.index)), note_panel(ax, notes)


def _pareto_handles(ctx: Context, styles: tuple) -> list:
    tp_style, x_style = styles
    handles = [plt.Line2D([], [], color=tp_style[tp]["color"], marker="o", linestyle="none", label=f"TP={tp}")
               for tp in ctx.tps]
    if len(ctx.x_values) > 1:
        handles += [plt.Line2D([], [], color=NOTE_COLOR, marker=x_style[xv]["marker"], linestyle="none",
                               label=_series_label(ctx, xv)) for xv in ctx.x_values]
    handles.append(plt.Line2D([], [], color="black", linewidth=0.9, label="Pareto front"))
    if ctx.slo is not None and ctx.slo.tpot_ms is not None:
        handles.append(plt.Line2D([], [], color=NOTE_COLOR, linestyle=":", linewidth=0.8,
                                  label=f"SLO: TPOT {ctx.slo.tpot_ms:g} ms"))
    return handles


def fig_pareto(ctx: Context, probes: pd.DataFrame, out: dict) -> None:
    styles = (series_style(ctx.tps), series_style(ctx.x_values))
    ok = probes[probes["status"] == "ok"]
    fig, axes = grid([ctx.row_label(r) for r in ctx.rows], len(ctx.models))
    drawn = []
    for r, row in enumerate(ctx.rows):
        notes = []
        for c, model in enumerate(ctx.models):
            ax = axes[r][c]
            stable, found = _pareto_panel(ctx, ax, ctx.select(ok[ok["model"] == model], row), styles)
            drawn.append(stable)
            notes += [f"{ctx.model_label(model)}: {n}" if len(ctx.models) > 1 else n for n in found]
            ax.set_title(ctx.model_label(model))
            if r == len(ctx.rows) - 1:
                ax.set_xlabel("median TPOT (ms)")
            if c == 0:
                set_ylabel(ax, "output tokens/s per GPU")
            if ctx.slo is not None and ctx.slo.tpot_ms is not None and ax.axison:
                ax.axvline(ctx.slo.tpot_ms, color=NOTE_COLOR, linestyle=":", linewidth=0.8)
        row_notes(axes[r], notes)
    points = pd.concat(drawn) if drawn else pd.DataFrame(columns=[*probes.columns, "on_front"])
    keys = [*ctx.row_keys, "model", "tp_size", ctx.x_key]
    write_csv(ordered_frame(ctx, points[keys + ["seed", "rate", "slo_met", PARETO_X, PARETO_Y, "on_front"]], keys),
              out["csv"])
    if not points.empty:
        figure_scale(axes[0][0], points[PARETO_X].tolist(), which="x")
        figure_scale(axes[0][0], points[PARETO_Y].tolist())
    hide_inner_labels(axes)
    fit_legend(fig, _pareto_handles(ctx, styles))
    save(fig, out["pdf"], out["png"])


def fig_attainment(ctx: Context, probes: pd.DataFrame, out: dict) -> None:
    tp_style = series_style(ctx.tps)
    keys = [*ctx.row_keys, "model", "tp_size", ctx.x_key, "seed"]
    ok = probes[probes["status"] == "ok"].copy()
    ok["slo_attainment_pct"] = ok["slo_attainment"] * 100
    write_csv(ordered_frame(ctx, ok[keys + ["rate", "status", "slo_attainment_pct", "slo_met", "load"]].sort_values(
        "rate", kind="stable"), keys), out["csv"])
    fig, axes = grid([ctx.row_label(r) for r in ctx.rows], len(ctx.models))
    rates = []
    drawn = set()
    for r, row in enumerate(ctx.rows):
        for c, model in enumerate(ctx.models):
            ax = axes[r][c]
            d = ctx.select(ok[ok["model"] == model], row)
            for (tp, xv, _seed), grp in d.groupby(["tp_size", ctx.x_key, "seed"], sort=False):
                grp = grp.sort_values("rate")
                j = next(i for i, v in enumerate(ctx.x_values) if same_value(v, xv))
                ax.plot(grp["rate"], grp["slo_attainment_pct"], color=tp_style[tp]["color"],
                        linestyle=DASHES[j % len(DASHES)], marker=tp_style[tp]["marker"], markersize=2.5,
                        linewidth=0.9)
                rates += grp["rate"].tolist()
                drawn.add((tp, j))
            if ctx.slo is not None and ax.lines:
                ax.axhline(ctx.slo.attainment * 100, color="black", linestyle=":", linewidth=0.8)
            note_panel(ax, [])
            ax.set_title(ctx.model_label(model))
            if r == len(ctx.rows) - 1:
                ax.set_xlabel("request rate (req/s)")
            if c == 0:
                set_ylabel(ax, "SLO attainment (% of requests)")
    axes[0][0].set_ylim(0, 105)
    if rates:
        log_axis(axes[0][0], "x", min(rates), max(rates))
    hide_inner_labels(axes)
    handles = [line_handle(tp_style[tp], f"TP={tp}", dash=False) for tp in ctx.tps if any(t == tp for t, _ in drawn)]
    if len(ctx.x_values) > 1:
        handles += [plt.Line2D([], [], color=NOTE_COLOR, linestyle=DASHES[j % len(DASHES)],
                               label=_series_label(ctx, xv)) for j, xv in enumerate(ctx.x_values)]
    if ctx.slo is not None:
        handles.append(plt.Line2D([], [], color="black", linestyle=":", linewidth=0.8,
                                  label=f"required {ctx.slo.attainment * 100:g} %"))
    fit_legend(fig, handles)
    save(fig, out["pdf"], out["png"])
