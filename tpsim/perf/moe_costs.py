"""How each latency model prices the ops of an MoE layer (:class:`~tpsim.perf.moe_step.MoECost`).

* analytical: GEMMs and element-wise kernels by the roofline model; the fused experts by
  :func:`~tpsim.perf.moe.expert_roofline` (each active expert's weights read once, token x top-k
  work, five kernels);
* kernels: the router and shared-expert GEMMs from the GPU's GEMM table; the fused experts from its
  MoE table (AIConfigurator's ``moe_perf``: vLLM 0.19's ``fused_experts`` on one GPU with the rank's
  ``E / ep`` experts at width ``I / expert_tp``, at the gathered token count, ``balanced`` routing);
  other routing policies scale the table by the roofline's ratio to balanced routing (modelled);
  without an MoE table for the dtype, the roofline;
* profile: LLMServingSim's ``moe.csv`` (the whole MoE block: gate, top-k, experts) where the bundle
  has one and each expert is whole on a GPU (``expert_tp`` 1, as it was profiled), read at
  LLMServingSim's per-rank arguments: the tokens with at least one local expert,
  ``G (1 - ((ep - 1) / ep)^k)``, and the local experts the routing reaches; else the roofline.

Every op keeps its source (measured / interpolated / extrapolated / modelled / analytical).
"""

from __future__ import annotations

from tpsim.config.parallel import ParallelLayout
from tpsim.memory import single_rank
from tpsim.perf.moe import FUSED_MOE_KERNELS, MoELayer, Routing, expert_roofline
from tpsim.perf.moe_step import MoECost

MODELLED = "modelled"
_MOE_TABLE_DTYPE = {"bfloat16": "bfloat16", "float16": "bfloat16", "fp8": "fp8"}
#: kernels of LLMServingSim's measured MoE block: gate GEMM, top-k, and the fused experts'
MOE_BLOCK_KERNELS = FUSED_MOE_KERNELS + 2


def _layer(model, layout: ParallelLayout | None, tp: int, pp: int, routing: str, act_bytes: int, comm) -> MoELayer:
    return MoELayer(model, layout if layout is not None else single_rank(model, tp, pp), routing, act_bytes, comm)


def _roofline_experts(r, layer: MoELayer):
    """``experts(tokens, load, eager)`` of the roofline model ``r`` (an AnalyticalModel)."""
    k, h, width = layer.moe.top_k, layer.hidden, layer.width

    def experts(tokens: int, load, eager: bool):
        t, f, b = expert_roofline(load, tokens, k, h, width, r.wb, r.ab, r.gemm_flops, r.bw,
                                  lambda x: r._kernel_time(x, not eager))
        return t, "analytical", f, b

    return experts


def _roofline_gemm(r):
    def gemm(m: int, n: int, k: int, eager: bool):
        t, f, b, _ = r._gemm(m, k, n, r.wb, not eager)
        return t, "analytical", f, b

    return gemm


def _roofline_mem(r):
    return lambda nbytes, eager: r._mem(nbytes, not eager)[0]


def setup_analytical_moe(model_obj, layout, routing: str) -> None:
    """Give an AnalyticalModel its MoE layer and prices."""
    m = model_obj
    m.moe = _layer(m.model, layout, m.tp, m.pp, routing, m.ab, m.comm)
    m.moe_cost = MoECost(_roofline_gemm(m), _roofline_mem(m), _roofline_experts(m, m.moe))
    m._moe_cache = {}


def setup_kernel_moe(model_obj, layout, routing: str) -> None:
    """Give a KernelModel its MoE layer and prices (tables where they exist)."""
    m = model_obj
    layer = m.moe = _layer(m.model, layout, m.tp, m.pp, routing, m.roofline.ab, m.comm)
    dtype = _MOE_TABLE_DTYPE.get(m.engine.dtype)
    m.moe_table = f"moe.{dtype}" if dtype and m.tables.has(f"moe.{dtype}") else None
    roof = _roofline_experts(m.roofline, layer)
    spec = m.model.moe
    balanced = Routing("BALANCED", spec.num_experts, spec.top_k, layer.ep)

    def experts(tokens: int, load, eager: bool):
        t_roof, _, f, b = roof(tokens, load, eager)
        if m.moe_table is None:
            return t_roof, "analytical", f, b
        est = m.tables.moe(tokens, layer.hidden, spec.expert_intermediate_size, spec.top_k, spec.num_experts,
                           layer.expert_tp, layer.ep, dtype, "balanced")
        t, src = est.time_ns, est.source
        if layer.routing.policy == "RAND":  # the table's routing is balanced: scale by the roofline's ratio
            t *= t_roof / roof(tokens, balanced.load(tokens), eager)[0]
            src = MODELLED
        if eager and t < FUSED_MOE_KERNELS * m.launch_ns:
            t = FUSED_MOE_KERNELS * m.launch_ns  # five kernels, each launched from the host
        return t, src, f, b

    m.moe_cost = MoECost(m._gemm, m._mem, experts)
    m._moe_cache = {}


def setup_profile_moe(model_obj, layout, routing: str) -> None:
    """Give a ProfileModel its MoE layer and prices (the bundle's moe.csv where it applies)."""
    m = model_obj
    r = m.roofline
    layer = m.moe = _layer(m.model, layout, m.tp, m.pp, routing, r.ab, r.comm)
    table = m.bundle.moe if layer.expert_tp == 1 else None
    m.moe_block = table
    spec = m.model.moe
    miss = ((layer.ep - 1) / layer.ep) ** spec.top_k if layer.ep > 1 else 0.0
    roof = _roofline_experts(r, layer)

    def experts(tokens: int, load, eager: bool):
        t_roof, _, f, b = roof(tokens, load, eager)
        if table is None:
            return t_roof, "analytical", f, b
        local_tokens = max(1, round(tokens * (1.0 - miss)))
        t, src = table.lookup(local_tokens, max(1, round(load.experts)))
        return m._kernel_cost("moe_block", t, not eager), src, f, b

    m.moe_cost = MoECost(_roofline_gemm(r), _roofline_mem(r), experts, routing_in_experts=table is not None)
    m._moe_cache = {}
