"""``ttft_tpot_cdf``: CDFs of TTFT and TPOT per model and TP degree, at the two ends of the x axis
(the slowest and fastest link), seeds pooled.

One row of panels per model (and facet row), TTFT left and TPOT right; each column shares one x
scale.  Overloaded runs are drawn faint -- their TTFT distribution is set by the trace's length, not
by the system, yet a measured replay of the same trace may be just as overloaded -- and the legend
says so; infeasible runs are named under the row.  Measured runs are black lines.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tpsim.campaign.figure_axes import figure_scale
from tpsim.campaign.figure_bars import x_ends
from tpsim.campaign.figure_context import Context, same_value, value_label
from tpsim.campaign.figure_parts import (
    DASHES,
    MEASURED_COLOR,
    fit_legend,
    grid,
    infeasible_label,
    note_panel,
    plt,
    row_notes,
    save,
    series_style,
    set_ylabel,
    write_csv,
)
from tpsim.campaign.figure_stats import ecdf_points

CSV_COLUMNS = ["facet", "model", "tp_size", "x", "metric", "status", "value_ms", "cdf"]
PANELS = (("ttft", "TTFT"), ("tpot", "TPOT"))
FAINT_ALPHA, FAINT_WIDTH = 0.45, 0.8  # an overloaded run's CDF



class CdfPanels:
    def __init__(self, ctx: Context, runs: pd.DataFrame, requests: pd.DataFrame, xs: list):
        self.ctx, self.runs, self.requests, self.xs = ctx, runs, requests, xs
        self.style = series_style(ctx.tps)
        self.rows: list[dict] = []
        self.drawn_tps, self.drawn_xs, self.measured, self.overloaded = set(), set(), False, False
        self.values = {"ttft": [], "tpot": []}

    def draw(self, ax, row: tuple, model, metric: str) -> list[str]:
        """Draw one panel; return its notes for the row ("TP=1: does not fit")."""
        left_out: dict = {}  # (tp, reason) of what is not drawn
        facet = self.ctx.row_label(row)
        for tp in self.ctx.tps:
            for j, x in enumerate(self.xs):
                reason = self._series(ax, row, facet, model, tp, j, x, metric)
                if reason:
                    left_out[(tp, reason)] = True
        self._measured(ax, row, model, metric)
        return note_panel(ax, [f"TP={tp}: {reason}" for tp, reason in left_out])

    def _series(self, ax, row, facet, model, tp, j, x, metric) -> str | None:
        """Draw one CDF; return why it is not drawn (None when it is, or when there is no such run)."""
        runs = self.ctx.select(self.runs, row)
        run = runs[(runs["model"] == model) & (runs["tp_size"] == tp) & runs[self.ctx.x_key].map(
            lambda v: same_value(v, x))]
        base = {"facet": facet, "model": model, "tp_size": tp, "x": x, "metric": metric}
        if run.empty:
            return None
        if (run["status"] != "ok").all():
            self.rows.append({**base, "status": "infeasible", "value_ms": np.nan, "cdf": np.nan})
            return infeasible_label(run)
        overloaded = "load" in run and (run["load"] == "overloaded").any()
        d = self.requests[self.requests["run_id"].isin(run["run_id"])]
        if metric == "tpot":
            d = d[d["output_tokens"] > 1]
        if d.empty:
            return None
        xs, ys = ecdf_points(d[f"{metric}_ns"].to_numpy() / 1e6)
        status = "overloaded" if overloaded else "ok"
        self.rows += [{**base, "status": status, "value_ms": a, "cdf": b} for a, b in zip(xs, ys)]
        ax.step(np.concatenate([[xs[0]], xs]), np.concatenate([[0.0], ys]), where="post",
                color=self.style[tp]["color"], linestyle=DASHES[j % len(DASHES)],
                linewidth=FAINT_WIDTH if overloaded else 1.0, alpha=FAINT_ALPHA if overloaded else 1.0)
        self.overloaded |= bool(overloaded)
        self.values[metric] += [xs[0], xs[-1]]
        self.drawn_tps.add(tp)
        self.drawn_xs.add(j)
        return None

    def _measured(self, ax, row, model, metric: str) -> None:
        reqs = self.ctx.measured_requests
        for _, m in self.ctx.measured(model, row).iterrows():
            d = reqs[(reqs["measured_id"] == m["measured_id"])].dropna(subset=[f"{metric}_ns"])
            if metric == "tpot":
                d = d[d["output_tokens"] > 1]
            if d.empty:
                continue
            xs, ys = ecdf_points(d[f"{metric}_ns"].to_numpy() / 1e6)
            self.rows += [{"facet": self.ctx.row_label(row), "model": model, "tp_size": m["tp_size"],
                           "x": m.get(self.ctx.x_key), "metric": metric, "status": "measured", "value_ms": a, "cdf": b}
                          for a, b in zip(xs, ys)]
            ax.step(np.concatenate([[xs[0]], xs]), np.concatenate([[0.0], ys]), where="post", color=MEASURED_COLOR,
                    linewidth=1.3)
            self.values[metric] += [xs[0], xs[-1]]
            self.measured = True

    def handles(self) -> list:
        handles = [plt.Line2D([], [], color=self.style[tp]["color"], label=f"TP={tp}")
                   for tp in self.ctx.tps if tp in self.drawn_tps]
        if len(self.xs) > 1:
            handles += [plt.Line2D([], [], color="0.3", linestyle=DASHES[j % len(DASHES)],
                                   label=value_label(self.ctx.x_key, x)) for j, x in enumerate(self.xs)
                        if j in self.drawn_xs]
        if self.overloaded:
            handles.append(plt.Line2D([], [], color="0.3", linewidth=FAINT_WIDTH, alpha=FAINT_ALPHA,
                                      label="overloaded (faint)"))
        if self.measured:
            handles += [plt.Line2D([], [], color=MEASURED_COLOR, linewidth=1.3, label=label)
                        for label in self.ctx.measured_runs["label"].drop_duplicates()]
        return handles


def fig_cdf(ctx: Context, runs: pd.DataFrame, requests: pd.DataFrame, out: dict) -> None:
    xs = x_ends(ctx)
    panels = [(row, model) for row in ctx.rows for model in ctx.models]
    labels = [f"{ctx.model_label(m)}" + (f", {ctx.row_label(r)}" if r else "") for r, m in panels]
    fig, axes = grid(labels if len(panels) > 1 else [""], 2, sharex="col", sharey=True, row_height=1.7)
    cdf = CdfPanels(ctx, runs, requests, xs)
    for r, (row, model) in enumerate(panels):
        notes = []
        for c, (metric, label) in enumerate(PANELS):
            ax = axes[r][c]
            notes += cdf.draw(ax, row, model, metric)
            ax.set_title(label if len(panels) > 1 else f"{ctx.model_label(model)}: {label}")
            if r == len(panels) - 1:
                ax.set_xlabel(f"{label} (ms)")
            if c == 0:
                set_ylabel(ax, "fraction of requests")
        row_notes(axes[r], notes)
    for c, (metric, _) in enumerate(PANELS):
        figure_scale(axes[0][c], cdf.values[metric], which="x")
    axes[0][0].set_ylim(0, 1.02)
    write_csv(pd.DataFrame(cdf.rows, columns=CSV_COLUMNS), out["csv"])
    fit_legend(fig, cdf.handles())
    save(fig, out["pdf"], out["png"])
