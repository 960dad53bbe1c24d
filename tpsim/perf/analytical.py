"""Analytical (roofline) iteration latency: usable for any catalog GPU with no profiling.

One decoder layer on one GPU is the sequence vLLM runs::

    input_layernorm -> qkv_proj -> [q/k norm] -> rotary -> kv_cache_write -> attention
    -> o_proj -> all-reduce -> post_attention_layernorm -> gate_up_proj -> act_fn
    -> down_proj -> all-reduce

Each compute op costs ``max(FLOPs / (peak x eff), bytes / (bw x eff))`` plus a
per-kernel cost: replayed from a CUDA graph a kernel adds a small gap
(``graph_kernel_overhead_ns``); launched eagerly it takes at least the host's
launch time (``kernel_overhead_ns``), which a long kernel hides.  As in vLLM
V1, steps of up to ``max_graph_batch`` tokens replay graphs (pure decode as one
full graph; mixed batches piecewise, with attention launched eagerly).  Norms,
rotary and the activation are memory-bound.  Attention is one varlen kernel
over the batch: each prefill chunk with its prior context, and the decoding
requests together (their reads of the KV cache dominate).  Around the layers:
the embedding (plus its all-reduce under TP), the final norm, the LM head over
the sequences that sample, the gather of their logits, the sampler, and a
per-step framework (host) overhead, which under async scheduling runs beside
the GPU so only its excess over the GPU's time counts.  With ``pp > 1`` the layers are split over stages
and hidden states cross ``pp - 1`` links.

Everything here is an estimate with provenance "analytical": the parameters
come from the hardware catalog (spec sheets and published measurements).
"""

from __future__ import annotations

from tpsim.config.engine import EngineConfig
from tpsim.config.hardware import HardwareSpec
from tpsim.config.model import ModelSpec
from tpsim.memory import ShardShape
from tpsim.perf.base import BatchShape, OpTime
from tpsim.perf.collectives import p2p_ns
from tpsim.perf.comm import RingComm
from tpsim.perf.ops import (
    ATTENTION,
    COLLECTIVE,
    ELEMENTWISE,
    EXPERTS,
    GEMM,
    KIND_BOUND,
    KV_DENSE,
    MLP,
    MOE,
    Execution,
    Op,
    StepOps,
    StepPlan,
)
from tpsim.perf.step import DUMMY, StepModel
from tpsim.perf.vllm_exec import EAGER, FULL, PIECEWISE


