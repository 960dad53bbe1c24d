"""One measured grid, and the rules for reading between and beyond its points.

A grid has sorted axes (e.g. m, n, k of a GEMM) and a latency at each node, or none where
the source did not measure it (attention tables stop where batch x length hits a memory
cap; the GEMM table lacks one (n, k) corner).  A query is answered by these rules:

1. **Measured** - the query is a measured node: its stored time, exactly.
2. **Interpolated** - inside the axes' ranges with every bracketing node measured:
   multilinear interpolation in log(time) over log(coordinate), i.e. piecewise
   power laws.  The result is clamped to the range of the bracketing measurements, so it
   never leaves them (real kernels are not monotone: tile and wave quantisation).
3. **Extrapolated** - anything else, continuous with rules 1-2:
   * a node that was not measured takes the time of the nearest measured node (fewest
     grid steps, then the shortest distance in log coordinates, then index order) scaled
     by the roofline cost ratio; a cell with such a node is interpolated as in rule 2;
   * a query beyond an axis' range is clamped onto the grid and the clamped time is scaled
     by ``cost(query) / cost(clamped)``, so the time is continuous at the grid's edge.

``cost`` is the spec-sheet roofline time plus the group's fastest measurement (the
kernel's launch-and-latency floor), so that shapes below the grid are not scaled to zero
and shapes far above it scale with FLOPs and bytes.
"""

from __future__ import annotations

from bisect import bisect_left
from itertools import product
from math import exp, log

MEASURED = "measured"
INTERPOLATED = "interpolated"
EXTRAPOLATED = "extrapolated"


class Grid:
    """Latencies (ns) on the nodes of sorted axes; ``None`` marks a node not measured."""

    __slots__ = ("_filled", "_strides", "axes", "floor_ns", "names", "roofline_ns", "values")

    def __init__(self, names, axes, values, roofline_ns):
        """``roofline_ns(point)``: the spec-sheet lower bound of the kernel at a point of the axes."""
        self.names = tuple(names)
        self.axes = tuple(tuple(a) for a in axes)
        self.values = list(values)
        self.roofline_ns = roofline_ns
        size = 1
        strides = []
        for axis in reversed(self.axes):
            strides.append(size)
            size *= len(axis)
        measured = self.values if None not in self.values else [v for v in self.values if v is not None]
        if size != len(self.values) or not measured:
            raise ValueError(f"grid of shape {[len(a) for a in self.axes]} needs {size} values with at least "
                             f"one measured, got {len(self.values)}")
        self._strides = tuple(reversed(strides))
        self._filled: dict[tuple[int, ...], tuple[float, tuple]] = {}
        self.floor_ns = min(measured)

    def cost(self, point) -> float:
        """Roofline time plus this grid's fastest measurement: the scale used to extrapolate."""
        return self.floor_ns + self.roofline_ns(point)

    def coords(self, idx: tuple[int, ...]) -> tuple:
        return tuple(axis[i] for axis, i in zip(self.axes, idx))

    def measured(self, idx: tuple[int, ...]) -> float | None:
        return self.values[sum(i * s for i, s in zip(idx, self._strides))]

    def node(self, idx: tuple[int, ...]) -> tuple[float, tuple | None]:
        """Time at a node and, where it was not measured, the measured node it was scaled from."""
        t = self.measured(idx)
        if t is not None:
            return t, None
        hit = self._filled.get(idx)
        if hit is None:
            anchor = self._nearest_measured(idx)
            here = self.coords(idx)
            there = self.coords(anchor)
            hit = (self.measured(anchor) * self.cost(here) / self.cost(there), there)
            self._filled[idx] = hit
        return hit

    def _nearest_measured(self, idx: tuple[int, ...]) -> tuple[int, ...]:
        logs = [[log(v) for v in axis] for axis in self.axes]
        extent = max(len(a) for a in self.axes)
        for radius in range(1, extent):
            best = None
            ranges = [range(max(0, i - radius), min(len(a), i + radius + 1)) for a, i in zip(self.axes, idx)]
            for cand in product(*ranges):
                if max(abs(c - i) for c, i in zip(cand, idx)) != radius or self.measured(cand) is None:
                    continue
                dist = sum((lg[c] - lg[i]) ** 2 for lg, c, i in zip(logs, cand, idx))
                if best is None or (dist, cand) < best:
                    best = (dist, cand)
            if best is not None:
                return best[1]
        raise AssertionError("a grid always has a measured node")  # guarded in __init__

    def lookup(self, point) -> tuple[float, str, tuple, str]:
        """Time (ns), source, the grid nodes used, and a note on how it was extrapolated."""
        brackets = []
        clamped = []
        beyond = []
        for name, axis, x in zip(self.names, self.axes, point):
            bracket, at, out = _bracket(axis, x)
            brackets.append(bracket)
            clamped.append(at)
            if out:
                beyond.append(f"{name}={x:g} (grid {axis[0]}..{axis[-1]})")
        t, exact, nodes, anchors = self._interpolate(brackets)
        source = MEASURED if exact else INTERPOLATED
        notes = []
        if anchors:
            source = EXTRAPOLATED
            notes.append("not measured " + "; ".join(f"{n} (scaled from {a})" for n, a in anchors))
        if beyond:
            source = EXTRAPOLATED
            t *= self.cost(tuple(point)) / self.cost(tuple(clamped))
            notes.append("beyond the grid: " + ", ".join(beyond) + f"; roofline-scaled from {tuple(clamped)}")
        return t, source, nodes, "; ".join(notes)

    def line(self, point, axis: int) -> GridLine:
        """The grid along axis ``axis`` through ``point`` (the other coordinates fixed), for many queries."""
        return GridLine(self, point, axis)

    def _interpolate(self, brackets):
        corners = []
        for combo in product(*brackets):
            weight = 1.0
            for _, w in combo:
                weight *= w
            if weight > 0.0:
                corners.append((tuple(j for j, _ in combo), weight))
        nodes = []
        anchors = []
        values = []
        for idx, weight in corners:
            t, anchor = self.node(idx)
            here = self.coords(idx)
            nodes.append(here)
            values.append((t, weight))
            if anchor is not None:
                anchors.append((here, anchor))
        if len(values) == 1:
            return values[0][0], not anchors, tuple(nodes), anchors
        t = exp(sum(w * log(v) for v, w in values))
        lo = min(v for v, _ in values)
        hi = max(v for v, _ in values)
        return min(max(t, lo), hi), False, tuple(nodes), anchors


