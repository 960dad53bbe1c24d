"""GPU memory per rank: sharded weights, activation reserve, KV-cache capacity.

Sharding follows vLLM's tensor-parallel layers:

* attention heads are split over ``tp``; when ``num_kv_heads < tp`` each GPU
  keeps one replicated KV head (vLLM's ``QKVParallelLinear``), so the KV cache
  per GPU stops shrinking beyond ``tp = num_kv_heads``;
* the MLP's intermediate dimension, the vocabulary of the embedding and the
  LM head are split over ``tp``;
* pipeline stages take ``ceil(L / pp)`` layers; the first holds the embedding,
  the last the final norm and LM head (a tied LM head is a copy there).  The
  reported per-GPU figures are those of the fullest stage.

With ``dtype=fp8`` only the decoder layers' linear weights are 1 byte; the
embedding and LM head stay 16-bit, as in vLLM's fp8 checkpoints.
"""

from __future__ import annotations

from dataclasses import dataclass

from tpsim.config.engine import EngineConfig
from tpsim.config.model import ModelSpec
from tpsim.errors import InfeasibleError
from tpsim.units import GB, GiB


def check_parallelism(model: ModelSpec, tp: int, pp: int, where: str) -> None:
    """vLLM's divisibility rules for tensor and pipeline parallelism."""
    if model.num_heads % tp:
        divisors = [d for d in range(1, model.num_heads + 1) if model.num_heads % d == 0 and d <= 64]
        raise InfeasibleError(
            f"{where}: tp_size={tp} does not divide {model.name}'s {model.num_heads} attention heads; "
            f"choose tp_size in {divisors}"
        )
    if model.num_kv_heads % tp and tp % model.num_kv_heads:
        raise InfeasibleError(
            f"{where}: tp_size={tp} and {model.name}'s {model.num_kv_heads} KV heads: one must divide the other"
        )
    if model.intermediate_size % tp:
        raise InfeasibleError(
            f"{where}: tp_size={tp} does not divide {model.name}'s intermediate_size {model.intermediate_size}"
        )
    if pp > model.num_layers:
        raise InfeasibleError(
            f"{where}: pp_size={pp} exceeds {model.name}'s {model.num_layers} layers; choose pp_size <= {model.num_layers}"
        )


