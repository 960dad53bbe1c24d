"""Per-instance engine settings (vLLM's scheduler and cache knobs).

Precedence, as in LLMServingSim: a key in ``instances[i]`` of the cluster
config, then the command-line flag, then the built-in default.
"""

from __future__ import annotations

import msgspec

from tpsim.config import typed
from tpsim.config.run import EngineOptions
from tpsim.errors import InputError
from tpsim.units import DTYPE_BYTES

UNLIMITED = 1 << 62

#: built-in defaults by instance-key name (dtype None = the model's torch_dtype); their one home is
#: :class:`tpsim.config.run.EngineOptions`, from which the command line is generated too
DEFAULTS = EngineOptions().as_engine_keys()


class EngineConfig(msgspec.Struct, frozen=True):
    max_num_seqs: int
    max_num_batched_tokens: int
    long_prefill_token_threshold: int
    block_size: int
    dtype: str  # weight / compute dtype
    kv_cache_dtype: str  # resolved: bfloat16/float16/float32/fp8
    enable_chunked_prefill: bool
    enable_prefix_caching: bool
    reserve_full_isl: bool
    async_scheduling: bool  # host work of step N+1 overlaps the GPU's step N (vLLM >= 0.12 default)
    mem_util: float
    max_model_len: int
    num_gpu_blocks_override: int | None = None  # the KV capacity in blocks, as vLLM's flag of that name

    @property
    def weight_bytes(self) -> int:
        return DTYPE_BYTES[self.dtype]

    @property
    def act_bytes(self) -> int:
        """Activations stay 16-bit when weights are fp8 (vLLM's W8A8 keeps bf16 outputs)."""
        return 4 if self.dtype == "float32" else 2

    @property
    def kv_bytes(self) -> int:
        return DTYPE_BYTES[self.kv_cache_dtype]


#: largest KV block: the scheduler keeps one counter per token position in a block
MAX_BLOCK_SIZE = 1 << 16
#: most KV blocks an override may ask for (the memory plan then checks that they fit the GPU)
MAX_KV_BLOCKS = 1 << 40


def resolve_engine(cli: dict, overrides: dict, model_dtype: str, max_position: int, mem_util_cfg: float | None,
                   where: str) -> EngineConfig:
    """Merge defaults < CLI < instance overrides and validate the result.

    ``cli`` holds the command-line values (all keys of :data:`DEFAULTS`).
    ``where`` names the instance in error messages.
    """
    merged = {**DEFAULTS, **{k: v for k, v in cli.items() if k in DEFAULTS}}
    src = {k: "--" + k.replace("_", "-") for k in merged}
    for key, value in overrides.items():
        merged[key] = value
        src[key] = f"{where}.{key}"
    if mem_util_cfg is not None:
        merged["mem_util"] = mem_util_cfg
        src["mem_util"] = f"{where}.npu_mem.mem_util"
    max_seqs = typed.integer(merged["max_num_seqs"], src["max_num_seqs"], 0) or UNLIMITED
    max_tokens = typed.integer(merged["max_num_batched_tokens"], src["max_num_batched_tokens"], 0) or UNLIMITED
    max_tokens = min(max_tokens, max_position)  # LLMServingSim clamps the budget to the context window
    threshold = typed.integer(merged["long_prefill_token_threshold"], src["long_prefill_token_threshold"], 0)
    block = typed.integer(merged["block_size"], src["block_size"], 1, MAX_BLOCK_SIZE)
    dtype = merged["dtype"] or model_dtype
    if not isinstance(dtype, str) or dtype not in DTYPE_BYTES:
        raise InputError(f"{src['dtype']}: unknown dtype {typed.show(dtype)}; choose float16, bfloat16, float32 or fp8")
    kv = merged["kv_cache_dtype"]
    if kv == "auto":
        kv_resolved = "bfloat16" if dtype == "fp8" else dtype  # vLLM: KV in the activation dtype
    elif kv == "fp8":
        kv_resolved = "fp8"
    else:
        raise InputError(f"{src['kv_cache_dtype']}: unknown kv cache dtype {typed.show(kv)}; choose auto or fp8")
    util = typed.fraction(merged["mem_util"], src["mem_util"])
    max_len = merged["max_model_len"]
    if max_len is not None:
        max_len = typed.integer(max_len, src["max_model_len"], 1)
        if max_len > max_position:
            raise InputError(f"{src['max_model_len']} {max_len} exceeds the model's max_position_embeddings "
                             f"({max_position}); lower it or leave it out")
    blocks = merged["num_gpu_blocks_override"]
    if blocks is not None:
        blocks = typed.integer(blocks, src["num_gpu_blocks_override"], 1, MAX_KV_BLOCKS)
    return EngineConfig(
        max_num_seqs=max_seqs,
        max_num_batched_tokens=max_tokens,
        long_prefill_token_threshold=threshold,
        block_size=block,
        dtype=dtype,
        kv_cache_dtype=kv_resolved,
        enable_chunked_prefill=typed.boolean(merged["enable_chunked_prefill"], src["enable_chunked_prefill"]),
        enable_prefix_caching=typed.boolean(merged["enable_prefix_caching"], src["enable_prefix_caching"]),
        reserve_full_isl=typed.boolean(merged["reserve_full_isl"], src["reserve_full_isl"]),
        async_scheduling=typed.boolean(merged["async_scheduling"], src["async_scheduling"]),
        mem_util=float(util),
        max_model_len=max_len or max_position,
        num_gpu_blocks_override=blocks,
    )