def _bracket(axis: tuple, x) -> tuple[tuple, float, bool]:
    """Where ``x`` falls on a sorted axis: the (node, weight) pairs that interpolate it (log-log), the
    coordinate clamped onto the axis, and whether it lies beyond the axis."""
    if x <= axis[0] or x >= axis[-1]:
        j = 0 if x <= axis[0] else len(axis) - 1
        return ((j, 1.0),), axis[j], x != axis[j]
    j = bisect_left(axis, x)
    if axis[j] == x:
        return ((j, 1.0),), x, False
    w = (log(x) - log(axis[j - 1])) / (log(axis[j]) - log(axis[j - 1]))
    return ((j - 1, 1.0 - w), (j, w)), x, False


class GridLine:
    """A grid along one axis with the other coordinates fixed: :meth:`estimate` is exactly
    :meth:`Grid.lookup`'s time and source at the point with ``x`` on that axis, the same arithmetic in the
    same order, with the fixed axes' brackets and every node's logarithm kept between calls (the hot path
    of a latency model asks one GEMM shape or one batch size at many token counts or contexts)."""

    __slots__ = ("_nodes", "after", "axis", "axis_values", "before", "beyond", "clamped", "grid", "point")

    def __init__(self, grid: Grid, point, axis: int):
        self.grid = grid
        self.axis = axis
        self.axis_values = grid.axes[axis]
        self.point = list(point)
        self.clamped = []
        self.beyond = False
        brackets = []
        for i, (values, x) in enumerate(zip(grid.axes, point)):
            bracket, at, out = _bracket(values, x) if i != axis else (None, None, False)
            brackets.append(bracket)
            self.clamped.append(at)
            self.beyond = self.beyond or out
        # corners of the axes before the free one (index prefix, weight product so far, in axis order) and of
        # those after it (index suffix, the weights still to multiply in order): product()'s corner order
        self.before = [((), 1.0)]
        for bracket in brackets[:axis]:
            self.before = [(idx + (j,), weight * w) for idx, weight in self.before for j, w in bracket]
        self.after = [((), ())]
        for bracket in brackets[axis + 1:]:
            self.after = [(idx + (j,), ws + (w,)) for idx, ws in self.after for j, w in bracket]
        self._nodes: dict[tuple, tuple[float, float, bool]] = {}

    def _node(self, idx: tuple) -> tuple[float, float, bool]:
        """(time, its logarithm, whether it was scaled from another node) of a grid node."""
        hit = self._nodes.get(idx)
        if hit is None:
            t, anchor = self.grid.node(idx)
            hit = self._nodes[idx] = (t, log(t), anchor is not None)
        return hit

    def estimate(self, x) -> tuple[float, str]:
        """(ns, source) at ``x`` on the free axis: ``Grid.lookup``'s (the same products, summed in the same order)."""
        free, at, out = _bracket(self.axis_values, x)
        terms = []  # weight * log(time) of each corner used, in product()'s corner order
        lo = hi = t = 0.0
        anchored = False
        nodes = self._nodes
        for pre, w_pre in self.before:
            for j, w_free in free:
                w_mid = w_pre * w_free
                for post, ws in self.after:
                    weight = w_mid
                    for w in ws:
                        weight *= w
                    if weight > 0.0:
                        idx = pre + (j,) + post
                        node = nodes.get(idx)
                        if node is None:
                            node = self._node(idx)
                        t = node[0]
                        if not terms or t < lo:
                            lo = t
                        if not terms or t > hi:
                            hi = t
                        anchored = anchored or node[2]
                        terms.append(weight * node[1])
        if len(terms) == 1:
            source = MEASURED if not anchored else EXTRAPOLATED
        else:
            t = exp(sum(terms))
            t = min(max(t, lo), hi)
            source = INTERPOLATED if not anchored else EXTRAPOLATED
        if out or self.beyond:
            point = self.point[:]
            point[self.axis] = x
            clamped = self.clamped[:]
            clamped[self.axis] = at
            t *= self.grid.cost(tuple(point)) / self.grid.cost(tuple(clamped))
            source = EXTRAPOLATED
        return t, source