@dataclass(frozen=True)
class ShardShape:
    """Per-GPU shapes of one decoder layer under tensor parallelism ``tp``."""

    tp: int
    pp: int
    hidden: int
    q_dim: int  # query width on this GPU
    kv_dim: int  # key (= value) width on this GPU, after replication
    heads: int  # query heads on this GPU
    kv_heads: int  # KV heads on this GPU
    head_dim: int
    inter: int  # MLP intermediate width on this GPU
    vocab: int  # vocabulary rows on this GPU
    layers_per_stage: int
    num_layers: int
    qk_norm: bool

    @classmethod
    def of(cls, model: ModelSpec, tp: int, pp: int) -> "ShardShape":
        kv_heads = model.num_kv_heads // tp if model.num_kv_heads >= tp else 1
        heads = model.num_heads // tp
        return cls(
            tp=tp,
            pp=pp,
            hidden=model.hidden_size,
            q_dim=heads * model.head_dim,
            kv_dim=kv_heads * model.head_dim,
            heads=heads,
            kv_heads=kv_heads,
            head_dim=model.head_dim,
            inter=model.intermediate_size // tp,
            vocab=-(-model.vocab_size // tp),
            layers_per_stage=-(-model.num_layers // pp),
            num_layers=model.num_layers,
            qk_norm=model.qk_norm,
        )

    @property
    def layer_linear_params(self) -> int:
        h = self.hidden
        return h * (self.q_dim + 2 * self.kv_dim) + self.q_dim * h + 3 * h * self.inter

    @property
    def layer_norm_params(self) -> int:
        return 2 * self.hidden + (2 * self.head_dim if self.qk_norm else 0)


@dataclass(frozen=True)
class MemoryPlan:
    """Per-GPU memory of one instance (fullest pipeline stage), in bytes."""

    weights_bytes: int
    activation_bytes: int  # profiled activation peak (one max_num_batched_tokens forward or the sampler)
    reserve_bytes: int  # hardware reserve: CUDA graphs, NCCL, allocator slack
    budget_bytes: int  # mem_size x mem_util
    kv_bytes_per_token: int  # per GPU
    block_size: int
    num_blocks: int

    @property
    def kv_capacity_bytes(self) -> int:
        return self.num_blocks * self.block_size * self.kv_bytes_per_token

    @property
    def kv_capacity_tokens(self) -> int:
        return self.num_blocks * self.block_size

    def as_dict(self) -> dict:
        return {
            "weights_gb": round(self.weights_bytes / GB, 4),
            "weights_gib": round(self.weights_bytes / GiB, 4),
            "activation_peak_gb": round(self.activation_bytes / GB, 4),
            "reserve_gb": round(self.reserve_bytes / GB, 4),
            "budget_gb": round(self.budget_bytes / GB, 4),
            "kv_capacity_gb": round(self.kv_capacity_bytes / GB, 4),
            "kv_capacity_gib": round(self.kv_capacity_bytes / GiB, 4),
            "kv_bytes_per_token": self.kv_bytes_per_token,
            "kv_capacity_blocks": self.num_blocks,
            "kv_capacity_tokens": self.kv_capacity_tokens,
            "block_size": self.block_size,
        }


def weights_per_gpu_bytes(model: ModelSpec, tp: int, pp: int, dtype_bytes: int) -> int:
    shape = ShardShape.of(model, tp, pp)
    edge_bytes = max(dtype_bytes, 2)  # embedding / LM head stay 16-bit with fp8 weights
    norm_bytes = edge_bytes
    layers = shape.layers_per_stage * (
        shape.layer_linear_params * dtype_bytes + shape.layer_norm_params * norm_bytes
    )
    table = shape.vocab * shape.hidden * edge_bytes
    final_norm = shape.hidden * norm_bytes
    if pp == 1:
        return layers + table + (0 if model.tie_word_embeddings else table) + final_norm
    first = layers + table
    last = layers + table + final_norm  # the last stage holds the LM head (a copy if tied)
    return max(first, last)


def kv_bytes_per_token(model: ModelSpec, tp: int, pp: int, kv_dtype_bytes: int) -> int:
    shape = ShardShape.of(model, tp, pp)
    return 2 * shape.kv_dim * shape.layers_per_stage * kv_dtype_bytes


def activation_peak_bytes(model: ModelSpec, tp: int, engine: EngineConfig) -> int:
    """Peak of vLLM's profiling forward: one ``max_num_batched_tokens`` step or the sampler.

    The forward keeps the residual stream and a few hidden-size temporaries,
    the fused QKV output and the MLP's gate/up output alive at once; the
    sampler holds fp32 logits and probabilities for ``max_num_seqs`` rows.
    """
    shape = ShardShape.of(model, tp, 1)
    n = min(engine.max_num_batched_tokens, engine.max_model_len)
    b = engine.act_bytes
    forward = n * b * (4 * shape.hidden + shape.q_dim + 2 * shape.kv_dim + 3 * shape.inter)
    seqs = min(engine.max_num_seqs, n)
    sampler = seqs * shape.vocab * 4 * 2
    return max(forward, sampler)


def plan_memory(model: ModelSpec, tp: int, pp: int, engine: EngineConfig, mem_size_gib: float,
                reserve_gib: float, where: str) -> MemoryPlan:
    check_parallelism(model, tp, pp, where)
    weights = weights_per_gpu_bytes(model, tp, pp, engine.weight_bytes)
    act = activation_peak_bytes(model, tp, engine)
    reserve = int(reserve_gib * GiB)
    budget = int(mem_size_gib * GiB * engine.mem_util)
    per_token = kv_bytes_per_token(model, tp, pp, engine.kv_bytes)
    free = budget - weights - act - reserve
    per_block = per_token * engine.block_size
    blocks = free // per_block if free > 0 else 0
    if blocks < 1:
        needed = weights + act + reserve + per_block
        raise InfeasibleError(
            f"{where}: {model.name} does not fit: needs {needed / GB:.1f} GB per GPU "
            f"(weights {weights / GB:.1f} GB + activations {act / GB:.1f} GB + reserve {reserve / GB:.1f} GB "
            f"+ one KV block) but {budget / GB:.1f} GB are available "
            f"({mem_size_gib:g} GiB x mem_util {engine.mem_util:g}) at tp_size={tp}, pp_size={pp}; "
            "raise tp_size or pp_size, use a larger GPU, or raise npu-memory-utilization"
        )
    return MemoryPlan(
        weights_bytes=weights,
        activation_bytes=act,
        reserve_bytes=reserve,
        budget_bytes=budget,
        kv_bytes_per_token=per_token,
        block_size=engine.block_size,
        num_blocks=int(blocks),
    )


def blocks_for(tokens: int, block_size: int) -> int:
    return -(-tokens // block_size)

