"""Which AIC tables tpsim imports, which of their rows, and how columns become keys and axes.

Semantics of the source columns (AIC's collectors at commit 095f58a5):
``collector/vllm/collect_gemm.py`` times vLLM's linear layer for ``m`` tokens, ``n`` outputs,
``k`` inputs; ``collect_attn.py`` times one attention forward (KV-cache write included) with
``isl`` new tokens per sequence and, for decode, ``step`` tokens already cached, so vLLM's
``seq_len`` is ``step + 1``; ``collector/network/collect_nccl.py`` runs nccl-tests and records
``message_size`` = nccl-tests' size / bytes per element; ``collect_moe.py`` times vLLM's
FusedMoE for ``num_tokens`` tokens with the full ``inter_size`` sharded ``moe_tp_size`` ways.
All latencies are milliseconds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Column:
    """An output key or axis: its tpsim name, the source column, and a conversion."""

    name: str
    source: str
    convert: Callable = field(default=lambda v: v)


@dataclass(frozen=True)
class SourceSpec:
    kind: str                              # tpsim table kind (tpsim.kernels.kinds)
    op_folder: str                         # gemm | attention | comm | moe
    engine_folder: str | None              # None: the engine asked for (vllm); "nccl"
    parquet: str
    dtype_columns: tuple[str, ...]
    #: source dtype values -> (dtype, kv_dtype or None); other dtypes are not imported
    dtypes: dict
    keys: tuple[Column, ...]
    axes: tuple[Column, ...]
    #: (column, allowed values): rows outside are out of scope; a column the table lacks is in scope
    scope: tuple[tuple[str, frozenset], ...] = ()

    @property
    def required(self) -> tuple[str, ...]:
        cols = ["version", "device", "latency", *self.dtype_columns]
        cols += [c.source for c in (*self.keys, *self.axes)]
        return tuple(dict.fromkeys(cols))


_HEADS = (Column("num_heads", "num_heads"), Column("num_kv_heads", "num_key_value_heads"),
          Column("head_dim", "head_dim"))
_ATTN_DTYPES = {("bfloat16", "bfloat16"): ("bfloat16", "bfloat16"), ("bfloat16", "fp8"): ("bfloat16", "fp8")}
#: full attention only (window_size 0), single beam
_ATTN_SCOPE = (("window_size", frozenset({0})), ("beam_width", frozenset({1})))
_BACKENDS = {"vllm_graph": "graph", "vllm_eager": "eager"}

SOURCES = (
    SourceSpec(
        "gemm", "gemm", None, "gemm_perf.parquet", ("gemm_dtype",),
        {("bfloat16",): ("bfloat16", None), ("fp8",): ("fp8", None)},
        keys=(), axes=(Column("m", "m"), Column("n", "n"), Column("k", "k"))),
    SourceSpec(
        "context_attention", "attention", None, "context_attention_perf.parquet", ("attn_dtype", "kv_cache_dtype"),
        _ATTN_DTYPES, keys=_HEADS, axes=(Column("batch", "batch_size"), Column("isl", "isl")),
        scope=(("step", frozenset({0})), *_ATTN_SCOPE)),
    SourceSpec(
        "generation_attention", "attention", None, "generation_attention_perf.parquet",
        ("attn_dtype", "kv_cache_dtype"), _ATTN_DTYPES, keys=_HEADS,
        axes=(Column("batch", "batch_size"), Column("kv_len", "step", lambda step: step + 1)),
        scope=(("isl", frozenset({1})), *_ATTN_SCOPE)),
    SourceSpec(
        "custom_allreduce", "comm", None, "custom_allreduce_perf.parquet", ("allreduce_dtype",),
        {("bfloat16",): ("bfloat16", None), ("float16",): ("float16", None)},
        keys=(Column("backend", "backend", _BACKENDS.get), Column("num_gpus", "num_gpus")),
        axes=(Column("elements", "message_size"),),
        scope=(("backend", frozenset(_BACKENDS)),)),
    SourceSpec(
        "nccl", "comm", "nccl", "nccl_perf.parquet", ("nccl_dtype",),
        {("half",): ("float16", None), ("int8",): ("int8", None)},
        keys=(Column("op", "op_name"), Column("num_gpus", "num_gpus")),
        axes=(Column("elements", "message_size"),)),
    SourceSpec(
        "moe", "moe", None, "moe_perf.parquet", ("moe_dtype",),
        {("bfloat16",): ("bfloat16", None), ("fp8",): ("fp8", None)},
        keys=(Column("hidden_size", "hidden_size"), Column("inter_size", "inter_size"), Column("topk", "topk"),
              Column("num_experts", "num_experts"), Column("tp_size", "moe_tp_size"),
              Column("ep_size", "moe_ep_size"), Column("distribution", "distribution")),
        axes=(Column("num_tokens", "num_tokens"),)),
)
