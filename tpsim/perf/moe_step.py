"""One engine step of a mixture-of-experts model on one DP rank, for any latency model.

A latency model of an MoE model (``self.moe`` set: a :class:`~tpsim.perf.moe.MoELayer`) mixes this in
and provides, in its own units and sources:

* ``_nops_layer(n, n_real, mode)``: one decoder layer's ops with a dense MLP (the dense-MLP ops are
  kept for the model's dense layers and dropped for its MoE layers);
* ``_nops_head(n, num_seqs, mode)``: embedding, final norm, LM head, sampler (none for a dummy step);
* ``_attn_op(batch, mode)``: one layer's attention op, and ``_attn_time(batch, mode)`` its time alone
  (the hot path); ``batch`` None: an idle DP rank's dummy step;
* ``moe_cost``: the op costs :class:`~tpsim.perf.moe.MoELayer` needs (:class:`MoECost`);
* ``host_visible_ns(gpu_ns, num_seqs)`` and ``graph_plan(batch)`` (``(mode, padded, tokens)``).

Ops are ``(name, component, ns, source, flops, bytes, bound)``.  ``mode`` is the step's CUDA-graph
mode (:mod:`tpsim.perf.vllm_exec`) and ``tokens`` what each DP rank's dense ops run with (one entry
without DP): the MoE layer's collectives and fused experts depend on every rank's count.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tpsim.perf.base import BatchShape, Breakdown, OpTime
from tpsim.perf.moe import DENSE_MLP_OPS

#: a dummy step (an idle DP rank in a running group) is one 1-token decode (vLLM's execute_dummy_batch)
DUMMY = BatchShape((), 1, 1, 1, 0)


@dataclass(frozen=True)
class MoECost:
    """A latency model's prices for the ops of an MoE layer."""

    gemm: Callable  # (m, n, k, eager) -> (ns, source, flops, bytes) of y[m, n] = x[m, k] W^T
    mem: Callable  # (bytes, eager) -> ns of an element-wise kernel
    experts: Callable  # (tokens, ExpertLoad, eager) -> (ns, source, flops, bytes) of the fused experts
    routing_in_experts: bool = False  # the experts' measurement includes the router GEMM and top-k


