"""Collectives of a tensor-parallel step, as a latency model prices them (``--comm-model``).

* ``measured``: vLLM's own all-reduce from the GPU's kernel tables (AIConfigurator timed vLLM
  0.19's ``tensor_model_parallel_all_reduce`` under CUDA graphs and eagerly, so whichever backend
  vLLM picks per size -- custom all-reduce, symmetric memory, NCCL -- is in the data); where the
  table has no row for the GPU count (custom all-reduce is off on more than two PCIe GPUs) NCCL's
  all-reduce table, as vLLM then falls back to NCCL.  The logits all-gather and the MoE layers'
  all-gather / reduce-scatter (vLLM's default all2all backend) are NCCL's.
* ``analytical``: an alpha-beta model on the cluster config's ``link_bw`` / ``link_latency``, so
  link sweeps keep their meaning: vLLM's piecewise choice of all-reduce algorithm with constants
  fitted to the GPU's tables at its catalogued link (:mod:`tpsim.perf.comm_fit`; a GPU without
  tables borrows the curves of the nearest measured GPU with the same kind of link), or the
  plain ring (:mod:`tpsim.perf.collectives`) where no curve can be fitted.
* ``auto``: measured when the GPU has tables and the cluster config's link is the catalogued
  interconnect of that GPU (``configs/hardware/<GPU>.yaml``); on another link, the measured time
  plus the fitted model's change from the catalogued link to that one (so a link sweep is
  continuous and monotone through the catalogued point); analytical for a GPU without tables.
"""

from __future__ import annotations

from tpsim.perf.collectives import (
    ring_allgather_ns,
    ring_allreduce_ns,
    ring_reduce_scatter_ns,
)

COMM_MODELS = ("measured", "analytical", "auto")


class RingComm:
    """Ring algorithms on the configured link (alpha-beta), NCCL's textbook formulas."""

    name = "analytical"

    def __init__(self, link_bw_gbps: float, link_latency_ns: float, act_bytes: int):
        self.link_bw = link_bw_gbps
        self.link_latency = link_latency_ns
        self.ab = act_bytes

    def all_reduce(self, elements: int, tp: int, graph: bool) -> tuple[float, str]:
        return ring_allreduce_ns(elements * self.ab, tp, self.link_bw, self.link_latency), "analytical"

    def all_gather(self, elements: int, tp: int) -> tuple[float, str]:
        return ring_allgather_ns(elements * self.ab, tp, self.link_bw, self.link_latency), "analytical"

    def reduce_scatter(self, elements: int, n: int) -> tuple[float, str]:
        return ring_reduce_scatter_ns(elements * self.ab, n, self.link_bw, self.link_latency), "analytical"

    def describe(self) -> dict:
        return {"comm_model": self.name, "link_bw_gbps": self.link_bw, "link_latency_ns": self.link_latency,
                "algorithm": "ring all-reduce 2(n-1) steps, all-gather n-1 steps"}


class FittedComm:
    """vLLM's all-reduce pieces and NCCL's all-gather, fitted to measured tables, on the configured link."""

    name = "analytical"

    def __init__(self, tables, reference, link_bw_gbps: float, link_latency_ns: float, act_bytes: int,
                 anchored: bool = False):
        self.tables = tables
        #: anchored: the measured time plus the fitted model's change from the catalogued link to this one,
        #: so the time is exact on the catalogued link and a link sweep is monotone through it
        self.anchored = anchored
        self.reference = reference  # the HardwareSpec whose catalogued link the curves were measured on
        self.link_bw = link_bw_gbps
        self.link_latency = link_latency_ns
        self.ab = act_bytes
        self.bw_ratio = reference.link_bw_gbps / link_bw_gbps
        self.dlat = link_latency_ns - reference.link_latency_ns
        self._curves: dict = {}
        self._ring = RingComm(link_bw_gbps, link_latency_ns, act_bytes)

    def _curve(self, kind: str, n: int):
        key = (kind, n)
        if key not in self._curves:
            from tpsim.perf import comm_fit

            if n not in (2, 4, 8):
                self._curves[key] = None  # not measured: the ring
            elif kind == "all_reduce":
                nvlink = "nvlink" in self.reference.interconnect.lower()
                pieces = comm_fit.vllm_pieces(self.reference.compute_capability, n, nvlink)
                measured = MeasuredComm(self.tables)
                points = [(e * self.ab, measured.all_reduce(e, n, True)[0]) for e in comm_fit.FIT_ELEMENTS]
                self._curves[key] = comm_fit.fit_curve(points, pieces, n, self.reference.name)
            else:  # NCCL's all-gather or reduce-scatter: one ring, n - 1 latencies in sequence
                points = [(e * self.ab, self.tables.nccl(kind, n, e).time_ns) for e in comm_fit.FIT_ELEMENTS]
                self._curves[key] = comm_fit.fit_curve(points, ((float("inf"), "nccl_ring"),), n,
                                                       self.reference.name)
        return self._curves[key]

    def all_reduce(self, elements: int, tp: int, graph: bool) -> tuple[float, str]:
        if tp < 2 or elements <= 0:
            return 0.0, "analytical"
        curve = self._curve("all_reduce", tp)
        if curve is None:
            return self._ring.all_reduce(elements, tp, graph)
        t = curve.time_ns(elements * self.ab, self.bw_ratio, self.dlat)
        if self.anchored:
            measured = MeasuredComm(self.tables).all_reduce(elements, tp, graph)[0]
            t = max(0.0, measured + t - curve.time_ns(elements * self.ab, 1.0, 0.0))
        return t, "analytical"

    def all_gather(self, elements: int, tp: int) -> tuple[float, str]:
        return self._nccl("all_gather", elements, tp)

    def reduce_scatter(self, elements: int, n: int) -> tuple[float, str]:
        """``elements``: the input each rank reduces (nccl-tests' size); each keeps ``elements / n``."""
        return self._nccl("reduce_scatter", elements, n)

    def _nccl(self, op: str, elements: int, n: int) -> tuple[float, str]:
        if n < 2 or elements <= 0:
            return 0.0, "analytical"
        curve = self._curve(op, n)
        if curve is None:
            ring = self._ring.all_gather if op == "all_gather" else self._ring.reduce_scatter
            return ring(elements, n)
        t = curve.time_ns(elements * self.ab, self.bw_ratio, self.dlat)
        if self.anchored:
            measured = self.tables.nccl(op, n, elements).time_ns
            t = max(0.0, measured + t - curve.time_ns(elements * self.ab, 1.0, 0.0))
        return t, "analytical"

    def describe(self) -> dict:
        return {"comm_model": self.name, "link_bw_gbps": self.link_bw, "link_latency_ns": self.link_latency,
                "algorithm": "vLLM 0.19's all-reduce pieces (custom one-/two-shot, symmetric memory, NCCL) and "
                             "NCCL's all-gather, each a + b*bytes fitted to measured tables, scaled to this link",
                "fitted_to": f"kernel tables of {self.reference.name} at its catalogued link "
                             f"({self.reference.link_bw_gbps:g} GB/s, {self.reference.link_latency_ns:g} ns)",
                "anchored": "measured time + the fitted change to this link" if self.anchored else False}


