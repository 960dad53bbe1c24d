"""Fit the analytical model's efficiencies and overheads to a measured bundle (``tpsim calibrate``).

Each bundle row becomes a *point*, and its predicted time is whatever
:class:`~tpsim.perf.analytical.AnalyticalModel` says for that op under trial
parameters: the model is rebuilt with them and prices the step's ops
(:mod:`tpsim.perf.ops`), so the roofline formulas exist once.  A
measured attention call is compared with the model's attention plus its
KV-cache write (the profilers time the two together, as vLLM's Attention
layer runs them).

Free parameters: ``gemm_efficiency``, ``memory_efficiency``,
``attention_compute_efficiency``, ``attention_memory_efficiency``,
``kernel_overhead_ns`` and ``graph_kernel_overhead_ns``.  The fit minimises
the mean squared log error, each op weighted equally (attention rows thinned
evenly to at most 600), by coordinate descent (each parameter scanned on a
grid refined twice) followed by a Nelder-Mead simplex in logit-transformed,
bounded coordinates.  Pure Python; seconds.

Kernel-timed bundles (LLMServingSim's: sums of CUDA kernel durations) contain
no launch gaps: they are compared with zero overheads, and the per-kernel
constant fitted there (the model's additive per-kernel gap) is the fixed part
of a kernel's own duration.  It is reported as ``kernel_fixed_ns`` and never
written to the catalog.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from tpsim.errors import InputError
from tpsim.perf.analytical import AnalyticalModel
from tpsim.perf.base import BatchShape
from tpsim.perf.bundle import Bundle
from tpsim.perf.ops import StepPlan
from tpsim.perf.vllm_exec import EAGER, FULL

EFFICIENCIES = ("gemm_efficiency", "memory_efficiency", "attention_compute_efficiency",
                "attention_memory_efficiency")
OVERHEADS = ("kernel_overhead_ns", "graph_kernel_overhead_ns")
PARAMS = EFFICIENCIES + OVERHEADS
_BOUNDS = {"gemm_efficiency": (0.02, 1.0), "memory_efficiency": (0.02, 1.0),
           "attention_compute_efficiency": (0.02, 1.0), "attention_memory_efficiency": (0.02, 1.0),
           "kernel_overhead_ns": (0.0, 50_000.0), "graph_kernel_overhead_ns": (0.0, 20_000.0)}
#: dense layer name -> analytical op name
_DENSE = {"layernorm": "input_layernorm", "qk_norm": "qk_norm", "qkv_proj": "qkv_proj", "rotary_emb": "rotary_emb",
          "o_proj": "o_proj", "gate_up_proj": "gate_up_proj", "act_fn": "act_fn", "down_proj": "down_proj"}
_HEAD = {"embedding": "embedding", "final_layernorm": "final_layernorm", "lm_head": "lm_head", "sampler": "sampler"}
_GEMMS = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj", "lm_head")
_MAX_ATTENTION_POINTS = 600


@dataclass
class Point:
    op: str  # bundle layer name, or attention/prefill|decode|mixed
    kind: str  # "layer" | "head" | "attention"
    key: tuple  # layer/head: (n, graph, analytical op name); attention: (batch, new tokens, graph)
    graph: bool
    measured_ns: float


@dataclass
class FitResult:
    params: dict
    before: dict  # op -> mean abs % error with the catalog's values
    after: dict
    fitted: list  # parameter names fitted
    points: int
    kernel_timed: bool
    notes: list = field(default_factory=list)


def _layer_times(am: AnalyticalModel, n: int, graph: bool) -> dict[str, float]:
    """Each op of one decoder layer of ``n`` tokens (graph-replayed or eager): its time by name."""
    return {op.name: am.price(op).time_ns for op in am.step_ops.layer(_plan(n, graph))}


def _head_times(am: AnalyticalModel, n: int, graph: bool) -> dict[str, float]:
    """The once-per-step ops of ``n`` tokens, ``n`` sequences sampling."""
    return {op.name: am.price(op).time_ns for op in am.step_ops.head(_plan(n, graph))}


def _plan(n: int, graph: bool) -> StepPlan:
    return StepPlan(FULL if graph else EAGER, n, n, n)


def build_points(bundle: Bundle) -> list[Point]:
    """One point per bundle row (attention thinned evenly to at most 1500)."""
    points: list[Point] = []
    for layer, op in _DENSE.items():
        for graph, tables in ((False, bundle.dense), (True, bundle.dense_graph)):
            t = tables.get(layer)
            for n, y in zip(t.keys, t.values) if t is not None else ():
                if y > 0:
                    points.append(Point(layer, "layer", (n, graph, op), graph, y))
    for layer, op in _HEAD.items():
        per_seq = layer in ("lm_head", "sampler")
        for graph, tables in ((False, bundle.per_sequence if per_seq else bundle.dense),
                              (True, bundle.per_sequence_graph if per_seq else bundle.dense_graph)):
            t = tables.get(layer)
            for n, y in zip(t.keys, t.values) if t is not None else ():
                if y > 0:
                    points.append(Point(layer, "head", (n, graph, op), graph, y))
    for graph, table in ((False, bundle.attention), (True, bundle.attention_graph)):
        if table is None:
            continue
        rows = [(pc, kp, nd, kd, y) for (pc, nd), s in sorted(table.slices.items())
                for kp, r in zip(s.kps, s.rows) for kd, y in zip(r.keys, r.values)]
        step = max(1, math.ceil(len(rows) / _MAX_ATTENTION_POINTS))
        for pc, kp, nd, kd, y in rows[::step]:
            if y <= 0:
                continue
            prefill = ((pc, kp),) if pc else ()
            batch = BatchShape(prefill, nd, nd * kd, kd, nd + len(prefill))
            kind = "mixed" if pc and nd else ("prefill" if pc else "decode")
            points.append(Point(f"attention/{kind}", "attention", (batch, pc + nd, graph and not pc), graph, y))
    return points


class Evaluator:
    """The analytical model's time for each point under given parameters (its own code does the roofline)."""

    def __init__(self, am: AnalyticalModel, points: list[Point]):
        self.am = am
        self.points = points

    def model(self, params: dict) -> AnalyticalModel:
        am = self.am
        hw = msgspec.structs.replace(am.hardware, perf=msgspec.structs.replace(am.hardware.perf, **params))
        return AnalyticalModel(am.model, hw, am.engine, am.tp, 1, am.mem_bw, am.link_bw, am.link_latency)

    def predict(self, params: dict, points: list[Point] | None = None) -> list[float]:
        am = self.model(params)
        layer_cache: dict = {}
        head_cache: dict = {}

        def layer_ops(n, graph):
            key = (n, graph)
            if key not in layer_cache:
                layer_cache[key] = _layer_times(am, n, graph)
            return layer_cache[key]

        out = []
        for p in self.points if points is None else points:
            if p.kind == "layer":
                n, graph, op = p.key
                out.append(layer_ops(n, graph)[op])
            elif p.kind == "head":
                n, graph, op = p.key
                key = (n, graph)
                if key not in head_cache:
                    head_cache[key] = _head_times(am, n, graph)
                out.append(head_cache[key][op])
            else:
                batch, new, graph = p.key
                out.append(am.attention_cost(batch, graph)[0] + layer_ops(new, graph)["kv_cache_write"])
        return out


