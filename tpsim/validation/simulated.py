"""The simulated side: a 12-column per-request CSV (tpsim's or LLMServingSim's, read through
:mod:`tpsim.io.results`) and, for tpsim's, the run summary beside it (:mod:`tpsim.io.summary`).

Simulated TTFT, TPOT, latency and queuing delay are the CSV's integer ns / 1e6 (ms); TPOT is
skipped when ``output`` <= 1.  A tpsim run with ``--ttft-origin pickup`` (``tpsim replay``'s default)
measures TTFT and latency from vLLM's engine pickup, as the measured runs do; its CSV keeps the
arrival, so ``end_time - arrival - latency`` is the wait for pickup, added back for the "from
arrival" rows.
"""

from __future__ import annotations

from pathlib import Path

from tpsim.errors import InputError
from tpsim.io.files import read_json_file
from tpsim.io.results import read_rows
from tpsim.io.summary import summary_path
from tpsim.validation.compare import METRICS, Side


def read_sim_csv(path, *, with_itl: bool = False, pickup: bool = False) -> Side:
    """A 12-column per-request CSV (tpsim's or LLMServingSim's) -> per-request metrics in ms; ``pickup``: the
    CSV's TTFT and latency start at the engine's pickup (its run summary says ``ttft_origin`` pickup).

    With ``with_itl``, ``side.emissions`` holds each request's token emission
    times (ns), for a generation-throughput timeline.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"--sim {path}: no such file; pass the per-request CSV of a run (tpsim's or LLMServingSim's)")
    side = Side(str(path))
    vals: dict = {k: {} for k in METRICS}
    emissions = []
    waits: dict | None = {} if pickup else None
    for where, row in read_rows(path):
        i = row.request_id
        if i in side.tokens:
            raise InputError(f"{where}: duplicate request id {i}")
        side.tokens[i] = (row.input, row.output)
        side.requests += 1
        wait = 0
        if waits is not None:
            wait = waits[i] = row.end_time - row.arrival - row.latency
            if wait < 0:
                raise InputError(f"{where}: end_time - arrival - latency is negative ({wait} ns) in a CSV whose run "
                                 "summary says TTFT starts at the engine's pickup; pass the run's own CSV")
        vals["ttft"][i] = row.ttft / 1e6
        vals["ttft_from_arrival"][i] = (row.ttft + wait) / 1e6
        vals["latency"][i] = row.latency / 1e6
        vals["latency_from_arrival"][i] = (row.latency + wait) / 1e6
        vals["queuing_delay"][i] = row.queuing_delay / 1e6
        if row.output > 1:
            vals["tpot"][i] = row.tpot / 1e6
        if with_itl:
            try:
                gaps = row.itl
            except ValueError:
                raise InputError(f"{where}: column 'ITL' must be a list of integers") from None
            t = row.arrival + wait + row.ttft
            times = [t]
            for g in gaps:
                t += g
                times.append(t)
            emissions.append(times)
    if side.requests == 0:
        raise InputError(f"{path}: no request rows (header only, e.g. an infeasible run); nothing to compare")
    side.values = vals
    if waits is not None:
        side.pickup_delay_ms = {i: w / 1e6 for i, w in waits.items()}
    if with_itl:
        side.emissions = emissions
    return side


def sim_summary_path(csv_path) -> Path:
    return Path(summary_path(str(csv_path)))


def read_sim_summary(csv_path) -> dict | None:
    """The run summary beside a tpsim CSV (``<name>.summary.json``), or None."""
    p = sim_summary_path(csv_path)
    if not p.is_file():
        return None
    doc, _ = read_json_file(p, "run summary", "--sim (a CSV with its summary beside it)")
    return doc if isinstance(doc, dict) else None


def sim_ttft_origin(summary: dict | None) -> str:
    """Where the CSV's TTFT and latency start: 'pickup' when its tpsim run summary says so, else 'arrival'."""
    flags = (summary or {}).get("provenance", {}).get("flags", {}) if isinstance(summary, dict) else {}
    return "pickup" if isinstance(flags, dict) and flags.get("ttft_origin") == "pickup" else "arrival"


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


def sim_label_of(summary: dict | None, csv_path) -> str:
    """tpsim's run summary names its perf model; other CSVs are labelled by file name."""
    if summary and summary.get("instances"):
        models = sorted({i.get("perf_model") for i in summary["instances"] if i.get("perf_model")})
        if models:
            return "tpsim-" + "+".join(models)
    return Path(csv_path).stem
