"""Hold a simulation against a measured vLLM replay (``tpsim validate``).

A *measured directory* has the layout of LLMServingSim's ``bench`` artefacts
(see ``docs/validation.md``)::

    config.json          cluster config of the run (LLMServingSim schema)
    model_config.json    the model's Hugging Face config.json       (optional)
    trace.jsonl          the requests as replayed                    (for ``tpsim replay``)
    vllm/meta.json       engine arguments, vLLM version              (optional here)
    vllm/requests.jsonl  per request: request_id "bench-<i>", output_toks, queued_ts,
                         scheduled_ts, first_token_ts, last_token_ts (monotonic s)
    vllm/timeseries.csv  once a tick: prompt/generation throughput   (optional, figures)

Metric definitions (the publishers', ``bench/core/validate.py``), in ms:

* measured TTFT = first_token_ts - queued_ts; TPOT = (last_token_ts -
  first_token_ts) / (output_toks - 1), skipped when output_toks <= 1;
  latency = last_token_ts - queued_ts; queuing delay = scheduled_ts - queued_ts.
* simulated: the 12-column CSV's ``TTFT``, ``TPOT``, ``latency`` and
  ``queuing_delay`` (integer ns) / 1e6; TPOT skipped when ``output`` <= 1.

Each side is summarised over all of its requests (mean and p50/p90/p99 with
linear interpolation, numpy's default); the difference is
``(sim - measured) / measured * 100``.  The paired error pairs measured
``bench-<i>`` with the simulated ``request id`` i and reports the mean
absolute percentage error, ``mean(|sim - measured| / measured) * 100``.

Plain Python only: matplotlib is imported inside :func:`write_figures`, so
nothing here weighs on the simulator's import path.
"""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from tpsim.errors import InputError
from tpsim.io.results import read_rows
from tpsim.stats import percentile_sorted

SCHEMA_VERSION = 1
#: metrics in report order: key -> (label, unit)
METRICS = {"ttft": "TTFT", "tpot": "TPOT", "latency": "latency", "queuing_delay": "queuing delay"}
STATS = ("mean", "p50", "p90", "p99")
#: metrics whose relative error is not meaningful per request -> why
NO_MAPE = {"queuing_delay": "MAPE not reported: requests admitted at once have measured delays of microseconds, "
                            "so relative errors explode; see mae_ms"}
_BENCH_ID = re.compile(r"^(?:bench-)?(\d+)$")
_REQUIRED_MEASURED = ("request_id", "output_toks", "queued_ts", "first_token_ts", "last_token_ts")
#: Okabe & Ito's colour-blind-safe palette: measured, simulated
COLOURS = ("#0072B2", "#D55E00")

DEFINITIONS = {
    "measured": {
        "ttft": "first_token_ts - queued_ts",
        "tpot": "(last_token_ts - first_token_ts) / (output_toks - 1); requests with output_toks <= 1 skipped",
        "latency": "last_token_ts - queued_ts",
        "queuing_delay": "scheduled_ts - queued_ts (vLLM: first scheduling)",
    },
    "sim": {
        "ttft": "CSV TTFT / 1e6",
        "tpot": "CSV TPOT / 1e6; requests with output <= 1 skipped",
        "latency": "CSV latency / 1e6",
        "queuing_delay": "CSV queuing_delay / 1e6 (tpsim: first scheduling; LLMServingSim: schedule of the last "
                         "prefill chunk)",
    },
    "unit": "ms",
    "percentiles": "linear interpolation between order statistics (numpy's default)",
    "diff_pct": "(sim - measured) / measured * 100",
    "mape_pct": "mean over paired requests of |sim - measured| / measured * 100 (pairs with measured == 0 skipped; "
                "not reported for the queuing delay)",
    "mae_ms": "mean over paired requests of |sim - measured|",
    "pairing": "measured request_id 'bench-<i>' <-> sim 'request id' i",
}


@dataclass
class Side:
    """One side of the comparison: per-request values in ms, keyed by request index."""

    path: str
    requests: int = 0
    values: dict = field(default_factory=dict)  # metric -> {request index: ms}
    tokens: dict = field(default_factory=dict)  # request index -> (input or None, output)
    unfinished: list = field(default_factory=list)
    emissions: list | None = None  # per request: token emission times (ns), only when asked for


