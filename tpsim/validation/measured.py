"""The measured side: a replay directory as LLMServingSim's ``bench`` writes it (layout in
:mod:`tpsim.validation` and ``docs/validation.md``), its per-request records and its timeseries.

Measured TTFT = first_token_ts - queued_ts; TPOT = (last_token_ts - first_token_ts) /
(output_toks - 1), skipped when output_toks <= 1; latency = last_token_ts - queued_ts; queuing
delay = scheduled_ts - queued_ts -- all in ms, as the publishers define them.
"""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

from tpsim.errors import InputError
from tpsim.io.files import decode_utf8, parse_json, read_bytes, read_json_file
from tpsim.validation.compare import METRICS, Side

#: a measured run's per-request file (300 requests are ~100 kB; a million about 300 MB)
MAX_MEASURED_BYTES = 1 << 30
_BENCH_ID = re.compile(r"^(?:bench-)?(\d+)$")


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
    """A JSON object file of a measured directory (``what`` names it in errors), read strictly."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such file ({what})")
    doc, _ = read_json_file(p, what, "--measured")
    if not isinstance(doc, dict):
        raise InputError(f"{p}: expected a JSON object ({what})")
    return doc


def _json_lines(path: Path):
    """(``path:line``, object) for each non-blank line of a JSON Lines file, parsed strictly."""
    try:
        raw = read_bytes(path, "measured requests", "--measured", limit=MAX_MEASURED_BYTES)
    except InputError as exc:
        if not path.exists():
            raise InputError(f"{path}: no such file") from None
        raise exc from None
    text = decode_utf8(raw, str(path))
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        obj = parse_json(line, where, one_line=True)
        if not isinstance(obj, dict):
            raise InputError(f"{where}: expected a JSON object per line")
        yield where, obj


def read_measured(path) -> Side:
    """``vllm/requests.jsonl`` -> per-request TTFT/TPOT/latency (and queuing delay) in ms."""
    path = Path(path)
    side = Side(str(path))
    vals: dict = {k: {} for k in METRICS}
    arrivals: dict = {}  # request -> (arrival_time, queued_ts), to measure from arrival as well
    has_sched = True
    for where, obj in _json_lines(path):
        has_sched &= _record(obj, where, side, vals, arrivals)
    if side.requests == 0:
        raise InputError(f"{path}: no requests (empty file)")
    if not has_sched:
        vals["queuing_delay"] = {}
    _from_arrival(vals, arrivals, side)
    side.values = vals
    first = min(side.queued_s.values())
    side.queued_s = {i: q - first for i, q in side.queued_s.items()}
    return side


def _record(obj: dict, where: str, side: Side, vals: dict, arrivals: dict) -> bool:
    """One request's record into ``side``/``vals``; False when it lacks ``scheduled_ts``."""
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
    arrival = _num(obj, "arrival_time", where, optional=True)
    side.tokens[i] = (inp, out)
    side.queued_s[i] = q
    side.requests += 1
    if first is None or last is None or first <= 0 or last <= 0:
        side.unfinished.append(i)  # vLLM never produced a token for it
        return True
    if last < first:
        raise InputError(f"{where}: last_token_ts {last} is before first_token_ts {first}")
    vals["ttft"][i] = (first - q) * 1e3
    vals["latency"][i] = (last - q) * 1e3
    if arrival is not None:
        arrivals[i] = (arrival, q)
    if out > 1:
        vals["tpot"][i] = (last - first) * 1e3 / (out - 1)
    if sched is None:
        return False
    vals["queuing_delay"][i] = (sched - q) * 1e3
    return True


def _from_arrival(vals: dict, arrivals: dict, side: Side) -> None:
    """TTFT and latency from arrival (see DEFINITIONS): + each request's wait for the engine loop's pickup."""
    if not arrivals or len(arrivals) < len(vals["ttft"]):
        vals["ttft_from_arrival"], vals["latency_from_arrival"] = {}, {}
        return
    offset = min(q - a for a, q in arrivals.values())
    pickup = {i: ((q - a) - offset) * 1e3 for i, (a, q) in arrivals.items()}
    vals["ttft_from_arrival"] = {i: v + pickup[i] for i, v in vals["ttft"].items()}
    vals["latency_from_arrival"] = {i: v + pickup[i] for i, v in vals["latency"].items()}
    side.pickup_delay_ms = pickup


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
