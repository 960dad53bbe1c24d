"""A profile bundle's attention table (``attention.csv``): one attention call of one decoder layer for a
batch of one prefill chunk plus ``n_decode`` decodes, measured on a 4-D grid, and the rules for reading
between and beyond its rows (the format: :mod:`tpsim.perf.bundle`)."""

from __future__ import annotations

import math
from bisect import bisect_left
from dataclasses import dataclass, field
from pathlib import Path

from tpsim.errors import InputError
from tpsim.perf.bundle_csv import (
    EXTRAPOLATED,
    INTERPOLATED,
    MEASURED,
    Table1D,
    _int_cell,
    _read_csv,
    _time_cell,
    worst,
)

ATTENTION_COLUMNS = ("prefill_chunk", "kv_prefill", "n_decode", "kv_decode", "time_us", "graph_time_us")


@dataclass
class AttentionSlice:
    """One (prefill_chunk, n_decode) slice: a kd-table per profiled kv_prefill."""

    kps: list[int]
    rows: list[Table1D]

    def _bracket(self, kp: float) -> tuple[int, int, str]:
        kps = self.kps
        i = bisect_left(kps, kp)
        n = len(kps)
        if i < n and kps[i] == kp:
            return i, i, MEASURED
        if i == 0 or n == 1:
            return 0, 0, EXTRAPOLATED
        if i == n:
            return n - 2, n - 1, EXTRAPOLATED
        return i - 1, i, INTERPOLATED

    def value(self, kp: float, kd: float) -> float:
        lo, hi, src = self._bracket(kp)
        v0 = self.rows[lo].value(kd)
        if lo == hi:
            return v0
        v1 = self.rows[hi].value(kd)
        if src == EXTRAPOLATED and v1 < v0:
            v1 = v0  # never extrapolate downwards
        return v0 + (kp - self.kps[lo]) / (self.kps[hi] - self.kps[lo]) * (v1 - v0)

    def source(self, kp: float, kd: float) -> str:
        lo, hi, src = self._bracket(kp)
        return worst(src, self.rows[lo].source(kd), self.rows[hi].source(kd))

    def lookup(self, kp: float, kd: float) -> tuple[float, str]:
        return self.value(kp, kd), self.source(kp, kd)


