"""One mixture-of-experts layer as vLLM 0.19 runs it on one GPU: its ops, their sizes, and how tokens
are routed to experts.  Facts from ``docs/notes/vllm-0.19-moe-dp-ep.md`` (§ numbers below).

Per MoE layer, after attention (which stays TP-sharded inside the DP rank), on one GPU of DP rank ``i``
with ``n_i`` tokens (padded to the DP maximum when the step replays CUDA graphs, §2.5, §3.2):

1. ``router_gemm``: the replicated gate, ``[n_i, H] x [H, E]`` (§1.4; under sequence parallelism on
   the rank's ``ceil(n_i / T)`` share, §1.6);
2. ``moe_all_gather`` (DP > 1): vLLM's default ``allgather_reducescatter`` backend gathers hidden
   states *and* router logits, ``n_i (H + E)`` elements from each rank, over the DP group (over all
   DP x TP GPUs under sequence parallelism), before top-k (§2.2-2.4);
3. ``topk_softmax``: softmax over all E logits and top-k of every gathered token (§5.1);
4. ``fused_moe``: the Triton fused experts on every gathered token, computing the local experts' share
   (§6.1-6.2): ``tokens`` = the gathered total (AIConfigurator's ``moe_perf`` times exactly this
   kernel at that token count, ``docs/notes/aic-database.md`` §8.2);
5. ``moe_reduce_scatter`` (DP > 1): the combine, ``Σ n_i x H`` in, ``n_i x H`` out (§2.3);
6. ``moe_all_reduce`` over TP when the experts' partial sums still need it (TP > 1 without sequence
   parallelism, §2.3-2.4), or ``moe_tp_all_gather`` of the sequence-parallel shares (§2.4);
7. a shared expert, where the family has one, on the rank's own tokens (§2.6).

Unequal token counts (eager steps) run in vLLM as one broadcast per rank (§2.3); they are costed as
an all-gather / reduce-scatter of the largest rank's share from every rank, the ring step the largest
share bounds.

Routing (``--expert-routing-policy``, LLMServingSim's names) sets which experts the gathered tokens
reach, so the slowest EP rank's load (the step waits for it):

* ``BALANCED`` (default): every EP rank gets ``G k / ep`` token-expert pairs, spread over as many of
  its experts as they can reach: AIConfigurator's ``balanced`` routing, which its tables measure;
* ``RR``: token ``t`` takes experts ``t .. t+k-1`` (LLMServingSim's RR): over a step's tokens the same
  loads as BALANCED, so it is costed as BALANCED;
* ``RAND``: every token picks ``k`` distinct experts uniformly at random: a rank's pairs are a sum of
  hypergeometric draws, the slowest of ``ep`` ranks is ``mean + z_ep sigma`` (``z_ep``: the expected
  maximum of ``ep`` standard normals, Blom's approximation), and a rank reaches
  ``E_local (1 - (1 - k/E)^G)`` distinct experts on average.
"""

from __future__ import annotations

from math import ceil, sqrt
from typing import NamedTuple

from tpsim.perf.ops import COLLECTIVE, COMM, ELEMENTWISE, EXPERTS, GEMM, LAYER, MOE, Op

ROUTING_POLICIES = ("BALANCED", "RR", "RAND")
#: kernels the fused experts launch: alignment, two grouped GEMMs, activation, sum (§6.2)
FUSED_MOE_KERNELS = 5


class ExpertLoad(NamedTuple):
    """The routed work of one MoE layer on the slowest EP rank (a named tuple: made for every new step shape)."""

    pairs: float  # token-expert pairs it computes
    mean_pairs: float  # the same, averaged over the EP ranks
    experts: float  # distinct local experts those pairs reach (their weights are read)

    @property
    def imbalance(self) -> float:
        """Slowest rank's pairs over the mean: 1.0 is perfectly balanced."""
        return self.pairs / self.mean_pairs if self.mean_pairs else 1.0


def _expected_max_normal(n: int) -> float:
    """Expected maximum of ``n`` standard normals (Blom: ``Phi^-1((n - 0.375) / (n + 0.25))``; 0 for n = 1)."""
    if n <= 1:
        return 0.0
    from statistics import NormalDist  # MoE models only: a dense run need not import statistics

    return NormalDist().inv_cdf((n - 0.375) / (n + 0.25))


