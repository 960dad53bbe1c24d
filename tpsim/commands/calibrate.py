"""``tpsim calibrate``: fit a hardware entry's analytical parameters to a measured bundle.

Example::

    tpsim calibrate --hardware H100 --bundle profiles/H100/meta-llama/Llama-3.1-8B/bf16/tp1
    tpsim calibrate --hardware H100 --bundle profiles/H100/meta-llama/Llama-3.1-8B/bf16/tp1 --write

fits ``gemm_efficiency``, ``memory_efficiency``, ``attention_compute_efficiency``,
``attention_memory_efficiency``, ``kernel_overhead_ns`` and
``graph_kernel_overhead_ns`` (method: :mod:`tpsim.perf.calibrate`) and prints
each op's mean absolute error before (the catalog's values) and after.

``--write`` updates ``configs/hardware/<NAME>.yaml`` in place: each fitted
``perf_model:`` value is replaced and its comment becomes ``# fitted from
<bundle> on <date> (tpsim calibrate)``, the same text goes under
``provenance:``; every other line and comment is kept.  In place (rather than
a ``<NAME>.fitted.yaml`` beside it) so that one entry holds the numbers runs
use and says where each came from; git keeps the previous values.  Overheads
are not written from kernel-timed (LLMServingSim) bundles, whose times hold no
launch gaps.  Commit only values fitted from bundles measured by us.
"""

from __future__ import annotations

import json


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "calibrate", help="fit analytical-model parameters to a profile bundle",
        description="Fit the analytical model's efficiency factors and kernel overheads to a profile bundle's "
                    "measurements and print per-op errors before and after.")
    p.add_argument("--hardware", required=True, help="hardware catalog entry (configs/hardware/<NAME>.yaml)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--bundle", help="a tp<N>/ bundle folder (tpsim or LLMServingSim format)")
    src.add_argument("--tables", action="store_true",
                     help="fit to the GPU's kernel tables (configs/kernels/<NAME>/): wave-quantised GEMMs, "
                          "attention efficiencies")
    p.add_argument("--model", default=None, help="model name or config.json (default: the bundle's meta.yaml)")
    p.add_argument("--dtype", choices=["float16", "bfloat16", "float32", "fp8"], default=None,
                   help="dtype the bundle was measured in (default: from the bundle)")
    p.add_argument("--write", action="store_true",
                   help="write the fitted values and their provenance into configs/hardware/<NAME>.yaml")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.set_defaults(func=handle)


_SHORT_TO_DTYPE = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32", "fp8": "fp8"}


def handle_tables(args) -> int:
    """``tpsim calibrate --hardware NAME --tables [--write]``."""
    from tpsim.config import catalog
    from tpsim.config.hardware import load_hardware
    from tpsim.errors import InputError
    from tpsim.kernels import load_kernel_tables
    from tpsim.perf import calibrate as cal
    from tpsim.perf import calibrate_tables as ct

    hw = load_hardware(args.hardware)
    tables = load_kernel_tables(hw.name)
    if tables is None:
        raise InputError(f"--tables: {hw.name} has no kernel tables (configs/kernels/{hw.name}/); import them with "
                         "`tpsim import aic` or calibrate from a --bundle")
    try:
        result = ct.calibrate(hw, tables)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    written = None
    if args.write:
        path = catalog.find("hardware", f"{hw.name}.yaml")
        _write_hardware(path, cal.update_hardware_yaml(path, result["values"], ct.provenance_text(tables)), hw.name)
        written = str(path)
    result["written"] = written
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{hw.name}: fit to the kernel tables {tables.folder} ({result['gemm_points']} GEMM points)")
    for k, v in result["values"].items():
        print(f"  {k:30s} {getattr(hw.perf, k):>10.4g} -> {v:.4g}")
    for op, r in result["residuals"].items():
        print(f"  {op} |predicted/measured - 1|: "
              f"catalog median {r['before']['median_pct']} % p90 {r['before']['p90_pct']} %"
              f" -> fitted median {r['after']['median_pct']} % p90 {r['after']['p90_pct']} %")
    if written:
        print(f"wrote {', '.join(result['values'])} to {written}")
    return 0


