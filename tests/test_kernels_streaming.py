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
    assert f.rows == len(dram) and f.floor_ns == floor_ns
    assert all(f.ns(b) <= t * (1 + 1e-9) for b, t in dram)
    assert any(f.ns(b) == pytest.approx(t) for b, t in dram)  # the tightest row binds
    assert f.ns(0) == floor_ns and f.ns(2e9) > f.ns(1e9)


def test_rows_inside_the_l2_do_not_set_the_rate():
    f = streaming_floor([(1e8, 10.0), (4e9, 4e6)], 0.0, 1e8)  # 1 GB/ms-class row inside L2 is ignored
    assert f.gbps == pytest.approx(1e3)
    assert streaming_floor([(1e8, 10.0)], 0.0, 1e8) is None


@pytest.mark.parametrize("gpu", sorted(L2_MIB))
def test_shipped_tables_stream_at_most_at_the_spec_sheets_dram_bandwidth(gpu):
    """The floors of the shipped tables: below every DRAM row by construction, and their rates physical
    (at most the spec sheet's DRAM bandwidth; NVIDIA's tables reach 90-98 % of it)."""
    tables = load_kernel_tables(gpu)
    l2 = L2_MIB[gpu] * MIB
    moe = moe_weights_floor(tables, "moe.bfloat16", l2)
    assert moe is not None and 0.85 * SPEC_GBPS[gpu] < moe.gbps <= SPEC_GBPS[gpu]
    grid = tables.table("generation_attention.bfloat16.kv_bfloat16").groups[(32, 8, 128)]
    attn = decode_attention_floor(grid, 2 * 8 * 128 * 2, l2)
    assert attn is not None and 0.85 * SPEC_GBPS[gpu] < attn.gbps <= SPEC_GBPS[gpu]


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
