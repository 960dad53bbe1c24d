"""Spec-sheet rooflines of the kernels in the tables: FLOPs, bytes and link traffic per shape.

Two users, one definition.  The importer checks every measurement against these lower
bounds (a kernel cannot beat its tensor-core peak or its link; it *can* beat the DRAM
roofline when its operands sit in L2).  The query layer scales measured times by them
where it must go beyond the measured grid.  Times are ns: FLOPs / (TFLOPS x 1e3) and
bytes / GB/s (one GB/s is one byte per ns).

The rates come with the tables (``provenance.json`` ``spec``, copied from the source's
system description), so the query layer needs no hardware catalog.
"""

from __future__ import annotations

import msgspec

#: bytes per element of every dtype the tables use (``int8`` is NCCL's 1-byte type)
ELEMENT_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "fp8": 1, "int8": 1}

#: dtype of a GEMM's output: vLLM's bf16 and fp8 linears both return bf16
OUTPUT_BYTES = 2


class Spec(msgspec.Struct, frozen=True):
    """Spec-sheet rates of one GPU, as the tables' source states them."""

    peak_tflops: dict            # dense tensor-core TFLOPS by dtype ("bfloat16", "fp8")
    memory_bw_gbps: float        # DRAM bandwidth
    link_bw_gbps: float          # GPU-to-GPU bandwidth per direction (NVLink, else PCIe)

    def flops_per_ns(self, dtype: str) -> float:
        """Tensor-core FLOPs per ns for ``dtype``; fp8 falls back to bf16 where the GPU has none."""
        tflops = self.peak_tflops.get(dtype) or self.peak_tflops["bfloat16"]
        return tflops * 1e3

    @classmethod
    def from_json(cls, doc: dict) -> Spec:
        return cls(peak_tflops=dict(doc["peak_tflops"]), memory_bw_gbps=float(doc["memory_bw_gbps"]),
                   link_bw_gbps=float(doc["link_bw_gbps"]))


class Roofline(msgspec.Struct, frozen=True):
    """Lower bounds of one kernel call in ns: tensor-core time, DRAM time, link time."""

    compute_ns: float = 0.0
    memory_ns: float = 0.0
    link_ns: float = 0.0

    @property
    def bound_ns(self) -> float:
        return max(self.compute_ns, self.memory_ns, self.link_ns)


def gemm(spec: Spec, m: float, n: float, k: float, dtype: str) -> Roofline:
    """``y[m, n] = x[m, k] @ W[n, k]^T``: 2mnk FLOPs; reads x and W, writes y in bf16."""
    b = ELEMENT_BYTES[dtype]
    nbytes = (m * k + k * n) * b + m * n * OUTPUT_BYTES
    return Roofline(2.0 * m * n * k / spec.flops_per_ns(dtype), nbytes / spec.memory_bw_gbps)


def _attention_rate(spec: Spec, kv_dtype: str) -> float:
    # With an fp8 KV cache the kernel may run its matmuls in fp8: the bound must hold either way.
    return spec.flops_per_ns("fp8" if kv_dtype == "fp8" else "bfloat16")


def context_attention(spec: Spec, batch: float, isl: float, num_heads: float, num_kv_heads: float,
                      head_dim: float, kv_dtype: str) -> Roofline:
    """Causal prefill without cached context: QK^T and PV over the lower triangle (2 b h s^2 d
    FLOPs); reads q, k, v and writes the output in bf16, writes k and v to the cache."""
    kvb = ELEMENT_BYTES[kv_dtype]
    flops = 2.0 * batch * num_heads * isl * isl * head_dim
    nbytes = batch * isl * head_dim * (2 * num_heads * 2 + 2 * num_kv_heads * 2 + 2 * num_kv_heads * kvb)
    return Roofline(flops / _attention_rate(spec, kv_dtype), nbytes / spec.memory_bw_gbps)


def generation_attention(spec: Spec, batch: float, kv_len: float, num_heads: float, num_kv_heads: float,
                         head_dim: float, kv_dtype: str) -> Roofline:
    """One decode token per sequence attending ``kv_len`` tokens: 4 b h L d FLOPs; reads the
    K and V cache (the dominant bytes), reads q and writes the output in bf16."""
    kvb = ELEMENT_BYTES[kv_dtype]
    flops = 4.0 * batch * num_heads * kv_len * head_dim
    nbytes = batch * kv_len * 2 * num_kv_heads * head_dim * kvb + batch * 2 * num_heads * head_dim * 2
    return Roofline(flops / _attention_rate(spec, kv_dtype), nbytes / spec.memory_bw_gbps)


#: bytes each GPU sends per byte of the message in the standard (ring) algorithms
_RING_TRAFFIC = {
    "all_reduce": lambda n: 2.0 * (n - 1) / n,
    "all_gather": lambda n: (n - 1) / n,
    "reduce_scatter": lambda n: (n - 1) / n,
    "alltoall": lambda n: (n - 1) / n,
}


def collective(spec: Spec, op: str, num_gpus: float, elements: float, element_bytes: float) -> Roofline:
    """Link time of a collective by the ring algorithm's traffic per GPU.

    ``elements`` is the whole message as nccl-tests counts it: the all-reduced buffer, the
    gathered output, the reduce-scattered input, the all-to-all buffer of one rank.
    """
    traffic = _RING_TRAFFIC[op](num_gpus) * elements * element_bytes
    return Roofline(link_ns=traffic / spec.link_bw_gbps)


def collective_lower_bound_ns(spec: Spec, op: str, num_gpus: float, elements: float,
                              element_bytes: float) -> float:
    """Least link time any algorithm needs, in-switch reduction (NVLS) included: every GPU must
    receive (n-1)/n of the message, except reduce-scatter, whose reduced shard is 1/n."""
    size = elements * element_bytes
    received = size / num_gpus if op == "reduce_scatter" else size * (num_gpus - 1) / num_gpus
    return received / spec.link_bw_gbps


def moe(spec: Spec, num_tokens: float, hidden_size: float, inter_size: float, topk: float,
        num_experts: float, tp_size: float, ep_size: float, dtype: str) -> Roofline:
    """A fused MoE layer on one GPU: each of ``num_tokens x topk`` token-expert pairs (1/ep of
    them local on average) runs gate+up and down projections (3 hidden x inter/tp matrices);
    the weights of every touched local expert are read once."""
    shard = 3.0 * hidden_size * inter_size / tp_size
    pairs = num_tokens * topk / ep_size
    touched = min(num_experts / ep_size, max(pairs, 1.0))
    nbytes = touched * shard * ELEMENT_BYTES[dtype] + num_tokens * hidden_size * 2 * 2
    return Roofline(2.0 * shard * pairs / spec.flops_per_ns(dtype), nbytes / spec.memory_bw_gbps)
