"""The operations of one engine step on one GPU, as data: what every latency model prices.

A latency model turns a batch into a :class:`StepPlan` (the step's CUDA-graph mode and the token
counts its ops run with), asks the builders for the step's :class:`Op` list — :class:`StepOps` for
the decoder layers, attention and the head, :meth:`tpsim.perf.moe.MoELayer.ops` for an MoE layer's
MLP — and prices each op its own way: the roofline (:mod:`tpsim.perf.analytical`), measured kernel
tables (:mod:`tpsim.perf.kernels`) or a measured bundle (:mod:`tpsim.perf.profile`).  So the three
models agree on what a step contains, and differ only in what each op costs.

One decoder layer, in vLLM's order (``docs/notes/vllm-0.19-tp-execution.md``)::

    input_layernorm -> qkv_proj -> [qk_norm] -> rotary_emb -> kv_cache_write -> attention -> o_proj
    -> post_attention_layernorm -> gate_up_proj -> act_fn -> down_proj, and under TP an all-reduce
    after the attention block and one after the MLP

and once per step: ``embedding`` (+ its all-reduce under TP), ``final_layernorm``, ``lm_head`` over
the sequences whose logits are computed, the logits' all-gather under TP, the ``sampler``, and the
hidden states' send between pipeline stages.  Where the models read vLLM's execution differently
(which ops a CUDA graph holds, whether the KV-cache write is its own op) an :class:`Execution` says so.
"""

from __future__ import annotations

from typing import NamedTuple

import msgspec

from tpsim.perf.base import BatchShape
from tpsim.perf.vllm_exec import EAGER, FULL

# what an op is (its kind decides how a model prices it)
GEMM = "gemm"  # y[tokens, n] = x[tokens, k] W[n, k]^T
ATTENTION = "attention"  # one attention call over the batch
ELEMENTWISE = "elementwise"  # memory-bound kernels: norms, rotary, activation, KV-cache write, embedding, sampler
COLLECTIVE = "collective"  # all_reduce / all_gather / reduce_scatter over ``group`` GPUs
P2P = "p2p"  # hidden states sent from one pipeline stage to the next
EXPERTS = "experts"  # an MoE layer's fused experts on the slowest EP rank

# where its time is reported (tpsim.perf.base.OpTime.component)
LAYER, COMM, HEAD = "layer", "comm", "head"

# which part of the model it belongs to
ATTENTION_BLOCK = "attention"  # norms, QKV, attention, O projection and their all-reduce
MLP = "mlp"  # a dense layer's MLP (replaced by the MoE ops in an MoE layer)
MOE = "moe"  # an MoE layer's router, dispatch, experts, combine and shared expert
EMBED = "embed"  # embedding, final norm, pipeline send
LOGITS = "logits"  # LM head, logits gather, sampler

# how each kind's time is bounded, where a model does not work it out (kernel tables, MoE ops)
KIND_BOUND = {GEMM: "kernel", ATTENTION: "kernel", EXPERTS: "kernel", ELEMENTWISE: "memory", COLLECTIVE: "link",
              P2P: "link"}

# the KV-cache write (Execution.kv_write)
KV_DENSE = "dense"  # a dense op of the layer: in the CUDA graph with them, at the dense ops' token count
KV_WITH_ATTENTION = "with_attention"  # its own kernel, run with attention: unpadded, eager outside a FULL graph
KV_IN_ATTENTION = "in_attention"  # timed inside attention (a measured bundle): no op of its own


class Op(NamedTuple):
    """One operation of a step on one GPU: what it is, its shape, where it runs and how often (a named
    tuple, immutable like a frozen dataclass and made five times faster: a cold run builds tens of thousands)."""

    name: str
    kind: str  # GEMM, ATTENTION, ELEMENTWISE, COLLECTIVE, P2P, EXPERTS
    component: str  # LAYER, COMM (per decoder layer) or HEAD (once per step)
    block: str  # ATTENTION_BLOCK, MLP, MOE, EMBED, LOGITS
    count: int  # occurrences per step (layers for a decoder-layer op)
    graph: bool  # replayed from a CUDA graph (False: launched from the host)
    tokens: int = 0  # rows it runs over: tokens (sequences for LM head and sampler; gathered tokens for EXPERTS)
    n: int = 0  # GEMM: output features
    k: int = 0  # GEMM: input features
    weight_bytes: float = 0.0  # GEMM: bytes per weight element
    mem_bytes: float = 0.0  # ELEMENTWISE / P2P: bytes read and written, sent
    kernels: int = 1  # ELEMENTWISE: kernels launched
    collective: str = ""  # COLLECTIVE: all_reduce, all_gather or reduce_scatter
    elements: int = 0  # COLLECTIVE: message elements as nccl-tests counts them
    group: int = 0  # COLLECTIVE: GPUs taking part; P2P: pipeline stages
    batch: BatchShape | None = None  # ATTENTION: the batch (None: no attention kernel, an idle rank's dummy step)
    load: object = None  # EXPERTS: the slowest EP rank's tpsim.perf.moe.ExpertLoad

    def scaled(self, tokens: int) -> Op:
        """This op as built for one token, run over ``tokens`` (a token-wise op of :meth:`StepOps.layer_parts`
        or :meth:`StepOps.head_parts`, whose sizes are proportional to the tokens): the op built for ``tokens``."""
        return self._replace(tokens=tokens, mem_bytes=self.mem_bytes * tokens, elements=self.elements * tokens)