# ---------------------------------------------------------------------------- reading


def _num(obj: dict, key: str, where: str, *, integer: bool = False, optional: bool = False):
    if key not in obj or obj[key] is None:
        if optional:
            return None
        raise InputError(f"{where}: missing field '{key}'")
    v = obj[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and not math.isfinite(v)):
        raise InputError(f"{where}: field '{key}' must be a number, got {v!r}")
    if integer and isinstance(v, float):
        if not v.is_integer():
            raise InputError(f"{where}: field '{key}' must be an integer, got {v!r}")
        v = int(v)
    return v


def request_index(rid, where: str) -> int:
    """``bench-<i>`` (or a plain integer) -> i."""
    if isinstance(rid, int) and not isinstance(rid, bool) and rid >= 0:
        return rid
    m = _BENCH_ID.match(str(rid).strip()) if isinstance(rid, str) else None
    if m is None:
        raise InputError(f"{where}: request_id {rid!r} is not of the form 'bench-<i>' (i = line of trace.jsonl)")
    return int(m.group(1))


def measured_paths(measured_dir) -> dict:
    d = Path(measured_dir)
    if not d.is_dir():
        raise InputError(f"--measured {measured_dir}: no such folder; pass a measured replay directory "
                         "(with vllm/requests.jsonl)")
    paths = {
        "dir": d,
        "requests": d / "vllm" / "requests.jsonl",
        "meta": d / "vllm" / "meta.json",
        "timeseries": d / "vllm" / "timeseries.csv",
        "config": d / "config.json",
        "model_config": d / "model_config.json",
        "trace": d / "trace.jsonl",
        "peer_csv": d / "llmservingsim" / "sim.csv",
    }
    if not paths["requests"].is_file():
        raise InputError(f"{paths['requests']}: no such file; a measured directory needs vllm/requests.jsonl "
                         "(one JSON object per request, as written by LLMServingSim's bench)")
    return paths


def read_json(path, what: str) -> dict:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such file ({what})")
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"{p}:{exc.lineno}: malformed JSON ({exc.msg})") from None
    except UnicodeDecodeError:
        raise InputError(f"{p}: not a UTF-8 text file ({what})") from None
    if not isinstance(doc, dict):
        raise InputError(f"{p}: expected a JSON object ({what})")
    return doc


def read_measured(path) -> Side:
    """``vllm/requests.jsonl`` -> per-request TTFT/TPOT/latency (and queuing delay) in ms."""
    path = Path(path)
    side = Side(str(path))
    vals = {k: {} for k in METRICS}
    has_sched = True
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a UTF-8 text file; expected JSON lines") from None
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{where}: malformed JSON ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise InputError(f"{where}: expected a JSON object per line")
        if "request_id" not in obj:
            raise InputError(f"{where}: missing field 'request_id'")
        i = request_index(obj["request_id"], where)
        if i in side.tokens:
            raise InputError(f"{where}: duplicate request_id {obj['request_id']!r}")
        out = _num(obj, "output_toks", where, integer=True)
        inp = _num(obj, "input_toks", where, integer=True, optional=True)
        q = _num(obj, "queued_ts", where)
        first = _num(obj, "first_token_ts", where, optional=True)
        last = _num(obj, "last_token_ts", where, optional=True)
        sched = _num(obj, "scheduled_ts", where, optional=True)
        side.tokens[i] = (inp, out)
        side.requests += 1
        if first is None or last is None or first <= 0 or last <= 0:
            side.unfinished.append(i)  # vLLM never produced a token for it
            continue
        if last < first:
            raise InputError(f"{where}: last_token_ts {last} is before first_token_ts {first}")
        vals["ttft"][i] = (first - q) * 1e3
        vals["latency"][i] = (last - q) * 1e3
        if out > 1:
            vals["tpot"][i] = (last - first) * 1e3 / (out - 1)
        if sched is None:
            has_sched = False
        else:
            vals["queuing_delay"][i] = (sched - q) * 1e3
    if side.requests == 0:
        raise InputError(f"{path}: no requests (empty file)")
    if not has_sched:
        vals["queuing_delay"] = {}
    side.values = vals
    return side


