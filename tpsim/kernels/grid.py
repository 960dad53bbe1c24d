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

    __slots__ = ("names", "axes", "values", "roofline_ns", "_strides", "_filled", "floor_ns")

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
        if size != len(self.values) or not any(v is not None for v in self.values):
            raise ValueError(f"grid of shape {[len(a) for a in self.axes]} needs {size} values with at least "
                             f"one measured, got {len(self.values)}")
        self._strides = tuple(reversed(strides))
        self._filled: dict[tuple[int, ...], tuple[float, tuple]] = {}
        self.floor_ns = min(v for v in self.values if v is not None)

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
            if x <= axis[0] or x >= axis[-1]:
                j = 0 if x <= axis[0] else len(axis) - 1
                brackets.append(((j, 1.0),))
                clamped.append(axis[j])
                if x != axis[j]:
                    beyond.append(f"{name}={x:g} (grid {axis[0]}..{axis[-1]})")
                continue
            j = bisect_left(axis, x)
            clamped.append(x)
            if axis[j] == x:
                brackets.append(((j, 1.0),))
            else:
                w = (log(x) - log(axis[j - 1])) / (log(axis[j]) - log(axis[j - 1]))
                brackets.append(((j - 1, 1.0 - w), (j, w)))
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
