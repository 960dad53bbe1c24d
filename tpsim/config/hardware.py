"""Hardware catalog: spec-sheet figures plus the parameters that turn them into time.

Each entry is ``configs/hardware/<NAME>.yaml``.  Spec-sheet numbers live under
``spec:``; the analytical latency model's parameters (achieved-efficiency
factors and overheads) under ``perf_model:``.  Every value carries its source
in a YAML comment; ``provenance:`` says, per perf_model key, whether it came
from a spec sheet, a public measurement, or our own measured profiles.

The cluster config's ``npu_mem`` stays authoritative for memory size and
bandwidth: the catalog's ``memory_gib`` / ``memory_bw_gbps`` are only used
when a cluster config is derived from a hardware name (campaigns).
"""

from __future__ import annotations

import json
import os
import re

import msgspec

from tpsim.config import catalog, typed
from tpsim.errors import InputError
from tpsim.hashing import sha256_bytes
from tpsim.io.files import decode_utf8, parse_yaml, read_bytes


class PerfModelParams(msgspec.Struct, frozen=True):
    """Parameters of the analytical (roofline) latency model for one GPU type.

    Efficiencies are fractions of the spec-sheet peak that kernels achieve;
    overheads are fixed costs in ns.
    """

    gemm_efficiency: float  # achieved / peak tensor FLOP/s on large GEMMs
    memory_efficiency: float  # achieved / peak DRAM bandwidth for streaming kernels
    attention_compute_efficiency: float  # FlashAttention achieved / peak FLOP/s (prefill)
    attention_memory_efficiency: float  # achieved / peak bandwidth reading the KV cache (decode)
    kernel_overhead_ns: float  # per kernel, eager launch (prefill and mixed batches)
    graph_kernel_overhead_ns: float  # per kernel when replayed from a CUDA graph (decode batches)
    iteration_overhead_ns: float  # per engine step: scheduler, input prep, output processing
    per_sequence_overhead_ns: float  # per scheduled request per step (host-side bookkeeping)
    activation_reserve_gib: float  # non-KV memory beyond weights: CUDA graphs, NCCL, allocator slack
    max_graph_batch: int = 512  # largest decode batch captured as a CUDA graph (vLLM default 512)
    # FlashAttention-2 backends run a mixed prefill+decode step as one varlen call in which every
    # decoding request occupies a whole query tile of this many rows, without GQA head packing;
    # 0 where the attention backend handles decodes in mixed steps efficiently (FA3, FlashInfer)
    mixed_decode_tile_rows: int = 0
    # L2 cache bandwidth / DRAM bandwidth: what a re-read served by L2 costs relative to one from DRAM
    # (0 = unknown: such re-reads are taken as free)
    l2_bandwidth_ratio: float = 0.0
    # wave-quantised GEMMs (tpsim calibrate --tables): output tiles of gemm_tile_m x gemm_tile_n spread over
    # num_sms streaming multiprocessors, plus a per-GEMM floor; 0 = the plain roofline with gemm_efficiency
    num_sms: int = 0
    gemm_tile_m: int = 0
    gemm_tile_n: int = 0
    gemm_floor_ns: float = 0.0


class HardwareSpec(msgspec.Struct, frozen=True):
    name: str
    description: str
    memory_gib: float
    memory_bw_gbps: float
    l2_cache_mib: float  # last-level cache; 0 if unknown (no reuse is assumed then)
    compute_capability: str  # CUDA SM version ("9.0"); "" if unknown: selects vLLM's kernels and paths
    peak_tflops: dict  # dtype name -> dense TFLOPS (None where the GPU has no such tensor cores)
    link_bw_gbps: float  # default per-direction GPU-to-GPU bandwidth for derived configs
    link_latency_ns: float  # default GPU-to-GPU latency for derived configs
    interconnect: str
    perf: PerfModelParams
    provenance: dict = msgspec.field(default_factory=dict)
    source: str = ""
    sha256: str = ""

    def peak_flops_per_ns(self, dtype: str) -> float:
        """Dense tensor FLOP per ns for ``dtype``; fp8 falls back to 16-bit (weight-only)."""
        tflops = self.peak_tflops.get(dtype)
        if tflops is None and dtype == "fp8":
            tflops = self.peak_tflops.get("bfloat16")
        if tflops is None:
            raise InputError(f"{self.source}: no peak_tflops for dtype {dtype}; add it under spec.peak_tflops")
        return tflops * 1e3  # 1 TFLOPS = 1e12 FLOP/s = 1e3 FLOP/ns


_MAY_BE_ZERO = ("mixed_decode_tile_rows", "l2_bandwidth_ratio", "num_sms", "gemm_tile_m", "gemm_tile_n")
_INTEGER_KEYS = ("max_graph_batch", "mixed_decode_tile_rows", "num_sms", "gemm_tile_m", "gemm_tile_n")
_REQUIRED_SPEC = ("memory_gib", "memory_bw_gbps", "peak_tflops", "interconnect")
_PERF_FIELDS = {f.name: f for f in msgspec.structs.fields(PerfModelParams)}


def _number(value, where: str, allow_zero: bool = False) -> float:
    return typed.number(value, where, 0.0, 1e15, allow_minimum=allow_zero)