def handle(args) -> int:
    if args.tables:
        return handle_tables(args)
    from pathlib import Path

    from tpsim.build import standalone
    from tpsim.config import catalog
    from tpsim.errors import InputError
    from tpsim.perf import calibrate as cal
    from tpsim.perf.bundle import read_bundle

    bundle = read_bundle(args.bundle)
    model_name = args.model or bundle.model
    if not model_name:
        raise InputError(f"{args.bundle}: the bundle does not name its model; pass --model")
    dtype = args.dtype or bundle.meta.get("dtype") or _SHORT_TO_DTYPE.get(bundle.variant.split("-")[0])
    if dtype is None:
        raise InputError(f"{args.bundle}: cannot tell the bundle's dtype from variant {bundle.variant!r}; pass --dtype")
    kv = "fp8" if bundle.variant.endswith("-kvfp8") else "auto"
    model, hw, engine, am = standalone(model_name, args.hardware, tp=bundle.tp,
                                       engine_keys={"dtype": dtype, "kv_cache_dtype": kv}, where="tpsim calibrate")
    if bundle.hardware and bundle.hardware != hw.name:
        raise InputError(f"{args.bundle}: measured on hardware {bundle.hardware!r}, not {hw.name!r}; pass "
                         f"--hardware {bundle.hardware}")
    result = cal.calibrate(bundle, am)
    fitted = {k: result.params[k] for k in result.fitted}
    written = None
    if args.write:
        values = {k: v for k, v in fitted.items() if not (result.kernel_timed and k in cal.OVERHEADS)}
        path = catalog.find("hardware", f"{hw.name}.yaml")
        try:
            shown = Path(bundle.path).resolve().relative_to(catalog.PACKAGE_ROOT)
        except ValueError:
            shown = bundle.path
        _write_hardware(path, cal.update_hardware_yaml(path, values, cal.provenance_text(str(shown))), hw.name)
        written = {"path": str(path), "values": {k: float(cal.format_value(k, v)) for k, v in values.items()}}
    out = {
        "hardware": hw.name,
        "bundle": str(bundle.path),
        "format": bundle.format,
        "timing": bundle.timing,
        "model": model.name,
        "tp": bundle.tp,
        "points": result.points,
        "catalog": {k: getattr(hw.perf, k) for k in cal.PARAMS},
        "fitted": {("kernel_fixed_ns" if result.kernel_timed and k == "graph_kernel_overhead_ns" else k): v
                   for k, v in fitted.items()},
        "mean_abs_error_pct": {op: {"before": round(result.before[op], 2), "after": round(result.after[op], 2)}
                               for op in result.before},
        "notes": result.notes,
        "written": written,
    }
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"{hw.name}: fit to {bundle.format} bundle {bundle.path} ({model.name}, tp={bundle.tp}, "
          f"{result.points} points, {bundle.timing} timing)")
    print(f"{'parameter':32s} {'catalog':>12s} {'fitted':>12s}")
    for k, v in out["fitted"].items():
        base = "graph_kernel_overhead_ns" if k == "kernel_fixed_ns" else k
        print(f"{k:32s} {getattr(hw.perf, base):12.4g} {v:12.4g}")
    print()
    print(f"{'op':28s} {'before %':>9s} {'after %':>9s}   (mean |predicted/measured - 1|)")
    for op, d in out["mean_abs_error_pct"].items():
        print(f"{op:28s} {d['before']:9.1f} {d['after']:9.1f}")
    for note in result.notes:
        print(f"note: {note}")
    if written:
        print(f"wrote {', '.join(written['values'])} to {written['path']}")
    return 0


def _write_hardware(path, text: str, name: str) -> None:
    """Write a calibrated hardware entry, restoring the old text if the new one does not load."""
    from tpsim.config.hardware import load_hardware
    from tpsim.errors import InputError

    old = path.read_text()
    path.write_text(text)
    try:
        load_hardware(name)
    except InputError:
        path.write_text(old)
        raise