def _loss(ev: Evaluator, points: list[Point], params: dict) -> float:
    by_op: dict[str, list[float]] = {}
    for p, y in zip(points, ev.predict(params, points)):
        e = math.log(max(y, 1e-3) / p.measured_ns)
        by_op.setdefault(p.op, []).append(e * e)
    return sum(sum(v) / len(v) for v in by_op.values()) / max(1, len(by_op))


def residuals(ev: Evaluator, params: dict) -> dict[str, float]:
    """Mean absolute % error per op (graph rows reported as '<op> (graph)')."""
    acc: dict[str, list[float]] = {}
    for p, y in zip(ev.points, ev.predict(params)):
        key = p.op + (" (graph)" if p.graph else "")
        acc.setdefault(key, []).append(abs(y / p.measured_ns - 1.0) * 100.0)
    return {k: sum(v) / len(v) for k, v in sorted(acc.items())}


def _relevant(points: list[Point], name: str) -> list[Point]:
    """The points a parameter changes (faster scans)."""
    if name == "gemm_efficiency":
        return [p for p in points if p.kind != "attention" and p.key[2] in _GEMMS]
    if name in ("attention_compute_efficiency", "attention_memory_efficiency"):
        return [p for p in points if p.kind == "attention"]
    return points


def fit(ev: Evaluator, start: dict, names: list[str], sweeps: int = 1) -> dict:
    """Coordinate descent on refined grids (to find the basin), then Nelder-Mead (to converge)."""
    params = dict(start)
    for _ in range(sweeps):
        for name in names:
            lo, hi = _BOUNDS[name]
            subset = _relevant(ev.points, name) or ev.points
            best = params[name]
            span = hi - lo
            for _level in range(3):
                a, b = max(lo, best - span / 2), min(hi, best + span / 2)
                scores = []
                for i in range(11):
                    params[name] = a + (b - a) * i / 10
                    scores.append((_loss(ev, subset, params), params[name]))
                best = min(scores)[1]
                span = (b - a) / 5
            params[name] = best
    return _nelder_mead(ev, params, names)


