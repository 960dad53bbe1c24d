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

Mixture-of-experts models (vLLM 0.19, ``docs/notes/vllm-0.19-moe-dp-ep.md`` §1.2-1.4): one instance
is one DP rank; attention, embedding, LM head, norms and shared experts are TP-sharded inside it and
replicated across DP ranks; the routed experts are spread over the whole group as the instance's
:class:`~tpsim.config.parallel.ParallelLayout` says (whole experts per EP rank, each expert's width
split over ``expert_tp`` GPUs); routers (and Qwen's shared-expert gate) are replicated and stay
16-bit (vLLM builds them without a quant config).  Pipeline stages take vLLM's layer partition
(``get_pp_indices``: the remainder layers go to the stages before the last), so a stage's MoE and
dense layers are counted exactly.  The KV cache is per DP rank, as for a dense instance.
"""

from __future__ import annotations

import msgspec

from tpsim.config.engine import EngineConfig
from tpsim.config.model import ModelSpec
from tpsim.config.parallel import ParallelLayout
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
    if model.num_dense_layers and model.intermediate_size % tp:
        raise InfeasibleError(
            f"{where}: tp_size={tp} does not divide {model.name}'s intermediate_size {model.intermediate_size}"
        )
    shared = model.moe.shared_expert_intermediate_size if model.moe else 0
    if shared % tp:
        raise InfeasibleError(
            f"{where}: tp_size={tp} does not divide {model.name}'s shared-expert width {shared}"
        )
    if pp > model.num_layers:
        raise InfeasibleError(
            f"{where}: pp_size={pp} exceeds {model.name}'s {model.num_layers} layers; "
            f"choose pp_size <= {model.num_layers}"
        )


class ShardShape(msgspec.Struct, frozen=True):
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
    def of(cls, model: ModelSpec, tp: int, pp: int) -> ShardShape:
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


class MemoryPlan(msgspec.Struct, frozen=True):
    """Per-GPU memory of one instance (fullest pipeline stage), in bytes."""

    weights_bytes: int
    activation_bytes: int  # profiled activation peak (one max_num_batched_tokens forward or the sampler)
    reserve_bytes: int  # hardware reserve: CUDA graphs, NCCL, allocator slack
    budget_bytes: int  # mem_size x mem_util
    kv_bytes_per_token: int  # per GPU
    block_size: int
    num_blocks: int
    experts: ExpertMemory | None = None  # MoE: the routed experts on the fullest GPU
    estimated_blocks: int | None = None  # with num_gpu_blocks_override: what tpsim's estimate would have been

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
            **({"experts": self.experts.as_dict()} if self.experts else {}),
            **({"kv_capacity_source": "num_gpu_blocks_override", "kv_capacity_blocks_estimated": self.estimated_blocks}
               if self.estimated_blocks is not None else {}),
        }


class ExpertMemory(msgspec.Struct, frozen=True):
    """The routed experts on one instance's fullest GPU (part of ``MemoryPlan.weights_bytes``)."""

    experts_per_gpu: int  # routed experts of one MoE layer on the GPU
    num_experts: int  # routed experts of one MoE layer in the model
    width_per_gpu: int  # each local expert's intermediate width on the GPU
    width: int  # an expert's full intermediate width
    moe_layers: int  # MoE layers on the fullest stage
    bytes: int  # routed-expert weights on the GPU (all its MoE layers)

    def as_dict(self) -> dict:
        return {"experts_per_gpu": self.experts_per_gpu, "num_experts": self.num_experts,
                "width_per_gpu": self.width_per_gpu, "width": self.width, "moe_layers": self.moe_layers,
                "weights_gb": round(self.bytes / GB, 4)}


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


def activation_peak_bytes(model: ModelSpec, tp: int, engine: EngineConfig, layout: ParallelLayout | None = None) -> int:
    """Peak of vLLM's profiling forward: one ``max_num_batched_tokens`` step or the sampler.

    The forward keeps the residual stream and a few hidden-size temporaries,
    the fused QKV output and the MLP's gate/up output alive at once; the
    sampler holds fp32 logits and probabilities for ``max_num_seqs`` rows.
    An MoE layer's MLP is the fused-MoE kernel's instead (:func:`_moe_activation_bytes`).
    """
    shape = ShardShape.of(model, tp, 1)
    n = min(engine.max_num_batched_tokens, engine.max_model_len)
    b = engine.act_bytes
    if model.moe is None:
        forward = n * b * (4 * shape.hidden + shape.q_dim + 2 * shape.kv_dim + 3 * shape.inter)
    else:
        dense_mlp = n * b * 3 * shape.inter if model.num_dense_layers else 0
        forward = (n * b * (4 * shape.hidden + shape.q_dim + 2 * shape.kv_dim)
                   + max(dense_mlp, _moe_activation_bytes(model, tp, n, b, layout or single_rank(model, tp, 1))))
    seqs = min(engine.max_num_seqs, n)
    sampler = seqs * shape.vocab * 4 * 2
    return max(forward, sampler)


def _moe_activation_bytes(model: ModelSpec, tp: int, n: int, b: int, layout: ParallelLayout) -> int:
    """The fused-MoE layer of the profiling forward on ``n`` tokens per DP rank.

    With DP the ranks' tokens are all-gathered first (hidden states and router logits), so the
    kernel runs on ``M = dp x n`` rows; its two workspaces are ``(M, top_k, max(I_local, H))`` and
    ``(M, top_k, max(2 I_local, H))`` plus the ``(M, H)`` output (vLLM 0.19 ``TritonExperts.workspace_shapes``,
    ``fused_moe.py``; note §2.3, §6.2).  A shared expert runs on the rank's own tokens.
    """
    moe = model.moe
    h = model.hidden_size
    m = n * layout.dp_size
    width = moe.expert_intermediate_size // layout.expert_tp
    kernel = m * moe.top_k * (max(width, h) + max(2 * width, h)) + m * h
    gathered = m * (h + moe.num_experts) if layout.dp_size > 1 else 0
    shared = n * 3 * (moe.shared_expert_intermediate_size // tp)
    return b * (kernel + gathered + shared + n * moe.num_experts)


def single_rank(model: ModelSpec, tp: int, pp: int) -> ParallelLayout:
    """The layout of an instance outside any DP group, experts sharded by width over its TP GPUs (EP off)."""
    return ParallelLayout(instance=0, tp_size=tp, pp_size=pp, dp_size=1, dp_rank=0, dp_group=None, group=(0,),
                          ep_size=1, num_experts=model.moe.num_experts if model.moe else 0)


def pp_stages(num_layers: int, pp: int) -> list[range]:
    """The layers of each pipeline stage: vLLM's ``get_pp_indices`` (``vllm/distributed/utils.py``,
    without ``VLLM_PP_LAYER_PARTITION``): equal shares, the remainder one each to the stages before the last."""
    parts = [num_layers // pp] * pp
    for i in range(2, num_layers % pp + 2):
        parts[-i] += 1
    starts = [sum(parts[:s]) for s in range(pp)]
    return [range(a, a + k) for a, k in zip(starts, parts)]


def moe_weights_per_gpu(model: ModelSpec, layout: ParallelLayout, dtype_bytes: int) -> tuple[int, ExpertMemory]:
    """Weight bytes on the fullest GPU of an MoE instance (fullest stage, fullest EP rank), and its experts."""
    tp, pp, moe = layout.tp_size, layout.pp_size, model.moe
    shape = ShardShape.of(model, tp, pp)
    edge = max(dtype_bytes, 2)  # embedding, LM head, norms, routers stay 16-bit with fp8 weights
    h = shape.hidden
    attn = h * (shape.q_dim + 2 * shape.kv_dim) + shape.q_dim * h
    base_layer = attn * dtype_bytes + shape.layer_norm_params * edge
    dense_mlp = 3 * h * shape.inter * dtype_bytes
    width = moe.expert_intermediate_size // layout.expert_tp
    experts = layout.max_local_experts * 3 * h * width * dtype_bytes
    moe_mlp = (experts + 3 * h * (moe.shared_expert_intermediate_size // tp) * dtype_bytes
               + (h * moe.num_experts + (h if moe.shared_expert_gate else 0)) * edge)
    table = shape.vocab * h * edge
    stages = []
    for s, layers in enumerate(pp_stages(model.num_layers, pp)):
        n_moe = sum(1 for i in layers if moe.is_moe_layer(i))
        weight = len(layers) * base_layer + n_moe * moe_mlp + (len(layers) - n_moe) * dense_mlp
        weight += table if s == 0 else 0
        if s == pp - 1:  # final norm and LM head (a copy of the embedding there if tied and pp > 1)
            weight += h * edge + (0 if pp == 1 and model.tie_word_embeddings else table)
        stages.append((weight, n_moe))
    weight, n_moe = max(stages)
    return weight, ExpertMemory(experts_per_gpu=layout.max_local_experts, num_experts=moe.num_experts,
                                width_per_gpu=width, width=moe.expert_intermediate_size, moe_layers=n_moe,
                                bytes=n_moe * experts)


def plan_memory(model: ModelSpec, tp: int, pp: int, engine: EngineConfig, mem_size_gib: float,
                reserve_gib: float, where: str, layout: ParallelLayout | None = None) -> MemoryPlan:
    """Per-GPU memory of one instance; ``layout`` places an MoE model's experts (default: no DP, EP off)."""
    check_parallelism(model, tp, pp, where)
    experts = None
    if model.moe is None:
        weights = weights_per_gpu_bytes(model, tp, pp, engine.weight_bytes)
    else:
        layout = layout or single_rank(model, tp, pp)
        weights, experts = moe_weights_per_gpu(model, layout, engine.weight_bytes)
    act = activation_peak_bytes(model, tp, engine, layout)
    reserve = int(reserve_gib * GiB)
    budget = int(mem_size_gib * GiB * engine.mem_util)
    per_token = kv_bytes_per_token(model, tp, pp, engine.kv_bytes)
    free = budget - weights - act - reserve
    per_block = per_token * engine.block_size
    blocks = free // per_block if free > 0 else 0
    plan = MemoryPlan(weights_bytes=weights, activation_bytes=act, reserve_bytes=reserve, budget_bytes=budget,
                      kv_bytes_per_token=per_token, block_size=engine.block_size, num_blocks=int(blocks),
                      experts=experts)
    if engine.num_gpu_blocks_override is not None:
        return _overridden(msgspec.structs.replace(plan, num_blocks=engine.num_gpu_blocks_override,
                                                   estimated_blocks=plan.num_blocks), mem_size_gib, where)
    if blocks < 1:
        needed = weights + act + reserve + per_block
        spread = f", {experts.experts_per_gpu} of {experts.num_experts} experts per GPU" if experts else ""
        raise InfeasibleError(
            f"{where}: {model.name} does not fit: needs {needed / GB:.1f} GB per GPU "
            f"(weights {weights / GB:.1f} GB + activations {act / GB:.1f} GB + reserve {reserve / GB:.1f} GB "
            f"+ one KV block) but {budget / GB:.1f} GB are available "
            f"({mem_size_gib:g} GiB x mem_util {engine.mem_util:g}) at tp_size={tp}, pp_size={pp}{spread}; "
            f"raise tp_size or pp_size{', or ep_size with a dp_group' if experts else ''}, use a larger GPU, "
            "or raise npu-memory-utilization",
            memory_needed={"needed_gb": needed / GB, "weights_gb": weights / GB, "activation_peak_gb": act / GB,
                           "reserve_gb": reserve / GB, "kv_block_gb": per_block / GB, "budget_gb": budget / GB,
                           "tp_size": tp, "pp_size": pp},
        )
    return plan


def _overridden(plan: MemoryPlan, mem_size_gib: float, where: str) -> MemoryPlan:
    """A plan whose KV capacity was given (vLLM's ``num_gpu_blocks_override``), if it fits the whole GPU beside the
    weights, activations and reserve: vLLM allocates the blocks asked for, ignoring its memory utilisation."""
    from tpsim.errors import InputError

    total = int(mem_size_gib * GiB)
    kv = plan.kv_capacity_bytes
    if plan.weights_bytes + plan.activation_bytes + plan.reserve_bytes + kv > total:
        room = max(0, total - plan.weights_bytes - plan.activation_bytes - plan.reserve_bytes)
        raise InputError(
            f"{where}: num_gpu_blocks_override {plan.num_blocks:,} is {kv / GB:.1f} GB of KV cache per GPU, but "
            f"{room / GB:.1f} GB of the GPU's {total / GB:.1f} GB are left after weights {plan.weights_bytes / GB:.1f} "
            f"GB, activations {plan.activation_bytes / GB:.1f} GB and reserve {plan.reserve_bytes / GB:.1f} GB; "
            f"at most {room // (plan.kv_bytes_per_token * plan.block_size):,} blocks fit; lower it")
    return plan


def blocks_for(tokens: int, block_size: int) -> int:
    return -(-tokens // block_size)