class AnalyticalModel(StepModel):
    name = "analytical"
    label_hidden_host = False

    def __init__(self, model: ModelSpec, hardware: HardwareSpec, engine: EngineConfig, tp: int, pp: int,
                 mem_bw_gbps: float, link_bw_gbps: float, link_latency_ns: float, comm=None, layout=None,
                 routing: str = "BALANCED", moe: bool = True):
        """``layout`` places an MoE model's experts (default: one instance, EP off); ``moe=False`` builds
        only the dense prices (the roofline another model takes its element-wise costs from)."""
        p = hardware.perf
        #: collectives (tpsim.perf.comm); the ring on the configured link unless a fitted or measured model is given
        self.comm = comm if comm is not None else RingComm(link_bw_gbps, link_latency_ns, engine.act_bytes)
        self.model = model
        self.hardware = hardware
        self.engine = engine
        self.tp = tp
        self.pp = pp
        self.shape = s = ShardShape.of(model, tp, pp)
        self.link_bw = link_bw_gbps
        self.link_latency = link_latency_ns
        self.mem_bw = mem_bw_gbps
        act_dtype = "float32" if engine.dtype == "float32" else "bfloat16"
        self.gemm_flops = hardware.peak_flops_per_ns(engine.dtype) * p.gemm_efficiency  # FLOP/ns
        tiled = p.num_sms and p.gemm_tile_m and p.gemm_tile_n
        self.waves = (p.num_sms, p.gemm_tile_m, p.gemm_tile_n) if tiled else None
        self.gemm_floor = p.gemm_floor_ns
        self.attn_flops = hardware.peak_flops_per_ns(act_dtype) * p.attention_compute_efficiency
        self.bw = mem_bw_gbps * p.memory_efficiency  # bytes/ns
        self.attn_bw = mem_bw_gbps * p.attention_memory_efficiency
        self.wb = engine.weight_bytes
        self.ab = engine.act_bytes
        self.kvb = engine.kv_bytes
        self.kernel_ns = p.kernel_overhead_ns
        self.graph_kernel_ns = p.graph_kernel_overhead_ns
        self.max_graph_batch = p.max_graph_batch
        self.iter_ns = p.iteration_overhead_ns
        self.seq_ns = p.per_sequence_overhead_ns
        self.async_scheduling = engine.async_scheduling
        self.mixed_tile_rows = p.mixed_decode_tile_rows
        self.num_layers = model.num_layers
        #: attention FLOPs per (query token x key token): QK^T and PV, 2 FLOP per MAC, all local heads
        self.attn_flop_per_pair = 4.0 * s.heads * s.head_dim
        self.kv_bytes_per_token = 2.0 * s.kv_dim * self.kvb  # K and V of one token, one layer
        self._decode_attn_q_bytes = 2.0 * s.q_dim * self.ab  # read q, write o per decode token
        self.gqa_group = s.heads / s.kv_heads  # query heads per KV head on one GPU
        self.kv_head_bytes_per_token = 2.0 * s.head_dim * self.kvb  # K and V of one KV head, one layer
        self.l2_bytes = hardware.l2_cache_mib * (1 << 20)
        self.l2_cost = 1.0 / p.l2_bandwidth_ratio if p.l2_bandwidth_ratio > 0 else 0.0
        self.step_ops = StepOps(model, s, engine, Execution(KV_DENSE, False, s.vocab * s.tp), pp)
        self._init_step_caches()
        self._unit_ops: dict[str, tuple] = {}  # token_ops for one token (in one list, where it cuts), by mode
        self._unit_logits: dict[str, list[Op]] = {}  # the logits' ops for one sequence, by mode
        if moe and model.is_moe:
            from tpsim.perf.moe_costs import RooflineExperts, moe_layer

            self.moe = moe_layer(model, layout, tp, pp, routing, engine)
            self._experts = RooflineExperts(self, self.moe)

    # ----------------------------------------------------------------- the roofline's costs
    def kernel_time_ns(self, t: float, graph: bool) -> float:
        """A kernel's time on the critical path: roofline plus its gap, floored by launch when eager."""
        t += self.graph_kernel_ns
        if not graph and t < self.kernel_ns:
            return self.kernel_ns
        return t

    def gemm_cost(self, tokens: int, n: int, k: int, wb: float, graph: bool) -> tuple[float, float, float, str]:
        """(ns, FLOPs, bytes, bound) of ``y[tokens, n] = x[tokens, k] W[n, k]^T`` (``wb`` bytes per weight)."""
        flops = 2.0 * tokens * k * n
        nbytes = k * n * wb + tokens * (k + n) * self.ab
        if self.waves is not None:  # tile- and wave-quantised compute (tpsim calibrate --tables)
            sms, tile_m, tile_n = self.waves
            tiles = -(-tokens // tile_m) * -(-n // tile_n)
            t_c = -(-tiles // sms) * tile_m * tile_n * 2.0 * k * sms / self.gemm_flops
        else:
            t_c = flops / self.gemm_flops
        t_m = nbytes / self.bw
        return (self.kernel_time_ns((t_m if t_m > t_c else t_c) + self.gemm_floor, graph), flops, nbytes,
                "compute" if t_c >= t_m else "memory")

    def memory_cost(self, nbytes: float, graph: bool, kernels: int = 1) -> tuple[float, float, float, str]:
        """(ns, 0, bytes, "memory") of ``kernels`` memory-bound kernels moving ``nbytes`` in all."""
        t = self.kernel_time_ns(nbytes / self.bw, graph)
        if kernels > 1:  # the others' data counted in the first's
            t += (kernels - 1) * self.kernel_time_ns(0.0, graph)
        return t, 0.0, nbytes, "memory"

    def attention_cost(self, batch: BatchShape, graph: bool) -> tuple[float, float, float, str]:
        """One varlen attention kernel: each prefill chunk plus all decodes (per layer): (ns, FLOPs, bytes, bound).

        ``graph`` is true only for a pure-decode step replayed as a full graph;
        piecewise graphs launch attention eagerly.
        """
        pair = self.attn_flop_per_pair
        kvt = self.kv_bytes_per_token
        qb = 2.0 * self.shape.q_dim * self.ab
        total_t = 0.0
        flops = 0.0
        nbytes = 0.0
        compute_t = 0.0
        for q, c in batch.prefill:
            f = pair * (q * c + q * (q + 1) / 2.0)
            b = (c + q) * kvt + q * qb
            tc, tm = f / self.attn_flops, b / self.attn_bw
            total_t += tc if tc > tm else tm
            compute_t += tc
            flops += f
            nbytes += b
        if batch.num_decode:
            if batch.prefill and self.mixed_tile_rows:
                # FA2 varlen (vllm-project/vllm#58013): each decoding row fills a whole query tile
                # of tensor-core work, and each query head reads its KV head's cache itself (no GQA
                # packing); the heads of one KV group run back to back, so the re-reads hit L2 as
                # far as one KV head's cache over all decoding requests fits in it, and an L2 hit costs
                # 1 / l2_bandwidth_ratio of a DRAM read
                f = pair * batch.decode_ctx_sum * self.mixed_tile_rows
                group_bytes = batch.decode_ctx_sum * self.kv_head_bytes_per_token
                hit = self.l2_bytes / group_bytes if group_bytes > self.l2_bytes else 1.0
                reads = 1.0 + (self.gqa_group - 1.0) * (hit * self.l2_cost + (1.0 - hit))
                b = batch.decode_ctx_sum * kvt * reads + batch.num_decode * qb
            else:
                f = pair * batch.decode_ctx_sum
                b = batch.decode_ctx_sum * kvt + batch.num_decode * qb
            tc, tm = f / self.attn_flops, b / self.attn_bw
            total_t += tc if tc > tm else tm
            compute_t += tc
            flops += f
            nbytes += b
        bound = "compute" if compute_t >= total_t / 2 else "memory"
        return (self.kernel_time_ns(total_t, graph), flops, nbytes, bound)

    def collective_ns(self, op: Op) -> tuple[float, str]:
        """A COLLECTIVE op by the collectives model (``self.comm``)."""
        if op.collective == "all_reduce":
            return self.comm.all_reduce(op.elements, op.group, op.graph)
        if op.collective == "all_gather":
            return self.comm.all_gather(op.elements, op.group)
        return self.comm.reduce_scatter(op.elements, op.group)

    # ----------------------------------------------------------------- a new step shape, priced
    def token_times(self, mode: str, tokens: int) -> tuple:
        """The token-wise ops built once per mode for one token and priced at ``tokens`` (:meth:`Op.scaled`): a
        new token count builds no op (the roofline's plan does not depend on the tokens)."""
        unit = self._unit_ops.get(mode)
        if unit is None:
            before, after, first, last = self.token_ops(mode, 1)
            a, b, c = len(before), len(before) + len(after), len(before) + len(after) + len(first)
            unit = self._unit_ops[mode] = (before + after + first + last, a, b, c,
                                           tuple(op.block == MLP for op in after))
        ops, a, b, c, is_mlp = unit
        times = self.scaled_times(ops, tokens)  # all at once: one pass, then cut into the parts
        return times[:a], times[a:b], is_mlp, times[b:c], times[c:]

    def logits_times(self, mode: str, logits_rows: int) -> tuple[float, ...]:
        """The logits' ops built once per mode for one sequence, priced at ``logits_rows`` (their sizes scale
        with the rows as the token-wise ops' with the tokens)."""
        if not logits_rows:
            return ()
        unit = self._unit_logits.get(mode)
        if unit is None:
            unit = self._unit_logits[mode] = self.step_ops.logits(self.step_plan(mode, 1, 1, 1))
        return self.scaled_times(unit, logits_rows)

    def scaled_times(self, ops: list[Op], tokens: int) -> tuple[float, ...]:
        """``op_ns(op.scaled(tokens))`` of each op built for one token; GEMMs and element-wise ops priced without
        building them."""
        gemm, memory = self.gemm_cost, self.memory_cost
        return tuple([gemm(tokens, op.n, op.k, op.weight_bytes, op.graph)[0] if (kind := op.kind) == GEMM
                      else memory(op.mem_bytes * tokens, op.graph, op.kernels)[0] if kind == ELEMENTWISE
                      else self.op_ns(op.scaled(tokens)) for op in ops])

    def op_ns(self, op: Op) -> float:
        """An op's time alone, without an OpTime (but a rare P2P's)."""
        kind = op.kind
        if kind == GEMM:
            return self.gemm_cost(op.tokens, op.n, op.k, op.weight_bytes, op.graph)[0]
        if kind == ELEMENTWISE:
            return self.memory_cost(op.mem_bytes, op.graph, op.kernels)[0]
        if kind == COLLECTIVE:
            return self.collective_ns(op)[0]
        if kind == EXPERTS:
            return self._experts(op)[0]
        return self.price(op).time_ns

    def price(self, op: Op) -> OpTime:
        kind = op.kind
        src = "analytical"
        if kind == GEMM:
            t, f, b, bound = self.gemm_cost(op.tokens, op.n, op.k, op.weight_bytes, op.graph)
        elif kind == ELEMENTWISE:
            t, f, b, bound = self.memory_cost(op.mem_bytes, op.graph, op.kernels)
        elif kind == ATTENTION:
            t, f, b, bound = self.attention_cost(op.batch, op.graph) if op.batch is not None else (0.0, 0.0, 0.0,
                                                                                                    "memory")
        elif kind == COLLECTIVE:
            t, comm_src = self.collective_ns(op)
            f, b, bound = 0.0, op.elements * self.ab, "link"
            if op.block == MOE:  # the MoE layer's collectives keep their source (the dense ones read analytical)
                src = comm_src
        elif kind == EXPERTS:
            t, f, b = self._experts(op)
            bound = "kernel"
        else:  # P2P: the hidden states cross every stage boundary
            t = p2p_ns(op.mem_bytes, self.link_bw, self.link_latency) * (op.group - 1)
            f, b, bound = 0.0, op.mem_bytes, "link"
        if op.block == MOE:
            bound = KIND_BOUND[kind]
        return OpTime(op.name, op.component, t, op.count, f, b, bound, src)

    def host_visible_ns(self, gpu_ns: float, num_seqs: int) -> float:
        """Host time on the critical path: all of it, or under async scheduling what the GPU does not hide."""
        host = self.iter_ns + self.seq_ns * num_seqs
        if not self.async_scheduling:
            return host
        return host - gpu_ns if host > gpu_ns else 0.0

    # ----------------------------------------------------------------- the step
    def graph_plan(self, batch: BatchShape | None) -> tuple[str, int, int]:
        """The roofline's own rule: graphs up to ``max_graph_batch`` tokens (FULL for a pure-decode step, else
        PIECEWISE: attention eager), no padding."""
        shape = batch if batch is not None else DUMMY
        n = shape.num_tokens
        mode = EAGER if n > self.max_graph_batch else PIECEWISE if shape.prefill else FULL
        return mode, n, n

    def step_plan(self, mode: str, tokens: int, attention_tokens: int, logits_rows: int) -> StepPlan:
        return StepPlan(mode, tokens, attention_tokens, logits_rows)

    def dense_plan(self, batch: BatchShape) -> StepPlan:
        """:meth:`graph_plan`'s rule (inline: once a step); logits of the sequences that sample a token."""
        n = batch.num_tokens
        mode = EAGER if n > self.max_graph_batch else PIECEWISE if batch.prefill else FULL
        return StepPlan(mode, n, n, batch.num_sampled)

    def attention_ns(self, batch: BatchShape, graph: bool) -> float:
        return self.attention_cost(batch, graph)[0]

    def decode_iteration_ns(self, num_decode: int, ctx_sum: int, ctx_max: int, ctx_sq: int = 0) -> int:
        if self.moe is not None:
            return self.moe_decode_iteration_ns(num_decode, ctx_sum, ctx_max, ctx_sq)
        graph = num_decode <= self.max_graph_batch
        fixed = self._fixed_ns(FULL if graph else EAGER, num_decode, num_decode, num_decode)
        f = self.attn_flop_per_pair * ctx_sum / self.attn_flops
        m = (ctx_sum * self.kv_bytes_per_token + num_decode * self._decode_attn_q_bytes) / self.attn_bw
        gpu = fixed + self.kernel_time_ns(f if f > m else m, graph) * self.num_layers
        return int(round(gpu + self.host_visible_ns(gpu, num_decode)))

    def dense_decode_steps(self, num_decode: int, ctx_sum: int, ctx_max: int, t: int, steps: int,
                           bound: float, ends: list, ctx_sq: int = 0) -> bool:
        graph = num_decode <= self.max_graph_batch
        fixed = self._fixed_ns(FULL if graph else EAGER, num_decode, num_decode, num_decode)
        pair, flops, kvt, bw = self.attn_flop_per_pair, self.attn_flops, self.kv_bytes_per_token, self.attn_bw
        q_bytes = num_decode * self._decode_attn_q_bytes
        kernel_time = self.kernel_time_ns
        layers = self.num_layers
        append = ends.append
        host_visible = self.host_visible_ns
        for _ in range(steps):  # same arithmetic as decode_iteration_ns, constants hoisted
            ctx_sum += num_decode
            f = pair * ctx_sum / flops
            m = (ctx_sum * kvt + q_bytes) / bw
            gpu = fixed + kernel_time(f if f > m else m, graph) * layers
            t += int(round(gpu + host_visible(gpu, num_decode)))
            append(t)
            if t >= bound:
                return True
        return True

    def describe(self) -> dict:
        p = self.hardware.perf
        return {
            "name": self.name,
            "hardware_entry": self.hardware.name,
            "hardware_source": self.hardware.source,
            "peak_tflops": self.hardware.peak_tflops.get(self.engine.dtype),
            "mem_bw_gbps": self.mem_bw,
            "params": {k: getattr(p, k) for k in p.__struct_fields__},
            "provenance": self.hardware.provenance,
            "comm": self.comm.describe(),
            **({"moe": self.moe.describe()} if self.moe is not None else {}),
        }
