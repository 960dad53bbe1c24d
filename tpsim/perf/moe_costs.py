"""How each latency model prices an MoE layer's fused experts (its other ops -- router and shared-expert
GEMMs, top-k, collectives -- are GEMM, element-wise and collective ops each model prices as it prices a
dense layer's).

* analytical: :func:`~tpsim.perf.moe.expert_roofline` (each active expert's weights read once, token x
  top-k work, five kernels);
* kernels: the GPU's MoE table (AIConfigurator's ``moe_perf``: vLLM 0.19's ``fused_experts`` on one GPU
  with the rank's ``E / ep`` experts at width ``I / expert_tp``, at the gathered token count, ``balanced`` routing);
  other routing policies scale the table by the roofline's ratio to balanced routing (modelled);
  at least the table's fastest call plus the touched experts' weights streamed from DRAM at the
  fastest rate the table's rows with more than twice the L2 of touched weights show (modelled where it
  binds: the table replays one set of weights, which stays in L2 where it fits; in serving the other
  layers' weights pass through L2 between two steps; :mod:`tpsim.kernels.streaming`);
  without an MoE table for the dtype, the roofline;
* profile: LLMServingSim's ``moe.csv`` (the whole MoE block: gate, top-k, experts) where the bundle
  has one and each expert is whole on a GPU (``expert_tp`` 1, as it was profiled), read at
  LLMServingSim's per-rank arguments: the tokens with at least one local expert,
  ``G (1 - ((ep - 1) / ep)^k)``, and the local experts the routing reaches; else the roofline.

Every op keeps its source (measured / interpolated / extrapolated / modelled / analytical).
"""

from __future__ import annotations

from tpsim.config.parallel import ParallelLayout
from tpsim.kernels.streaming import StreamingFloor, streaming_floor
from tpsim.memory import single_rank
from tpsim.perf.moe import FUSED_MOE_KERNELS, MoELayer, Routing, expert_roofline
from tpsim.perf.ops import Op

MODELLED = "modelled"
_MOE_TABLE_DTYPE = {"bfloat16": "bfloat16", "float16": "bfloat16", "fp8": "fp8"}
#: kernels of LLMServingSim's measured MoE block: gate GEMM, top-k, and the fused experts'
MOE_BLOCK_KERNELS = FUSED_MOE_KERNELS + 2


def moe_layer(model, layout: ParallelLayout | None, tp: int, pp: int, routing: str, engine) -> MoELayer:
    """The MoE layer of one instance (``layout`` None: one instance, EP off)."""
    return MoELayer(model, layout if layout is not None else single_rank(model, tp, pp), routing, engine.act_bytes,
                    engine.weight_bytes)


class RooflineExperts:
    """The fused experts by the roofline model ``r`` (an AnalyticalModel): (ns, FLOPs, bytes) of an EXPERTS op."""

    def __init__(self, r, layer: MoELayer):
        self.r = r
        self.top_k, self.hidden, self.width = layer.moe.top_k, layer.hidden, layer.width

    def __call__(self, op: Op) -> tuple[float, float, float]:
        return self.cost(op.load, op.tokens, op.graph)

    def cost(self, load, tokens: int, graph: bool) -> tuple[float, float, float]:
        r = self.r
        return expert_roofline(load, tokens, self.top_k, self.hidden, self.width, r.wb, r.ab, r.gemm_flops, r.bw,
                               lambda x: r.kernel_time_ns(x, graph))