def read_sim_csv(path, *, with_itl: bool = False) -> Side:
    """A 12-column per-request CSV (tpsim's or LLMServingSim's) -> per-request metrics in ms.

    With ``with_itl``, ``side.emissions`` holds each request's token emission
    times (ns), for a generation-throughput timeline.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"--sim {path}: no such file; pass the per-request CSV of a run (tpsim's or LLMServingSim's)")
    side = Side(str(path))
    vals: dict = {k: {} for k in METRICS}
    emissions = []
    for where, row in read_rows(path):
        i = row.request_id
        if i in side.tokens:
            raise InputError(f"{where}: duplicate request id {i}")
        side.tokens[i] = (row.input, row.output)
        side.requests += 1
        vals["ttft"][i] = row.ttft / 1e6
        vals["latency"][i] = row.latency / 1e6
        vals["queuing_delay"][i] = row.queuing_delay / 1e6
        if row.output > 1:
            vals["tpot"][i] = row.tpot / 1e6
        if with_itl:
            try:
                gaps = row.itl
            except ValueError:
                raise InputError(f"{where}: column 'ITL' must be a list of integers") from None
            t = row.arrival + row.ttft
            times = [t]
            for g in gaps:
                t += g
                times.append(t)
            emissions.append(times)
    if side.requests == 0:
        raise InputError(f"{path}: no request rows (header only, e.g. an infeasible run); nothing to compare")
    side.values = vals
    if with_itl:
        side.emissions = emissions
    return side


def read_timeseries(path) -> list[dict] | None:
    """``vllm/timeseries.csv`` -> [{t_s, prompt, generation}] (tok/s), or None if absent."""
    path = Path(path)
    if not path.is_file():
        return None
    out = []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        need = {"t", "prompt_throughput", "gen_throughput"}
        if reader.fieldnames is None or not need <= set(reader.fieldnames):
            raise InputError(f"{path}:1: expected columns t, prompt_throughput, gen_throughput")
        for row in reader:
            try:
                out.append({"t_s": float(row["t"]), "prompt": float(row["prompt_throughput"]),
                            "generation": float(row["gen_throughput"])})
            except (TypeError, ValueError):
                raise InputError(f"{path}:{reader.line_num}: t, prompt_throughput and gen_throughput must be "
                                 "numbers") from None
    return out


def sim_summary_path(csv_path) -> Path:
    from tpsim.io.summary import summary_path

    return Path(summary_path(str(csv_path)))


def read_sim_summary(csv_path) -> dict | None:
    """The run summary beside a tpsim CSV (``<name>.summary.json``), or None."""
    p = sim_summary_path(csv_path)
    if not p.is_file():
        return None
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{p}: unreadable run summary ({exc})") from None
    return doc if isinstance(doc, dict) else None


def sim_timeline(summary: dict | None, side: Side | None, interval_s: float = 1.0) -> tuple[list[dict] | None, str]:
    """Simulated throughput over time: the run summary's timeline, else generation only from the CSV's ITL."""
    if summary and isinstance(summary.get("timeline"), list) and summary["timeline"]:
        return ([{"t_s": float(b["t_s"]), "prompt": float(b.get("prompt_tokens_per_s", 0.0)),
                  "generation": float(b.get("generation_tokens_per_s", 0.0))} for b in summary["timeline"]],
                "run summary timeline")
    emissions = side.emissions if side is not None else None
    if not emissions:
        return None, "none"
    step = round(interval_s * 1e9)
    bins: dict[int, int] = {}
    for times in emissions:
        for t in times:
            b = t // step
            bins[b] = bins.get(b, 0) + 1
    last = max(bins)
    return ([{"t_s": (b + 1) * interval_s, "prompt": None, "generation": bins.get(b, 0) / interval_s}
             for b in range(last + 1)], "token emission times from the CSV (ITL); prompt throughput unavailable")


# ---------------------------------------------------------------------------- arithmetic


def describe(values) -> dict | None:
    """n, mean, p50, p90, p99 (linear interpolation)."""
    s = sorted(values)
    if not s:
        return None
    return {"n": len(s), "mean": sum(s) / len(s), **{f"p{q}": percentile_sorted(s, q) for q in (50, 90, 99)}}


def pct_diff(sim: float | None, measured: float | None) -> float | None:
    if sim is None or measured is None or measured == 0:
        return None
    return (sim - measured) / measured * 100.0


def mape(pairs) -> tuple[float | None, int]:
    """Mean absolute percentage error of (measured, sim) pairs; pairs with measured == 0 are skipped."""
    errs = [abs(s - m) / abs(m) for m, s in pairs if m != 0]
    return (sum(errs) / len(errs) * 100.0 if errs else None), len(errs)


def mae(pairs) -> float | None:
    """Mean absolute error of (measured, sim) pairs, in their unit."""
    return sum(abs(s - m) for m, s in pairs) / len(pairs) if pairs else None


def _round(x, nd=6):
    if x is None:
        return None
    if isinstance(x, dict):
        return {k: _round(v, nd) for k, v in x.items()}
    if isinstance(x, float):
        return round(x, nd)
    return x


def compare(measured: Side, sim: Side) -> dict:
    """Per-metric statistics of both sides, their % differences, and the paired MAPE."""
    m_ids, s_ids = set(measured.tokens), set(sim.tokens)
    paired = sorted(m_ids & s_ids)
    only_m, only_s = sorted(m_ids - s_ids), sorted(s_ids - m_ids)
    out_mismatch = [i for i in paired if measured.tokens[i][1] != sim.tokens[i][1]]
    in_mismatch = [i for i in paired if measured.tokens[i][0] is not None and measured.tokens[i][0] != sim.tokens[i][0]]
    metrics = {}
    for key, label in METRICS.items():
        mv, sv = measured.values.get(key, {}), sim.values.get(key, {})
        if not mv or not sv:
            continue
        md, sd = describe(mv.values()), describe(sv.values())
        pairs = [(mv[i], sv[i]) for i in paired if i in mv and i in sv]
        err, _ = mape(pairs)
        paired_stats = {"n": len(pairs), "mape_pct": err, "mae_ms": mae(pairs)}
        if key in NO_MAPE:
            paired_stats["mape_pct"] = None
            paired_stats["note"] = NO_MAPE[key]
        metrics[key] = {
            "label": label,
            "measured": md,
            "sim": sd,
            "diff_pct": {st: pct_diff(sd[st], md[st]) for st in STATS},
            "paired": paired_stats,
        }
    return {
        "pairing": {
            "measured_requests": measured.requests,
            "sim_requests": sim.requests,
            "paired": len(paired),
            "measured_only": len(only_m),
            "sim_only": len(only_s),
            "measured_only_ids": only_m[:20],
            "sim_only_ids": only_s[:20],
            "measured_unfinished": len(measured.unfinished),
            "output_tokens_mismatch": len(out_mismatch),
            "input_tokens_mismatch": len(in_mismatch),
        },
        "metrics": metrics,
    }


def sim_label_of(summary: dict | None, csv_path) -> str:
    """tpsim's run summary names its perf model; other CSVs are labelled by file name."""
    if summary and summary.get("instances"):
        models = sorted({i.get("perf_model") for i in summary["instances"] if i.get("perf_model")})
        if models:
            return "tpsim-" + "+".join(models)
    return Path(csv_path).stem