def _capability(value, where: str) -> str:
    """``"9.0"``-style CUDA compute capability, or "" when the entry does not say."""
    if value is None:
        return ""
    text = str(value) if isinstance(value, (str, int, float)) and not isinstance(value, bool) else None
    if text is None or not re.fullmatch(r"\d{1,2}\.\d", text):
        raise InputError(f"{where} must be a CUDA compute capability such as \"9.0\", got {typed.show(value)}")
    return text


def _perf_values(perf: dict, where: str) -> dict:
    """The ``perf_model`` mapping's values, checked field by field (fractions of peak at most 1)."""
    values = {}
    for key, fdef in _PERF_FIELDS.items():
        if key not in perf:
            if not fdef.required:
                continue
            raise InputError(f"{where}: missing field 'perf_model.{key}'")
        allow_zero = key.endswith("_ns") or key.endswith("_gib") or key in _MAY_BE_ZERO
        values[key] = _number(perf[key], f"{where}: perf_model.{key}", allow_zero=allow_zero)
        if key.endswith("efficiency") and values[key] > 1:
            raise InputError(f"{where}: perf_model.{key} is a fraction of peak and must be <= 1, got {values[key]}")
        if key in _INTEGER_KEYS:
            values[key] = int(values[key])
    unknown = sorted(set(perf) - set(_PERF_FIELDS))
    if unknown:
        raise InputError(f"{where}: unknown perf_model keys {unknown}; known: {sorted(_PERF_FIELDS)}")
    return values


def parse_hardware(doc: dict, name: str, where: str) -> HardwareSpec:
    if not isinstance(doc, dict):
        raise InputError(f"{where}: expected a YAML mapping with 'spec' and 'perf_model'")
    spec = doc.get("spec")
    perf = doc.get("perf_model")
    if not isinstance(spec, dict):
        raise InputError(f"{where}: missing mapping 'spec'")
    if not isinstance(perf, dict):
        raise InputError(f"{where}: missing mapping 'perf_model'")
    for key in _REQUIRED_SPEC:
        if key not in spec:
            raise InputError(f"{where}: missing field 'spec.{key}'")
    peaks = spec["peak_tflops"]
    if not isinstance(peaks, dict) or not peaks:
        raise InputError(f"{where}: 'spec.peak_tflops' must map dtypes (bfloat16, float16, fp8, float32) to TFLOPS")
    peak_tflops = {}
    for dtype, value in peaks.items():
        peak_tflops[dtype] = None if value is None else _number(value, f"{where}: spec.peak_tflops.{dtype}")
    ic = spec["interconnect"]
    if not isinstance(ic, dict):
        raise InputError(f"{where}: 'spec.interconnect' must be a mapping with kind, link_bw_gbps, link_latency_ns")
    for key in ("kind", "link_bw_gbps", "link_latency_ns"):
        if key not in ic:
            raise InputError(f"{where}: missing field 'spec.interconnect.{key}'")
    values = _perf_values(perf, where)
    return HardwareSpec(
        name=name,
        description=str(doc.get("description", name)),
        memory_gib=_number(spec["memory_gib"], f"{where}: spec.memory_gib"),
        memory_bw_gbps=_number(spec["memory_bw_gbps"], f"{where}: spec.memory_bw_gbps"),
        l2_cache_mib=_number(spec.get("l2_cache_mib", 0), f"{where}: spec.l2_cache_mib", allow_zero=True),
        compute_capability=_capability(spec.get("compute_capability"), f"{where}: spec.compute_capability"),
        peak_tflops=peak_tflops,
        link_bw_gbps=_number(ic["link_bw_gbps"], f"{where}: spec.interconnect.link_bw_gbps"),
        link_latency_ns=_number(ic["link_latency_ns"], f"{where}: spec.interconnect.link_latency_ns", allow_zero=True),
        interconnect=str(ic["kind"]),
        perf=PerfModelParams(**values),
        provenance=dict(doc.get("provenance") or {}),
    )


def _cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "tpsim", "hardware")


def _parse_yaml(text: str, path) -> dict:
    """Parse a catalog entry, memoised by content hash.

    PyYAML costs more to import than a whole simulation of a small trace, so a
    parsed entry is kept as JSON under ``~/.cache/tpsim/hardware/<sha256>.json``;
    the hash makes a stale entry impossible.  Any cache problem falls back to
    parsing.
    """
    digest = sha256_bytes(text.encode())
    cached = os.path.join(_cache_dir(), digest + ".json")
    try:
        with open(cached, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        pass
    doc = parse_yaml(text, str(path))
    try:
        from tpsim.io.writing import atomic_write_text

        atomic_write_text(cached, json.dumps(doc))
    except (OSError, TypeError, ValueError):
        pass  # not cacheable (read-only home, non-JSON values): parse next time too
    return doc


def load_hardware(name: str) -> HardwareSpec:
    catalog.check_name("hardware", name)
    path = catalog.find("hardware", f"{name}.yaml")
    if path is None:
        known = ", ".join(catalog.available("hardware", ".yaml"))
        raise InputError(
            f"unknown hardware '{name}': no configs/hardware/{name}.yaml; known: {known}; "
            "add a catalog entry for it (see configs/hardware/README.md)"
        )
    raw = read_bytes(path, "hardware entry", "hardware")
    doc = _parse_yaml(decode_utf8(raw, str(path)), path)
    spec = parse_hardware(doc, name, str(path))
    return msgspec.structs.replace(spec, source=str(path), sha256=sha256_bytes(raw))


def available_hardware() -> list[str]:
    return catalog.available("hardware", ".yaml")
