"""Collectives of a tensor-parallel step, as a latency model prices them (``--comm-model``).

* ``measured``: vLLM's own all-reduce from the GPU's kernel tables (AIConfigurator timed vLLM
  0.19's ``tensor_model_parallel_all_reduce`` under CUDA graphs and eagerly, so whichever backend
  vLLM picks per size -- custom all-reduce, symmetric memory, NCCL -- is in the data); where the
  table has no row for the GPU count (custom all-reduce is off on more than two PCIe GPUs) NCCL's
  all-reduce table, as vLLM then falls back to NCCL.  The logits all-gather is NCCL's.
* ``analytical``: the alpha-beta model on the cluster config's ``link_bw`` / ``link_latency``
  (:mod:`tpsim.perf.collectives`), so link sweeps keep their meaning.
* ``auto``: measured when the GPU has tables and the cluster config's link is the catalogued
  interconnect of that GPU (``configs/hardware/<GPU>.yaml``), else analytical.
"""

from __future__ import annotations

from tpsim.perf.collectives import ring_allgather_ns, ring_allreduce_ns

COMM_MODELS = ("measured", "analytical", "auto")


class AnalyticalComm:
    """Ring algorithms on the configured link (alpha-beta)."""

    name = "analytical"

    def __init__(self, link_bw_gbps: float, link_latency_ns: float, act_bytes: int):
        self.link_bw = link_bw_gbps
        self.link_latency = link_latency_ns
        self.ab = act_bytes

    def all_reduce(self, elements: int, tp: int, graph: bool) -> tuple[float, str]:
        return ring_allreduce_ns(elements * self.ab, tp, self.link_bw, self.link_latency), "analytical"

    def all_gather(self, elements: int, tp: int) -> tuple[float, str]:
        return ring_allgather_ns(elements * self.ab, tp, self.link_bw, self.link_latency), "analytical"

    def describe(self) -> dict:
        return {"comm_model": self.name, "link_bw_gbps": self.link_bw, "link_latency_ns": self.link_latency,
                "algorithm": "ring all-reduce 2(n-1) steps, all-gather n-1 steps"}


class MeasuredComm:
    """vLLM's all-reduce and NCCL's all-gather from a GPU's kernel tables."""

    name = "measured"

    def __init__(self, tables, dtype: str = "bfloat16"):
        self.tables = tables
        self.dtype = dtype
        ca = "custom_allreduce." + dtype
        self._ca_keys = set(tables.table(ca).groups) if tables.has(ca) else set()

    def all_reduce(self, elements: int, tp: int, graph: bool) -> tuple[float, str]:
        if tp < 2 or elements <= 0:
            return 0.0, "measured"
        backend = "graph" if graph else "eager"
        if (backend, tp) in self._ca_keys:
            est = self.tables.custom_allreduce(tp, elements, self.dtype, backend)
        else:  # vLLM's custom all-reduce is off here (e.g. > 2 PCIe GPUs): NCCL
            est = self.tables.nccl("all_reduce", tp, elements, self.dtype)
        return est.time_ns, est.source

    def all_gather(self, elements: int, tp: int) -> tuple[float, str]:
        if tp < 2 or elements <= 0:
            return 0.0, "measured"
        est = self.tables.nccl("all_gather", tp, elements, self.dtype)
        return est.time_ns, est.source

    def describe(self) -> dict:
        prov = self.tables.provenance
        return {"comm_model": self.name, "tables": str(self.tables.folder),
                "source": "vLLM custom all-reduce and NCCL timings from NVIDIA AIConfigurator's database "
                          f"(converted by tpsim import aic; NCCL {prov.get('nccl_version', '?')})"}


def link_is_catalogued(hardware, link_bw_gbps: float, link_latency_ns: float) -> bool:
    """The cluster config's link is the GPU's own catalogued interconnect (so measured tables apply)."""
    return (abs(link_bw_gbps - hardware.link_bw_gbps) <= 1e-9 * hardware.link_bw_gbps
            and abs(link_latency_ns - hardware.link_latency_ns) <= 1e-9 * max(hardware.link_latency_ns, 1.0))


def make_comm(kind: str, hardware, tables, link_bw_gbps: float, link_latency_ns: float, act_bytes: int,
              where: str = ""):
    """The collective model for ``--comm-model`` ``kind``."""
    from tpsim.errors import InputError

    if kind not in COMM_MODELS:
        raise InputError(f"--comm-model {kind!r}: choose one of {', '.join(COMM_MODELS)}")
    if kind == "measured" and tables is None:
        raise InputError(f"{where}: --comm-model measured but {hardware.name} has no kernel tables; "
                         "use --comm-model analytical or auto")
    use_tables = kind == "measured" or (kind == "auto" and tables is not None
                                         and link_is_catalogued(hardware, link_bw_gbps, link_latency_ns))
    if use_tables:
        return MeasuredComm(tables)
    return AnalyticalComm(link_bw_gbps, link_latency_ns, act_bytes)
