"""The importer's rules: which rows of AIC's tables become tpsim's measurements.

The source is not clean: folders hold rows of other versions, some rows appear two or
three times, some keys were measured more than once with different results, and a few
tables contain physically impossible times.  Every rule below is applied in order, and
every row it removes is counted in the table's provenance and the import report.
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass, field

from tpsim.kernels import roofline as rl
from tpsim.kernels.kinds import KINDS

#: a measurement may beat a hard roofline by this fraction (clock and spec-sheet rounding)
ROOFLINE_TOLERANCE = 0.05
#: a table with more than this share of hard-roofline violators is not trusted at all
TABLE_VIOLATION_LIMIT = 0.01
NS_PER_MS = 1e6

RULES = (
    "version: rows are kept where their own `version` column equals the requested engine version "
    "(NCCL: the chosen NCCL version), whatever folder holds them; the rest are counted by version",
    "GPU: rows are kept where their `device` column names the system's GPU (the most common device "
    "among the engine's rows of that version); others are counted",
    "columns: a file lacking a column the table needs (version, device, its dtype, key, axis and latency "
    "columns) is skipped with a message",
    "scope: only full attention (window_size 0 or no such column), beam width 1, prefill without "
    "cached context (step 0) and decode of one token (isl 1); custom all-reduce backends vllm_graph "
    "and vllm_eager; dtypes bfloat16 and fp8 (NCCL: half and int8; others counted as not imported)",
    "exact duplicates: a row with the same key and the same latency as an earlier row is dropped",
    "conflicting duplicates: rows with the same key and different latencies are merged into their "
    "median; the keys and rows are counted with the largest max/min ratio",
    "hard rooflines: a time below (1 - 5 %) x FLOPs / tensor-core peak (for fp8 KV the fp8 peak; MoE "
    "only where ep = 1) or below the least link bytes any algorithm needs / link bandwidth is "
    "physically impossible and dropped; a table with more than 1 % of such points is skipped whole "
    "(its semantics are wrong, not a few points)",
    "soft roofline: a time below (1 - 5 %) x bytes / DRAM bandwidth is kept (operands resident in L2: "
    "the collector re-runs a kernel on the same buffers) and counted with the worst ratio",
    "NCCL version: the one systems/<system>.yaml names where rows of it cover all four ops in half and "
    "int8, else the newest version with that coverage",
    "units: latency ms in the source, ns in tpsim's tables, rounded to 5 significant digits",
)


@dataclass
class TableStats:
    """What the rules did to one output table."""

    rows: int = 0
    other_version: Counter = field(default_factory=Counter)
    other_device: Counter = field(default_factory=Counter)
    out_of_scope: Counter = field(default_factory=Counter)
    exact_duplicates: int = 0
    conflicting_keys: int = 0
    conflicting_rows: int = 0
    worst_conflict_ratio: float = 1.0
    compute_violators: int = 0
    worst_compute_ratio: float | None = None
    dram_violators: int = 0
    worst_dram_ratio: float | None = None
    kernel_sources: set = field(default_factory=set)
    devices: set = field(default_factory=set)
    files: set = field(default_factory=set)
    points: int = 0
    skipped: str | None = None

    def as_json(self) -> dict:
        def r(x):
            return None if x is None else float(f"{x:.4g}")

        return {
            "rows_read": self.rows,
            "rows_other_version": dict(sorted(self.other_version.items())),
            "rows_other_gpu": dict(sorted(self.other_device.items())),
            "rows_out_of_scope": dict(sorted(self.out_of_scope.items())),
            "exact_duplicates_dropped": self.exact_duplicates,
            "conflicting_keys": self.conflicting_keys,
            "conflicting_rows_merged": self.conflicting_rows,
            "worst_conflict_max_over_min": r(self.worst_conflict_ratio),
            "hard_roofline_violators_dropped": self.compute_violators,
            "worst_hard_roofline_ratio": r(self.worst_compute_ratio),
            "dram_roofline_violators_kept": self.dram_violators,
            "worst_dram_roofline_ratio": r(self.worst_dram_ratio),
            "kernel_source": sorted(self.kernel_sources),
            "points": self.points,
        }


def filter_rows(spec, files, version: str, device: str):
    """Apply the version, GPU, scope and duplicate rules to every row of ``files``.

    Returns ``({(dtype, kv_dtype): {key + point: [latency_ms, ...]}}, {(dtype, kv): TableStats},
    {dtype label: rows not imported}, [skipped-file messages])``.
    """
    samples: dict = {}
    stats: dict = {}
    not_imported: Counter = Counter()
    skipped = []
    seen: dict = {}
    for f in files:
        missing = [c for c in spec.required if c not in f.columns]
        if missing:
            skipped.append(f"{f.relpath}: lacks column(s) {', '.join(missing)}; skipped")
            continue
        for row in f.rows:
            d = dict(zip(f.columns, row))
            out = spec.dtypes.get(tuple(d[c] for c in spec.dtype_columns))
            if out is None:
                not_imported["/".join(str(d[c]) for c in spec.dtype_columns)] += 1
                continue
            st = stats.setdefault(out, TableStats())
            st.rows += 1
            if not _in_scope(spec, d, version, device, st):
                continue
            key = tuple(c.convert(d[c.source]) for c in (*spec.keys, *spec.axes))
            latency = float(d["latency"])
            if (key, latency) in seen.setdefault(out, set()):
                st.exact_duplicates += 1
                continue
            seen[out].add((key, latency))
            samples.setdefault(out, {}).setdefault(key, []).append(latency)
            st.kernel_sources.add(d.get("kernel_source"))
            st.devices.add(d["device"])
            st.files.add(f.relpath)
    return samples, stats, not_imported, skipped


def _in_scope(spec, d: dict, version: str, device: str, st: TableStats) -> bool:
    if str(d["version"]) != version:
        st.other_version[str(d["version"])] += 1
        return False
    if d["device"] != device:
        st.other_device[str(d["device"])] += 1
        return False
    for col, allowed in spec.scope:
        if col in d and d[col] not in allowed:
            st.out_of_scope[f"{col}={d[col]}"] += 1
            return False
    return True


def merge_conflicts(samples: dict, st: TableStats) -> dict:
    """One latency (ns) per key: the only one, or the median of conflicting measurements."""
    merged = {}
    for key, lats in samples.items():
        if len(lats) > 1:
            st.conflicting_keys += 1
            st.conflicting_rows += len(lats)
            st.worst_conflict_ratio = max(st.worst_conflict_ratio, max(lats) / min(lats))
        merged[key] = statistics.median(lats) * NS_PER_MS
    return merged


def hard_bound_ns(kind: str, spec: rl.Spec, header: dict, key: tuple, point: tuple) -> float:
    """The roofline no real kernel can beat: tensor-core FLOPs, or the least link traffic."""
    if kind in ("nccl", "custom_allreduce"):
        op = "all_reduce" if kind == "custom_allreduce" else key[0]
        return rl.collective_lower_bound_ns(spec, op, key[1], point[0], rl.ELEMENT_BYTES[header["dtype"]])
    if kind == "moe" and key[5] != 1:
        return 0.0  # with expert parallelism the local share of tokens depends on the routing
    return KINDS[kind].roofline(spec, header, key, point).compute_ns


def check_rooflines(kind: str, spec: rl.Spec, header: dict, merged: dict, nkeys: int, st: TableStats) -> dict:
    """Drop hard-roofline violators (or skip the table, see RULES); count DRAM-roofline ones."""
    kept = {}
    for full_key, t in merged.items():
        key, point = full_key[:nkeys], full_key[nkeys:]
        hard = hard_bound_ns(kind, spec, header, key, point)
        if hard > 0:
            st.worst_compute_ratio = _lowest(st.worst_compute_ratio, t / hard)
            if t < hard * (1 - ROOFLINE_TOLERANCE):
                st.compute_violators += 1
                continue
        dram = KINDS[kind].roofline(spec, header, key, point).memory_ns
        if dram > 0:
            st.worst_dram_ratio = _lowest(st.worst_dram_ratio, t / dram)
            if t < dram * (1 - ROOFLINE_TOLERANCE):
                st.dram_violators += 1
        kept[full_key] = t
    if st.compute_violators > TABLE_VIOLATION_LIMIT * len(merged):
        st.skipped = (f"{st.compute_violators} of {len(merged)} points ({st.compute_violators / len(merged):.0%}) "
                      f"beat the hard roofline (worst {st.worst_compute_ratio:.3g}x): table skipped")
        return {}
    st.points = len(kept)
    return kept


def _lowest(current: float | None, ratio: float) -> float:
    return ratio if current is None else min(current, ratio)


def build_groups(points: dict, nkeys: int, naxes: int) -> list[dict]:
    """Points ``{key + point: ns}`` -> groups with sorted axes and row-major latencies."""
    by_key: dict = {}
    for full_key, t in points.items():
        by_key.setdefault(full_key[:nkeys], {})[full_key[nkeys:]] = t
    groups = []
    for key in sorted(by_key, key=_sort_key):
        pts = by_key[key]
        axes = [sorted({p[i] for p in pts}) for i in range(naxes)]
        index = [{v: j for j, v in enumerate(a)} for a in axes]
        size = 1
        for a in axes:
            size *= len(a)
        values: list = [None] * size
        for p, t in pts.items():
            flat = 0
            for i in range(naxes):
                flat = flat * len(axes[i]) + index[i][p[i]]
            values[flat] = float(f"{t:.5g}")
        groups.append({"key": list(key), "axes": axes, "latency_ns": values})
    return groups


def _sort_key(key: tuple) -> tuple:
    return tuple((0, v, "") if isinstance(v, (int, float)) else (1, 0, str(v)) for v in key)


def choose_nccl_version(files, named: str | None) -> tuple[str | None, str]:
    """The NCCL version to import and the rule that chose it (see RULES)."""
    coverage: dict = {}
    for f in files:
        if "version" not in f.columns:
            continue
        cols = f.columns
        iv, io, idt = cols.index("version"), cols.index("op_name"), cols.index("nccl_dtype")
        for row in f.rows:
            coverage.setdefault(str(row[iv]), set()).add((row[io], row[idt]))
    if not coverage:
        return None, "no NCCL rows with a version column"
    need = {(op, dt) for op in ("all_reduce", "all_gather", "reduce_scatter", "alltoall") for dt in ("half", "int8")}
    complete = sorted((v for v, c in coverage.items() if need <= c), key=_version_tuple)
    found = ", ".join(sorted(coverage, key=_version_tuple))
    if named in complete:
        return named, f"rows hold {found}; took {named}, the version the system yaml names"
    if complete:
        why = ("names none" if named is None else
               f"names {named}, of which {'no row exists' if named not in coverage else 'the rows are incomplete'}")
        newest = complete[-1]
        return newest, f"rows hold {found}; the system yaml {why}: took the newest complete version {newest}"
    best = max(coverage, key=lambda v: (len(coverage[v]), _version_tuple(v)))
    return best, f"rows hold {found}, none covering all ops in half and int8: took {best}, the most complete"


def _version_tuple(v: str) -> tuple:
    return tuple(int(p) if p.isdigit() else 0 for p in str(v).split("."))