class MeasuredComm:
    """vLLM's all-reduce and NCCL's all-gather and reduce-scatter from a GPU's kernel tables."""

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
            return self.tables.collective_ns("custom_allreduce", backend, tp, elements, self.dtype)
        # vLLM's custom all-reduce is off here (e.g. > 2 PCIe GPUs): NCCL
        return self.tables.collective_ns("nccl", "all_reduce", tp, elements, self.dtype)

    def all_gather(self, elements: int, tp: int) -> tuple[float, str]:
        if tp < 2 or elements <= 0:
            return 0.0, "measured"
        return self.tables.collective_ns("nccl", "all_gather", tp, elements, self.dtype)

    def reduce_scatter(self, elements: int, n: int) -> tuple[float, str]:
        """NCCL's reduce-scatter of ``elements`` per rank (nccl-tests' size: the input)."""
        if n < 2 or elements <= 0:
            return 0.0, "measured"
        return self.tables.collective_ns("nccl", "reduce_scatter", n, elements, self.dtype)

    def describe(self) -> dict:
        prov = self.tables.provenance
        return {"comm_model": self.name, "tables": str(self.tables.folder),
                "source": "vLLM custom all-reduce and NCCL timings from NVIDIA AIConfigurator's database "
                          f"(converted by tpsim import aic; NCCL {prov.get('nccl_version', '?')})"}


def link_is_catalogued(hardware, link_bw_gbps: float, link_latency_ns: float) -> bool:
    """The cluster config's link is the GPU's own catalogued interconnect (so measured tables apply)."""
    return (abs(link_bw_gbps - hardware.link_bw_gbps) <= 1e-9 * hardware.link_bw_gbps
            and abs(link_latency_ns - hardware.link_latency_ns) <= 1e-9 * max(hardware.link_latency_ns, 1.0))


#: GPUs whose measured collectives stand in for a GPU without tables, by kind of link
REFERENCE_GPU = {"nvlink": "H100", "pcie": "RTXPRO6000"}


def _reference(hardware, tables):
    """(tables, hardware spec) the fitted curves come from: the GPU's own, else the nearest measured
    GPU with the same kind of link; (None, None) where none can be loaded."""
    if tables is not None:
        return tables, hardware
    from tpsim.config.hardware import load_hardware
    from tpsim.kernels import load_kernel_tables

    kind = "nvlink" if "nvlink" in hardware.interconnect.lower() else "pcie"
    name = REFERENCE_GPU[kind]
    ref_tables = load_kernel_tables(name)
    if ref_tables is None:
        return None, None
    return ref_tables, load_hardware(name)


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
    ref_tables, reference = _reference(hardware, tables)
    if ref_tables is None or act_bytes != 2:
        return RingComm(link_bw_gbps, link_latency_ns, act_bytes)
    return FittedComm(ref_tables, reference, link_bw_gbps, link_latency_ns, act_bytes,
                      anchored=kind == "auto" and tables is not None)