class KernelExperts:
    """The fused experts of a KernelModel ``m``: its GPU's MoE table where it has one (see the module doc)."""

    def __init__(self, m, layer: MoELayer):
        self.m, self.layer = m, layer
        dtype = self.dtype = _MOE_TABLE_DTYPE.get(m.engine.dtype)
        self.table = f"moe.{dtype}" if dtype and m.tables.has(f"moe.{dtype}") else None
        self.roof = RooflineExperts(m.roofline, layer)
        spec = m.model.moe
        self.balanced = Routing("BALANCED", spec.num_experts, spec.top_k, layer.ep)
        self.floor = moe_weights_floor(m.tables, self.table, m.roofline.l2_bytes) if self.table else None
        self.expert_bytes = 3.0 * layer.hidden * layer.width * m.roofline.wb

    def __call__(self, op: Op) -> tuple[float, str, float, float]:
        t_roof, f, b = self.roof(op)
        if self.table is None:
            return t_roof, "analytical", f, b
        m, layer, spec, tokens = self.m, self.layer, self.m.model.moe, op.tokens
        est = m.tables.moe(tokens, layer.hidden, spec.expert_intermediate_size, spec.top_k, spec.num_experts,
                           layer.expert_tp, layer.ep, self.dtype, "balanced")
        t, src = est.time_ns, est.source
        if layer.routing.policy == "RAND":  # the table's routing is balanced: scale by the roofline's ratio
            t *= t_roof / self.roof.cost(self.balanced.load(tokens), tokens, op.graph)[0]
            src = MODELLED
        floor = self.floor
        if floor is not None and floor.ns(op.load.experts * self.expert_bytes) > t:
            t, src = floor.ns(op.load.experts * self.expert_bytes), MODELLED  # the weights from DRAM, not L2
        if not op.graph and t < FUSED_MOE_KERNELS * m.launch_ns:
            t = FUSED_MOE_KERNELS * m.launch_ns  # five kernels, each launched from the host
        return t, src, f, b


_FLOORS: dict[tuple, StreamingFloor | None] = {}


def moe_weights_floor(tables, name: str, l2_bytes: float) -> StreamingFloor | None:
    """The fused MoE's DRAM streaming floor from a GPU's MoE table: its fastest call, and the fastest
    rate at which its balanced rows with more than twice the L2 of touched expert weights read them
    (touched experts as :class:`~tpsim.perf.moe.Routing` gives them for balanced routing)."""
    key = (str(tables.folder), name, l2_bytes)
    if key not in _FLOORS:
        table = tables.table(name)
        wb = 1.0 if name.endswith("fp8") else 2.0
        samples, routings = [], {}
        for (hidden, inter, top_k, experts, tp, ep, dist), grid in table.groups.items():
            if dist != "balanced":  # power-law rows put an unknown set of experts on the timed rank
                continue
            routing = routings.get((experts, top_k, ep))
            if routing is None:
                routing = routings[experts, top_k, ep] = Routing("BALANCED", experts, top_k, ep)
            per_expert = 3.0 * hidden * (inter // tp) * wb
            for i, n in enumerate(grid.axes[0]):
                t = grid.measured((i,))
                if t is not None:
                    samples.append((routing.load(n).experts * per_expert, t))
        fastest = min(grid.floor_ns for grid in table.groups.values())
        _FLOORS[key] = streaming_floor(samples, fastest, l2_bytes)
    return _FLOORS[key]


class ProfileExperts:
    """The MoE block of a ProfileModel ``m``: the bundle's moe.csv where it applies (see the module doc)."""

    def __init__(self, m, layer: MoELayer):
        self.m = m
        self.table = m.bundle.moe if layer.expert_tp == 1 else None
        self.miss = ((layer.ep - 1) / layer.ep) ** layer.moe.top_k if layer.ep > 1 else 0.0
        self.roof = RooflineExperts(m.roofline, layer)

    def __call__(self, op: Op) -> tuple[float, str, float, float]:
        t_roof, f, b = self.roof(op)
        if self.table is None:
            return t_roof, "analytical", f, b
        local_tokens = max(1, round(op.tokens * (1.0 - self.miss)))
        t, src = self.table.lookup(local_tokens, max(1, round(op.load.experts)))
        return self.m._kernel_cost("moe_block", t, op.graph), src, f, b