def validate(measured_dir, sim_csv, *, label: str | None = None, with_itl: bool = False) -> tuple[dict, dict]:
    """Read both sides and compare; returns (the validation document, data for the figures)."""
    paths = measured_paths(measured_dir)
    measured = read_measured(paths["requests"])
    summary = read_sim_summary(sim_csv)
    sim = read_sim_csv(sim_csv, with_itl=with_itl and not (summary and summary.get("timeline")))
    meta = read_json(paths["meta"], "vLLM run metadata") if paths["meta"].is_file() else None
    result = compare(measured, sim)
    label = label or sim_label_of(summary, sim_csv)
    doc = {
        "schema_version": SCHEMA_VERSION,
        "measured": {
            "dir": str(paths["dir"]),
            "requests_jsonl": str(paths["requests"]),
            "requests": measured.requests,
            "vllm_version": meta.get("vllm_version") if meta else None,
            "model": meta.get("model") if meta else None,
        },
        "sim": {
            "csv": str(sim_csv),
            "label": label,
            "requests": sim.requests,
            "summary": str(sim_summary_path(sim_csv)) if summary else None,
            "tpsim_version": summary.get("tpsim_version") if summary else None,
            "perf_models": sorted({i.get("perf_model") for i in summary.get("instances", [])
                                   if i.get("perf_model")}) if summary else None,
        },
        **_round(result),
        "definitions": DEFINITIONS,
        "figures": [],
    }
    data = {"measured": measured, "sim": sim, "summary": summary, "timeseries_path": paths["timeseries"]}
    return doc, data