class StepPlan(NamedTuple):
    """How one step runs on one GPU, as far as its ops depend on it (a named tuple: made on the hot path)."""

    mode: str  # FULL, PIECEWISE or EAGER (tpsim.perf.vllm_exec)
    tokens: int  # tokens the dense ops run with (padded to the CUDA-graph capture size)
    attention_tokens: int  # tokens scheduled: attention's (and the KV-cache write's run with it)
    logits_rows: int  # sequences whose logits are computed (0: none, e.g. a dummy step)
    fused_norm: bool = False  # each all-reduce fused with the RMSNorm after it (the separate norms dropped)

    @property
    def graph(self) -> bool:
        """The dense ops replay a CUDA graph."""
        return self.mode != EAGER


class Execution(msgspec.Struct, frozen=True):
    """How a latency model reads vLLM's execution of a step (constant per model)."""

    kv_write: str  # KV_DENSE, KV_WITH_ATTENTION or KV_IN_ATTENTION
    logits_eager: bool  # LM head, logits gather and sampler run after the graph, launched from the host
    vocab_logits: int  # logits per sequence over the whole vocabulary (the all-gather's and the sampler's)


class StepOps:
    """Builds the ops of one step of a decoder stack on one GPU, for one latency model's execution."""

    def __init__(self, model, shape, engine, execution: Execution, pp: int):
        self.shape = shape
        self.num_layers = model.num_layers
        self.tp, self.pp = shape.tp, pp
        self.ab, self.kvb, self.wb = engine.act_bytes, engine.kv_bytes, engine.weight_bytes
        self.edge_wb = max(engine.weight_bytes, 2)  # embedding and LM head stay 16-bit under fp8
        self.execution = execution

    def attention(self, plan: StepPlan, batch: BatchShape | None) -> Op:
        """One layer's attention call (``batch`` None: an idle DP rank with no attention kernel)."""
        return Op("attention", ATTENTION, LAYER, ATTENTION_BLOCK, self.num_layers, plan.mode == FULL,
                  tokens=plan.attention_tokens, batch=batch)

    def layer(self, plan: StepPlan, attention: Op | None = None, mlp_count: int | None = None) -> list[Op]:
        """One decoder layer's ops (``attention`` placed where it runs); the MLP ops count ``mlp_count``
        layers (default every layer; 0 leaves them out: an MoE model's MoE layers)."""
        before, kv, after = self.layer_parts(plan, mlp_count)
        return before + kv + ([attention] if attention is not None else []) + after

    def layer_parts(self, plan: StepPlan, mlp_count: int | None = None) -> tuple[list[Op], list[Op], list[Op]]:
        """One decoder layer's ops around attention, by what they depend on: (those before it and those after
        it, which depend on the plan's mode and tokens; between them the KV-cache write where it runs with
        attention on the scheduled tokens, which depends on the mode and ``attention_tokens`` only).  Those
        before and after are token-wise: they run over ``plan.tokens`` rows and their sizes are proportional to
        them, so the ops built for one token are the step's by :meth:`Op.scaled`."""
        s, ab, layers = self.shape, self.ab, self.num_layers
        h, n, graph, fused = s.hidden, plan.tokens, plan.graph, plan.fused_norm
        mlp = layers if mlp_count is None else mlp_count
        ops: list[Op] = []

        def gemm(name: str, out: int, inp: int, block: str = ATTENTION_BLOCK) -> None:
            ops.append(Op(name, GEMM, LAYER, block, mlp if block == MLP else layers, graph, n, out, inp, self.wb))

        def mem(name: str, bytes_per_token: float, block: str = ATTENTION_BLOCK) -> None:
            ops.append(Op(name, ELEMENTWISE, LAYER, block, mlp if block == MLP else layers, graph, n, 0, 0, 0.0,
                          n * bytes_per_token))

        if not fused:
            mem("input_layernorm", 4.0 * h * ab)
        gemm("qkv_proj", s.q_dim + 2 * s.kv_dim, h)
        if s.qk_norm:
            mem("qk_norm", 2.0 * (s.q_dim + s.kv_dim) * ab)
        mem("rotary_emb", 2.0 * (s.q_dim + s.kv_dim) * ab)
        if self.execution.kv_write == KV_DENSE:
            mem("kv_cache_write", 2.0 * s.kv_dim * (ab + self.kvb))
        before, ops = ops, []
        gemm("o_proj", h, s.q_dim)
        if not fused:
            mem("post_attention_layernorm", 4.0 * h * ab)
        if mlp:
            gemm("gate_up_proj", 2 * s.inter, h, MLP)
            mem("act_fn", 3.0 * s.inter * ab, MLP)
            gemm("down_proj", h, s.inter, MLP)
        if self.tp > 1:
            name = "all_reduce_rmsnorm" if fused else "all_reduce"
            ops.append(self._all_reduce(f"{name}_attn", COMM, ATTENTION_BLOCK, layers, n, graph))
            if mlp:
                ops.append(self._all_reduce(f"{name}_mlp", COMM, MLP, mlp, n, graph))
        return before, self.kv_write(plan), ops

    def kv_write(self, plan: StepPlan) -> list[Op]:
        """The KV-cache write where it runs with attention, on the scheduled tokens (else none: a dense op, or
        timed inside attention)."""
        if self.execution.kv_write != KV_WITH_ATTENTION:
            return []
        m, s = plan.attention_tokens, self.shape
        return [Op("kv_cache_write", ELEMENTWISE, LAYER, ATTENTION_BLOCK, self.num_layers, plan.mode == FULL, m,
                   mem_bytes=m * 2.0 * s.kv_dim * (self.ab + self.kvb))]

    def _all_reduce(self, name: str, component: str, block: str, count: int, n: int, graph: bool) -> Op:
        return Op(name, COLLECTIVE, component, block, count, graph, n, collective="all_reduce",
                  elements=n * self.shape.hidden, group=self.tp)

    def head(self, plan: StepPlan) -> list[Op]:
        """The once-per-step ops: embedding, final norm, logits of ``plan.logits_rows`` sequences, the
        pipeline send."""
        first, logits, last = self.head_parts(plan)
        return first + logits + last

    def head_parts(self, plan: StepPlan) -> tuple[list[Op], list[Op], list[Op]]:
        """The head's ops by what they depend on: (embedding and final norm, the logits' ops, the pipeline
        send); the logits' depend on the plan's mode and ``logits_rows`` only, the others on its mode and tokens
        (token-wise, as :meth:`layer_parts`'s)."""
        s, ab = self.shape, self.ab
        h, n, graph = s.hidden, plan.tokens, plan.graph
        first = [Op("embedding", ELEMENTWISE, HEAD, EMBED, 1, graph, n, mem_bytes=n * (2.0 * h * ab))]
        if self.tp > 1:
            first.append(self._all_reduce("embedding_all_reduce", HEAD, EMBED, 1, n, graph))
        if not plan.fused_norm:
            first.append(Op("final_layernorm", ELEMENTWISE, HEAD, EMBED, 1, graph, n, mem_bytes=n * (2.0 * h * ab)))
        last = []
        if self.pp > 1:
            last.append(Op("pp_send_recv", P2P, HEAD, EMBED, 1, graph, n, mem_bytes=n * (h * ab), group=self.pp))
        return first, self.logits(plan), last

    def logits(self, plan: StepPlan) -> list[Op]:
        """LM head, logits gather and sampler over ``plan.logits_rows`` sequences (none without); row-wise: their
        sizes are proportional to the rows (:meth:`Op.scaled` of the ops built for one)."""
        rows = plan.logits_rows
        if not rows:
            return []
        s, ex = self.shape, self.execution
        on_graph = plan.graph and not ex.logits_eager
        ops = [Op("lm_head", GEMM, HEAD, LOGITS, 1, on_graph, rows, s.vocab, s.hidden, self.edge_wb)]
        if self.tp > 1:  # vLLM all-gathers the 16-bit logits over TP (docs/notes/vllm-0.19-tp-execution.md)
            ops.append(Op("logits_gather", COLLECTIVE, HEAD, LOGITS, 1, on_graph, rows, collective="all_gather",
                          elements=rows * ex.vocab_logits, group=self.tp))
        fp32 = ex.vocab_logits * 4.0  # a sequence's fp32 logits over the full vocabulary, passed three times
        ops.append(Op("sampler", ELEMENTWISE, HEAD, LOGITS, 1, on_graph, rows, mem_bytes=rows * (3.0 * fp32),
                      kernels=4))
        return ops
