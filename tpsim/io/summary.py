"""The run summary: its type, where it lives beside the CSV, its JSON form and its schema.

``<output>.summary.json`` is written beside every per-request CSV.  :class:`RunSummary` is its
typed form (fields in the JSON's key order); ``run_summary.schema.json`` beside this module is
its JSON Schema (2020-12), which the tests check every summary against and which tools reading
summaries (the campaign pipeline, validation) can rely on.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import msgspec

SCHEMA_VERSION = 1
SCHEMA_PATH = Path(__file__).with_name("run_summary.schema.json")


def summary_path(csv_path: str) -> str:
    """``out/run.csv`` -> ``out/run.summary.json`` (any other name gets ``.summary.json`` appended)."""
    csv_path = str(csv_path)
    return (csv_path[:-4] if csv_path.lower().endswith(".csv") else csv_path) + ".summary.json"


class RunSummary(msgspec.Struct):
    """What a run did (``status`` ok) or why it could not run (``status`` infeasible)."""

    status: str  # "ok" | "infeasible"
    tpsim_version: str
    provenance: dict  # git commit, argv, flags, seed, inputs (path and SHA-256 of each file)
    reason: str | None = None  # why an infeasible run cannot happen
    instances: list = msgspec.field(default_factory=list)  # per instance: config, engine, memory, latency model, counts
    totals: dict | None = None
    simulated_time_s: float | None = None
    mean_requests_in_system: float | None = None
    throughput: dict | None = None
    metrics_ms: dict | None = None  # ttft/tpot/itl/latency/queuing_delay -> mean, p50, p90, p99
    timeline_bin_s: float | None = None
    timeline: list = msgspec.field(default_factory=list)
    rejected_requests: list = msgspec.field(default_factory=list)
    approximations: list = msgspec.field(default_factory=list)
    ignored: list = msgspec.field(default_factory=list)
    warnings: list = msgspec.field(default_factory=list)
    timing: dict = msgspec.field(default_factory=dict)  # wall time and speed-up: the one field that varies by run
    extra: dict = msgspec.field(default_factory=dict)  # further top-level blocks (e.g. replay), written last
    schema_version: int = SCHEMA_VERSION

    _ORDER = ("schema_version", "status", "reason", "tpsim_version", "provenance", "instances", "totals",
              "simulated_time_s", "mean_requests_in_system", "throughput", "metrics_ms", "timeline_bin_s", "timeline",
              "rejected_requests", "approximations", "ignored", "warnings", "timing")

    def to_dict(self) -> dict:
        d = {k: copy.deepcopy(getattr(self, k)) for k in self.__struct_fields__}  # a copy, as asdict made
        out = {k: d[k] for k in self._ORDER}
        out.update(self.extra)
        return out

    def to_json(self) -> str:
        from tpsim.io.writing import json_text

        return json_text(self.to_dict())

    @classmethod
    def from_dict(cls, doc: dict) -> RunSummary:
        known = set(cls.__struct_fields__) - {"extra"}
        values = {k: v for k, v in doc.items() if k in known}
        return cls(**values, extra={k: v for k, v in doc.items() if k not in known})

    def metric(self, name: str, stat: str) -> Any:
        """``metric("ttft", "p50")`` in ms, None when the run had no such value."""
        m = (self.metrics_ms or {}).get(name)
        return None if m is None else m.get(stat)


def load_summary(path) -> RunSummary:
    """Read a summary written by tpsim (``InputError`` naming the file if it is not one)."""
    from tpsim.errors import InputError
    from tpsim.io.files import read_json_file

    doc, _ = read_json_file(path, "run summary", "the summary path")
    if not isinstance(doc, dict) or "status" not in doc:
        raise InputError(f"{path}: not a tpsim run summary (no 'status')")
    return RunSummary.from_dict(doc)


def schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