class Routing:
    """Expert loads under one routing policy, for one layout of the routed experts."""

    def __init__(self, policy: str, num_experts: int, top_k: int, ep_size: int):
        if policy not in ROUTING_POLICIES:
            raise ValueError(f"routing policy must be one of {ROUTING_POLICIES}, not {policy!r}")
        self.policy = policy
        self.e, self.k, self.ep = num_experts, top_k, ep_size
        self.local = -(-num_experts // ep_size)  # experts on the fullest EP rank (vLLM's linear map)
        p = self.local / num_experts
        # one token's pairs on a rank: hypergeometric (k draws of E, `local` of them on the rank)
        per_token_var = top_k * p * (1 - p) * (num_experts - top_k) / max(num_experts - 1, 1)
        self._sigma_per_sqrt_token = sqrt(per_token_var)
        self._z = _expected_max_normal(ep_size)
        self._miss = 1.0 - top_k / num_experts

    def load(self, tokens: int) -> ExpertLoad:
        mean = tokens * self.k / self.ep
        if self.policy == "RAND":
            pairs = min(mean + self._z * self._sigma_per_sqrt_token * sqrt(tokens), float(tokens * min(self.k,
                                                                                                      self.local)))
            experts = self.local * (1.0 - self._miss ** tokens)
            return ExpertLoad(pairs, mean, min(experts, pairs))
        pairs = float(ceil(mean)) if tokens else 0.0
        return ExpertLoad(pairs, mean, min(float(self.local), pairs))

    @property
    def skew_model(self) -> str:
        return {"BALANCED": "balanced", "RR": "balanced (RR spreads a step's tokens evenly)",
                "RAND": "uniform random routing, slowest EP rank"}[self.policy]


class Collective(NamedTuple):
    """One collective of an MoE layer; ``elements`` in nccl-tests' convention (all-gather: the gathered
    output, reduce-scatter: the input, all-reduce: the buffer).  A named tuple: made for every new step shape."""

    name: str
    kind: str  # "all_gather" | "reduce_scatter" | "all_reduce"
    group: int  # GPUs taking part
    elements: int


def _collective_op(c: Collective, name: str, tokens: int, graph: bool, count: int) -> Op:
    return Op(name, COLLECTIVE, COMM, MOE, count, graph, tokens, collective=c.kind, elements=c.elements, group=c.group)


def sequence_parallel(dp: int, tp: int, expert_parallel: bool) -> bool:
    """vLLM's ``use_sequence_parallel_moe``: EP on, TP > 1 and DP > 1 (§1.6)."""
    return expert_parallel and tp > 1 and dp > 1


def plan_collectives(dp: int, tp: int, expert_parallel: bool, hidden: int, experts: int, tokens: tuple[int, ...],
                     rank: int) -> tuple[list[Collective], int]:
    """The collectives of one MoE layer on DP rank ``rank`` and the tokens its fused experts run on.

    ``tokens``: what each DP rank's dense ops run with this step (its padded count under CUDA graphs).
    """
    n = tokens[rank]
    if dp == 1:
        ar = [Collective("moe_all_reduce", "all_reduce", tp, n * hidden)] if tp > 1 else []
        return ar, n
    if sequence_parallel(dp, tp, expert_parallel):
        shares = [-(-t // tp) for t in tokens]  # sequence_parallel_chunk pads n_i to a multiple of T
        rows = dp * tp * max(shares)
        return [Collective("moe_all_gather", "all_gather", dp * tp, rows * (hidden + experts)),
                Collective("moe_reduce_scatter", "reduce_scatter", dp * tp, rows * hidden),
                Collective("moe_tp_all_gather", "all_gather", tp, tp * shares[rank] * hidden)], tp * sum(shares)
    rows = dp * max(tokens)
    out = [Collective("moe_all_gather", "all_gather", dp, rows * (hidden + experts)),
           Collective("moe_reduce_scatter", "reduce_scatter", dp, rows * hidden)]
    if tp > 1:
        out.append(Collective("moe_all_reduce", "all_reduce", tp, n * hidden))
    return out, sum(tokens)


class MoELayer:
    """The MLP part of one MoE layer on one GPU: its ops (:class:`~tpsim.perf.ops.Op`), which each latency
    model prices its own way."""

    def __init__(self, model, layout, routing: str, act_bytes: int, weight_bytes: float):
        moe = model.moe
        self.moe = moe
        self.hidden = model.hidden_size
        self.dp, self.tp = layout.dp_size, layout.tp_size
        self.expert_parallel = layout.expert_parallel
        self.expert_tp = layout.expert_tp
        self.ep = layout.ep_size
        self.width = moe.expert_intermediate_size // layout.expert_tp  # each expert's width on a GPU
        self.shared = moe.shared_expert_intermediate_size // layout.tp_size
        self.routing = Routing(routing, moe.num_experts, moe.top_k, layout.ep_size)
        self.ab = act_bytes
        self.wb = weight_bytes
        self.sp = sequence_parallel(self.dp, self.tp, self.expert_parallel)

    def gathered(self, tokens: tuple[int, ...], rank: int) -> int:
        """Tokens entering this rank's fused experts."""
        return plan_collectives(self.dp, self.tp, self.expert_parallel, self.hidden, self.moe.num_experts,
                                tokens, rank)[1]

    def ops(self, tokens: tuple[int, ...], rank: int, graph: bool, count: int, fused_norm: bool = False,
            routing_in_experts: bool = False) -> list[Op]:
        """One MoE layer's MLP on DP rank ``rank``, ``count`` such layers per step; ``routing_in_experts``: the
        experts are priced by a measurement that holds the router GEMM and top-k (one ``moe_block`` op)."""
        moe, h = self.moe, self.hidden
        e = moe.num_experts
        n = tokens[rank]
        colls, g = plan_collectives(self.dp, self.tp, self.expert_parallel, h, e, tokens, rank)
        ops = []
        if not routing_in_experts:
            ops.append(self._gemm("router_gemm", -(-n // self.tp) if self.sp else n, e, h, graph, count))
        after = []  # the dispatch's all-gather runs before top-k, the other collectives after the experts
        for c in colls:
            if c.name == "moe_all_gather":
                ops.append(_collective_op(c, c.name, n, graph, count))
            else:
                after.append(_collective_op(c, "all_reduce_rmsnorm_moe" if c.name == "moe_all_reduce" and fused_norm
                                            else c.name, n, graph, count))
        if not routing_in_experts:
            nbytes = g * e * self.ab + g * moe.top_k * 8.0  # logits in; fp32 weights and int32 ids out
            ops.append(Op("topk_softmax", ELEMENTWISE, LAYER, MOE, count, graph, g, mem_bytes=nbytes))
        ops.append(Op("moe_block" if routing_in_experts else "fused_moe", EXPERTS, LAYER, MOE, count, graph, g,
                      load=self.routing.load(g)))
        ops += after
        if self.shared:
            ops += self._shared_ops(n, graph, count)
        return ops

    def _gemm(self, name: str, m: int, n: int, k: int, graph: bool, count: int) -> Op:
        return Op(name, GEMM, LAYER, MOE, count, graph, m, n, k, self.wb)

    def _shared_ops(self, n: int, graph: bool, count: int) -> list[Op]:
        h, s = self.hidden, self.shared
        ops = [self._gemm("shared_gate_up_proj", n, 2 * s, h, graph, count),
               Op("shared_act_fn", ELEMENTWISE, LAYER, MOE, count, graph, n, mem_bytes=3.0 * n * s * self.ab),
               self._gemm("shared_down_proj", n, h, s, graph, count)]
        if self.moe.shared_expert_gate:
            ops.append(self._gemm("shared_expert_gate", n, 1, h, graph, count))
        return ops

    def describe(self) -> dict:
        return {"experts": self.moe.num_experts, "top_k": self.moe.top_k, "ep_size": self.ep,
                "expert_tp": self.expert_tp, "expert_width_per_gpu": self.width,
                "routing": self.routing.policy, "skew_model": self.routing.skew_model,
                "dispatch": ("sequence-parallel all-gather / reduce-scatter over DP x TP" if self.sp else
                             "all-gather / reduce-scatter over DP" if self.dp > 1 else "none (DP 1)"),
                "all2all_backend": "allgather_reducescatter (vLLM 0.19's default)"}


def expert_roofline(load: ExpertLoad, tokens: int, top_k: int, hidden: int, width: int, wb: float, ab: float,
                    flops_per_ns: float, bytes_per_ns: float, kernel_time) -> tuple[float, float, float]:
    """Roofline of the fused experts on the slowest rank: (ns, FLOPs, bytes).

    Each active expert's weights are read once (``experts x 3 H I`` elements); the two grouped GEMMs do
    ``2 x 3 H I`` FLOPs per token-expert pair; activations move per pair; the alignment and the final
    sum touch every gathered token's ``k`` rows.  ``kernel_time(t)`` adds each of the five kernels' cost.
    """
    pairs, experts = load.pairs, load.experts
    w13_f = 2.0 * pairs * hidden * 2 * width
    w13_b = experts * 2 * width * hidden * wb + pairs * (hidden + 2 * width) * ab
    act_b = pairs * 3 * width * ab
    w2_f = 2.0 * pairs * width * hidden
    w2_b = experts * width * hidden * wb + pairs * (width + hidden) * ab
    sum_b = tokens * top_k * (hidden * ab + 8.0) + tokens * hidden * ab
    t = (kernel_time(max(w13_f / flops_per_ns, w13_b / bytes_per_ns)) + kernel_time(act_b / bytes_per_ns)
         + kernel_time(max(w2_f / flops_per_ns, w2_b / bytes_per_ns)) + kernel_time(tokens * top_k * 8.0 / bytes_per_ns)
         + kernel_time(sum_b / bytes_per_ns))
    return t, w13_f + w2_f, w13_b + act_b + w2_b + sum_b
