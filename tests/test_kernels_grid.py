"""The interpolation rules of tpsim.kernels.grid: exact at measured nodes, bounded between
them, continuous where it has to extrapolate."""

import random
from math import isclose

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tpsim.kernels.grid import EXTRAPOLATED, INTERPOLATED, MEASURED, Grid


def roof(point):
    """A made-up roofline: proportional to the product of the coordinates."""
    p = 1.0
    for x in point:
        p *= x
    return p * 1e-3


axis_values = st.lists(st.integers(min_value=1, max_value=10_000), min_size=2, max_size=5, unique=True).map(sorted)
latency = st.floats(min_value=1.0, max_value=1e7, allow_nan=False, allow_infinity=False)


@st.composite
def grids(draw, holes=False):
    axes = [draw(axis_values) for _ in range(draw(st.integers(min_value=1, max_value=3)))]
    size = 1
    for a in axes:
        size *= len(a)
    values = draw(st.lists(latency, min_size=size, max_size=size))
    if holes:
        mask = draw(st.lists(st.booleans(), min_size=size, max_size=size))
        values = [None if m else v for v, m in zip(values, mask)]
        assume(any(v is not None for v in values))
    return Grid([f"x{i}" for i in range(len(axes))], axes, values, roof)


def flat(grid, idx):
    f = 0
    for axis, i in zip(grid.axes, idx):
        f = f * len(axis) + i
    return f


@settings(max_examples=200, deadline=None)
@given(grids(), st.data())
def test_measured_nodes_are_returned_exactly(grid, data):
    idx = tuple(data.draw(st.integers(0, len(a) - 1)) for a in grid.axes)
    t, source, nodes, note = grid.lookup(grid.coords(idx))
    assert t == grid.values[flat(grid, idx)]  # exact, not exp(log(t))
    assert source == MEASURED and nodes == (grid.coords(idx),) and note == ""


@settings(max_examples=300, deadline=None)
@given(grids(), st.data())
def test_interpolation_stays_within_its_bracketing_measurements(grid, data):
    point = []
    for axis in grid.axes:
        j = data.draw(st.integers(0, len(axis) - 2))
        point.append(data.draw(st.floats(axis[j], axis[j + 1], allow_nan=False)))
    t, source, nodes, _ = grid.lookup(tuple(point))
    corner_values = [grid.values[flat(grid, tuple(a.index(c) for a, c in zip(grid.axes, n)))] for n in nodes]
    assert min(corner_values) <= t <= max(corner_values)
    assert source in (MEASURED, INTERPOLATED)
    for n in nodes:  # the nodes used bracket the query on every axis
        for axis, c, x in zip(grid.axes, n, point):
            lo = max(v for v in axis if v <= x)
            hi = min(v for v in axis if v >= x)
            assert c in (lo, hi)


def test_interpolation_is_a_power_law_between_two_nodes():
    g = Grid(["m"], [[10, 1000]], [100.0, 10_000.0], roof)
    t, source, nodes, _ = g.lookup((100,))
    assert isclose(t, 1000.0, rel_tol=1e-12) and source == INTERPOLATED and nodes == ((10,), (1000,))


@settings(max_examples=200, deadline=None)
@given(grids(), st.data(), st.sampled_from([1e-9, 1e-6]))
def test_extrapolation_is_continuous_at_the_grid_edge(grid, data, eps):
    axis_i = data.draw(st.integers(0, len(grid.axes) - 1))
    upper = data.draw(st.booleans())
    idx = [data.draw(st.integers(0, len(a) - 1)) for a in grid.axes]
    idx[axis_i] = len(grid.axes[axis_i]) - 1 if upper else 0
    edge = grid.coords(tuple(idx))
    at_edge = grid.lookup(edge)[0]
    outside = list(edge)
    outside[axis_i] = edge[axis_i] * ((1 + eps) if upper else (1 - eps))
    t, source, _, note = grid.lookup(tuple(outside))
    assert source == EXTRAPOLATED and "beyond the grid" in note
    assert isclose(t, at_edge, rel_tol=10 * eps)


def test_beyond_the_grid_scales_by_the_roofline_cost():
    g = Grid(["m"], [[1, 2]], [5.0, 10.0], roof)
    t, source, nodes, _ = g.lookup((4,))
    # cost = floor (5, the fastest measurement) + roof; roof(4)/roof(2) in the ratio of (5 + 4e-3)/(5 + 2e-3)
    assert isclose(t, 10.0 * (5 + 4e-3) / (5 + 2e-3)) and source == EXTRAPOLATED and nodes == ((2,),)
    small, _, _, _ = g.lookup((0.5,))
    assert 0 < small <= 5.0 and isclose(small, 5.0, rel_tol=1e-3)  # the floor keeps tiny shapes near it


