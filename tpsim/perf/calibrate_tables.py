"""Fit the analytical (roofline) model to a GPU's measured kernel tables (``tpsim calibrate --tables``).

What is fitted, and to what (per GPU, bf16):

* GEMMs: a shape-dependent efficiency, not one constant.  Output tiles of ``tile_m x tile_n``
  are spread over the GPU's ``num_sms`` in waves; a GEMM takes
  ``max(waves x tile_m x tile_n x 2k / (peak x efficiency / num_sms), bytes / (mem_bw x
  memory_efficiency)) + floor`` -- tile and wave quantisation, the small-m bandwidth limit and a
  launch-and-latency floor.  ``tile_m``, ``tile_n`` are chosen from {64, 128, 256};
  ``gemm_efficiency``, ``memory_efficiency`` and ``gemm_floor_ns`` minimise the mean absolute log
  error over the table's linear-layer shapes (m 1..16384, n and k 512..32768).
* Decode attention: ``attention_memory_efficiency`` = KV bytes / (time x mem_bw) over the
  generation table's bandwidth-bound points (batch x context >= 16 K tokens), median.
* Prefill attention: ``attention_compute_efficiency`` = causal FLOPs / (time x peak) over the context
  table's long single sequences (2 K..16 K tokens), median.

Every fitted value is written with its provenance (``fitted to <tables> by tpsim calibrate
--tables``); a GPU without tables keeps its catalog values.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

TILES = (64, 128, 256)
_EFF = tuple(0.5 + 0.025 * i for i in range(21))  # 0.50 .. 1.00
_MEM_EFF = tuple(0.5 + 0.05 * i for i in range(15))  # 0.50 .. 1.20 (L2-resident operands may beat DRAM)
_FLOORS = (0.0, 1000.0, 2000.0, 3000.0, 4000.0, 5000.0, 6000.0, 8000.0)


@dataclass(frozen=True)
class GemmFit:
    tile_m: int
    tile_n: int
    efficiency: float
    memory_efficiency: float
    floor_ns: float
    mean_abs_log_error: float


def wave_gemm_ns(m: int, n: int, k: int, *, peak_flops_per_ns: float, mem_bw_gbps: float, num_sms: int,
                 tile_m: int, tile_n: int, efficiency: float, memory_efficiency: float, floor_ns: float,
                 weight_bytes: float = 2.0, act_bytes: float = 2.0) -> float:
    """The wave-quantised roofline time of ``y[m, n] = x[m, k] W[n, k]^T`` (see the module docstring)."""
    tiles = -(-m // tile_m) * -(-n // tile_n)
    waves = -(-tiles // num_sms)
    compute = waves * tile_m * tile_n * 2.0 * k / (peak_flops_per_ns * efficiency / num_sms)
    memory = (k * n * weight_bytes + m * (k + n) * act_bytes) / (mem_bw_gbps * memory_efficiency)
    return (compute if compute > memory else memory) + floor_ns


def gemm_points(tables, dtype: str = "bfloat16", stride: int = 1) -> list[tuple[int, int, int, float]]:
    """(m, n, k, ns) of measured linear-layer shapes in the GPU's GEMM table."""
    grid = tables.table(f"gemm.{dtype}").groups[()]
    ms, ns, ks = grid.axes
    out = []
    for i, m in enumerate(ms):
        if m > 16384:
            continue
        for j, n in enumerate(ns):
            if not 512 <= n <= 32768:
                continue
            for c, k in enumerate(ks):
                if 512 <= k <= 32768 and (i + j + c) % stride == 0:
                    t = grid.measured((i, j, c))
                    if t is not None:
                        out.append((m, n, k, t))
    return out


def fit_gemm(points, *, peak_flops_per_ns: float, mem_bw_gbps: float, num_sms: int) -> GemmFit:
    """Grid search over tiles, efficiencies and floor (deterministic; a few seconds for a full table)."""
    def err(tm, tn, eff, meff, floor):
        return _err_sub(points, tm, tn, eff, meff, floor, peak_flops_per_ns, mem_bw_gbps, num_sms)

    best = None
    coarse = points[::7] or points
    for tm in TILES:
        for tn in TILES:
            for eff in _EFF[::4]:
                for meff in _MEM_EFF[::3]:
                    for floor in _FLOORS[::2]:
                        e = _err_sub(coarse, tm, tn, eff, meff, floor, peak_flops_per_ns, mem_bw_gbps, num_sms)
                        if best is None or e < best[0]:
                            best = (e, tm, tn, eff, meff, floor)
    _, tm, tn, eff, meff, floor = best
    for _ in range(2):  # refine one parameter at a time on every point
        eff = min(_EFF, key=lambda v: err(tm, tn, v, meff, floor))
        meff = min(_MEM_EFF, key=lambda v: err(tm, tn, eff, v, floor))
        floor = min(_FLOORS, key=lambda v: err(tm, tn, eff, meff, v))
    return GemmFit(tm, tn, eff, meff, floor, err(tm, tn, eff, meff, floor))


def _err_sub(points, tm, tn, eff, meff, floor, peak, bw, sms) -> float:
    total = 0.0
    for m, n, k, t in points:
        pred = wave_gemm_ns(m, n, k, peak_flops_per_ns=peak, mem_bw_gbps=bw, num_sms=sms, tile_m=tm, tile_n=tn,
                            efficiency=eff, memory_efficiency=meff, floor_ns=floor)
        total += abs(math.log(pred / t))
    return total / len(points)


