"""What a figure needs to know about its campaign: the order of every value (the YAML's), which matrix
key is the x axis and which split the figure into rows of panels, the units of each, the SLO, the
overload rule and the measured runs to draw beside the simulated ones.

Order: models, TP degrees, rows and legend entries follow the campaign's matrix lists as written
(``campaign.json``), never text order ("10" after "2" only if the YAML says so).  The x axis of the
line figures is the first of :data:`~tpsim.campaign.outputs.X_KEYS` the matrix varies (link bandwidth; else the GPU, the
request rate, ...); the other varying keys of :data:`ROW_KEYS` become rows of panels, labelled with
their units ("H100", "2 req/s", "link latency 5 us").
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import pandas as pd

from tpsim.campaign.outputs import x_key as choose_x_key

#: matrix keys that split a figure into rows of panels when they vary (and are not the x axis)
ROW_KEYS = ("hardware", "link_bw", "link_latency", "rate", "max_num_seqs", "max_num_batched_tokens")
#: the keys memory depends on (rows of memory_by_tp)
MEMORY_ROW_KEYS = ("hardware", "max_num_seqs", "max_num_batched_tokens")
#: axis labels with units
AXIS_LABELS = {
    "link_bw": "link bandwidth (GB/s per direction)",
    "hardware": "GPU",
    "rate": "request rate (req/s)",
    "link_latency": "link latency (us)",
    "max_num_seqs": "max running requests (max_num_seqs)",
    "max_num_batched_tokens": "max batched tokens per step",
    "tp_size": "tensor-parallel degree (GPUs per instance)",
}
NUMERIC_X = ("link_bw", "rate", "link_latency", "max_num_seqs", "max_num_batched_tokens")


def fmt_num(x) -> str:
    if x is None or pd.isna(x):
        return "n/a"
    x = float(x)
    return str(int(x)) if x.is_integer() else f"{x:g}"


def value_label(key: str, value) -> str:
    """One matrix value with its unit: '16 GB/s', '2 req/s', 'link latency 5 us', 'H100'."""
    if key == "hardware":
        return str(value)
    if key == "link_bw":
        return f"{fmt_num(value)} GB/s"
    if key == "rate":
        return f"{fmt_num(value)} req/s"
    if key == "link_latency":
        return f"link latency {fmt_num(float(value) / 1000)} us"
    if key == "max_num_seqs":
        return f"max {fmt_num(value)} requests"
    if key == "max_num_batched_tokens":
        return f"max {fmt_num(value)} batched tokens"
    return f"{key} {fmt_num(value)}"


def x_tick(key: str, value) -> str:
    """A tick label of the x axis (its unit is in the axis label)."""
    if key == "link_latency":
        return fmt_num(float(value) / 1000)
    return str(value) if key == "hardware" else fmt_num(value)


def same_value(a, b) -> bool:
    """Two matrix values are the same: text equal, or numbers equal (16 == 16.0)."""
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return False


@dataclass
class Context:
    """A campaign as its figures see it (built by :func:`context`)."""

    doc: dict
    models: list
    tps: list
    x_key: str
    x_values: list
    row_keys: list
    rows: list = field(default_factory=list)  # tuples of row-key values, in matrix order, that have runs
    runs: pd.DataFrame | None = None
    measured_runs: pd.DataFrame | None = None
    measured_requests: pd.DataFrame | None = None

    @property
    def x_numeric(self) -> bool:
        return self.x_key in NUMERIC_X

    @property
    def slo(self):
        from tpsim.campaign.slo import SLO

        return SLO.from_doc(self.doc.get("slo"))

    def row_label(self, row: tuple, keys=None) -> str:
        return ", ".join(value_label(k, v) for k, v in zip(keys or self.row_keys, row))

    def select(self, df: pd.DataFrame, row: tuple, keys=None) -> pd.DataFrame:
        """The rows of ``df`` in one facet row."""
        mask = pd.Series(True, index=df.index)
        for k, v in zip(keys or self.row_keys, row):
            mask &= df[k].map(lambda x, v=v: same_value(x, v))
        return df[mask]

    def rows_for(self, keys) -> list:
        """The facet rows over other keys (e.g. :data:`MEMORY_ROW_KEYS`), in matrix order."""
        return _rows(self.doc, self.runs, keys)

    def model_label(self, name: str) -> str:
        """The model's last path part unless two models share it; '$' escaped (matplotlib would read
        text between two '$' as math)."""
        short = name.rsplit("/", 1)[-1]
        clash = sum(1 for n in self.models if n.rsplit("/", 1)[-1] == short) > 1
        return (name if clash else short).replace("$", r"\$")

    def measured(self, model, row: tuple, tp=None) -> pd.DataFrame:
        """The measured runs drawn in a panel (model, facet row) and, if given, at a TP."""
        m = self.measured_runs
        if m is None or m.empty:
            return pd.DataFrame()
        m = m[m["model"] == model]
        if tp is not None:
            m = m[m["tp_size"] == tp]
        for k, v in zip(self.row_keys, row):
            m = m[m[k].map(lambda x, v=v: same_value(x, v))] if k in m else m
        return m


def _matrix_values(doc: dict, runs: pd.DataFrame, key: str) -> list:
    """The key's values in the campaign's order: the matrix list, else first-seen in the runs."""
    listed = (doc.get("matrix") or {}).get(key)
    present = [v for v in pd.unique(runs[key]) if not pd.isna(v)] if key in runs else []
    if listed:
        return [v for v in listed if any(same_value(v, p) for p in present)]
    return present


def _rows(doc: dict, runs: pd.DataFrame, keys) -> list:
    if not keys:
        return [()]
    orders = [_matrix_values(doc, runs, k) for k in keys]
    have = {tuple(fmt_num(v) if not isinstance(v, str) else v for v in r) for r in runs[list(keys)].itertuples(
        index=False)}
    return [combo for combo in itertools.product(*orders)
            if tuple(fmt_num(v) if not isinstance(v, str) else v for v in combo) in have]


def context(doc: dict, runs: pd.DataFrame, measured: tuple | None = None) -> Context:
    """The figures' view of a campaign: ``doc`` is ``campaign.json`` (the validated campaign), ``runs``
    the runs (or configurations) table, ``measured`` the measured runs and requests
    (:func:`tpsim.campaign.measured_runs.load`)."""
    matrix = doc.get("matrix") or {}
    x_key = choose_x_key(doc)
    row_keys = [k for k in ROW_KEYS if k != x_key and len(matrix.get(k) or []) > 1]
    ctx = Context(doc=doc, models=_matrix_values(doc, runs, "model"), tps=_matrix_values(doc, runs, "tp_size"),
                  x_key=x_key, x_values=_matrix_values(doc, runs, x_key) if x_key in runs else [],
                  row_keys=row_keys, runs=runs)
    if ctx.x_numeric:
        ctx.x_values = sorted(ctx.x_values)
    ctx.rows = _rows(doc, runs, row_keys)
    if measured is not None:
        ctx.measured_runs, ctx.measured_requests = measured
    return ctx