# ---------------------------------------------------------------------------- reporting


def _fmt(x, spec: str) -> str:
    return "n/a" if x is None else format(x, spec)


def markdown(doc: dict) -> str:
    """The comparison as Markdown tables (what ``tpsim validate`` prints)."""
    p = doc["pairing"]
    lines = [
        f"Validation of `{doc['sim']['label']}` ({doc['sim']['csv']}) against {doc['measured']['dir']}",
        "",
        f"requests: measured {p['measured_requests']}, simulated {p['sim_requests']}, paired {p['paired']} "
        f"(measured only {p['measured_only']}, simulated only {p['sim_only']}"
        + (f", measured unfinished {p['measured_unfinished']}" if p["measured_unfinished"] else "")
        + (f", output-length mismatches {p['output_tokens_mismatch']}" if p["output_tokens_mismatch"] else "")
        + ")",
        "",
        "| metric (ms) | stat | measured | simulated | diff % |",
        "|---|---|---:|---:|---:|",
    ]
    for m in doc["metrics"].values():
        for st in STATS:
            lines.append(f"| {m['label']} | {st} | {_fmt(m['measured'][st], '.2f')} | {_fmt(m['sim'][st], '.2f')} "
                         f"| {_fmt(m['diff_pct'][st], '+.1f')} |")
    lines += ["", "| metric | paired requests | MAPE % | MAE (ms) |", "|---|---:|---:|---:|"]
    for m in doc["metrics"].values():
        pr = m["paired"]
        lines.append(f"| {m['label']} | {pr['n']} | {_fmt(pr['mape_pct'], '.2f')} | {_fmt(pr['mae_ms'], '.2f')} |")
    return "\n".join(lines) + "\n"


def _save(fig, out_dir: Path, stem: str) -> list[str]:
    pdf, png = out_dir / f"{stem}.pdf", out_dir / f"{stem}.png"
    fig.savefig(pdf, metadata={"CreationDate": None, "ModDate": None})
    fig.savefig(png, dpi=150, metadata={"Software": None})
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
            ax.set_title(f"{m['label']}: mean {_fmt(m['diff_pct']['mean'], '+.1f')} %, MAPE {_fmt(err, '.1f')} %")
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


# ---------------------------------------------------------------------------- accuracy table (campaign)

#: accuracy-table columns: name -> (metric, field)
TABLE_COLUMNS = {
    "ttft_mean_diff_pct": ("ttft", "mean"),
    "tpot_mean_diff_pct": ("tpot", "mean"),
    "latency_mean_diff_pct": ("latency", "mean"),
    "ttft_p90_diff_pct": ("ttft", "p90"),
    "tpot_p90_diff_pct": ("tpot", "p90"),
    "latency_p90_diff_pct": ("latency", "p90"),
    "ttft_mape_pct": ("ttft", "mape"),
    "tpot_mape_pct": ("tpot", "mape"),
    "latency_mape_pct": ("latency", "mape"),
}
SIMULATOR_ORDER = ("tpsim-analytical", "tpsim-profile", "LLMServingSim")


def accuracy_rows(entries) -> list[dict]:
    """``entries``: (case, simulator, validation.json path) -> one row per case x simulator."""
    rows = []
    for case, simulator, path in entries:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
        row = {"case": case, "simulator": simulator, "paired": doc["pairing"]["paired"],
               "requests": doc["pairing"]["measured_requests"]}
        for col, (metric, fld) in TABLE_COLUMNS.items():
            m = doc["metrics"].get(metric)
            if m is None:
                row[col] = None
            elif fld == "mape":
                row[col] = m["paired"]["mape_pct"]
            else:
                row[col] = m["diff_pct"][fld]
        rows.append(row)
    order = {s: j for j, s in enumerate(SIMULATOR_ORDER)}
    rows.sort(key=lambda r: (r["case"], order.get(r["simulator"], len(order)), r["simulator"]))
    return rows


