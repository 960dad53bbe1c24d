"""One engine step as priced ops, for every latency model: the breakdown, the cached hot path, and an
MoE model's step on one DP rank.

A latency model deriving from :class:`StepModel` provides, in its own units and sources:

* ``step_ops`` (a :class:`~tpsim.perf.ops.StepOps`) and ``price(op) -> OpTime`` (every op kind of
  :mod:`tpsim.perf.ops`; EXPERTS only for an MoE model);
* ``step_plan(mode, tokens, attention_tokens, logits_rows)`` (its :class:`~tpsim.perf.ops.StepPlan`),
  ``dense_plan(batch)`` (a dense model's step) and ``graph_plan(batch)`` (``(mode, padded, tokens)``,
  for DP synchronisation);
* ``attention_ns(batch, graph)``: one layer's attention time alone (the hot path);
* ``host_visible_ns(gpu_ns, num_seqs)``;
* for an MoE model, ``moe`` (a :class:`~tpsim.perf.moe.MoELayer`) and ``routing_in_experts`` (a
  measurement of the experts that already holds the router GEMM and top-k).

An MoE step runs on DP rank ``rank`` with ``tokens``, what every rank's dense ops run with (one entry
without DP): the MoE layer's collectives and fused experts depend on every rank's count.  ``mode`` is
the step's CUDA-graph mode (:mod:`tpsim.perf.vllm_exec`); ``batch`` None is an idle rank's dummy step.
"""

from __future__ import annotations

from tpsim.perf.base import BatchShape, Breakdown, LatencyModel, OpTime
from tpsim.perf.ops import KV_WITH_ATTENTION, MLP, StepPlan
from tpsim.perf.vllm_exec import EAGER, FULL

#: a dummy step (an idle DP rank in a running group) is one 1-token decode (vLLM's execute_dummy_batch)
DUMMY = BatchShape((), 1, 1, 1, 0)
#: cached step parts kept before a cache is cleared (bounded memory on any workload)
_CACHE_LIMIT = 100_000