def _to_unit(name: str, value: float) -> float:
    lo, hi = _BOUNDS[name]
    u = min(1 - 1e-9, max(1e-9, (value - lo) / (hi - lo)))
    return math.log(u / (1 - u))


def _from_unit(name: str, x: float) -> float:
    lo, hi = _BOUNDS[name]
    x = max(-40.0, min(40.0, x))
    return lo + (hi - lo) / (1 + math.exp(-x))


def _nelder_mead(ev: Evaluator, params: dict, names: list[str], iters: int = 400) -> dict:
    base = dict(params)

    def f(x):
        p = dict(base)
        for name, xi in zip(names, x):
            p[name] = _from_unit(name, xi)
        return _loss(ev, ev.points, p)

    x0 = [_to_unit(n, params[n]) for n in names]
    simplex = [x0] + [[xi + (0.5 if i == j else 0.0) for j, xi in enumerate(x0)] for i in range(len(x0))]
    scores = [f(x) for x in simplex]
    for _ in range(iters):
        order = sorted(range(len(simplex)), key=scores.__getitem__)
        simplex = [simplex[i] for i in order]
        scores = [scores[i] for i in order]
        if scores[-1] - scores[0] < 1e-14 * (1 + scores[0]):
            break
        n = len(x0)
        centroid = [sum(v[j] for v in simplex[:-1]) / n for j in range(n)]
        worst_x = simplex[-1]
        refl = [c + (c - w) for c, w in zip(centroid, worst_x)]
        fr = f(refl)
        if fr < scores[0]:
            exp = [c + 2 * (c - w) for c, w in zip(centroid, worst_x)]
            fe = f(exp)
            simplex[-1], scores[-1] = (exp, fe) if fe < fr else (refl, fr)
        elif fr < scores[-2]:
            simplex[-1], scores[-1] = refl, fr
        else:
            con = [c + 0.5 * (w - c) for c, w in zip(centroid, worst_x)]
            fc = f(con)
            if fc < scores[-1]:
                simplex[-1], scores[-1] = con, fc
            else:
                best = simplex[0]
                simplex = [best] + [[b + 0.5 * (v - b) for b, v in zip(best, x)] for x in simplex[1:]]
                scores = [scores[0]] + [f(x) for x in simplex[1:]]
    best = simplex[min(range(len(simplex)), key=scores.__getitem__)]
    out = dict(base)
    for name, xi in zip(names, best):
        out[name] = _from_unit(name, xi)
    return out


def calibrate(bundle: Bundle, am: AnalyticalModel) -> FitResult:
    points = build_points(bundle)
    if not points:
        raise InputError(f"{bundle.path}: no usable rows to fit")
    ev = Evaluator(am, points)
    p0 = am.hardware.perf
    start = {k: float(getattr(p0, k)) for k in PARAMS}
    kernel_timed = bundle.timing == "kernel"
    notes = []
    names = list(EFFICIENCIES)
    if kernel_timed:
        # kernel durations hold no launch gap: compare against none, fit the per-kernel additive constant
        # (graph_kernel_overhead_ns in the analytical model) as the fixed part of a kernel's own duration
        start["kernel_overhead_ns"] = start["graph_kernel_overhead_ns"] = 0.0
        names.append("graph_kernel_overhead_ns")
        notes.append("kernel-timed bundle: compared with no launch overhead; the per-kernel constant fitted is the "
                     "fixed part of each kernel's duration (kernel_fixed_ns), not a launch overhead, and the "
                     "overheads are not written")
    else:
        names += ["kernel_overhead_ns", "graph_kernel_overhead_ns"]
        if not any(p.graph for p in points):
            notes.append("no CUDA-graph timings: graph_kernel_overhead_ns is fitted from eager rows only (the "
                         "per-kernel gap of large kernels)")
    compute_bound = [p for p in points if p.kind != "attention" and p.key[2] in _GEMMS]
    if compute_bound and max(p.key[0] for p in compute_bound) < 256:
        notes.append("no GEMM with >= 256 tokens: gemm_efficiency is poorly determined")
    before = residuals(ev, start)
    params = fit(ev, start, names)
    after = residuals(ev, params)
    return FitResult(params, before, after, names, len(points), kernel_timed, notes)


