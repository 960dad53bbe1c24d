"""Collective communication costs (ring algorithms, alpha-beta model).

``link_bw_gbps`` is GB/s = bytes per ns; ``link_latency_ns`` is the per-step
latency ``alpha``.  A ring all-reduce over ``n`` GPUs of ``size_bytes`` runs
``2(n-1)`` steps (reduce-scatter then all-gather), each moving ``S/n`` bytes:

    T = 2(n-1) * alpha + 2(n-1)/n * S / link_bw

which is NCCL's ring and the formula behind its "bus bandwidth".  The local
reduction arithmetic is not charged (it overlaps the transfers in NCCL).
"""

from __future__ import annotations


def ring_allreduce_ns(size_bytes: float, n: int, link_bw_gbps: float, link_latency_ns: float) -> float:
    if n <= 1 or size_bytes <= 0:
        return 0.0
    steps = 2 * (n - 1)
    return steps * link_latency_ns + steps / n * size_bytes / link_bw_gbps


def ring_allgather_ns(size_bytes: float, n: int, link_bw_gbps: float, link_latency_ns: float) -> float:
    """All-gather of a tensor whose *gathered* size is ``size_bytes``: ``n-1`` steps of ``S/n``."""
    if n <= 1 or size_bytes <= 0:
        return 0.0
    steps = n - 1
    return steps * link_latency_ns + steps / n * size_bytes / link_bw_gbps


def ring_reduce_scatter_ns(size_bytes: float, n: int, link_bw_gbps: float, link_latency_ns: float) -> float:
    """Reduce-scatter of a tensor whose *input* size (per rank) is ``size_bytes``: ``n-1`` steps of ``S/n``
    (the first half of the ring all-reduce)."""
    return ring_allgather_ns(size_bytes, n, link_bw_gbps, link_latency_ns)


def p2p_ns(size_bytes: float, link_bw_gbps: float, link_latency_ns: float) -> float:
    """One point-to-point send (pipeline-parallel hidden states between stages)."""
    if size_bytes <= 0:
        return 0.0
    return link_latency_ns + size_bytes / link_bw_gbps
