"""Choose and build the latency model of an instance (``--perf-model``, ``--comm-model``).

``analytical``: the roofline model, needs only the hardware catalog.
``profile``: a measured bundle (ours or LLMServingSim's) for this hardware, model, dtype and tp;
an error if there is none.
``kernels``: per-kernel tables measured on the GPU (``configs/kernels/<GPU>/``); an error if the
GPU has none.
``auto``: a bundle for the exact model > the GPU's kernel tables > analytical.  The choice is
the model's ``name`` in the run summary, and each op's source is in ``tpsim step``.
"""

from __future__ import annotations

from tpsim.errors import InputError
from tpsim.perf.analytical import AnalyticalModel

PERF_MODELS = ("analytical", "profile", "kernels", "auto")


def _bundle_model(model, hardware, engine, tp, pp, mem_bw_gbps, link_bw_gbps, link_latency_ns, profile_dir, comm,
                  moe_args):
    from pathlib import Path

    from tpsim.config.catalog import profile_roots
    from tpsim.perf.bundle_paths import locate

    if profile_dir and not Path(profile_dir).is_dir():
        raise InputError(f"--profile-dir {profile_dir}: no such folder")
    roots = ([Path(profile_dir)] if profile_dir else []) + profile_roots()
    if locate(roots, hardware.name, model.name, engine.dtype, engine.kv_cache_dtype, tp) is None:
        return None
    from tpsim.perf import (
        profile as profile_mod,  # reads tables: only when a bundle exists
    )

    bundle = profile_mod.find_bundle(hardware=hardware.name, model=model.name, dtype=engine.dtype,
                                     kv_cache_dtype=engine.kv_cache_dtype, tp=tp, profile_dir=profile_dir)
    return profile_mod.ProfileModel(bundle, model=model, hardware=hardware, engine=engine, tp=tp, pp=pp,
                                    mem_bw_gbps=mem_bw_gbps, link_bw_gbps=link_bw_gbps,
                                    link_latency_ns=link_latency_ns, comm=comm, **moe_args)


def _tables(hardware):
    from tpsim.kernels import load_kernel_tables

    return load_kernel_tables(hardware.name)


def _kernel_model(model, hardware, engine, tp, pp, mem_bw_gbps, link_bw_gbps, link_latency_ns, comm, moe_args):
    if engine.dtype == "float32":
        return None  # no fp32 tables: vLLM serves 16-bit or fp8
    tables = _tables(hardware)
    if tables is None:
        return None
    from tpsim.perf.kernels import KernelModel

    return KernelModel(tables, model, hardware, engine, tp, pp, mem_bw_gbps, link_bw_gbps, link_latency_ns, comm,
                       **moe_args)


def make_latency_model(kind: str, *, model, hardware, engine, tp: int, pp: int, mem_bw_gbps: float,
                       link_bw_gbps: float, link_latency_ns: float, profile_dir: str | None = None,
                       comm_model: str = "auto", where: str = "", layout=None, routing: str = "BALANCED"):
    """``layout`` (a ParallelLayout) and ``routing`` (``--expert-routing-policy``) matter for MoE models only."""
    if kind not in PERF_MODELS:
        raise InputError(f"--perf-model {kind!r}: choose one of {', '.join(PERF_MODELS)}")
    common = (model, hardware, engine, tp, pp, mem_bw_gbps, link_bw_gbps, link_latency_ns)
    moe_args = {"layout": layout, "routing": routing} if model.is_moe else {}
    comm = None
    if tp > 1 or (model.is_moe and layout is not None and layout.moe_world > 1):
        from tpsim.perf.comm import make_comm

        comm = make_comm(comm_model, hardware, _tables(hardware), link_bw_gbps, link_latency_ns, engine.act_bytes,
                         where)
    if kind in ("profile", "auto"):
        found = _bundle_model(*common, profile_dir, comm, moe_args)
        if found is not None:
            return found
        if kind == "profile":
            raise InputError(
                f"{where}: --perf-model profile but no measured profile bundle for {hardware.name} / {model.name} / "
                f"{engine.dtype} / tp{tp}; run `tpsim profile` on that GPU, pass --profile-dir, or use "
                "--perf-model kernels or analytical"
            )
    if kind in ("kernels", "auto"):
        found = _kernel_model(*common, comm, moe_args)
        if found is not None:
            return found
        if kind == "kernels":
            raise InputError(
                f"{where}: --perf-model kernels but {hardware.name} has no kernel tables for {engine.dtype} "
                "(configs/kernels/<GPU>/, made by `tpsim import aic`); use --perf-model analytical"
            )
    return AnalyticalModel(*common, comm=comm, **moe_args)