def write_accuracy_table(rows: list[dict], csv_path, md_path) -> None:
    from tpsim.io.writing import atomic_write_text

    cols = ["case", "simulator", "requests", "paired", *TABLE_COLUMNS]
    lines = [",".join(cols)]
    for r in rows:
        lines.append(",".join("" if r[c] is None else (f"{r[c]:.2f}" if isinstance(r[c], float) else str(r[c]))
                              for c in cols))
    atomic_write_text(csv_path, "\n".join(lines) + "\n")
    head = ["case", "simulator", "paired", "TTFT mean Δ%", "TPOT mean Δ%", "latency mean Δ%", "TTFT p90 Δ%",
            "TPOT p90 Δ%", "latency p90 Δ%", "TTFT MAPE %", "TPOT MAPE %", "latency MAPE %"]
    md = ["| " + " | ".join(head) + " |", "|" + "---|" * 3 + "---:|" * (len(head) - 3)]
    for r in rows:
        cells = [r["case"], r["simulator"], f"{r['paired']}/{r['requests']}"]
        for col in TABLE_COLUMNS:
            v = r[col]
            cells.append("n/a" if v is None else (f"{v:.1f}" if col.endswith("mape_pct") else f"{v:+.1f}"))
        md.append("| " + " | ".join(cells) + " |")
    md.append("")
    md.append("Δ% = (simulated − measured) / measured × 100 over all requests of each side; MAPE = mean absolute "
              "percentage error over requests paired by id (measured bench-<i> ↔ simulated request id i).")
    atomic_write_text(md_path, "\n".join(md) + "\n")


# ---------------------------------------------------------------------------- campaign helpers


def discover_cases(root) -> list[str]:
    """Names of the measured replay directories under ``root`` (each with config.json, trace.jsonl and
    vllm/requests.jsonl), sorted; [] if ``root`` does not exist."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir()
                  if p.is_dir() and (p / "config.json").is_file() and (p / "trace.jsonl").is_file()
                  and (p / "vllm" / "requests.jsonl").is_file())


def profile_model_available() -> bool:
    """Whether this build has the profile-driven latency model (``--perf-model profile``)."""
    import importlib.util

    return importlib.util.find_spec("tpsim.perf.profile") is not None


def case_profile_bundle(case_dir, profiles_root) -> Path | None:
    """The measured profile bundle matching a case's hardware, model, dtype and tp under ``profiles_root``
    (every instance must have one), or None."""
    from tpsim.perf.bundle_paths import locate

    case_dir, profiles_root = Path(case_dir), Path(profiles_root)
    if not profiles_root.is_dir():
        return None
    try:
        cluster = read_json(case_dir / "config.json", "cluster config")
        meta = read_json(case_dir / "vllm" / "meta.json", "vLLM run metadata") \
            if (case_dir / "vllm" / "meta.json").is_file() else {}
        model_cfg = read_json(case_dir / "model_config.json", "model config") \
            if (case_dir / "model_config.json").is_file() else {}
    except InputError:
        return None
    ek = meta.get("engine_kwargs") if isinstance(meta.get("engine_kwargs"), dict) else {}
    dtype = ek.get("dtype") if ek.get("dtype") not in (None, "auto") else model_cfg.get("torch_dtype", "bfloat16")
    kv = "fp8" if str(ek.get("kv_cache_dtype", "auto")).startswith("fp8") else "auto"
    found = None
    for node in cluster.get("nodes") or []:
        for inst in (node or {}).get("instances") or []:
            try:
                hit = locate([profiles_root], inst["hardware"], inst["model_name"], dtype, kv,
                             int(inst.get("tp_size", inst.get("num_npus", 1))))
            except (KeyError, TypeError, ValueError):
                return None
            if hit is None:
                return None
            found = found or hit
    return found
