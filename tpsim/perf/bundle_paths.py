"""Where profile bundles live, without reading them (cheap enough for every ``tpsim run``).

Layout, as in LLMServingSim: ``<root>/<hardware>/<org>/<model>/<variant>/tp<N>/``
with ``variant`` = the weight dtype's short name (``bf16``, ``fp16``,
``fp32``, ``fp8``) plus ``-kvfp8`` when the KV cache is fp8.
"""

from __future__ import annotations

from pathlib import Path

from tpsim.units import DTYPE_SHORT


def variant_name(dtype: str, kv_cache_dtype: str) -> str:
    """LLMServingSim's variant folder: ``bf16``, ``fp8``, ``bf16-kvfp8``, ..."""
    short = DTYPE_SHORT.get(dtype, dtype)
    return short + ("-kvfp8" if kv_cache_dtype == "fp8" else "")


def bundle_dir(root, hardware: str, model: str, dtype: str, kv_cache_dtype: str, tp: int) -> Path:
    return Path(root) / hardware / model / variant_name(dtype, kv_cache_dtype) / f"tp{tp}"


def locate(roots, hardware: str, model: str, dtype: str, kv_cache_dtype: str, tp: int) -> Path | None:
    """First ``tp<N>/`` folder for these keys under ``roots``; a root may itself be a bundle folder."""
    variant = variant_name(dtype, kv_cache_dtype)
    for root in roots:
        root = Path(root)
        if (root / "dense.csv").is_file():
            return root  # a tp<N>/ folder given directly (read_bundle checks its tp)
        if root.name == variant and (root / f"tp{tp}").is_dir():
            return root / f"tp{tp}"  # a variant folder given directly
        candidate = bundle_dir(root, hardware, model, dtype, kv_cache_dtype, tp)
        if candidate.is_dir():
            return candidate
        # LLMServingSim keeps bundles under profiler/perf/
        candidate = bundle_dir(root / "perf", hardware, model, dtype, kv_cache_dtype, tp)
        if candidate.is_dir():
            return candidate
    return None