def fit_decode_attention(tables, mem_bw_gbps: float, heads=(32, 8, 128), kv_bytes: int = 2) -> float:
    """Median KV bytes per ns / mem_bw over bandwidth-bound generation-table points."""
    grid = tables.table("generation_attention.bfloat16.kv_bfloat16").groups.get(tuple(heads))
    if grid is None:
        grid = next(iter(tables.table("generation_attention.bfloat16.kv_bfloat16").groups.values()))
        heads = next(k for k, g in tables.table("generation_attention.bfloat16.kv_bfloat16").groups.items()
                     if g is grid)
    _, kv_heads, head_dim = heads
    ratios = []
    for i, b in enumerate(grid.axes[0]):
        for j, ctx in enumerate(grid.axes[1]):
            t = grid.measured((i, j))
            if t is not None and b * ctx >= 16384:
                nbytes = b * ctx * 2.0 * kv_heads * head_dim * kv_bytes
                ratios.append(nbytes / t / mem_bw_gbps)
    return statistics.median(ratios)


def fit_prefill_attention(tables, peak_flops_per_ns: float, heads=(32, 8, 128)) -> float:
    """Median causal FLOPs per ns / peak over long single-sequence context-table points."""
    table = tables.table("context_attention.bfloat16.kv_bfloat16")
    grid = table.groups.get(tuple(heads)) or next(iter(table.groups.values()))
    key = next(k for k, g in table.groups.items() if g is grid)
    num_heads, _, head_dim = key
    ratios = []
    for j, isl in enumerate(grid.axes[1]):
        t = grid.measured((0, j))
        if t is not None and 2048 <= isl <= 16384:
            flops = 4.0 * num_heads * head_dim * isl * (isl + 1) / 2.0
            ratios.append(flops / t / peak_flops_per_ns)
    return statistics.median(ratios)


def relative_errors(pred_and_measured) -> dict:
    """median / p90 / max of |pred / measured - 1| in per cent."""
    errs = sorted(abs(p / m - 1.0) * 100 for p, m in pred_and_measured)
    if not errs:
        return {"n": 0}
    return {"n": len(errs), "median_pct": round(errs[len(errs) // 2], 1),
            "p90_pct": round(errs[int(len(errs) * 0.9)], 1), "max_pct": round(errs[-1], 1)}


def _gemm_residuals(points, peak, bw, sms, fit: GemmFit | None, catalog) -> dict:
    """Per-point errors of the plain catalog roofline (``fit`` None) or of the fitted wave model."""
    pairs = []
    for m, n, k, t in points:
        if fit is None:
            compute = 2.0 * m * n * k / (peak * catalog.gemm_efficiency)
            memory = (k * n * 2.0 + m * (k + n) * 2.0) / (bw * catalog.memory_efficiency)
            pred = max(compute, memory) + catalog.graph_kernel_overhead_ns
        else:
            pred = wave_gemm_ns(m, n, k, peak_flops_per_ns=peak, mem_bw_gbps=bw, num_sms=sms, tile_m=fit.tile_m,
                                tile_n=fit.tile_n, efficiency=fit.efficiency, memory_efficiency=fit.memory_efficiency,
                                floor_ns=fit.floor_ns)
        pairs.append((pred, t))
    return relative_errors(pairs)


def calibrate(hardware, tables, stride: int = 1) -> dict:
    """Fitted values for ``hardware`` from its kernel tables, and per-op residuals before / after."""
    p = hardware.perf
    if not p.num_sms:
        raise ValueError(f"{hardware.source}: perf_model.num_sms is 0; set the GPU's SM count first")
    peak = hardware.peak_flops_per_ns("bfloat16")
    bw = hardware.memory_bw_gbps
    points = gemm_points(tables, stride=stride)
    fit = fit_gemm(points, peak_flops_per_ns=peak, mem_bw_gbps=bw, num_sms=p.num_sms)
    values = {
        "gemm_efficiency": fit.efficiency,
        "memory_efficiency": min(fit.memory_efficiency, 1.0),
        "gemm_tile_m": fit.tile_m,
        "gemm_tile_n": fit.tile_n,
        # the model adds the graph gap to every kernel: the fitted floor is the rest of it
        "gemm_floor_ns": max(0.0, fit.floor_ns - p.graph_kernel_overhead_ns),
        "attention_memory_efficiency": min(fit_decode_attention(tables, bw), 1.0),
    }
    if tables.has("context_attention.bfloat16.kv_bfloat16"):
        values["attention_compute_efficiency"] = min(fit_prefill_attention(tables, peak), 1.0)
    residuals = {
        "gemm": {"before": _gemm_residuals(points, peak, bw, p.num_sms, None, p),
                 "after": _gemm_residuals(points, peak, bw, p.num_sms, fit, p)},
    }
    return {"values": values, "residuals": residuals, "gemm_points": len(points),
            "gemm_mean_abs_log_error": round(fit.mean_abs_log_error, 4)}


def provenance_text(tables, today=None) -> str:
    import datetime as _dt

    today = today or _dt.datetime.now(_dt.UTC).date()
    prov = tables.provenance
    return (f"fitted to the kernel tables configs/kernels/{tables.hardware}/ ({prov.get('gpu', tables.hardware)}, "
            f"{prov.get('engine', 'vllm')} {prov.get('engine_version', '?')}, measured by NVIDIA AIConfigurator) "
            f"on {today.isoformat()} (tpsim calibrate --tables)")