class StepModel(LatencyModel):
    """Explain and time steps from the ops :mod:`tpsim.perf.ops` builds and the prices a subclass gives."""

    moe = None
    routing_in_experts = False
    #: the framework op's bound reads "hidden" when the GPU hides the host time (else always "host")
    label_hidden_host = True

    def _init_step_caches(self) -> None:
        self._fixed: dict[tuple, float] = {}  # a dense step's GPU time but attention's, by plan
        self._token_parts: dict[tuple, tuple] = {}  # op times by (mode, tokens)
        self._kv_parts: dict[tuple, tuple] = {}  # by (mode, attention tokens)
        self._logits_parts: dict[tuple, tuple] = {}  # by (mode, logits rows)
        self._moe_cache: dict[tuple, object] = {}
        self._moe_fixed: dict[tuple, float] = {}  # an MoE rank's GPU time but attention's, by its step

    # ----------------------------------------------------------------- breakdown
    def _breakdown(self, ops: list[OpTime], num_seqs: int, label_hidden: bool) -> Breakdown:
        gpu = sum(op.total_ns for op in ops)
        visible = self.host_visible_ns(gpu, num_seqs)
        bound = "hidden" if label_hidden and not visible > 0 else "host"
        ops.append(OpTime("framework", "overhead", visible, 1, 0.0, 0.0, bound, "analytical"))
        return Breakdown(ops=ops, num_layers=self.num_layers, pp=self.pp)

    def explain(self, batch: BatchShape) -> Breakdown:
        if self.moe is not None:
            return self.moe_explain(batch)
        plan = self.dense_plan(batch)
        so = self.step_ops
        ops = so.layer(plan, so.attention(plan, batch)) + so.head(plan)
        return self._breakdown([self.price(op) for op in ops], batch.num_seqs, self.label_hidden_host)

    # ----------------------------------------------------------------- hot path
    def op_ns(self, op) -> float:
        """An op's time alone (``price(op).time_ns``; a model may give it without the rest)."""
        return self.price(op).time_ns

    def _times(self, ops: list) -> tuple[float, ...]:
        return tuple(map(self.op_ns, ops))

    def token_ops(self, mode: str, tokens: int) -> tuple[list, list, list, list]:
        """The ops that depend on the step's mode and token count (token-wise, :class:`~tpsim.perf.ops.StepOps`):
        the layer's before and after attention (an MoE model's dense MLP ops only where it has dense layers),
        and the head's before and after the logits."""
        plan = self.step_plan(mode, tokens, tokens, 0)
        dense_mlp = None if self.moe is None else self.num_layers - self.model.moe.num_moe_layers
        before, _, after = self.step_ops.layer_parts(plan, dense_mlp)
        first, _, last = self.step_ops.head_parts(plan)
        return before, after, first, last

    def token_times(self, mode: str, tokens: int) -> tuple:
        """The times of :meth:`token_ops` (before, after, whether each of the latter is a dense MLP op, first,
        last); a model may price them without building them for every token count."""
        before, after, first, last = self.token_ops(mode, tokens)
        return (self._times(before), self._times(after), tuple(op.block == MLP for op in after), self._times(first),
                self._times(last))

    def _token_times(self, mode: str, tokens: int) -> tuple:
        return _memo(self._token_parts, (mode, tokens), self.token_times, mode, tokens)

    def _kv_times(self, mode: str, attention_tokens: int) -> tuple[float, ...]:
        if self.step_ops.execution.kv_write != KV_WITH_ATTENTION:
            return ()  # no KV-cache write of its own beside attention (StepOps.kv_write)
        return _memo(self._kv_parts, (mode, attention_tokens), self._kv_write_times, mode, attention_tokens)

    def _kv_write_times(self, mode: str, attention_tokens: int) -> tuple[float, ...]:
        plan = self.step_plan(mode, attention_tokens, attention_tokens, 0)
        return self._times(self.step_ops.kv_write(plan))

    def logits_times(self, mode: str, logits_rows: int) -> tuple[float, ...]:
        """The times of the logits' ops over ``logits_rows`` sequences (:meth:`~tpsim.perf.ops.StepOps.logits`)."""
        return self._times(self.step_ops.logits(self.step_plan(mode, logits_rows, logits_rows, logits_rows)))

    def _logits_times(self, mode: str, logits_rows: int) -> tuple[float, ...]:
        return _memo(self._logits_parts, (mode, logits_rows), self.logits_times, mode, logits_rows)

    def _fixed_ns(self, mode: str, tokens: int, attention_tokens: int, logits_rows: int) -> float:
        """A dense step's GPU time except attention's, cached by its plan (decode steps repeat plans), summed
        from the op times cached by what each depends on (so a new plan prices no op again)."""
        key = (mode, tokens, attention_tokens, logits_rows)
        cached = self._fixed.get(key)
        if cached is None:
            _limit(self._fixed)
            before, after, _, first, last = self._token_times(mode, tokens)
            per_layer = sum(before + self._kv_times(mode, attention_tokens) + after)
            head = sum(first + self._logits_times(mode, logits_rows) + last)
            cached = self._fixed[key] = per_layer * self.num_layers + head
        return cached

    def iteration_ns(self, batch: BatchShape) -> int:
        if self.moe is not None:
            return self.moe_iteration_ns(batch)
        p = self.dense_plan(batch)
        gpu = self._fixed_ns(p.mode, p.tokens, p.attention_tokens, p.logits_rows)
        gpu += self.attention_ns(batch, p.mode == FULL) * self.num_layers
        return int(round(gpu + self.host_visible_ns(gpu, batch.num_seqs)))

    def stage_interval_ns(self, batch: BatchShape) -> int:
        """With pipeline parallelism: one stage's share of the layers, half the head, all the host time."""
        if self.pp == 1:
            return self.iteration_ns(batch)
        comp = self.explain(batch).by_component()
        per_stage = (comp.get("layer", 0.0) + comp.get("comm", 0.0)) * self.shape.layers_per_stage / self.num_layers
        return int(round(per_stage + comp.get("head", 0.0) / 2 + comp.get("overhead", 0.0)))

    # ----------------------------------------------------------------- MoE
    def _moe_plan(self, batch: BatchShape | None, mode: str, tokens: tuple[int, ...], rank: int) -> StepPlan:
        shape = batch if batch is not None else DUMMY
        return self.step_plan(mode, tokens[rank], shape.num_tokens, shape.num_seqs if batch is not None else 0)

    def _moe_layer_ops(self, plan: StepPlan, tokens: tuple[int, ...], rank: int) -> list:
        return self.moe.ops(tokens, rank, plan.mode != EAGER, self.model.moe.num_moe_layers,
                            fused_norm=plan.fused_norm, routing_in_experts=self.routing_in_experts)

    def _moe_attention_ns(self, batch: BatchShape | None, mode: str) -> float:
        if batch is None:  # a dummy step builds attention metadata only for a FULL graph
            return self.attention_ns(DUMMY, True) if mode == FULL else 0.0
        return self.attention_ns(batch, mode == FULL)

    def _moe_fixed_ns(self, plan: StepPlan, tokens: tuple[int, ...], rank: int) -> float:
        """GPU time of everything but attention; its three parts cached apart (they vary with different
        things: the layer with the rank's real tokens, the MoE ops with every rank's, the head with the
        sequences)."""
        cache = self._moe_cache
        _limit(cache)
        layers, n_moe = self.num_layers, self.model.moe.num_moe_layers
        key = ("layer", plan.tokens, plan.attention_tokens, plan.mode)
        layer = cache.get(key)
        if layer is None:
            before, after, is_mlp, _, _ = self._token_times(plan.mode, plan.tokens)
            common = before + self._kv_times(plan.mode, plan.attention_tokens) + tuple(
                t for t, mlp in zip(after, is_mlp) if not mlp)
            mlp = tuple(t for t, mlp in zip(after, is_mlp) if mlp)
            layer = cache[key] = sum(common) * layers + sum(mlp) * (layers - n_moe)
        key = ("moe", tokens, rank, plan.mode)
        moe = cache.get(key)
        if moe is None:
            moe = cache[key] = sum(map(self.op_ns, self._moe_layer_ops(plan, tokens, rank))) * n_moe
        key = ("head", plan.tokens, plan.logits_rows, plan.mode)
        head = cache.get(key)
        if head is None:
            _, _, _, first, last = self._token_times(plan.mode, plan.tokens)
            head = cache[key] = sum(first + self._logits_times(plan.mode, plan.logits_rows) + last)
        return layer + moe + head

    def rank_gpu_ns(self, batch: BatchShape | None, mode: str, tokens: tuple[int, ...], rank: int) -> float:
        """GPU time of DP rank ``rank``'s part of a step (``batch`` None: its dummy step)."""
        shape = batch if batch is not None else DUMMY
        key = (mode, tokens, rank, shape.num_tokens, shape.num_seqs if batch is not None else 0)
        fixed = self._moe_fixed.get(key)
        if fixed is None:
            _limit(self._moe_fixed)
            fixed = self._moe_fixed[key] = self._moe_fixed_ns(self._moe_plan(batch, mode, tokens, rank), tokens, rank)
        return fixed + self._moe_attention_ns(batch, mode) * self.num_layers

    def _local_step(self, batch: BatchShape) -> tuple[str, tuple[int, ...]]:
        mode, padded, unpadded = self.graph_plan(batch)
        return mode, (padded if mode != EAGER else unpadded,)

    def moe_iteration_ns(self, batch: BatchShape) -> int:
        """A step of an MoE instance outside any DP group."""
        mode, tokens = self._local_step(batch)
        gpu = self.rank_gpu_ns(batch, mode, tokens, 0)
        return int(round(gpu + self.host_visible_ns(gpu, batch.num_seqs)))

    def moe_explain(self, batch: BatchShape | None, mode: str | None = None, tokens: tuple[int, ...] | None = None,
                    rank: int = 0) -> Breakdown:
        """The op-by-op breakdown of a rank's step (defaults: an instance outside any DP group)."""
        if mode is None:
            mode, tokens = self._local_step(batch)
        plan = self._moe_plan(batch, mode, tokens, rank)
        so = self.step_ops
        attention = so.attention(plan, batch if batch is not None else DUMMY if mode == FULL else None)
        layer = so.layer(plan, attention, mlp_count=self.num_layers - self.model.moe.num_moe_layers)
        ops = ([op for op in layer if op.block != MLP] + [op for op in layer if op.block == MLP]
               + self._moe_layer_ops(plan, tokens, rank) + so.head(plan))
        return self._breakdown([self.price(op) for op in ops], plan.logits_rows, True)

    def moe_load(self, tokens: tuple[int, ...], rank: int = 0):
        """The slowest EP rank's expert load in this step (:class:`~tpsim.perf.moe.ExpertLoad`)."""
        return self.moe.routing.load(self.moe.gathered(tokens, rank))

    def moe_decode_iteration_ns(self, num_decode: int, ctx_sum: int, ctx_max: int, ctx_sq: int = 0) -> int:
        return self.moe_iteration_ns(BatchShape((), num_decode, ctx_sum, ctx_max, num_decode, ctx_sq))


def _memo(cache: dict, key, make, *args):
    """``cache[key]``, made by ``make(*args)`` on a miss (op times cached by what they depend on)."""
    hit = cache.get(key)
    if hit is None:
        _limit(cache)
        hit = cache[key] = make(*args)
    return hit


def _limit(cache: dict) -> None:
    """Bounded memory on any workload: a cache past its size starts again."""
    if len(cache) >= _CACHE_LIMIT:
        cache.clear()