class MoEStepMixin:
    moe = None
    moe_cost: MoECost

    def _split_layer(self, n: int, n_real: int, mode: str) -> tuple[list, list]:
        """One decoder layer's ops: (those of every layer, the dense MLP's)."""
        layer = self._nops_layer(n, n_real, mode)
        return [op for op in layer if op[0] not in DENSE_MLP_OPS], [op for op in layer if op[0] in DENSE_MLP_OPS]

    def _moe_ops(self, tokens: tuple[int, ...], rank: int, mode: str, fused_norm: bool) -> list:
        return self.moe.ops(tokens, rank, mode == "eager", self.moe_cost, fused_norm=fused_norm)

    def _moe_parts(self, n: int, n_real: int, num_seqs: int, mode: str, tokens: tuple[int, ...], rank: int):
        """(ops, their count per step) of everything but attention."""
        common, dense_mlp = self._split_layer(n, n_real, mode)
        fused = any(op[0] == "all_reduce_rmsnorm_mlp" for op in dense_mlp)
        n_moe = self.model.moe.num_moe_layers
        parts = [(common, self.num_layers), (self._moe_ops(tokens, rank, mode, fused), n_moe)]
        if self.num_layers > n_moe:
            parts.insert(1, (dense_mlp, self.num_layers - n_moe))
        parts.append((self._nops_head(n, num_seqs, mode), 1))
        return parts

    def _moe_fixed_ns(self, n: int, n_real: int, num_seqs: int, mode: str, tokens: tuple[int, ...], rank: int):
        """GPU time of everything but attention; its three parts cached apart (they vary with different
        things: the layer with the rank's real tokens, the MoE ops with every rank's, the head with the
        sequences)."""
        cache = self._moe_cache
        if len(cache) > 100_000:
            cache.clear()
        key = ("layer", n, n_real, mode)
        layer = cache.get(key)
        if layer is None:
            common, dense_mlp = self._split_layer(n, n_real, mode)
            fused = any(op[0] == "all_reduce_rmsnorm_mlp" for op in dense_mlp)
            n_moe = self.model.moe.num_moe_layers
            layer = cache[key] = (sum(op[2] for op in common) * self.num_layers
                                  + sum(op[2] for op in dense_mlp) * (self.num_layers - n_moe), fused)
        key = ("moe", tokens, rank, mode)
        moe = cache.get(key)
        if moe is None:
            moe = cache[key] = sum(op[2] for op in self._moe_ops(tokens, rank, mode, layer[1])) \
                * self.model.moe.num_moe_layers
        key = ("head", n, num_seqs, mode)
        head = cache.get(key)
        if head is None:
            head = cache[key] = sum(op[2] for op in self._nops_head(n, num_seqs, mode))
        return layer[0] + moe + head

    def rank_gpu_ns(self, batch: BatchShape | None, mode: str, tokens: tuple[int, ...], rank: int) -> float:
        """GPU time of DP rank ``rank``'s part of a step (``batch`` None: its dummy step)."""
        shape = batch if batch is not None else DUMMY
        n_real = shape.num_tokens
        fixed = self._moe_fixed_ns(tokens[rank], n_real, shape.num_seqs if batch is not None else 0, mode, tokens,
                                   rank)
        return fixed + self._attn_time(batch, mode) * self.num_layers

    def _local_step(self, batch: BatchShape) -> tuple[str, tuple[int, ...]]:
        mode, padded, unpadded = self.graph_plan(batch)
        return mode, (padded if mode != "eager" else unpadded,)

    def moe_iteration_ns(self, batch: BatchShape) -> int:
        """A step of an MoE instance outside any DP group."""
        mode, tokens = self._local_step(batch)
        gpu = self.rank_gpu_ns(batch, mode, tokens, 0)
        return int(round(gpu + self.host_visible_ns(gpu, batch.num_seqs)))

    def moe_decode_iteration_ns(self, num_decode: int, ctx_sum: int, ctx_max: int) -> int:
        return self.moe_iteration_ns(BatchShape((), num_decode, ctx_sum, ctx_max, num_decode))

    def moe_explain(self, batch: BatchShape | None, mode: str | None = None, tokens: tuple[int, ...] | None = None,
                    rank: int = 0) -> Breakdown:
        """The op-by-op breakdown of a rank's step (defaults: an instance outside any DP group)."""
        if mode is None:
            mode, tokens = self._local_step(batch)
        shape = batch if batch is not None else DUMMY
        seqs = shape.num_seqs if batch is not None else 0
        parts = self._moe_parts(tokens[rank], shape.num_tokens, seqs, mode, tokens, rank)
        ops = []
        attention = self._attn_op(batch, mode)
        common, layers = parts[0]
        idx = next((i for i, op in enumerate(common) if op[0] == "o_proj"), len(common))
        common = common[:idx] + [attention] + common[idx:]
        parts[0] = (common, layers)
        for op_list, count in parts:
            for name, comp, t, src, f, b, bound in op_list:
                ops.append(OpTime(name, comp, t, count, f, b, bound, src))
        gpu = sum(op.total_ns for op in ops)
        visible = self.host_visible_ns(gpu, seqs)
        ops.append(OpTime("framework", "overhead", visible, 1, 0.0, 0.0, "host" if visible > 0 else "hidden",
                          "analytical"))
        return Breakdown(ops=ops, num_layers=self.num_layers, pp=self.pp)

    def moe_load(self, tokens: tuple[int, ...], rank: int = 0):
        """The slowest EP rank's expert load in this step (:class:`~tpsim.perf.moe.ExpertLoad`)."""
        return self.moe.routing.load(self.moe.gathered(tokens, rank))
