"""Kernel-table iteration latency (``--perf-model kernels``): each op of a step from measured kernels.

The step is the one vLLM 0.19 runs (:mod:`tpsim.perf.vllm_exec`): dense ops at the token count
padded to the CUDA-graph capture size, attention on the real tokens; FULL graphs for pure-decode
steps, PIECEWISE (attention and KV-cache write launched eagerly) for steps with a prefill chunk,
eager above the largest capture size.  Each op's time and its source:

* GEMMs (QKV, O, gate/up, down, LM head): the GPU's GEMM table at the per-GPU shape (measured,
  interpolated or extrapolated: :mod:`tpsim.kernels.grid`);
* decode attention: the generation table at the batch's decode count and mean context, but at least
  the table's fastest time plus the batch's KV cache streamed from DRAM at the fastest rate the table
  shows for caches over twice the L2 (*modelled*, :mod:`tpsim.kernels.streaming`: the table replays
  one cache, which stays in L2 where it fits; in serving every other layer's KV and weights pass
  through L2 between two steps); on FlashAttention 2 a pure-decode batch of uneven contexts adds
  the time its longest sequences' CTAs run alone (*modelled*, :mod:`tpsim.perf.decode_skew`);
* prefill attention: the context table (it holds prefills with no cached context).  A chunk of
  ``q`` tokens after ``c`` cached ones is *modelled* by causal differencing: a prefill of
  ``c + q`` tokens minus one of ``c`` does exactly the chunk's query-key pairs, at the
  efficiency of long sequences; floored by the chunk alone and by reading its whole KV;
* a mixed step (*modelled*): FlashAttention (SM 8.x, 9.x, 12.x) runs one varlen kernel over every
  sequence, so the parts are summed and the launch floor counted once; FlashInfer (SM 10.x)
  makes a decode call and a prefill call.  On FlashAttention 2 a decode in a mixed step fills a
  whole query tile without GQA packing (vllm-project/vllm#58013): its time is scaled by the
  roofline model's mixed / pure-decode ratio;
* collectives: vLLM's all-reduce and NCCL's all-gather (:mod:`tpsim.perf.comm`); with the fused
  all-reduce + RMSNorm (SM 9.0/10.x, small steps) the separate norm kernels are dropped;
* element-wise ops (norms, rotary, activation, KV-cache write, embedding, sampler) and the host
  overhead: the roofline model's terms (:mod:`tpsim.perf.analytical`), labelled analytical.

Table times are kernel times under CUDA graphs; an eagerly launched kernel takes at least the
host's launch time (``kernel_overhead_ns``).  Ops a GPU has no table for (e.g. fp32 GEMMs) fall
back to the roofline, labelled analytical.
"""

from __future__ import annotations

from math import exp, log

from tpsim.kernels.streaming import decode_attention_floor
from tpsim.perf.analytical import AnalyticalModel
from tpsim.perf.base import BatchShape, OpTime
from tpsim.perf.collectives import p2p_ns
from tpsim.perf.decode_curve import DecodeCurve
from tpsim.perf.decode_skew import DecodeSkew
from tpsim.perf.ops import (
    ATTENTION,
    COLLECTIVE,
    ELEMENTWISE,
    EXPERTS,
    GEMM,
    KIND_BOUND,
    KV_WITH_ATTENTION,
    LOGITS,
    Execution,
    Op,
    StepOps,
    StepPlan,
)
from tpsim.perf.step import DUMMY, StepModel
from tpsim.perf.vllm_exec import (
    EAGER,
    FULL,
    GraphPolicy,
    attention_backend,
    fused_allreduce_max_tokens,
)

MODELLED = "modelled"
_GEMM_TABLE_DTYPE = {"bfloat16": "bfloat16", "float16": "bfloat16", "fp8": "fp8"}


#: GEMM estimates kept before the memo starts again (bounded memory; a run asks a few shapes at <= 64k m's)
_GEMM_MEMO = 200_000