def test_unmeasured_node_is_filled_from_the_nearest_measured_one():
    # 3x3 grid with the top-right corner missing (like an attention table's batch x length cap)
    g = Grid(["b", "s"], [[1, 2, 4], [1, 2, 4]], [10, 20, 40, 20, 40, 80, 40, 80, None], roof)
    t, source, nodes, note = g.lookup((4, 4))
    assert source == EXTRAPOLATED and "scaled from" in note
    anchor = (2, 4) if "(2, 4)" in note else (4, 2)
    assert isclose(t, 80 * g.cost((4, 4)) / g.cost(anchor))
    # a cell with the filled corner is extrapolated; the shared edge with a measured cell is continuous
    inside_full, s1, _, _ = g.lookup((3, 2))
    inside_filled, s2, _, _ = g.lookup((3, 2 * (1 + 1e-9)))
    assert s1 == MEASURED or s1 == INTERPOLATED
    assert s2 == EXTRAPOLATED and isclose(inside_full, inside_filled, rel_tol=1e-6)


def test_a_grid_needs_one_value_per_node_and_one_measurement():
    with pytest.raises(ValueError):
        Grid(["m"], [[1, 2]], [1.0], roof)
    with pytest.raises(ValueError):
        Grid(["m"], [[1, 2]], [None, None], roof)


def test_leave_one_out_is_exact_on_power_laws_and_sees_a_kink():
    from tpsim.kernels.grid import Grid
    from tpsim.kernels.quality import leave_one_out

    axes = ((1, 2, 4, 8, 16), (10, 100, 1000))
    values = [3.0 * m ** 0.7 * n ** 1.3 for m in axes[0] for n in axes[1]]
    assert max(leave_one_out(Grid(("m", "n"), axes, values, lambda p: 0.0))) < 1e-9
    kinked = list(values)
    kinked[2 * 3 + 1] *= 2.0  # one node off the power law
    errs = leave_one_out(Grid(("m", "n"), axes, kinked, lambda p: 0.0))
    assert max(errs) > 0.4


def test_model_card_is_current():
    """docs/model-card.md is what `python -m tpsim.kernels.quality` prints from today's tables and catalog."""
    from conftest import REPO

    from tpsim.kernels.quality import model_card

    assert (REPO / "docs" / "model-card.md").read_text() == model_card(), \
        "regenerate: python -m tpsim.kernels.quality --out docs/model-card.md"


@settings(max_examples=300, deadline=None)
@given(grids(holes=True), st.data())
def test_a_line_through_the_grid_is_lookup_exactly(grid, data):
    """GridLine (the latency models' hot path) gives lookup's time and source, bit for bit, anywhere:
    on nodes, between them, at holes, beyond either end of any axis."""
    axis = data.draw(st.integers(0, len(grid.axes) - 1))
    coord = st.one_of(st.integers(1, 20_000), st.floats(0.5, 20_000.0, allow_nan=False))
    point = [data.draw(st.one_of(st.sampled_from(a), coord)) for a in grid.axes]
    line = grid.line(point, axis)
    for _ in range(5):
        x = data.draw(st.one_of(st.sampled_from(grid.axes[axis]), coord))
        point[axis] = x
        t, source, _, _ = grid.lookup(tuple(point))
        assert line.estimate(x) == (t, source)


@pytest.mark.parametrize("hw", ["H100", "RTXPRO6000", "A100", "B200", "H200"])
def test_lines_of_the_real_tables_are_their_lookups(hw):
    from tpsim.kernels import load_kernel_tables

    tables = load_kernel_tables(hw)
    rng = random.Random(hw)
    gemm = tables.table("gemm.bfloat16").groups[()]
    for n, k in ((6144, 4096), (4096, 4096), (28672, 4096), (4096, 14336), (151936, 5120), (1, 2048), (777, 333)):
        line = gemm.line((1, n, k), 0)
        for m in [rng.randint(1, 20_000) for _ in range(30)] + list(gemm.axes[0]):
            assert line.estimate(m) == gemm.lookup((m, n, k))[:2]
    for name, axis in (("generation_attention.bfloat16.kv_bfloat16", 1), ("context_attention.bfloat16.kv_bfloat16", 1),
                       ("generation_attention.bfloat16.kv_bfloat16", 0)):
        if not tables.has(name):
            continue
        for grid in list(tables.table(name).groups.values())[:4]:
            fixed = grid.axes[1 - axis][len(grid.axes[1 - axis]) // 2] + 0.5
            point = [fixed, fixed]
            line = grid.line(point, axis)
            for x in [rng.uniform(1, 40_000) for _ in range(20)] + list(grid.axes[axis]):
                point[axis] = x
                assert line.estimate(x) == grid.lookup(tuple(point))[:2]
