"""Campaign figures: PDF (vector, embedded fonts) + PNG + the plotted numbers as CSV.

Reads only the campaign's tables (``runs.parquet`` and ``requests.parquet``, or a capacity search's
``capacity.parquet`` and ``probes.parquet``), ``campaign.json`` (the matrix's order, the SLO, the
measured runs, whose files it reads) and the style sheet (:data:`~tpsim.campaign.outputs.STYLE`);
writes, for each figure NAME, ``NAME.pdf``, ``NAME.png`` and ``NAME.csv`` (one row per plotted bar /
point / CDF step).  Outputs are byte-identical on rerun.

Figures of a matrix campaign (:func:`~tpsim.campaign.outputs.figures_of`; X is the first key the
matrix varies of link_bw, hardware, rate, ...):

* ``ttft_by_tp``            median TTFT per model, one bar per TP, at both ends of X;
* ``ttft_vs_X``, ``tpot_vs_X``  median TTFT / TPOT against X, one line per TP, one panel per model;
* ``throughput_vs_X``      generated tokens/s per GPU (beside TPOT: a low TPOT at a small batch
  is cheap latency bought with throughput);
* ``slo_attainment_vs_X``, ``goodput_vs_X``  with ``slo:``: the fraction of requests meeting it,
  and the SLO-meeting tokens/s per GPU;
* ``memory_by_tp``          per GPU: weights, activations + reserve and KV-cache capacity, by TP;
* ``ttft_tpot_cdf``         CDFs of TTFT and TPOT per model and TP, at both ends of X;
* ``layouts_by_gpus``       with ``dp_size`` / ``ep_size`` in the matrix and more than one layout at some
  GPU count: mean TTFT, mean TPOT and tokens/s per GPU per layout ("TP4", "DP2·TP2·EP4"), by GPU count
  (:mod:`~tpsim.campaign.figure_layouts`).

A capacity search draws ``capacity_by_tp``, ``pareto_throughput_latency`` and
``attainment_vs_rate`` (:mod:`~tpsim.campaign.figure_capacity`).

Every figure is 3.5 in (one column) or 7.16 in (two columns) wide with nothing outside it; one y
scale and range per figure (log when its values span more than 30 times); panels, rows and legend
entries in the campaign's matrix order; units in every label; legends list only what is drawn.
Means over seeds carry 95 % bootstrap intervals, which stay within the seeds' values
(:mod:`~tpsim.campaign.figure_stats`); overloaded runs (:mod:`~tpsim.campaign.slo`) are drawn hollow
(lines), outlined (bars) or faint (CDFs), and the legend says so; infeasible runs are
a cross or a note ("TP=1: does not fit"); measured runs are black.  The parts are in
:mod:`~tpsim.campaign.figure_parts`, :mod:`~tpsim.campaign.figure_context`,
:mod:`~tpsim.campaign.figure_axes`, :mod:`~tpsim.campaign.figure_stats`; the figures in
:mod:`~tpsim.campaign.figure_lines`, :mod:`~tpsim.campaign.figure_bars`,
:mod:`~tpsim.campaign.figure_cdf` and :mod:`~tpsim.campaign.figure_capacity`.  From the command line::

    python -m tpsim.campaign.figures --campaign campaign.json --tables DIR --out-dir DIR
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from tpsim.campaign import figure_bars, figure_capacity, figure_cdf, figure_layouts, figure_lines
from tpsim.campaign.figure_context import context
from tpsim.campaign.figure_parts import empty_figure, plt, write_csv
from tpsim.campaign.outputs import LAYOUT_FIGURE, STYLE, figures_of

#: the columns of the requests table the figures read
REQUEST_COLUMNS = ("run_id", "model", "tp_size", "link_bw", "seed", "output_tokens", "ttft_ns", "tpot_ns")


def draw(name: str, ctx, tables: dict, out: dict) -> None:
    """Draw one figure by name."""
    if name.startswith("capacity_by_tp"):
        figure_capacity.fig_capacity_by_tp(ctx, tables["capacity"], out)
    elif name == "pareto_throughput_latency":
        figure_capacity.fig_pareto(ctx, tables["probes"], out)
    elif name == "attainment_vs_rate":
        figure_capacity.fig_attainment(ctx, tables["probes"], out)
    elif name == "ttft_by_tp":
        figure_bars.fig_ttft_by_tp(ctx, tables["runs"], out)
    elif name == "memory_by_tp":
        figure_bars.fig_memory_by_tp(ctx, tables["runs"], out)
    elif name == LAYOUT_FIGURE:
        figure_layouts.fig_layouts_by_gpus(ctx, tables["runs"], out)
    elif name == "ttft_tpot_cdf":
        figure_cdf.fig_cdf(ctx, tables["runs"], tables["requests"], out)
    elif "_vs_" in name:
        figure_lines.fig_vs_x(ctx, tables["runs"], out, name.rsplit("_vs_", 1)[0])
    else:
        raise ValueError(f"unknown figure {name!r}")


def load_tables(paths: dict) -> dict:
    """The tables the figures read, as DataFrames (text as plain objects: simple groupby)."""
    import duckdb

    con = duckdb.connect()
    tables = {}
    try:
        for name, path in paths.items():
            cols = ", ".join(REQUEST_COLUMNS) if name == "requests" else "*"
            tables[name] = con.execute(f"SELECT {cols} FROM read_parquet($p)", {"p": str(path)}).df()
    finally:
        con.close()
    for df in tables.values():
        for col in df.columns:  # pandas 3 reads VARCHAR as StringDtype; plain objects keep groupby simple
            if isinstance(df[col].dtype, pd.StringDtype):
                df[col] = df[col].astype(object)
    return tables


_STATE: dict = {}


def _draw_one(item) -> str:
    name, out = item
    tables, ctx = _STATE["tables"], _STATE["ctx"]
    for path in out.values():
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    main = tables.get("capacity", tables.get("runs"))
    if main is None or main.empty:
        empty_figure(out["pdf"], out["png"], "no runs")
        write_csv(pd.DataFrame(), out["csv"])
    else:
        draw(name, ctx, tables, out)
    return name


def make_figures(tables: dict, campaign_json: str, outputs: dict, style: str | None = None, log=sys.stdout,
                 processes: int = 1) -> None:
    """``tables``: table name -> Parquet path (runs and requests, or capacity and probes);
    ``outputs``: figure name -> {"pdf": path, "png": path, "csv": path}.  With ``processes`` > 1
    the figures are drawn in forked workers (each figure is independent; outputs are identical)."""
    from tpsim.campaign import measured_runs

    doc = json.loads(Path(campaign_json).read_text(encoding="utf-8"))
    loaded = load_tables(tables)
    main = loaded.get("capacity", loaded.get("runs"))
    measured = measured_runs.load(doc) if doc.get("measured") else None
    _STATE.update(tables=loaded, ctx=context(doc, main, measured) if main is not None and not main.empty else None)
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


def make_figures_logged(tables: dict, campaign_json: str, outputs: dict, style: str, log_path: str,
                        processes: int = 1) -> None:
    """:func:`make_figures` with its progress in the log file (the Snakemake rule's log)."""
    with open(log_path, "w", encoding="utf-8") as log:
        make_figures(tables, campaign_json, outputs, style, log=log, processes=processes)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--campaign", required=True, help="results/<campaign>/campaign.json")
    ap.add_argument("--tables", required=True, help="the folder holding the campaign's Parquet tables")
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--style", default=str(STYLE))
    ap.add_argument("--only", nargs="*", help="figure names (default: every figure of the campaign)")
    ap.add_argument("--processes", type=int, default=1)
    args = ap.parse_args(argv)
    doc = json.loads(Path(args.campaign).read_text(encoding="utf-8"))
    names = args.only or list(figures_of(doc))
    tables = {t: str(Path(args.tables) / f"{t}.parquet")
              for t in (("capacity", "probes") if "capacity" in doc else ("runs", "requests"))}
    outputs = {n: {ext: str(Path(args.out_dir) / f"{n}.{ext}") for ext in ("pdf", "png", "csv")} for n in names}
    make_figures(tables, args.campaign, outputs, args.style, processes=args.processes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
