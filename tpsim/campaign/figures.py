"""Campaign figures: PDF (vector, embedded fonts) + PNG + the plotted numbers as CSV.

Reads only the campaign's ``runs.parquet`` and ``requests.parquet`` (from
:mod:`~tpsim.campaign.aggregate`) and the style sheet (:data:`~tpsim.campaign.outputs.STYLE`); writes, for each figure NAME, ``NAME.pdf``, ``NAME.png`` and ``NAME.csv``
(one row per plotted bar / point / CDF step).  Outputs are byte-identical on rerun.

Figures:

* ``ttft_by_tp``       median TTFT per model, one bar per TP, at the slowest and fastest link_bw;
* ``ttft_vs_link_bw``  median TTFT against link_bw, one line per TP, one panel per model;
* ``tpot_vs_link_bw``  the same for TPOT;
* ``memory_by_tp``     per GPU: weights, activations + reserve, KV-cache capacity, by TP;
* ``ttft_tpot_cdf``    CDFs of TTFT and TPOT per model, TP and (slowest / fastest) link_bw.

Infeasible runs are drawn as a cross (bars) or named in a note (lines, CDFs), labelled "does not fit"
when the model does not fit in memory and "infeasible" for any other reason (e.g. tp_size does not
divide the heads); a panel with nothing to draw shows only its notes, without axes, and legends list
only what is drawn.  The figure CSVs keep infeasible runs as rows with status "infeasible".
Where the matrix has several seeds, bars and points are means over seeds of the per-run
statistic with 95 % Student-t confidence intervals (error bars); CDFs pool the seeds.  Matrix
keys other than model / tp_size / link_bw / seed that take several values (hardware, rate,
link_latency, max_num_seqs, max_num_batched_tokens) become rows of panels.

The parts of a figure (labels, facets, styles, notes, writing) are in
:mod:`~tpsim.campaign.figure_parts`, log axes in :mod:`~tpsim.campaign.figure_axes`, the statistics in
:mod:`~tpsim.campaign.figure_stats`.  The rule ``figures`` calls :func:`make_figures`
(``workflow/scripts/figures.py``); from the command line::

    python -m tpsim.campaign.figures --runs runs.parquet --requests requests.parquet --out-dir DIR
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from tpsim.campaign.figure_axes import log_axis, log_if_wide
from tpsim.campaign.figure_parts import (
    DASHES,
    MEMORY_FACET_KEYS,
    empty_figure,
    facet_columns,
    fmt_num,
    grid,
    infeasible_handle,
    infeasible_label,
    mark_infeasible,
    note_panel,
    ordered,
    plt,
    save,
    short_model,
    tp_style,
    with_facets,
    write_csv,
)
from tpsim.campaign.figure_stats import ecdf_points, seed_stats
from tpsim.campaign.outputs import FIGURES, STYLE


def fig_ttft_by_tp(runs, requests, out):
    cols = facet_columns(runs)
    runs = with_facets(runs, cols)
    bws = sorted(runs["link_bw"].unique())
    bws = [bws[0], bws[-1]] if len(bws) > 1 else bws
    sel = runs[runs["link_bw"].isin(bws)]
    data = seed_stats(sel, ["facet", "link_bw", "model", "tp_size"], "ttft_p50_ms")
    data = data.rename(columns={"value": "ttft_p50_ms", "ci_low": "ci_low_ms", "ci_high": "ci_high_ms"})
    write_csv(data, out["csv"])
    facets, models, tps = ordered(data["facet"]), ordered(runs["model"]), sorted(runs["tp_size"].unique())
    style = tp_style(tps)
    fig, axes = grid(len(facets), len(bws), sharey="row")
    w = 0.8 / len(tps)
    for r, facet in enumerate(facets):
        for c, bw in enumerate(bws):
            ax = axes[r][c]
            d = data[(data["facet"] == facet) & (data["link_bw"] == bw)]
            for i, tp in enumerate(tps):
                xs = np.arange(len(models)) + (i - (len(tps) - 1) / 2) * w
                for x, model in zip(xs, models):
                    row = d[(d["model"] == model) & (d["tp_size"] == tp)]
                    if row.empty:
                        continue
                    row = row.iloc[0]
                    if row["status"] != "ok" or not np.isfinite(row["ttft_p50_ms"]):
                        mark_infeasible(ax, x, style[tp]["color"])
                        continue
                    yerr = None
                    if np.isfinite(row["ci_low_ms"]):
                        yerr = [[row["ttft_p50_ms"] - row["ci_low_ms"]], [row["ci_high_ms"] - row["ttft_p50_ms"]]]
                    ax.bar(x, row["ttft_p50_ms"], w, yerr=yerr, color=style[tp]["color"], hatch=style[tp]["hatch"],
                           edgecolor="black", linewidth=0.4, label=f"TP={tp}")
            ax.set_xticks(np.arange(len(models)), [short_model(m, models) for m in models])
            title = f"link_bw {fmt_num(bw)} GB/s"
            ax.set_title(f"{title}\n{facet}" if facet else title)
            if c == 0:
                ax.set_ylabel("median TTFT (ms)" + (", mean of seeds" if data["n_runs"].max() > 1 else ""))
            log_if_wide(ax, d["ttft_p50_ms"].tolist())
    handles = [plt.Rectangle((0, 0), 1, 1, facecolor=style[tp]["color"], hatch=style[tp]["hatch"],
                             edgecolor="black", linewidth=0.4, label=f"TP={tp}") for tp in tps]
    if (data["status"] != "ok").any():
        handles.append(infeasible_handle(infeasible_label(sel)))
    fig.legend(handles=handles, loc="outside upper center", ncols=len(handles))
    save(fig, out["pdf"], out["png"])


def fig_vs_link_bw(runs, requests, out, metric: str, label: str):
    cols = facet_columns(runs)
    runs = with_facets(runs, cols)
    data = seed_stats(runs, ["facet", "model", "tp_size", "link_bw"], f"{metric}_p50_ms")
    data = data.rename(columns={"value": f"{metric}_p50_ms", "ci_low": "ci_low_ms", "ci_high": "ci_high_ms"})
    data = data.sort_values(["facet", "model", "tp_size", "link_bw"], kind="stable",
                            key=lambda s: s.map({m: i for i, m in enumerate(ordered(runs["model"]))})
                            if s.name == "model" else s)
    write_csv(data, out["csv"])
    facets, models, tps = ordered(data["facet"]), ordered(runs["model"]), sorted(runs["tp_size"].unique())
    bws = sorted(runs["link_bw"].unique())
    style = tp_style(tps)
    fig, axes = grid(len(facets), len(models))
    value = f"{metric}_p50_ms"
    drawn_tps = set()
    for r, facet in enumerate(facets):
        for c, model in enumerate(models):
            ax = axes[r][c]
            d = data[(data["facet"] == facet) & (data["model"] == model)]
            notes = []
            for i, tp in enumerate(tps):
                line = d[d["tp_size"] == tp]
                okl = line[(line["status"] == "ok") & np.isfinite(line[value])]
                if line.empty:
                    continue
                if okl.empty:
                    sub = runs[(runs["facet"] == facet) & (runs["model"] == model) & (runs["tp_size"] == tp)]
                    notes.append(f"TP={tp}: {infeasible_label(sub)}")
                    continue
                yerr = None
                if np.isfinite(okl["ci_low_ms"]).any():
                    yerr = [(okl[value] - okl["ci_low_ms"]).fillna(0), (okl["ci_high_ms"] - okl[value]).fillna(0)]
                ax.errorbar(okl["link_bw"], okl[value], yerr=yerr, color=style[tp]["color"],
                            marker=style[tp]["marker"], linestyle=DASHES[i % len(DASHES)], label=f"TP={tp}")
                drawn_tps.add(tp)
            if ax.lines:
                log_axis(ax, "x")
                ax.set_xticks(bws, [fmt_num(b) for b in bws])
                ax.minorticks_off()
                log_if_wide(ax, d[value].tolist())
                if notes:
                    ax.text(0.02, 0.02, "\n".join(notes), transform=ax.transAxes, fontsize=6, color="0.3",
                            va="bottom")
            else:
                note_panel(ax, notes)
            ax.set_xlabel("link_bw (GB/s)")
            name = short_model(model, models)
            ax.set_title(f"{name}\n{facet}" if facet else name)
            if c == 0:
                ax.set_ylabel(f"median {label} (ms)" + (", mean of seeds" if data["n_runs"].max() > 1 else ""))
    handles = [plt.Line2D([], [], color=style[tp]["color"], marker=style[tp]["marker"],
                          linestyle=DASHES[i % len(DASHES)], label=f"TP={tp}") for i, tp in enumerate(tps)
               if tp in drawn_tps]  # no entry for a TP that is infeasible everywhere (its notes say so)
    if handles:
        fig.legend(handles=handles, loc="outside upper center", ncols=len(handles))
    save(fig, out["pdf"], out["png"])


def fig_memory_by_tp(runs, requests, out):
    cols = facet_columns(runs, MEMORY_FACET_KEYS)
    runs = with_facets(runs, cols)
    rows = []
    for (facet, model, tp), grp in runs.groupby(["facet", "model", "tp_size"], sort=False):
        ok = grp[grp["status"] == "ok"]
        src = ok.iloc[0] if len(ok) else grp.iloc[0]
        rows.append({"facet": facet, "model": model, "tp_size": tp, "status": "ok" if len(ok) else "infeasible",
                     "weights_gb": src["weights_gb"] if len(ok) else np.nan,
                     "activation_reserve_gb": (src["activation_peak_gb"] + src["reserve_gb"]) if len(ok) else np.nan,
                     "kv_capacity_gb": src["kv_capacity_gb"] if len(ok) else np.nan,
                     "budget_gb": src["budget_gb"] if len(ok) else np.nan,
                     "kv_capacity_tokens": src["kv_capacity_tokens"] if len(ok) else np.nan})
    data = pd.DataFrame(rows)
    data = data.sort_values(["facet", "tp_size"], kind="stable")
    data = pd.concat([data[data["model"] == m] for m in ordered(runs["model"])])
    write_csv(data, out["csv"])
    facets, models, tps = ordered(data["facet"]), ordered(runs["model"]), sorted(runs["tp_size"].unique())
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    parts = (("weights_gb", "weights", colors[0], ""), ("activation_reserve_gb", "activations + reserve", "0.7", ""),
             ("kv_capacity_gb", "KV-cache capacity", colors[1], "////"))
    fig, axes = grid(len(facets), len(models), sharey="row")
    for r, facet in enumerate(facets):
        for c, model in enumerate(models):
            ax = axes[r][c]
            d = data[(data["facet"] == facet) & (data["model"] == model)].set_index("tp_size")
            for x, tp in enumerate(tps):
                if tp not in d.index:
                    continue
                row = d.loc[tp]
                if row["status"] != "ok":
                    mark_infeasible(ax, x, "0.3")
                    continue
                bottom = 0.0
                for key, label, color, hatch in parts:
                    ax.bar(x, row[key], 0.6, bottom=bottom, color=color, hatch=hatch, edgecolor="black",
                           linewidth=0.4, label=label)
                    bottom += row[key]
            budgets = d["budget_gb"].dropna().unique()
            if len(budgets) == 1:
                ax.axhline(budgets[0], color="black", linestyle=":", linewidth=0.8)
            ax.set_xticks(range(len(tps)), [f"TP={tp}" for tp in tps])
            name = short_model(model, models)
            ax.set_title(f"{name}\n{facet}" if facet else name)
            if c == 0:
                ax.set_ylabel("memory per GPU (GB)")
    handles = [plt.Rectangle((0, 0), 1, 1, facecolor=color, hatch=hatch, edgecolor="black", linewidth=0.4, label=label)
               for _, label, color, hatch in parts]
    handles.append(plt.Line2D([], [], color="black", linestyle=":", linewidth=0.8, label="budget (mem_size x util)"))
    if (data["status"] != "ok").any():
        handles.append(infeasible_handle(infeasible_label(runs)))
    fig.legend(handles=handles, loc="outside upper center", ncols=len(handles))
    save(fig, out["pdf"], out["png"])


def fig_cdf(runs, requests, out):
    cols = facet_columns(runs)
    runs = with_facets(runs, cols)
    bws = sorted(runs["link_bw"].unique())
    bws = [bws[0], bws[-1]] if len(bws) > 1 else bws
    req = requests.merge(runs[["run_id", "facet"]], on="run_id")
    req = req[req["link_bw"].isin(bws)]
    facets, models, tps = ordered(runs["facet"]), ordered(runs["model"]), sorted(runs["tp_size"].unique())
    style = tp_style(tps)
    sel = runs[runs["link_bw"].isin(bws)]
    rows, panels = [], [(f, m) for f in facets for m in models]
    drawn_tps, drawn_bws = set(), set()
    fig, axes = grid(len(panels), 2, row_height=1.8)
    for r, (facet, model) in enumerate(panels):
        for c, (metric, label) in enumerate((("ttft", "TTFT"), ("tpot", "TPOT"))):
            ax = axes[r][c]
            notes = []
            for i, tp in enumerate(tps):
                for j, bw in enumerate(reversed(bws)):
                    run = sel[(sel["facet"] == facet) & (sel["model"] == model) & (sel["tp_size"] == tp)
                              & (sel["link_bw"] == bw)]
                    if len(run) and (run["status"] != "ok").all():
                        rows.append({"facet": facet, "model": model, "tp_size": tp, "link_bw": bw, "metric": metric,
                                     "status": "infeasible", "value_ms": np.nan, "cdf": np.nan})
                        note = f"TP={tp}: {infeasible_label(run)}"
                        if note not in notes:
                            notes.append(note)
                        continue
                    d = req[(req["facet"] == facet) & (req["model"] == model) & (req["tp_size"] == tp)
                            & (req["link_bw"] == bw)]
                    if metric == "tpot":
                        d = d[d["output_tokens"] > 1]
                    if d.empty:
                        continue
                    xs, ys = ecdf_points(d[f"{metric}_ns"].to_numpy() / 1e6)
                    rows += [{"facet": facet, "model": model, "tp_size": tp, "link_bw": bw, "metric": metric,
                              "status": "ok", "value_ms": x, "cdf": y} for x, y in zip(xs, ys)]
                    ax.step(np.concatenate([[xs[0]], xs]), np.concatenate([[0.0], ys]), where="post",
                            color=style[tp]["color"], linestyle=DASHES[j % len(DASHES)], linewidth=1.0)
                    drawn_tps.add(tp)
                    drawn_bws.add(bw)
            if ax.lines:
                log_axis(ax, "x")
            note_panel(ax, notes)
            ax.set_ylim(0, 1.02)
            ax.set_xlabel(f"{label} (ms)")
            name = short_model(model, models)
            ax.set_title(f"{name}: {label}" + (f"\n{facet}" if facet else ""))
            if c == 0:
                ax.set_ylabel("fraction of requests")
    write_csv(pd.DataFrame(rows, columns=["facet", "model", "tp_size", "link_bw", "metric", "status", "value_ms",
                                          "cdf"]), out["csv"])
    handles = [plt.Line2D([], [], color=style[tp]["color"], label=f"TP={tp}") for tp in tps if tp in drawn_tps]
    handles += [plt.Line2D([], [], color="0.3", linestyle=DASHES[j % len(DASHES)], label=f"{fmt_num(bw)} GB/s")
                for j, bw in enumerate(reversed(bws)) if bw in drawn_bws]
    if handles:
        fig.legend(handles=handles, loc="outside upper center", ncols=len(handles))
    save(fig, out["pdf"], out["png"])


DRAW = {
    "ttft_by_tp": fig_ttft_by_tp,
    "ttft_vs_link_bw": lambda runs, req, out: fig_vs_link_bw(runs, req, out, "ttft", "TTFT"),
    "tpot_vs_link_bw": lambda runs, req, out: fig_vs_link_bw(runs, req, out, "tpot", "TPOT"),
    "memory_by_tp": fig_memory_by_tp,
    "ttft_tpot_cdf": fig_cdf,
}


def load_tables(runs_path: str, requests_path: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    import duckdb

    con = duckdb.connect()
    try:
        runs = con.execute("SELECT * FROM read_parquet($p)", {"p": runs_path}).df()
        requests = con.execute(
            "SELECT run_id, model, tp_size, link_bw, seed, output_tokens, ttft_ns, tpot_ns FROM read_parquet($p)",
            {"p": requests_path}).df()
    finally:
        con.close()
    for df in (runs, requests):
        for col in df.columns:  # pandas 3 reads VARCHAR as StringDtype; plain objects keep groupby simple
            if isinstance(df[col].dtype, pd.StringDtype):
                df[col] = df[col].astype(object)
    return runs, requests


_TABLES: tuple = ()


def _draw_one(item) -> str:
    name, out = item
    runs, requests = _TABLES
    for path in out.values():
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    if runs.empty:
        empty_figure(out["pdf"], out["png"], "no runs")
        write_csv(pd.DataFrame(), out["csv"])
    else:
        DRAW[name](runs, requests, out)
    return name


def make_figures(runs_path: str, requests_path: str, outputs: dict, style: str | None = None, log=sys.stdout,
                 processes: int = 1):
    """``outputs``: figure name -> {"pdf": path, "png": path, "csv": path}.  With ``processes`` > 1
    the figures are drawn in forked workers (each figure is independent; outputs are identical)."""
    global _TABLES
    _TABLES = load_tables(runs_path, requests_path)
    plt.style.use(str(style or STYLE))
    items = list(outputs.items())
    processes = max(1, min(processes, len(items)))
    if processes > 1:
        import multiprocessing

        with multiprocessing.get_context("fork").Pool(processes) as pool:
            done = pool.map(_draw_one, items, chunksize=1)
    else:
        done = [_draw_one(item) for item in items]
    for name in done:
        print(f"figure {name}: {outputs[name]['pdf']}", file=log)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", required=True)
    ap.add_argument("--requests", required=True)
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--style", default=str(STYLE))
    ap.add_argument("--only", nargs="*", choices=FIGURES, default=list(FIGURES))
    ap.add_argument("--processes", type=int, default=1)
    args = ap.parse_args(argv)
    outputs = {n: {ext: str(Path(args.out_dir) / f"{n}.{ext}") for ext in ("pdf", "png", "csv")} for n in args.only}
    make_figures(args.runs, args.requests, outputs, args.style, processes=args.processes)
    return 0


def make_figures_logged(runs_path: str, requests_path: str, outputs: dict, style: str, log_path: str,
                        processes: int = 1) -> None:
    """:func:`make_figures` with its progress in the log file (the Snakemake rule's log)."""
    with open(log_path, "w", encoding="utf-8") as log:
        make_figures(runs_path, requests_path, outputs, style, log=log, processes=processes)


if __name__ == "__main__":
    sys.exit(main())
