"""The table kinds: their key and axis names, rooflines, and which measured key stands in
for one that was not measured.

A table's *key* columns are categorical (an attention head configuration, a collective's
GPU count); its *axes* are the continuous grid.  A query whose key is not in the table is
answered from the nearest measured key, scaled by the roofline ratio and marked
extrapolated; ``distance`` says which key is nearest, ``None`` where a key can never stand
in for another (an all-gather for an all-reduce).
"""

from __future__ import annotations

from collections.abc import Callable
from math import log2

import msgspec

from tpsim.kernels import roofline as rl


class Kind(msgspec.Struct, frozen=True):
    name: str
    key_names: tuple[str, ...]
    axis_names: tuple[str, ...]
    #: (spec, table header, key, point) -> Roofline
    roofline: Callable
    #: (query key, measured key) -> distance, or None where the measured key cannot stand in
    distance: Callable


def _log_distance(a, b, weights) -> float:
    return sum(w * abs(log2(x / y)) for x, y, w in zip(a, b, weights))


def _heads_distance(query, key):
    # (num_heads, num_kv_heads, head_dim): head_dim changes the kernel most, then KV heads
    # (the bytes a decode reads), then query heads.
    return _log_distance((query[2], query[1], query[0]), (key[2], key[1], key[0]), (4.0, 1.0, 1.0))


def _same_first_then_gpus(query, key):
    # (op or backend, num_gpus): never substitute another op; nearest GPU count.
    if query[0] != key[0]:
        return None
    return abs(log2(query[1] / key[1]))


def _moe_distance(query, key):
    # (hidden, inter, topk, experts, tp, ep, distribution); another token distribution only
    # where the table has none of the asked one.
    penalty = 0.0 if query[6] == key[6] else 100.0
    return penalty + _log_distance(query[:6], key[:6], (1.0,) * 6)


def _element_bytes(header) -> int:
    return rl.ELEMENT_BYTES[header["dtype"]]


KINDS = {
    "gemm": Kind(
        "gemm", (), ("m", "n", "k"),
        lambda spec, h, key, p: rl.gemm(spec, p[0], p[1], p[2], h["dtype"]),
        lambda query, key: 0.0),
    "context_attention": Kind(
        "context_attention", ("num_heads", "num_kv_heads", "head_dim"), ("batch", "isl"),
        lambda spec, h, key, p: rl.context_attention(spec, p[0], p[1], key[0], key[1], key[2], h["kv_dtype"]),
        _heads_distance),
    "generation_attention": Kind(
        "generation_attention", ("num_heads", "num_kv_heads", "head_dim"), ("batch", "kv_len"),
        lambda spec, h, key, p: rl.generation_attention(spec, p[0], p[1], key[0], key[1], key[2], h["kv_dtype"]),
        _heads_distance),
    "custom_allreduce": Kind(
        "custom_allreduce", ("backend", "num_gpus"), ("elements",),
        lambda spec, h, key, p: rl.collective(spec, "all_reduce", key[1], p[0], _element_bytes(h)),
        _same_first_then_gpus),
    "nccl": Kind(
        "nccl", ("op", "num_gpus"), ("elements",),
        lambda spec, h, key, p: rl.collective(spec, key[0], key[1], p[0], _element_bytes(h)),
        _same_first_then_gpus),
    "moe": Kind(
        "moe", ("hidden_size", "inter_size", "topk", "num_experts", "tp_size", "ep_size", "distribution"),
        ("num_tokens",),
        lambda spec, h, key, p: rl.moe(spec, p[0], *key[:6], h["dtype"]),
        _moe_distance),
}