# --------------------------------------------------------------------------- synthetic bundles
def synthetic_rows(am: AnalyticalModel, tokens, sequences, attention_shapes, graph_max: int = 512):
    """Rows a perfect profiler would measure if the analytical model were the truth (tests, docs).

    Returns (dense, per_sequence, attention) lists for :func:`tpsim.perf.bundle.write_bundle`, eager and
    (for token counts <= ``graph_max`` and decode-only attention) graph timings.
    """
    dense, per_seq, attn = [], [], []
    rev = {v: k for k, v in _DENSE.items() if k != "layernorm"}
    rev["input_layernorm"] = "layernorm"
    for n in tokens:
        eager = _layer_times(am, n, False)
        graph = _layer_times(am, n, True) if n <= graph_max else {}
        for op, layer in rev.items():
            if op in eager:
                dense.append((layer, n, eager[op], graph.get(op)))
        eh = _head_times(am, n, False)
        gh = _head_times(am, n, True) if n <= graph_max else {}
        for op in ("embedding", "final_layernorm"):
            dense.append((op, n, eh[op], gh.get(op)))
    for n in sequences:
        eh = _head_times(am, n, False)
        gh = _head_times(am, n, True) if n <= graph_max else {}
        for op in ("lm_head", "sampler"):
            per_seq.append((op, n, eh[op], gh.get(op)))
    for pc, kp, nd, kd in attention_shapes:
        prefill = ((pc, kp),) if pc else ()
        batch = BatchShape(prefill, nd, nd * kd, kd, nd + len(prefill))

        def total(graph, batch=batch, tokens=pc + nd):
            return am.attention_cost(batch, graph)[0] + _layer_times(am, tokens, graph)["kv_cache_write"]

        g = total(True) if (not pc and nd <= graph_max) else None
        attn.append((pc, kp, nd, kd, total(False), g))
    return dense, per_seq, attn


# --------------------------------------------------------------------------- writing the catalog
_KEY_LINE = re.compile(r"^(?P<indent>\s+)(?P<key>[A-Za-z_][A-Za-z0-9_]*):(?P<sp>\s*)(?P<value>[^#\n]*?)"
                       r"(?P<gap>\s*)(?P<comment>#.*)?$")


def format_value(key: str, value: float) -> str:
    if key.endswith("_ns") or key in ("gemm_tile_m", "gemm_tile_n", "num_sms"):
        return str(int(round(value)))
    return f"{value:.3f}"


def update_hardware_yaml(path: Path, values: dict, provenance: str) -> str:
    """Replace ``perf_model:`` values (comments become ``# <provenance>``) and ``provenance:`` entries in place.

    Returns the new text; other lines and comments are kept as they are.
    """
    lines = path.read_text().splitlines()
    out: list[str] = []
    section = None
    done_prov: set[str] = set()
    prov_indent = "  "
    prov_end = None
    for line in lines:
        top = re.match(r"^([A-Za-z_][A-Za-z0-9_]*):(.*)$", line)
        if top:
            if section == "provenance" and prov_end is None:
                prov_end = len(out)
            section = top.group(1)
            rest = top.group(2).strip()
            if section == "provenance" and rest.startswith("{"):
                # a flow mapping: rewrite as a block with its entries
                inner = rest.strip("{} ")
                out.append("provenance:")
                for item in filter(None, (s.strip() for s in inner.split(","))):
                    k, _, v = item.partition(":")
                    if k.strip() in values:
                        continue
                    out.append(f"{prov_indent}{k.strip()}: {v.strip()}")
                continue
            out.append(line)
            continue
        m = _KEY_LINE.match(line)
        if m and section == "perf_model" and m.group("key") in values:
            key = m.group("key")
            new = format_value(key, values[key])
            gap = m.group("gap") or "  "
            pad = max(1, len(m.group("value")) + len(gap) - len(new))
            out.append(f"{m.group('indent')}{key}:{m.group('sp') or ' '}{new}{' ' * pad}# {provenance}")
            continue
        if m and section == "provenance" and m.group("key") in values:
            prov_indent = m.group("indent")
            out.append(f"{m.group('indent')}{m.group('key')}: {json.dumps(provenance)}")
            done_prov.add(m.group("key"))
            continue
        if m and section == "provenance":
            prov_indent = m.group("indent")
        out.append(line)
    if section == "provenance" and prov_end is None:
        prov_end = len(out)
    missing = [k for k in values if k not in done_prov]
    if missing:
        add = [f"{prov_indent}{k}: {json.dumps(provenance)}" for k in missing]
        if prov_end is None:
            out += ["provenance:"] + add
        else:
            out[prov_end:prov_end] = add
    return "\n".join(out) + "\n"


def provenance_text(bundle_path: str, today: _dt.date | None = None) -> str:
    today = today or _dt.datetime.now(_dt.UTC).date()
    return f"fitted from {bundle_path} on {today.isoformat()} (tpsim calibrate)"
