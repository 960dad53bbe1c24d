"""LLMServingSim's measured MoE block (``tp<N>/moe.csv``): time by tokens and activated experts.

``moe.csv`` (``tokens,activated_experts,time_us``) holds the whole MoE block of one layer -- gate,
top-k and the fused experts -- profiled on one GPU with routing forced so that ``activated_experts``
distinct experts receive the ``tokens x top_k`` token-expert pairs (LLMServingSim's
``profiler/core/hooks/moe_hook.py`` and ``ExpertCategory``: "MoE block (gate + grouped experts)").
Like the rest of that bundle its times are kernel times.

A query is read, for the two measured token counts around it, along activated experts (linear
between rows, the first row below, a line through the top two above with slope >= 0), then
linearly between the two token counts (clamped below the smallest, extrapolated above the largest
in the same way).  The source is ``measured`` at a row, ``interpolated`` inside the grid, else
``extrapolated``.
"""

from __future__ import annotations

from bisect import bisect_left
from pathlib import Path

from tpsim.errors import InputError
from tpsim.perf import bundle_csv as rows
from tpsim.perf.bundle_csv import EXTRAPOLATED, INTERPOLATED, MEASURED, Table1D

COLUMNS = ("tokens", "activated_experts", "time_us")


class MoETable:
    """Measured MoE-block times (ns) on a (tokens, activated experts) grid."""

    def __init__(self, rows: dict[int, dict[int, float]], path: Path):
        self.path = path
        self.tokens = sorted(rows)
        self.by_tokens = [Table1D(sorted(rows[t]), [rows[t][a] for a in sorted(rows[t])]) for t in self.tokens]

    @property
    def num_rows(self) -> int:
        return sum(len(t.keys) for t in self.by_tokens)

    def _row(self, i: int, activated: float) -> tuple[float, bool, bool]:
        """(ns, exact, inside) of token row ``i`` at ``activated`` experts."""
        row = self.by_tokens[i]
        j = bisect_left(row.keys, activated)
        exact = j < len(row.keys) and row.keys[j] == activated
        return row.value(activated), exact, row.keys[0] <= activated <= row.keys[-1]

    def lookup(self, tokens: float, activated: float) -> tuple[float, str]:
        ts = self.tokens
        i = bisect_left(ts, tokens)
        if i < len(ts) and ts[i] == tokens:
            t, exact, inside = self._row(i, activated)
            return t, MEASURED if exact else INTERPOLATED if inside else EXTRAPOLATED
        if i == 0 or len(ts) == 1:
            return self._row(0, activated)[0], EXTRAPOLATED
        if i == len(ts):
            (y0, _, _), (y1, _, _) = self._row(i - 2, activated), self._row(i - 1, activated)
            slope = (y1 - y0) / (ts[-1] - ts[-2])
            return y1 + max(slope, 0.0) * (tokens - ts[-1]), EXTRAPOLATED
        (y0, _, in0), (y1, _, in1) = self._row(i - 1, activated), self._row(i, activated)
        t = y0 + (y1 - y0) * (tokens - ts[i - 1]) / (ts[i] - ts[i - 1])
        return t, INTERPOLATED if in0 and in1 else EXTRAPOLATED


def read_moe_table(path: Path) -> MoETable:
    """Parse ``moe.csv``; every bad cell is an error naming the file and line."""
    table: dict[int, dict[int, float]] = {}
    for line, r in rows._read_csv(path, COLUMNS):
        tokens = rows._int_cell(path, line, "tokens", r["tokens"])
        activated = rows._int_cell(path, line, "activated_experts", r["activated_experts"])
        if tokens < 1 or activated < 1:
            raise InputError(f"{path}:{line}: tokens and activated_experts must be >= 1; fix or delete the row")
        table.setdefault(tokens, {})[activated] = rows._time_cell(path, line, "time_us", r["time_us"], False)
    if not table:
        raise InputError(f"{path}: no rows; the bundle is incomplete")
    return MoETable(table, path)
