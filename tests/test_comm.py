"""Collectives (tpsim/perf/comm.py, comm_fit.py): the fit against the measured tables, the choice
between measured and analytical, monotonicity and continuity in the link."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tpsim.config.hardware import load_hardware
from tpsim.errors import InputError
from tpsim.kernels import load_kernel_tables
from tpsim.perf.comm import FittedComm, MeasuredComm, RingComm, make_comm
from tpsim.perf.comm_fit import FIT_ELEMENTS, fit_curve

MEASURED_GPUS = ("H100", "H200", "B200", "A100", "RTXPRO6000")


@pytest.mark.parametrize("name", MEASURED_GPUS)
@pytest.mark.parametrize("n", (2, 4, 8))
def test_fitted_allreduce_reproduces_the_tables_on_the_catalogued_link(name, n):
    """Issue 8 target: within 10 % from 4 K to 32 M elements at 2, 4 and 8 GPUs (we reach 5 %)."""
    hw = load_hardware(name)
    tables = load_kernel_tables(name)
    fitted = make_comm("analytical", hw, tables, hw.link_bw_gbps, hw.link_latency_ns, 2)
    measured = MeasuredComm(tables)
    assert isinstance(fitted, FittedComm) and not fitted.anchored
    for elements in FIT_ELEMENTS:
        m = measured.all_reduce(elements, n, True)[0]
        f = fitted.all_reduce(elements, n, True)[0]
        assert abs(f / m - 1) <= 0.05, (name, n, elements, f, m)
    for elements in FIT_ELEMENTS:
        m = tables.nccl("all_gather", n, elements).time_ns
        f = fitted.all_gather(elements, n)[0]
        assert abs(f / m - 1) <= 0.10, (name, n, elements, f, m)


def test_auto_is_measured_on_the_catalogued_link_and_analytical_elsewhere():
    hw = load_hardware("H100")
    tables = load_kernel_tables("H100")
    assert isinstance(make_comm("auto", hw, tables, hw.link_bw_gbps, hw.link_latency_ns, 2), MeasuredComm)
    other = make_comm("auto", hw, tables, 100.0, hw.link_latency_ns, 2)
    assert isinstance(other, FittedComm) and other.anchored
    l40s = load_hardware("L40S")  # no tables: the PCIe reference's curves
    borrowed = make_comm("auto", l40s, None, l40s.link_bw_gbps, l40s.link_latency_ns, 2)
    assert isinstance(borrowed, FittedComm) and borrowed.reference.name == "RTXPRO6000"
    assert isinstance(make_comm("analytical", hw, tables, 100.0, 3000.0, 4), RingComm)  # fp32: no 16-bit curves
    with pytest.raises(InputError, match="no kernel tables"):
        make_comm("measured", l40s, None, 10.0, 1000.0, 2)


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(MEASURED_GPUS), st.sampled_from((2, 4, 8)), st.sampled_from(FIT_ELEMENTS),
       st.floats(1.0, 5000.0), st.floats(1.0, 5000.0), st.floats(0.0, 50_000.0))
def test_link_sweeps_are_monotone(name, n, elements, bw_a, bw_b, latency):
    """More bandwidth or less latency never makes a collective slower, through the catalogued point too."""
    hw = load_hardware(name)
    tables = load_kernel_tables(name)
    lo, hi = sorted((bw_a, bw_b))
    for bws in ((lo, hi), sorted((lo, hw.link_bw_gbps)), sorted((hi, hw.link_bw_gbps))):
        slow = make_comm("auto", hw, tables, bws[0], latency, 2).all_reduce(elements, n, True)[0]
        fast = make_comm("auto", hw, tables, bws[1], latency, 2).all_reduce(elements, n, True)[0]
        assert fast <= slow + 1e-6
    near = make_comm("auto", hw, tables, hw.link_bw_gbps, latency + 1000.0, 2).all_reduce(elements, n, True)[0]
    base = make_comm("auto", hw, tables, hw.link_bw_gbps, latency, 2).all_reduce(elements, n, True)[0]
    assert near >= base - 1e-6


def test_anchored_curve_is_continuous_at_the_catalogued_link():
    hw = load_hardware("B200")
    tables = load_kernel_tables("B200")
    at = make_comm("auto", hw, tables, hw.link_bw_gbps, hw.link_latency_ns, 2).all_reduce(1 << 20, 8, True)[0]
    beside = make_comm("auto", hw, tables, hw.link_bw_gbps * (1 + 1e-6), hw.link_latency_ns, 2)
    assert beside.all_reduce(1 << 20, 8, True)[0] == pytest.approx(at, rel=1e-5)


def test_fit_splits_where_a_line_misses_and_keeps_each_piece_exact_enough():
    # two regimes: flat 10 us to 1 MB, then 50 GB/s
    pts = [(s, 10_000.0 if s <= 1 << 20 else 10_000.0 + (s - (1 << 20)) / 50.0)
           for s in (2 ** i for i in range(10, 27))]
    curve = fit_curve(pts, ((float("inf"), "nccl"),), 4, "synthetic")
    assert len(curve.pieces) >= 2 and curve.max_error <= 0.05
    for s, t in pts:
        assert curve.time_ns(s, 1.0, 0.0) == pytest.approx(t, rel=0.05)