class KernelModel(StepModel):
    name = "kernels"
    label_hidden_host = False

    def __init__(self, tables, model, hardware, engine, tp: int, pp: int, mem_bw_gbps: float,
                 link_bw_gbps: float, link_latency_ns: float, comm, layout=None, routing: str = "BALANCED"):
        self.tables = tables
        #: the roofline model: element-wise ops, host overhead, and the ops the tables lack
        self.roofline = AnalyticalModel(model, hardware, engine, tp, pp, mem_bw_gbps, link_bw_gbps, link_latency_ns,
                                        comm, moe=False)
        self.comm = self.roofline.comm
        r = self.roofline
        self.model, self.hardware, self.engine = model, hardware, engine
        self.tp, self.pp = tp, pp
        self.shape = r.shape
        self.num_layers = model.num_layers
        self.graphs = GraphPolicy.of(engine.max_num_seqs, engine.max_num_batched_tokens)
        self.backend = attention_backend(hardware.compute_capability)
        dp = layout.dp_size if layout is not None and model.is_moe else 1  # dense DP ranks are separate engines
        self.fused_max = fused_allreduce_max_tokens(hardware.compute_capability, tp, pp, dp, model.hidden_size,
                                                    engine.act_bytes, engine.max_num_batched_tokens)
        self.launch_ns = hardware.perf.kernel_overhead_ns
        gemm_dtype = _GEMM_TABLE_DTYPE.get(engine.dtype)
        self.gemm_table = f"gemm.{gemm_dtype}" if gemm_dtype and tables.has(f"gemm.{gemm_dtype}") else None
        self.gemm_dtype = gemm_dtype
        #: the fastest kernel replayed from a CUDA graph on this GPU: the GEMM table's fastest measurement
        self.graph_floor_ns = tables.table(self.gemm_table).groups[()].floor_ns if self.gemm_table else 0.0
        kv = "fp8" if engine.kv_cache_dtype == "fp8" else "bfloat16"
        self.kv_dtype = kv
        self.ctx_table = f"context_attention.bfloat16.kv_{kv}"
        self.gen_table = f"generation_attention.bfloat16.kv_{kv}"
        if not tables.has(self.ctx_table):
            self.ctx_table = None
        if not tables.has(self.gen_table):
            self.gen_table = None
        s = self.shape
        self.heads = (s.heads, s.kv_heads, s.head_dim)
        self._curves: dict[int, DecodeCurve | None] = {}
        self._curve_nodes: list | None = None  # the generation table along the decode count, per context node
        self._curve_log_kv: list[float] = []
        self._gemm_lines: dict[tuple[int, int], object] = {}  # the GEMM table along m, per (n, k)
        self._gemm_ns: dict[tuple[int, int, int], tuple[float, str]] = {}  # its estimates, per (m, n, k)
        self._ctx_line = False  # the context table along the prompt length at batch 1 (None: heads not measured)
        self._kv_terms: tuple[float, float, float] | None = None  # the decode KV cache's DRAM streaming floor
        self._ctx_ns: dict[int, float] = {}
        self._attn_floor: float | None = None  # _floor(), once known
        # logits gathered over the whole vocabulary; the KV-cache write runs with attention, the logits after the graph
        self.step_ops = StepOps(model, s, engine, Execution(KV_WITH_ATTENTION, True, model.vocab_size), pp)
        self._init_step_caches()
        self.skew = self._decode_skew()
        self._graph_splits: dict[int, int] = {}  # decodes -> KV splits of the CUDA graph that runs them
        self.needs_ctx_max = self.skew is not None  # the scheduler then tracks the longest context
        if model.is_moe:
            from tpsim.perf.moe_costs import KernelExperts, moe_layer

            self.moe = moe_layer(model, layout, tp, pp, routing, engine)
            self._experts = KernelExperts(self, self.moe)
            self.moe_table = self._experts.table

    # ----------------------------------------------------------------- op costs
    def _eager(self, t: float, eager: bool) -> float:
        return t if not eager or t >= self.launch_ns else self.launch_ns

    def _gemm(self, m: int, n: int, k: int, eager: bool) -> tuple[float, str, float, float]:
        """(time, source, FLOPs, bytes) of ``y[m, n] = x[m, k] W[n, k]^T`` on one GPU: the GEMM table read
        along m for each weight shape (:class:`~tpsim.kernels.grid.GridLine`, exactly the table's lookup)."""
        r = self.roofline
        if self.gemm_table is None:
            t, flops, nbytes, _ = r.gemm_cost(m, n, k, r.wb, not eager)
            return t, "analytical", flops, nbytes
        hit = self._gemm_ns.get((m, n, k))
        if hit is None:
            line = self._gemm_lines.get((n, k))
            if line is None:
                line = self._gemm_lines[(n, k)] = self.tables.line(self.gemm_table, (), (1, n, k), 0)
            if len(self._gemm_ns) >= _GEMM_MEMO:
                self._gemm_ns.clear()
            hit = self._gemm_ns[(m, n, k)] = line.estimate(m)
        t, src = hit
        return self._eager(t, eager), src, 2.0 * m * n * k, k * n * r.wb + m * (k + n) * r.ab

    def _mem(self, nbytes: float, eager: bool, kernels: int = 1) -> float:
        """An element-wise kernel: a step's activations that fit in L2 (half of it, leaving room for the
        weights streaming through) move at L2 bandwidth (``l2_bandwidth_ratio`` x DRAM's); replayed from a
        CUDA graph each kernel takes at least the fastest kernel the GPU's GEMM table measured that way
        (a 1-token GEMM: launch, one round trip to memory, the graph's gap)."""
        ratio = self.hardware.perf.l2_bandwidth_ratio
        if ratio > 1.0 and nbytes <= self.roofline.l2_bytes / 2:
            nbytes /= ratio
        t = self.roofline.memory_cost(nbytes, not eager, kernels)[0]
        floor = kernels * self.graph_floor_ns
        return floor if not eager and t < floor else t

    def price(self, op: Op) -> OpTime:
        """GEMMs from the GEMM table, attention and the fused experts from theirs, collectives from the
        collectives model; element-wise ops by the roofline's terms (labelled analytical)."""
        t, src, f, b = self._cost(op)
        return OpTime(op.name, op.component, t, op.count, f, b, KIND_BOUND[op.kind], src)

    def op_ns(self, op: Op) -> float:
        return self._cost(op)[0]

    def _cost(self, op: Op) -> tuple[float, str, float, float]:
        """(time, source, FLOPs, bytes) of one op."""
        kind = op.kind
        f = 0.0
        b = op.mem_bytes
        src = "analytical"
        if kind == GEMM:
            t, src, f, b = self._gemm(op.tokens, op.n, op.k, not op.graph)
        elif kind == ELEMENTWISE:
            t = self._mem(op.mem_bytes, not op.graph, op.kernels)
        elif kind == ATTENTION:
            t = self._attention(op.batch, FULL if op.graph else EAGER) if op.batch is not None else 0.0
            if t:
                src = self._attention_source(op.batch)
        elif kind == COLLECTIVE:
            t, src = self.roofline.collective_ns(op)
            b = op.elements * self.roofline.ab
            if op.block == LOGITS:  # after the forward, launched from the host
                t = self._eager(t, True)
        elif kind == EXPERTS:
            t, src, f, b = self._experts(op)
        else:  # P2P: the hidden states cross every stage boundary
            t = p2p_ns(op.mem_bytes, self.roofline.link_bw, self.roofline.link_latency) * (op.group - 1)
        return t, src, f, b

    # ----------------------------------------------------------------- attention
    def _context(self, tokens: int) -> tuple[float, str]:
        """The context table: one prefill of ``tokens`` with no cached context (time, source)."""
        line = self._ctx_line
        if line is False:
            line = self._ctx_line = self.tables.line(self.ctx_table, self.heads, (1, 1), 1)
        if line is not None:
            return line.estimate(tokens)
        est = self.tables.context_attention(1, tokens, *self.heads, "bfloat16", self.kv_dtype)
        return est.time_ns, est.source

    def _context_ns(self, tokens: int) -> float:
        t = self._ctx_ns.get(tokens)
        if t is None:
            t = self._ctx_ns[tokens] = self._context(tokens)[0]
        return t

    def _chunk_ns(self, q: int, c: int) -> tuple[float, str]:
        """Prefill attention of ``q`` new tokens after ``c`` cached ones (one sequence): (time, source)."""
        if self.ctx_table is None:
            return self._chunk_time_ns(q, c), "analytical"
        return self._chunk_time_ns(q, c), (self._context(q)[1] if c == 0 else MODELLED)

    def _chunk_time_ns(self, q: int, c: int) -> float:
        """:meth:`_chunk_ns`'s time alone: a step's hot path (the source is read only where it is shown)."""
        r = self.roofline
        if self.ctx_table is None:
            return r.attention_cost(BatchShape(((q, c),), 0, 0, 0, 0), False)[0]
        alone = self._context_ns(q)
        if c == 0:
            return alone
        diff = self._context_ns(c + q) - self._context_ns(c)
        kv_read = (c + q) * r.kv_bytes_per_token / r.attn_bw
        return max(diff, alone, kv_read)

    def _decode_ns(self, d: int, ctx_sum: int) -> float:
        """The table at the mean context, at least the KV floor (:meth:`_kv_floor_ns`).  Every decode step asks
        this: the cached curve and the floor's terms are read inline (same operations as the general path)."""
        curve = self._curves.get(d)
        t = curve.time_ns(ctx_sum / d) if curve is not None else None
        if t is None:
            t = self._decode_table_ns(d, ctx_sum)
        f0, kvt, per_byte = self._kv_terms or self._kv_floor_terms()
        floor = f0 + ctx_sum * kvt * per_byte
        return floor if floor > t else t

    def _decode_table_ns(self, d: int, ctx_sum: int) -> float:
        if self.gen_table is None:
            return self.roofline.attention_cost(BatchShape((), d, ctx_sum, 0, d), True)[0]
        curve = self._curve_of(d)
        mean = ctx_sum / d
        t = curve.time_ns(mean) if curve is not None else None
        if t is None:
            t = self.tables.generation_attention(d, mean, *self.heads, "bfloat16", self.kv_dtype).time_ns
        return t

    def _curve_of(self, d: int) -> DecodeCurve | None:
        curve = self._curves.get(d, False)
        if curve is False:
            curve = self._curves[d] = self._curve(d)
        return curve

    def _curve(self, d: int) -> DecodeCurve | None:
        """The decode curve of ``d`` decodes (None: the heads or ``d`` are not on the table's grid)."""
        nodes = self._curve_nodes
        if nodes is None:
            grid = self.tables.table(self.gen_table).groups.get(self.heads)
            nodes = self._curve_nodes = [] if grid is None else [grid.line((1, kv), 0) for kv in grid.axes[1]]
            self._curve_log_kv = [log(kv) for kv in grid.axes[1]] if grid is not None else []
        if not nodes or d > nodes[0].grid.axes[0][-1]:
            return None
        return DecodeCurve(nodes, self._curve_log_kv, d)

    def _kv_floor_ns(self, ctx_sum: int) -> float:
        """Decode attention reads its layer's KV cache from DRAM in serving (every other layer's KV and
        weights pass through L2 between two steps), but the generation table was timed replaying one
        cache, which stays in L2 where it fits: so a decode takes at least the table's fastest time plus
        its KV bytes at the fastest rate the same table streams caches larger than twice the L2
        (:mod:`tpsim.kernels.streaming`); 0 where the table has no such rows."""
        f0, kvt, per_byte = self._kv_terms or self._kv_floor_terms()
        return f0 + ctx_sum * kvt * per_byte

    def _kv_floor_terms(self) -> tuple[float, float, float]:
        """:meth:`_kv_floor_ns` is ``floor_ns + ctx_sum x kv_bytes_per_token x ns_per_byte`` (StreamingFloor.ns's
        operations): its terms, read from the table once; all 0 where there is no floor (then exactly 0.0)."""
        kvt = self.roofline.kv_bytes_per_token
        grid = self.tables.table(self.gen_table).groups.get(self.heads) if self.gen_table else None
        floor = decode_attention_floor(grid, kvt, self.roofline.l2_bytes) if grid is not None else None
        self._kv_terms = (floor.floor_ns, kvt, floor.ns_per_byte) if floor is not None else (0.0, 0.0, 0.0)
        return self._kv_terms

    def _decode_skew(self) -> DecodeSkew | None:
        """The uneven-context term (:mod:`tpsim.perf.decode_skew`): FlashAttention 2 only (FA3 and FlashInfer
        schedule decode differently), with the generation table's DRAM streaming rate and the GPU's SM count."""
        grid = self.tables.table(self.gen_table).groups.get(self.heads) if self.gen_table else None
        sms = self.hardware.perf.num_sms
        if self.backend != "fa2" or grid is None or sms <= 0:
            return None
        r = self.roofline
        return DecodeSkew.from_table(grid, r.kv_bytes_per_token, r.l2_bytes, r.attn_flops, self.shape.kv_heads,
                                     self.shape.head_dim, sms)

    def _pure_decode_ns(self, n: int, ctx_sum: int, ctx_max: int, ctx_sq: int, mode: str) -> float:
        """One layer's attention of a pure-decode step: the table at the mean context, plus what uneven
        contexts add on FlashAttention 2, at most the table's time with every context at the maximum."""
        t = self._decode_ns(n, ctx_sum)
        skew = self.skew
        if skew is not None and ctx_sq and ctx_max * n > ctx_sum:
            splits = self._graph_splits.get(n) or self._graph_split(n) if mode == FULL else skew.splits(n, ctx_max)
            extra = skew.extra_ns(n, ctx_sum, ctx_sq, ctx_max, splits)
            if extra > 0.0:  # the cap is at least its KV floor: below that, the table need not be read
                f0, kvt, per_byte = self._kv_terms or self._kv_floor_terms()
                top_floor = f0 + n * ctx_max * kvt * per_byte
                t = t + extra if t + extra < top_floor else self._capped_ns(t, extra, n, ctx_max)
        return t if mode == FULL or t >= self.launch_ns else self.launch_ns  # _eager

    def _graph_split(self, n: int) -> int:
        """The KV splits of the CUDA graph that runs ``n`` decodes: captured at its padded batch and
        ``max_model_len``, so fixed per batch size (kept)."""
        splits = self._graph_splits[n] = self.skew.splits(self.graphs.mode(n, True)[1], self.engine.max_model_len)
        return splits

    def _capped_ns(self, t: float, extra: float, n: int, ctx_max: int) -> float:
        """``t + extra`` at most the table's time with every context at the maximum, never below ``t``."""
        top = self._decode_ns(n, n * ctx_max)
        return t + extra if t + extra < top else (top if top > t else t)

    def _attention(self, batch: BatchShape, mode: str) -> float:
        """Attention of one layer: the decode table, the prefill table, and a mixed step modelled."""
        if not batch.prefill:
            return self._pure_decode_ns(batch.num_decode, batch.decode_ctx_sum, batch.decode_ctx_max,
                                        batch.decode_ctx_sq_sum, mode)
        floor = self._floor()
        chunks = [self._chunk_time_ns(q, c) for q, c in batch.prefill]
        t_prefill = sum(chunks) - (len(chunks) - 1) * floor
        if not batch.num_decode:
            return self._eager(t_prefill, True)
        t_dec = self._decode_ns(batch.num_decode, batch.decode_ctx_sum)
        if self.backend == "fa2":
            t_dec = self._fa2_mixed_decode_ns(t_dec, batch.num_decode, batch.decode_ctx_sum)
        if self.backend == "flashinfer":  # a decode call and a prefill call
            return self._eager(t_prefill, True) + self._eager(t_dec, True)
        return self._eager(t_prefill + t_dec - floor, True)  # FlashAttention: one varlen kernel

    def _fa2_mixed_decode_ns(self, t_table: float, d: int, ctx_sum: int) -> float:
        """FlashAttention 2 runs a mixed step as one varlen call in which each decode takes a whole
        query tile and GQA is not packed (vllm-project/vllm#58013): every query head of a KV group
        reads the KV again.  The first read is the decode table's; the re-reads of the group's other
        heads hit L2 as far as one KV head's cache over the batch fits (``l2_cache_mib``) and then
        cost ``1 / l2_bandwidth_ratio`` of a DRAM read; the tile's padded rows bound it by compute."""
        r = self.roofline
        p = self.hardware.perf
        group = r.gqa_group
        group_bytes = ctx_sum * r.kv_head_bytes_per_token
        hit = 1.0 if group_bytes <= r.l2_bytes else r.l2_bytes / group_bytes
        l2_cost = 1.0 / p.l2_bandwidth_ratio if p.l2_bandwidth_ratio > 0 else 0.0
        reads = 1.0 + (group - 1.0) * (hit * l2_cost + (1.0 - hit))
        padded = r.attn_flop_per_pair * ctx_sum * max(p.mixed_decode_tile_rows, 1) / r.attn_flops
        return max(t_table * reads, padded)

    def _attention_source(self, batch: BatchShape) -> str:
        if not batch.prefill:
            if self.gen_table is None:
                return "analytical"
            d, ctx = batch.num_decode, batch.decode_ctx_sum
            if self._kv_floor_ns(ctx) > self._decode_table_ns(d, ctx) or \
                    self._pure_decode_ns(d, ctx, batch.decode_ctx_max, batch.decode_ctx_sq_sum, FULL) > \
                    self._decode_ns(d, ctx):
                return MODELLED  # the KV cache streamed from DRAM, not the table's L2-resident replay
            return self.tables.generation_attention(d, ctx / d, *self.heads, "bfloat16", self.kv_dtype).source
        if batch.num_decode or len(batch.prefill) > 1:
            return MODELLED
        return self._chunk_ns(*batch.prefill[0])[1]

    def _floor(self) -> float:
        """The attention kernel's launch-and-latency floor: the fastest measured prefill (looked up once)."""
        floor = self._attn_floor
        if floor is None:
            grid = self.tables.table(self.ctx_table).groups.get(self.heads) if self.ctx_table is not None else None
            floor = self._attn_floor = grid.floor_ns if grid is not None else 0.0
        return floor

    def attention_ns(self, batch: BatchShape, graph: bool) -> float:
        return self._attention(batch, FULL if graph else EAGER)

    # ----------------------------------------------------------------- the step
    def graph_plan(self, batch: BatchShape | None) -> tuple[str, int, int]:
        """vLLM 0.19's CUDA-graph rule (:class:`~tpsim.perf.vllm_exec.GraphPolicy`)."""
        shape = batch if batch is not None else DUMMY
        mode, padded = self.graphs.mode(shape.num_tokens, not shape.prefill)
        return mode, padded, shape.num_tokens

    def step_plan(self, mode: str, tokens: int, attention_tokens: int, logits_rows: int) -> StepPlan:
        return StepPlan(mode, tokens, attention_tokens, logits_rows, tokens <= self.fused_max)

    def dense_plan(self, batch: BatchShape) -> StepPlan:
        """vLLM computes logits for every scheduled request, outside the CUDA graph."""
        mode, padded = self.graphs.mode(batch.num_tokens, not batch.prefill)
        return self.step_plan(mode, padded, batch.num_tokens, batch.num_seqs)

    def host_visible_ns(self, gpu_ns: float, num_seqs: int) -> float:
        return self.roofline.host_visible_ns(gpu_ns, num_seqs)

    def decode_iteration_ns(self, num_decode: int, ctx_sum: int, ctx_max: int, ctx_sq: int = 0) -> int:
        if self.moe is not None:
            return self.moe_decode_iteration_ns(num_decode, ctx_sum, ctx_max, ctx_sq)
        mode, n = self.graphs.mode(num_decode, True)
        gpu = self._fixed_ns(mode, n, num_decode, num_decode)
        gpu += self._pure_decode_ns(num_decode, ctx_sum, ctx_max, ctx_sq, mode) * self.num_layers
        return int(round(gpu + self.roofline.host_visible_ns(gpu, num_decode)))

    def dense_decode_steps(self, num_decode: int, ctx_sum: int, ctx_max: int, t: int, steps: int,
                           bound: float, ends: list, ctx_sq: int = 0) -> bool:
        mode, n = self.graphs.mode(num_decode, True)
        fixed = self._fixed_ns(mode, n, num_decode, num_decode)
        r = self.roofline  # host_visible_ns written out: its host time is fixed for the cohort
        host, hidden = r.iter_ns + r.seq_ns * num_decode, r.async_scheduling
        if mode == FULL and ctx_sq and self.skew is not None and self.gen_table and self._curve_of(num_decode):
            return self._skewed_graph_steps(num_decode, ctx_sum, ctx_max, ctx_sq, t, steps, bound, ends,
                                            fixed, host, hidden)
        layers = self.num_layers
        pure = self._pure_decode_ns
        append = ends.append
        for _ in range(steps):  # the arithmetic of decode_iteration_ns, constants hoisted
            if ctx_sq:  # (0: no spread statistics)
                ctx_sq += 2 * ctx_sum + num_decode
            ctx_max += 1
            ctx_sum += num_decode
            gpu = fixed + pure(num_decode, ctx_sum, ctx_max, ctx_sq, mode) * layers
            t += int(round(gpu + (host if not hidden else (host - gpu if host > gpu else 0.0))))
            append(t)
            if t >= bound:
                return True
        return True

    def _skewed_graph_steps(self, d: int, ctx_sum: int, ctx_max: int, ctx_sq: int, t: int, steps: int, bound: float,
                            ends: list, fixed: float, host: float, hidden: bool) -> bool:
        """:meth:`dense_decode_steps` for a CUDA graph's cohort with spread statistics (most of a loaded run's
        steps): :meth:`_pure_decode_ns`'s operations with the cohort's curve, KV floor and splits hoisted."""
        curve = self._curves[d]
        time_ns, table, extra_ns = curve.time_ns, self._decode_table_ns, self.skew.extra_ns
        splits = self._graph_splits.get(d) or self._graph_split(d)
        f0, kvt, per_byte = self._kv_terms or self._kv_floor_terms()
        layers = self.num_layers
        append = ends.append
        for _ in range(steps):
            ctx_sq += 2 * ctx_sum + d
            ctx_max += 1
            ctx_sum += d
            kv = ctx_sum / d
            kv_lo, kv_hi, log_kv_lo, log_kv_span, lo, span = curve.bracket
            if kv_lo < kv < kv_hi:  # DecodeCurve.time_ns's first case
                a = exp(lo + (log(kv) - log_kv_lo) / log_kv_span * span)
            else:
                a = time_ns(kv)
                if a is None:
                    a = table(d, ctx_sum)
            floor = f0 + ctx_sum * kvt * per_byte
            if floor > a:
                a = floor
            if ctx_max * d > ctx_sum:
                extra = extra_ns(d, ctx_sum, ctx_sq, ctx_max, splits)
                if extra > 0.0:
                    top_floor = f0 + d * ctx_max * kvt * per_byte
                    a = a + extra if a + extra < top_floor else self._capped_ns(a, extra, d, ctx_max)
            gpu = fixed + a * layers
            t += int(round(gpu + (host if not hidden else (host - gpu if host > gpu else 0.0))))
            append(t)
            if t >= bound:
                return True
        return True

    def describe(self) -> dict:
        prov = self.tables.provenance
        return {
            "name": self.name,
            "source": f"kernel tables {self.tables.folder} (NVIDIA AIConfigurator database, converted by "
                      f"tpsim import aic); element-wise ops and host overhead from {self.hardware.source}",
            "tables": {"gemm": self.gemm_table, "context_attention": self.ctx_table,
                       "generation_attention": self.gen_table},
            "engine_version": prov.get("engine_version") or prov.get("vllm_version"),
            "attention_backend": self.backend,
            "decode_skew": self.skew.describe() if self.skew is not None else None,
            "fused_allreduce_rmsnorm_max_tokens": self.fused_max,
            "cuda_graph_max_tokens": self.graphs.max_size,
            "comm": self.comm.describe(),
            "hardware_entry": self.hardware.name,
            "hardware_source": self.hardware.source,
            **({"moe": {**self.moe.describe(), "table": self.moe_table}} if self.moe is not None else {}),
        }