@dataclass
class AttentionTable:
    """The 4-D table: slices keyed by (prefill_chunk, n_decode)."""

    slices: dict[tuple[int, int], AttentionSlice]
    pcs: list[int] = field(default_factory=list)  # prefill_chunk values of prefill-only slices
    nds: list[int] = field(default_factory=list)  # n_decode values of decode-only slices
    mixed_pcs: list[int] = field(default_factory=list)  # axes of the slices with both
    mixed_nds: list[int] = field(default_factory=list)

    def __post_init__(self):
        self.pcs = sorted({pc for pc, nd in self.slices if pc > 0 and nd == 0})
        self.nds = sorted({nd for pc, nd in self.slices if nd > 0 and pc == 0})
        self.mixed_pcs = sorted({pc for pc, nd in self.slices if pc > 0 and nd > 0})
        self.mixed_nds = sorted({nd for pc, nd in self.slices if pc > 0 and nd > 0})
        self._nearest: dict[tuple[int, int], tuple[int, int] | None] = {}

    @property
    def has_mixed(self) -> bool:
        return any(pc > 0 and nd > 0 for pc, nd in self.slices)

    def has_regime(self, prefill: bool, decode: bool) -> bool:
        return any((pc > 0) == prefill and (nd > 0) == decode for pc, nd in self.slices)

    @staticmethod
    def bracket(axis: list[int], x: float) -> tuple[int, int, float, str]:
        """(lower key, upper key, fraction, source) of ``x`` on a sorted positive axis."""
        i = bisect_left(axis, x)
        n = len(axis)
        if i < n and axis[i] == x:
            return axis[i], axis[i], 0.0, MEASURED
        if i == 0 or n == 1:
            return axis[0], axis[0], 0.0, EXTRAPOLATED  # below the grid: clamp
        if i == n:
            return axis[-2], axis[-1], (x - axis[-2]) / (axis[-1] - axis[-2]), EXTRAPOLATED
        return axis[i - 1], axis[i], (x - axis[i - 1]) / (axis[i] - axis[i - 1]), INTERPOLATED

    def nearest(self, pc: int, nd: int) -> tuple[int, int] | None:
        """The profiled (pc, nd) pair of the same regime closest to (pc, nd) in log2 distance."""
        key = (pc, nd)
        if key not in self._nearest:
            best, best_d = None, float("inf")
            lp, ln = math.log2(pc + 1), math.log2(nd + 1)
            for p, d in self.slices:
                if (p > 0) != (pc > 0) or (d > 0) != (nd > 0):
                    continue
                dist = (math.log2(p + 1) - lp) ** 2 + (math.log2(d + 1) - ln) ** 2
                if dist < best_d:
                    best, best_d = (p, d), dist
            self._nearest[key] = best
        return self._nearest[key]

    def corner(self, pc: int, nd: int, kp: float, kd: float) -> tuple[float, str]:
        s = self.slices.get((pc, nd))
        if s is not None:
            return s.lookup(kp, kd)
        near = self.nearest(pc, nd)
        if near is None:
            raise KeyError((pc, nd))
        v, _ = self.slices[near].lookup(kp, kd)
        return v, EXTRAPOLATED

    def lookup(self, pc: int, kp: float, nd: int, kd: float) -> tuple[float, str]:
        """Time (ns) of one attention call: one prefill chunk of ``pc`` tokens after ``kp`` cached ones plus
        ``nd`` decodes attending to ``kd`` tokens each.

        Bilinear over (pc, nd) between the bracketing profiled slices, and inside each slice bilinear over
        (kp, kd) as :class:`AttentionSlice` does.  Prefill-only, decode-only and mixed batches are three
        regimes, each bracketed on its own axes (a positive query never interpolates towards "no prefill"
        or "no decodes").  A slice missing from a regime's grid is replaced by the nearest profiled one of
        the same regime (labelled extrapolated); a mixed batch on a bundle with no mixed slices is the sum
        of its prefill and decode parts (extrapolated).
        """
        if pc <= 0 and nd <= 0:
            return 0.0, MEASURED
        if pc > 0 and nd > 0:
            if not self.has_mixed:
                a, _ = self.lookup(pc, kp, 0, 0)
                b, _ = self.lookup(0, 0, nd, kd)
                return a + b, EXTRAPOLATED
            pcs, nds = self.mixed_pcs, self.mixed_nds
        else:
            pcs, nds = self.pcs, self.nds
        p0, p1, tp_, sp = (0, 0, 0.0, MEASURED) if pc <= 0 else self.bracket(pcs, pc)
        n0, n1, tn, sn = (0, 0, 0.0, MEASURED) if nd <= 0 else self.bracket(nds, nd)
        v0, s0 = self._along_decodes(p0, n0, n1, tn, kp, kd)
        if p1 == p0:
            return v0, worst(s0, sp, sn)
        v1, s1 = self._along_decodes(p1, n0, n1, tn, kp, kd)
        return v0 + tp_ * (v1 - v0), worst(s0, s1, sp, sn)

    def _along_decodes(self, p: int, n0: int, n1: int, tn: float, kp: float, kd: float) -> tuple[float, str]:
        """The prefill slice ``p`` between the decode counts ``n0`` and ``n1`` (weight ``tn`` on ``n1``)."""
        c0, s0 = self.corner(p, n0, kp, kd)
        if n1 == n0:
            return c0, s0
        c1, s1 = self.corner(p, n1, kp, kd)
        return c0 + tn * (c1 - c0), worst(s0, s1)

    def num_rows(self) -> int:
        return sum(len(r.keys) for s in self.slices.values() for r in s.rows)


def read_attention_tables(path: Path, graph: bool) -> tuple[AttentionTable, AttentionTable | None]:
    optional = ("graph_time_us",) if graph else ()
    rows = _read_csv(path, ATTENTION_COLUMNS[:5], optional)
    eager: dict[tuple[int, int], dict[int, dict[int, float]]] = {}
    graphs: dict[tuple[int, int], dict[int, dict[int, float]]] = {}
    for line, r in rows:
        pc, kp, nd, kd = (_int_cell(path, line, c, r[c]) for c in ATTENTION_COLUMNS[:4])
        if pc == 0 and nd == 0:
            raise InputError(f"{path}:{line}: a row with prefill_chunk 0 and n_decode 0 describes no work; "
                             f"delete it")
        if nd > 0 and kd == 0:
            raise InputError(f"{path}:{line}: n_decode {nd} with kv_decode 0; a decoding sequence attends to >= 1 "
                             f"token")
        t = _time_cell(path, line, "time_us", r["time_us"], False)
        eager.setdefault((pc, nd), {}).setdefault(kp, {})[kd] = t
        g = _time_cell(path, line, "graph_time_us", r.get("graph_time_us", ""), True)
        if g is not None:
            graphs.setdefault((pc, nd), {}).setdefault(kp, {})[kd] = g
    if not eager:
        raise InputError(f"{path}: no rows; the bundle is incomplete (re-run `tpsim profile`)")

    def build(d):
        slices = {}
        for key, by_kp in d.items():
            kps = sorted(by_kp)
            slices[key] = AttentionSlice(kps, [Table1D(sorted(by_kp[kp]), [by_kp[kp][k] for k in sorted(by_kp[kp])])
                                               for kp in kps])
        return AttentionTable(slices)

    return build(eager), (build(graphs) if graphs else None)
