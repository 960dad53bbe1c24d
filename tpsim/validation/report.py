"""A validation: both sides read and compared (:func:`validate`), and the result as Markdown tables
(what ``tpsim validate`` prints and writes as ``validation.md``)."""

from __future__ import annotations

from tpsim.validation.by_arrival import BY_ARRIVAL_METRICS, DEFAULT_GROUPS
from tpsim.validation.compare import METRICS, STATS, compare, definitions, round_floats
from tpsim.validation.measured import measured_paths, read_json, read_measured
from tpsim.validation.simulated import (
    read_sim_csv,
    read_sim_summary,
    sim_label_of,
    sim_summary_path,
    sim_ttft_origin,
)

SCHEMA_VERSION = 1


def validate(measured_dir, sim_csv, *, label: str | None = None, with_itl: bool = False,
             arrival_groups: int = DEFAULT_GROUPS) -> tuple[dict, dict]:
    """Read both sides and compare (``arrival_groups``: runs of consecutive arrivals to split the paired
    errors into, 0 for none); returns (the validation document, data for the figures)."""
    paths = measured_paths(measured_dir)
    measured = read_measured(paths["requests"])
    summary = read_sim_summary(sim_csv)
    origin = sim_ttft_origin(summary)
    sim = read_sim_csv(sim_csv, with_itl=with_itl and not (summary and summary.get("timeline")),
                       pickup=origin == "pickup")
    meta = read_json(paths["meta"], "vLLM run metadata") if paths["meta"].is_file() else None
    result = compare(measured, sim, arrival_groups)
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
            "ttft_origin": origin,
            "summary": str(sim_summary_path(sim_csv)) if summary else None,
            "tpsim_version": summary.get("tpsim_version") if summary else None,
            "perf_models": sorted({i.get("perf_model") for i in summary.get("instances", [])
                                   if i.get("perf_model")}) if summary else None,
        },
        **round_floats(result),
        "definitions": definitions(origin),
        "figures": [],
    }
    data = {"measured": measured, "sim": sim, "summary": summary, "timeseries_path": paths["timeseries"]}
    return doc, data


def fmt(x, spec: str) -> str:
    """A number as ``spec`` formats it; "n/a" for None (a statistic a side does not have)."""
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
            lines.append(f"| {m['label']} | {st} | {fmt(m['measured'][st], '.2f')} | {fmt(m['sim'][st], '.2f')} "
                         f"| {fmt(m['diff_pct'][st], '+.1f')} |")
    lines += ["", "| metric | paired requests | MAPE % | MAE (ms) |", "|---|---:|---:|---:|"]
    for m in doc["metrics"].values():
        pr = m["paired"]
        lines.append(f"| {m['label']} | {pr['n']} | {fmt(pr['mape_pct'], '.2f')} | {fmt(pr['mae_ms'], '.2f')} |")
    lines += _by_arrival_lines(doc.get("by_arrival"))
    pickup = doc.get("pickup_delay_ms")
    if pickup:
        lines += ["", f"vLLM's engine loop took a request from its input queue {fmt(pickup['mean'], '.1f')} ms "
                      f"(mean; p90 {fmt(pickup['p90'], '.1f')} ms) after it arrived; the publishers' TTFT and latency "
                      "start at that pickup (queued_ts), the 'from arrival' rows at the arrival."]
        sim_pickup = doc.get("sim_pickup_delay_ms")
        if sim_pickup:
            lines.append(f"The simulation's TTFT and latency start at its modelled pickup (--ttft-origin pickup: the "
                         f"end of the step running at arrival; mean {fmt(sim_pickup['mean'], '.1f')} ms, p90 "
                         f"{fmt(sim_pickup['p90'], '.1f')} ms).")
        else:
            lines.append("The simulation's TTFT and latency start at the arrival.")
    return "\n".join(lines) + "\n"


#: a metric's cells in the by-arrival table: statistic, format
_GROUP_CELLS = (("measured_mean", ".2f"), ("sim_mean", ".2f"), ("diff_pct", "+.1f"), ("mape_pct", ".1f"),
                ("mape_points", ".2f"))


def _by_arrival_lines(rows: list[dict] | None) -> list[str]:
    """The paired errors by arrival group as a Markdown table (none without groups)."""
    if not rows:
        return []
    head = ["group", "queued (s)", "requests"]
    for key in BY_ARRIVAL_METRICS:
        label = METRICS[key]
        head += [f"{label} measured (ms)", f"{label} simulated (ms)", f"{label} diff %", f"{label} MAPE %",
                 f"{label} MAPE points"]
    lines = ["", f"Paired errors by arrival: {len(rows)} groups of consecutive requests (ordered by measured "
                 "queued_ts); a metric's MAPE points add up to its MAPE over these requests.", "",
             "| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    for g, row in enumerate(rows, 1):
        cells = [str(g), f"{row['queued_from_s']:.1f}-{row['queued_to_s']:.1f}", str(row["n"])]
        for key in BY_ARRIVAL_METRICS:
            st = row[key] or {}
            cells += [fmt(st.get(name), spec) for name, spec in _GROUP_CELLS]
        lines.append("| " + " | ".join(cells) + " |")
    return lines
