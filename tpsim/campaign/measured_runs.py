"""Measured runs drawn beside a campaign's simulated points (the campaign's ``measured:`` list).

Each entry names a folder in the ``../shared/validation`` layout (``config.json``: the cluster config
the measurement ran; ``vllm/requests.jsonl``: per-request timestamps; ``vllm/meta.json``: engine
arguments), read by :mod:`tpsim.validation.measured`.  A measurement is drawn in the panels of its
model and at its TP, link and GPU; where the campaign's figures split into rows by a matrix key
(hardware, rate, link_latency, max_num_seqs, max_num_batched_tokens), the measurement goes into the
row of its own value -- from its config and engine arguments, and ``rate`` from the entry, which a
campaign that varies the rate must give.  Load-time checks (:func:`check`) refuse a measurement that
could be drawn nowhere.
"""

from __future__ import annotations

from pathlib import Path

from tpsim.campaign.reading import printable
from tpsim.campaign.run_ids import canonical_number, match_key
from tpsim.errors import InputError

#: matrix keys that split figures into rows, and where a measurement says its value
ROW_KEYS = ("hardware", "link_latency", "rate", "max_num_seqs", "max_num_batched_tokens")
DEFAULT_LABEL = "measured (vLLM)"


def entries(doc: dict) -> list[dict]:
    """The ``measured:`` list as {path, label, rate} mappings."""
    out = []
    for item in doc.get("measured") or []:
        item = {"path": item} if isinstance(item, str) else dict(item)
        item.setdefault("label", DEFAULT_LABEL)
        out.append(item)
    return out


def describe(path: str) -> dict:
    """A measured folder's run parameters (model, hardware, tp_size, link_bw, link_latency, engine
    limits); InputError naming the file when it is not a measured run."""
    from tpsim.validation.measured import measured_paths, read_json

    paths = measured_paths(path)
    config = read_json(paths["config"], "the measured run's cluster config")
    try:
        inst = config["nodes"][0]["instances"][0]
        params = {"model": inst["model_name"], "hardware": inst["hardware"], "tp_size": inst["tp_size"],
                  "link_bw": canonical_number(config["link_bw"]),
                  "link_latency": canonical_number(config["link_latency"])}
    except (KeyError, IndexError, TypeError):
        raise InputError(f"{paths['config']}: expected an LLMServingSim cluster config (link_bw, link_latency, "
                         "nodes[0].instances[0] with model_name, hardware, tp_size)") from None
    meta = read_json(paths["meta"], "the measured run's engine arguments") if paths["meta"].is_file() else {}
    engine = meta.get("engine_kwargs") if isinstance(meta.get("engine_kwargs"), dict) else {}
    params["max_num_seqs"] = engine.get("max_num_seqs")
    params["max_num_batched_tokens"] = engine.get("max_num_batched_tokens")
    return params


def check(doc: dict, matrix: dict, base_hardware: str | None, resolve) -> list[str]:
    """Problems of the ``measured:`` list: folders that are not measured runs, or measurements of a
    model, TP or row value the matrix does not have.  ``resolve(path)`` finds a path (None: missing);
    resolved paths replace the given ones in ``doc``."""
    problems = []
    items = entries(doc)
    for i, item in enumerate(items):
        key = f"measured[{i}]"
        found = resolve(item["path"])
        if found is None:
            problems.append(f"{key}: {printable(item['path'])} does not exist")
            continue
        try:
            params = describe(found)
        except InputError as exc:
            problems.append(f"{key}: {printable(str(exc))}")
            continue
        item["path"] = found
        problems += [f"{key}: {p}" for p in _mismatches(params, item, matrix, base_hardware)]
    if "measured" in doc:
        doc["measured"] = items
    return problems


def _mismatches(params: dict, item: dict, matrix: dict, base_hardware: str | None) -> list[str]:
    out = []
    for key in ("model", "tp_size"):
        values = matrix.get(key) or []
        if match_key(params[key]) not in {match_key(v) for v in values}:
            out.append(f"its {key} {params[key]!r} is not in matrix.{key}; it would be drawn beside nothing")
    if "hardware" not in matrix and base_hardware is not None and params["hardware"] != base_hardware:
        out.append(f"it ran on {params['hardware']}, the campaign on {base_hardware}")
    for key in ROW_KEYS:
        values = matrix.get(key) or []
        if len(values) < 2:
            continue
        value = item.get("rate") if key == "rate" else params.get(key)
        if value is None:
            out.append(f"the matrix varies {key}; give measured[...].{key}, the value this measurement ran at"
                       if key == "rate" else f"the matrix varies {key}, and the measurement does not say its {key}")
        elif match_key(value) not in {match_key(v) for v in values}:
            out.append(f"its {key} {value!r} is not in matrix.{key} {values!r}")
    return out


def load(doc: dict):
    """(runs, requests) DataFrames of the campaign's measurements, as the figures read the simulated
    tables: one row per measurement (parameters, ``label``, median and p90 of TTFT / TPOT / latency in
    ms) and one row per measured request (``ttft_ns``, ``tpot_ns``, ``output_tokens``)."""
    import pandas as pd

    from tpsim.validation.measured import measured_paths, read_measured

    runs, reqs = [], []
    for i, item in enumerate(entries(doc)):
        params = describe(item["path"])
        side = read_measured(measured_paths(item["path"])["requests"])
        row = {**params, "rate": item.get("rate"), "label": item["label"], "measured_id": i,
               "path": str(Path(item["path"]))}
        for metric in ("ttft", "tpot", "latency"):
            values = sorted(side.values.get(metric, {}).values())
            row[f"{metric}_p50_ms"] = _quantile(values, 0.5)
            row[f"{metric}_p90_ms"] = _quantile(values, 0.9)
        runs.append(row)
        for idx, ttft in side.values.get("ttft", {}).items():
            tpot = side.values.get("tpot", {}).get(idx)
            reqs.append({"measured_id": i, "ttft_ns": ttft * 1e6, "tpot_ns": None if tpot is None else tpot * 1e6,
                         "output_tokens": side.tokens[idx][1]})
    return pd.DataFrame(runs), pd.DataFrame(reqs, columns=["measured_id", "ttft_ns", "tpot_ns", "output_tokens"])


def _quantile(values: list, q: float):
    from tpsim.stats import percentile_sorted

    return percentile_sorted(values, q * 100) if values else None
