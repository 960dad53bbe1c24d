"""The validation figures: CDFs of TTFT / TPOT / latency on both sides, and prompt and generation
throughput over time, as PDF and PNG with deterministic bytes.  matplotlib is imported inside
:func:`write_figures` (``tpsim validate --no-figures`` needs none)."""

from __future__ import annotations

from pathlib import Path

from tpsim.errors import InputError
from tpsim.io.writing import AtomicFiles
from tpsim.validation.measured import read_timeseries
from tpsim.validation.report import fmt
from tpsim.validation.simulated import sim_timeline

#: Okabe & Ito's colour-blind-safe palette: measured, simulated
COLOURS = ("#0072B2", "#D55E00")


def _save(fig, out_dir: Path, stem: str) -> list[str]:
    """``stem``.pdf and ``stem``.png, without timestamps, written together (atomically)."""
    pdf, png = out_dir / f"{stem}.pdf", out_dir / f"{stem}.png"
    with AtomicFiles() as out:
        fig.savefig(out.reserve(pdf, ".pdf"), metadata={"CreationDate": None, "ModDate": None})
        fig.savefig(out.reserve(png, ".png"), dpi=150, metadata={"Software": None})
    return [pdf.name, png.name]


def write_figures(doc: dict, data: dict, out_dir) -> list[str]:
    """CDFs of TTFT/TPOT/latency and throughput over time, as PDF and PNG (deterministic bytes)."""
    try:
        import matplotlib
    except ImportError:
        raise InputError("figures need matplotlib (pip install 'tpsim[workflow]'), or pass --no-figures") from None
    matplotlib.use("Agg", force=False)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    out_dir = Path(out_dir)
    label = doc["sim"]["label"]
    files: list[str] = []
    rc = {"font.size": 9, "axes.grid": True, "grid.alpha": 0.3}
    with matplotlib.rc_context(rc):
        keys = [k for k in ("ttft", "tpot", "latency") if k in doc["metrics"]]
        fig = Figure(figsize=(4.0 * max(len(keys), 1), 3.2), layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(1, max(len(keys), 1), squeeze=False)[0]
        for ax, key in zip(axes, keys):
            for (side, name), colour, ls in zip(((data["measured"], "vLLM (measured)"), (data["sim"], label)),
                                                COLOURS, ("-", "--")):
                v = sorted(side.values[key].values())
                n = len(v)
                ax.step(v, [(j + 1) / n for j in range(n)], where="post", color=colour, linestyle=ls, label=name)
            m = doc["metrics"][key]
            ax.set_xlabel(f"{m['label']} (ms)")
            ax.xaxis.set_major_locator(MaxNLocator(5))
            ax.set_ylabel("fraction of requests")
            ax.set_ylim(0, 1.02)
            err = m["paired"]["mape_pct"]
            ax.set_title(f"{m['label']}: mean {fmt(m['diff_pct']['mean'], '+.1f')} %, MAPE {fmt(err, '.1f')} %")
        axes[0].legend(loc="lower right")
        files += _save(fig, out_dir, "cdf")

        measured_ts = read_timeseries(data["timeseries_path"])
        sim_ts, source = sim_timeline(data["summary"], data["sim"])
        doc.setdefault("notes", []).append(f"simulated throughput timeline: {source}")
        if measured_ts or sim_ts:
            fig = Figure(figsize=(8.0, 3.2), layout="constrained")
            FigureCanvasAgg(fig)
            axes = fig.subplots(1, 2, squeeze=False)[0]
            for ax, key, title in zip(axes, ("prompt", "generation"), ("prompt", "generation")):
                for series, name, colour, ls in ((measured_ts, "vLLM (measured)", COLOURS[0], "-"),
                                                 (sim_ts, label, COLOURS[1], "--")):
                    if not series or all(b[key] is None for b in series):
                        continue
                    ax.step([b["t_s"] for b in series], [b[key] for b in series], where="pre", color=colour,
                            linestyle=ls, label=name)
                ax.set_xlabel("time (s; bin end)")
                ax.set_ylabel(f"{title} throughput (tok/s)")
                ax.set_title(f"{title} throughput")
                ax.set_xlim(left=0)
                ax.set_ylim(bottom=0)
            axes[1].legend(loc="upper right")
            files += _save(fig, out_dir, "throughput")
    return files
