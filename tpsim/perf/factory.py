"""Choose and build the latency model of an instance (``--perf-model``).

``analytical``: the roofline model, needs only the hardware catalog.
``profile``: a measured bundle (ours or LLMServingSim's) for this hardware,
model, dtype and tp; an error if there is none.
``auto``: ``profile`` when such a bundle exists, else ``analytical``.
"""

from __future__ import annotations

from tpsim.errors import InputError
from tpsim.perf.analytical import AnalyticalModel

PERF_MODELS = ("analytical", "profile", "auto")


def make_latency_model(kind: str, *, model, hardware, engine, tp: int, pp: int, mem_bw_gbps: float,
                       link_bw_gbps: float, link_latency_ns: float, profile_dir: str | None = None,
                       where: str = ""):
    if kind not in PERF_MODELS:
        raise InputError(f"--perf-model {kind!r}: choose one of {', '.join(PERF_MODELS)}")
    if kind in ("profile", "auto"):
        from pathlib import Path

        from tpsim.config.catalog import profile_roots
        from tpsim.perf.bundle_paths import locate

        if profile_dir and not Path(profile_dir).is_dir():
            raise InputError(f"--profile-dir {profile_dir}: no such folder")
        roots = ([Path(profile_dir)] if profile_dir else []) + profile_roots()
        if locate(roots, hardware.name, model.name, engine.dtype, engine.kv_cache_dtype, tp) is not None:
            from tpsim.perf import profile as profile_mod  # reads tables: only when a bundle exists

            bundle = profile_mod.find_bundle(hardware=hardware.name, model=model.name, dtype=engine.dtype,
                                             kv_cache_dtype=engine.kv_cache_dtype, tp=tp, profile_dir=profile_dir)
            return profile_mod.ProfileModel(bundle, model=model, hardware=hardware, engine=engine, tp=tp, pp=pp,
                                            mem_bw_gbps=mem_bw_gbps, link_bw_gbps=link_bw_gbps,
                                            link_latency_ns=link_latency_ns)
        if kind == "profile":
            raise InputError(
                f"{where}: --perf-model profile but no measured profile bundle for {hardware.name} / {model.name} / "
                f"{engine.dtype} / tp{tp}; run `tpsim profile` on that GPU, pass --profile-dir, or use --perf-model analytical"
            )
    return AnalyticalModel(model, hardware, engine, tp, pp, mem_bw_gbps, link_bw_gbps, link_latency_ns)
