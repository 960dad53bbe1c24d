"""The DRAM streaming floor read off a kernel table (tpsim.kernels.streaming): what it promises for any
rows, and what it gives on the shipped tables (attention and fused MoE, every GPU)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tpsim.kernels import load_kernel_tables
from tpsim.kernels.streaming import L2_MULTIPLE, decode_attention_floor, streaming_floor
from tpsim.perf.moe_costs import moe_weights_floor

MIB = 2 ** 20
L2_MIB = {"RTXPRO6000": 128, "H100": 50, "H200": 60, "B200": 126}
SPEC_GBPS = {"RTXPRO6000": 1597, "H100": 3350, "H200": 4800, "B200": 8000}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(1e3, 1e10), st.floats(1e3, 1e7)), max_size=30),
       st.floats(0.0, 5e3), st.floats(1e6, 2e8))
def test_no_row_beyond_twice_the_l2_lies_below_the_floor(samples, floor_ns, l2):
    f = streaming_floor(samples, floor_ns, l2)
    dram = [(b, t) for b, t in samples if b > L2_MULTIPLE * l2 and t > floor_ns]
    if not dram:
        assert f is None
        return
    rate = min((t - floor_ns) / b for b, t in dram)
    from_l2 = [(b, t) for b, t in samples if b <= L2_MULTIPLE * l2 and b * rate > t * (1 + 1e-9)]
    if f is None:  # no smaller row beat the DRAM rate: no evidence of an L2 replay
        assert not from_l2
        return
    assert f.rows == len(dram) and f.floor_ns == floor_ns and f.from_l2 >= len(from_l2) > 0
    assert all(f.ns(b) <= t * (1 + 1e-9) for b, t in dram)
    assert any(f.ns(b) == pytest.approx(t) for b, t in dram)  # the tightest row binds
    assert f.ns(0) == floor_ns and f.ns(2e9) > f.ns(1e9)


def test_rows_inside_the_l2_do_not_set_the_rate_but_show_the_replay_used_it():
    f = streaming_floor([(1e8, 10.0), (4e9, 4e6)], 0.0, 1e8)  # 10 GB/ns inside L2: served from it
    assert f.gbps == pytest.approx(1e3) and f.from_l2 == 1
    assert streaming_floor([(1e8, 10.0)], 0.0, 1e8) is None  # no DRAM row: no rate
    assert streaming_floor([(1e8, 1e6), (4e9, 4e6)], 0.0, 1e8) is None  # the small row streams at DRAM speed


@pytest.mark.parametrize("gpu", sorted(L2_MIB))
def test_only_the_rtx_pro_6000_tables_were_replayed_from_l2(gpu):
    """The shipped tables: the RTX PRO 6000's replays beat DRAM where the operand fits in its 128 MiB L2, and
    its floors stream at a physical rate (90-98 % of the spec sheet's DRAM bandwidth); the H100, H200 and
    B200 tables show no such rows, so they get no floor and keep their measurements."""
    tables = load_kernel_tables(gpu)
    l2 = L2_MIB[gpu] * MIB
    moe = moe_weights_floor(tables, "moe.bfloat16", l2)
    grid = tables.table("generation_attention.bfloat16.kv_bfloat16").groups[(32, 8, 128)]
    attn = decode_attention_floor(grid, 2 * 8 * 128 * 2, l2)
    if gpu != "RTXPRO6000":
        assert moe is None and attn is None
        return
    for f in (moe, attn):
        assert 0.9 * SPEC_GBPS[gpu] < f.gbps <= SPEC_GBPS[gpu] and f.from_l2 >= 10


def test_rtx_pro_6000_l2_resident_rows_are_the_ones_the_floor_raises():
    """Where the collector's replay kept the KV cache in the 128 MiB L2 the floor binds (by more than 1 %:
    caches of 8-256 MiB); beyond twice the L2 it never does."""
    grid = load_kernel_tables("RTXPRO6000").table("generation_attention.bfloat16.kv_bfloat16").groups[(32, 4, 128)]
    token = 2 * 4 * 128 * 2
    f = decode_attention_floor(grid, token, 128 * MIB)
    raised = []
    for i, b in enumerate(grid.axes[0]):
        for j, kv in enumerate(grid.axes[1]):
            t = grid.measured((i, j))
            if t is None:
                continue
            if b * kv * token > 2 * 128 * MIB:
                assert f.ns(b * kv * token) <= t * (1 + 1e-9)
            elif f.ns(b * kv * token) > 1.01 * t:
                raised.append(b * kv * token)
    assert raised and max(raised) <= 2 * 128 * MIB and min(raised) >= 8 * MIB
