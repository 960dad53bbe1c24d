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
from tpsim.perf.base import BatchShape, Breakdown, LatencyModel, OpTime
from tpsim.perf.collectives import p2p_ns
from tpsim.perf.comm import RingComm
from tpsim.perf.moe_step import DUMMY, MoEStepMixin
from tpsim.perf.vllm_exec import EAGER, FULL, PIECEWISE


class AnalyticalModel(MoEStepMixin, LatencyModel):
    name = "analytical"

    def __init__(self, model: ModelSpec, hardware: HardwareSpec, engine: EngineConfig, tp: int, pp: int,
                 mem_bw_gbps: float, link_bw_gbps: float, link_latency_ns: float, comm=None, layout=None,
                 routing: str = "BALANCED", moe: bool = True):
        """``layout`` places an MoE model's experts (default: one instance, EP off); ``moe=False`` builds
        only the dense ops (the roofline another model takes its element-wise costs from)."""
        p = hardware.perf
        #: collectives (tpsim.perf.comm); the ring on the configured link unless a fitted or measured model is given
        self.comm = comm if comm is not None else RingComm(link_bw_gbps, link_latency_ns, engine.act_bytes)
        self.model = model
        self.hardware = hardware
        self.engine = engine
        self.tp = tp
        self.pp = pp
        self.shape = ShardShape.of(model, tp, pp)
        self.link_bw = link_bw_gbps
        self.link_latency = link_latency_ns
        self.mem_bw = mem_bw_gbps
        act_dtype = "float32" if engine.dtype == "float32" else "bfloat16"
        self.gemm_flops = hardware.peak_flops_per_ns(engine.dtype) * p.gemm_efficiency  # FLOP/ns
        self.waves = (p.num_sms, p.gemm_tile_m, p.gemm_tile_n) if p.num_sms and p.gemm_tile_m and p.gemm_tile_n else None
        self.gemm_floor = p.gemm_floor_ns
        self.attn_flops = hardware.peak_flops_per_ns(act_dtype) * p.attention_compute_efficiency
        self.bw = mem_bw_gbps * p.memory_efficiency  # bytes/ns
        self.attn_bw = mem_bw_gbps * p.attention_memory_efficiency
        self.wb = engine.weight_bytes
        self.edge_wb = max(engine.weight_bytes, 2)
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
        s = self.shape
        # attention FLOPs per (query token x key token): QK^T and PV, 2 FLOP per MAC, all local heads
        self._attn_flop_per_pair = 4.0 * s.heads * s.head_dim
        self._kv_bytes_per_token = 2.0 * s.kv_dim * self.kvb  # K and V of one token, one layer
        self._fixed_cache: dict[tuple[int, int, int], float] = {}
        self._decode_attn_q_bytes = 2.0 * s.q_dim * self.ab  # read q, write o per decode token
        self.gqa_group = s.heads / s.kv_heads  # query heads per KV head on one GPU
        self._kv_head_bytes_per_token = 2.0 * s.head_dim * self.kvb  # K and V of one KV head, one layer
        self.l2_bytes = hardware.l2_cache_mib * (1 << 20)
        self.l2_cost = 1.0 / p.l2_bandwidth_ratio if p.l2_bandwidth_ratio > 0 else 0.0
        if moe and model.is_moe:
            from tpsim.perf.moe_costs import setup_analytical_moe

            setup_analytical_moe(self, layout, routing)

    # ----------------------------------------------------------------- op costs
    def _kernel_time(self, t: float, graph: bool) -> float:
        """A kernel's time on the critical path: roofline plus its gap, floored by launch when eager."""
        t += self.graph_kernel_ns
        if not graph and t < self.kernel_ns:
            return self.kernel_ns
        return t

    def _gemm(self, n: int, k: int, m: int, wb: float, graph: bool) -> tuple[float, float, float, str]:
        flops = 2.0 * n * k * m
        nbytes = k * m * wb + n * (k + m) * self.ab
        if self.waves is not None:  # tile- and wave-quantised compute (tpsim calibrate --tables)
            sms, tile_m, tile_n = self.waves
            tiles = -(-n // tile_m) * -(-m // tile_n)
            t_c = -(-tiles // sms) * tile_m * tile_n * 2.0 * k * sms / self.gemm_flops
        else:
            t_c = flops / self.gemm_flops
        t_m = nbytes / self.bw
        return (self._kernel_time(max(t_c, t_m) + self.gemm_floor, graph), flops, nbytes,
                "compute" if t_c >= t_m else "memory")

    def _mem(self, nbytes: float, graph: bool, kernels: int = 1) -> tuple[float, float, float, str]:
        return (self._kernel_time(nbytes / self.bw, graph) + (kernels - 1) * self._kernel_time(0.0, graph),
                0.0, nbytes, "memory")

    def _layer_ops(self, n: int, graph: bool) -> list[tuple[str, str, tuple]]:
        """Per-layer ops that depend only on the token count (attention excluded)."""
        s = self.shape
        h, ab = s.hidden, self.ab
        k = graph
        ops = [
            ("input_layernorm", "layer", self._mem(4.0 * n * h * ab, k)),
            ("qkv_proj", "layer", self._gemm(n, h, s.q_dim + 2 * s.kv_dim, self.wb, k)),
        ]
        if s.qk_norm:
            ops.append(("qk_norm", "layer", self._mem(2.0 * n * (s.q_dim + s.kv_dim) * ab, k)))
        ops += [
            ("rotary_emb", "layer", self._mem(2.0 * n * (s.q_dim + s.kv_dim) * ab, k)),
            ("kv_cache_write", "layer", self._mem(n * 2.0 * s.kv_dim * (ab + self.kvb), k)),
            ("o_proj", "layer", self._gemm(n, s.q_dim, h, self.wb, k)),
            ("post_attention_layernorm", "layer", self._mem(4.0 * n * h * ab, k)),
            ("gate_up_proj", "layer", self._gemm(n, h, 2 * s.inter, self.wb, k)),
            ("act_fn", "layer", self._mem(3.0 * n * s.inter * ab, k)),
            ("down_proj", "layer", self._gemm(n, s.inter, h, self.wb, k)),
        ]
        if self.tp > 1:
            t = self.comm.all_reduce(n * h, self.tp, graph)[0]
            ops.append(("all_reduce_attn", "comm", (t, 0.0, n * h * ab, "link")))
            ops.append(("all_reduce_mlp", "comm", (t, 0.0, n * h * ab, "link")))
        return ops

    def _head_ops(self, n: int, sampled: int, num_seqs: int, graph: bool) -> list[tuple[str, str, tuple]]:
        s = self.shape
        h, ab = s.hidden, self.ab
        k = graph
        ops = [("embedding", "head", self._mem(2.0 * n * h * ab, k))]
        if self.tp > 1:
            t = self.comm.all_reduce(n * h, self.tp, graph)[0]
            ops.append(("embedding_all_reduce", "head", (t, 0.0, n * h * ab, "link")))
        ops.append(("final_layernorm", "head", self._mem(2.0 * n * h * ab, k)))
        if sampled:
            ops.append(("lm_head", "head", self._gemm(sampled, h, s.vocab, self.edge_wb, k)))
            logits = sampled * s.vocab * s.tp * 4.0  # fp32 logits over the full vocabulary (the sampler's pass)
            if self.tp > 1:  # vLLM all-gathers the 16-bit logits over TP (docs/notes/vllm-0.19-tp-execution.md)
                t = self.comm.all_gather(sampled * s.vocab * s.tp, self.tp)[0]
                ops.append(("logits_gather", "head", (t, 0.0, sampled * s.vocab * s.tp * ab, "link")))
            ops.append(("sampler", "head", self._mem(3.0 * logits, k, kernels=4)))
        if self.pp > 1:
            t = p2p_ns(n * h * ab, self.link_bw, self.link_latency)
            ops.append(("pp_send_recv", "head", (t * (self.pp - 1), 0.0, n * h * ab, "link")))
        return ops

    def _host_visible_ns(self, gpu_ns: float, num_seqs: int) -> float:
        """Host time on the critical path: all of it, or under async scheduling what the GPU does not hide."""
        host = self.iter_ns + self.seq_ns * num_seqs
        if not self.async_scheduling:
            return host
        return host - gpu_ns if host > gpu_ns else 0.0

    def _attention(self, batch: BatchShape, graph: bool) -> tuple[float, float, float, str]:
        """One varlen attention kernel: each prefill chunk plus all decodes (per layer).

        ``graph`` is true only for a pure-decode step replayed as a full graph;
        piecewise graphs launch attention eagerly.
        """
        pair = self._attn_flop_per_pair
        kvt = self._kv_bytes_per_token
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
                group_bytes = batch.decode_ctx_sum * self._kv_head_bytes_per_token
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
        return (self._kernel_time(total_t, graph), flops, nbytes, bound)

    # ----------------------------------------------------------------- interface
    def _is_graph(self, batch: BatchShape) -> bool:
        return batch.num_tokens <= self.max_graph_batch

    def explain(self, batch: BatchShape) -> Breakdown:
        if self.moe is not None:
            return self.moe_explain(batch)
        n = batch.num_tokens
        graph = self._is_graph(batch)
        layers = self.num_layers
        ops: list[OpTime] = []
        layer_ops = self._layer_ops(n, graph)
        attn = ("attention", "layer", self._attention(batch, graph and not batch.prefill))
        # keep vLLM's order: attention sits after the KV-cache write
        idx = next(i for i, (name, _, _) in enumerate(layer_ops) if name == "kv_cache_write") + 1
        layer_ops.insert(idx, attn)
        for name, comp, (t, f, b, bound) in layer_ops:
            ops.append(OpTime(name, comp, t, layers, f, b, bound, "analytical"))
        for name, comp, (t, f, b, bound) in self._head_ops(n, batch.num_sampled, batch.num_seqs, graph):
            ops.append(OpTime(name, comp, t, 1, f, b, bound, "analytical"))
        gpu = sum(op.total_ns for op in ops)
        ops.append(OpTime("framework", "overhead", self._host_visible_ns(gpu, batch.num_seqs), 1, 0.0, 0.0,
                          "host", "analytical"))
        return Breakdown(ops=ops, num_layers=layers, pp=self.pp)

    def _fixed_ns(self, n: int, sampled: int, num_seqs: int, graph: bool) -> float:
        """All GPU time except attention's, cached by shape (decode steps repeat shapes)."""
        key = (n, sampled, graph)
        cached = self._fixed_cache.get(key)
        if cached is None:
            per_layer = sum(op[2][0] for op in self._layer_ops(n, graph))
            head = sum(op[2][0] for op in self._head_ops(n, sampled, num_seqs, graph))
            cached = per_layer * self.num_layers + head
            self._fixed_cache[key] = cached
        return cached

    def iteration_ns(self, batch: BatchShape) -> int:
        if self.moe is not None:
            return self.moe_iteration_ns(batch)
        graph = self._is_graph(batch)
        fixed = self._fixed_ns(batch.num_tokens, batch.num_sampled, batch.num_seqs, graph)
        gpu = fixed + self._attention(batch, graph and not batch.prefill)[0] * self.num_layers
        return int(round(gpu + self._host_visible_ns(gpu, batch.num_seqs)))

    def decode_iteration_ns(self, num_decode: int, ctx_sum: int, ctx_max: int) -> int:
        if self.moe is not None:
            return self.moe_decode_iteration_ns(num_decode, ctx_sum, ctx_max)
        graph = num_decode <= self.max_graph_batch
        fixed = self._fixed_ns(num_decode, num_decode, num_decode, graph)
        f = self._attn_flop_per_pair * ctx_sum / self.attn_flops
        m = (ctx_sum * self._kv_bytes_per_token + num_decode * self._decode_attn_q_bytes) / self.attn_bw
        gpu = fixed + self._kernel_time(f if f > m else m, graph) * self.num_layers
        return int(round(gpu + self._host_visible_ns(gpu, num_decode)))

    def decode_steps(self, num_decode: int, ctx_sum: int, ctx_max: int, t: int, steps: int, bound: float,
                     ends: list) -> None:
        if self.moe is not None:
            return LatencyModel.decode_steps(self, num_decode, ctx_sum, ctx_max, t, steps, bound, ends)
        graph = num_decode <= self.max_graph_batch
        fixed = self._fixed_ns(num_decode, num_decode, num_decode, graph)
        pair, flops, kvt, bw = self._attn_flop_per_pair, self.attn_flops, self._kv_bytes_per_token, self.attn_bw
        q_bytes = num_decode * self._decode_attn_q_bytes
        kernel_time = self._kernel_time
        layers = self.num_layers
        append = ends.append
        host_visible = self._host_visible_ns
        for _ in range(steps):  # same arithmetic as decode_iteration_ns, constants hoisted
            ctx_sum += num_decode
            f = pair * ctx_sum / flops
            m = (ctx_sum * kvt + q_bytes) / bw
            gpu = fixed + kernel_time(f if f > m else m, graph) * layers
            t += int(round(gpu + host_visible(gpu, num_decode)))
            append(t)
            if t >= bound:
                return

    def stage_interval_ns(self, batch: BatchShape) -> int:
        if self.pp == 1:
            return self.iteration_ns(batch)
        bd = self.explain(batch)
        comp = bd.by_component()
        per_stage_layers = (comp.get("layer", 0.0) + comp.get("comm", 0.0)) * self.shape.layers_per_stage / self.num_layers
        return int(round(per_stage_layers + comp.get("head", 0.0) / 2 + comp.get("overhead", 0.0)))

    def describe(self) -> dict:
        p = self.hardware.perf
        return {
            "name": self.name,
            "hardware_entry": self.hardware.name,
            "hardware_source": self.hardware.source,
            "peak_tflops": self.hardware.peak_tflops.get(self.engine.dtype),
            "mem_bw_gbps": self.mem_bw,
            "params": {k: getattr(p, k) for k in p.__dataclass_fields__},
            "provenance": self.hardware.provenance,
            "comm": self.comm.describe(),
            **({"moe": self.moe.describe()} if self.moe is not None else {}),
        }

    # ----------------------------------------------------------------- MoE (tpsim.perf.moe_step)
    def graph_plan(self, batch: BatchShape | None) -> tuple[str, int, int]:
        """The roofline's own rule (graphs up to ``max_graph_batch`` tokens, no padding inside a rank)."""
        shape = batch if batch is not None else DUMMY
        n = shape.num_tokens
        mode = EAGER if n > self.max_graph_batch else PIECEWISE if shape.prefill else FULL
        return mode, n, n

    def host_visible_ns(self, gpu_ns: float, num_seqs: int) -> float:
        return self._host_visible_ns(gpu_ns, num_seqs)

    def _nops_layer(self, n: int, n_real: int, mode: str) -> list[tuple]:
        return [(name, comp, t, "analytical", f, b, bound)
                for name, comp, (t, f, b, bound) in self._layer_ops(n, mode != EAGER)]

    def _nops_head(self, n: int, num_seqs: int, mode: str) -> list[tuple]:
        return [(name, comp, t, "analytical", f, b, bound)
                for name, comp, (t, f, b, bound) in self._head_ops(n, num_seqs, num_seqs, mode != EAGER)]

    def _attn_time(self, batch: BatchShape | None, mode: str) -> float:
        if batch is None:  # a dummy step builds attention metadata only for a FULL graph
            return self._attention(DUMMY, True)[0] if mode == FULL else 0.0
        return self._attention(batch, mode == FULL)[0]

    def _attn_op(self, batch: BatchShape | None, mode: str) -> tuple:
        if batch is None and mode != FULL:
            return ("attention", "layer", 0.0, "analytical", 0.0, 0.0, "memory")
        t, f, b, bound = self._attention(batch if batch is not None else DUMMY, mode == FULL)
        return ("attention", "layer", t, "analytical", f, b, bound)
