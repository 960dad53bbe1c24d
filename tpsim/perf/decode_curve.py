"""The generation table along the mean context at one decode count: the kernel model's decode-attention read.

Every decode step reads it, so a curve keeps the table's nodes along the decode count and the logarithm
of each node's time once it is first needed, and interpolates log-log between them exactly as the
tables' own lookup (:mod:`tpsim.kernels.grid`) does along the context axis.
"""

from __future__ import annotations

from bisect import bisect_left
from math import exp, log


class DecodeCurve:
    """Decode-attention time against mean context at one decode count: the generation table's time at
    each context node (log-log between them), each node read the first time a query needs it."""

    __slots__ = ("batch", "kv", "first", "limit", "log_kv", "log_t", "nodes", "bracket")

    def __init__(self, nodes: list, log_kv: list[float], batch: int):
        """``nodes``: one :class:`~tpsim.kernels.grid.GridLine` along the decode count per context node."""
        self.nodes = nodes
        self.kv = nodes[0].grid.axes[1]
        self.log_kv = log_kv
        self.batch = batch
        self.log_t: list[float | None] = [None] * len(self.kv)
        self.first = self.kv[0]
        self.limit = self.kv[-1]
        #: the last interpolation's bracket ``(kv_lo, kv_hi, log kv_lo, log kv_hi - log kv_lo, log t_lo, log t_hi -
        #: log t_lo)``: a query strictly inside it (a decode cohort's next steps) is ``exp(log t_lo + (log kv - log
        #: kv_lo) / (log kv_hi - log kv_lo) x (log t_hi - log t_lo))``, the same operations as :meth:`time_ns`'s
        self.bracket = (0.0, 0.0, 0.0, 1.0, 0.0, 0.0)  # empty

    def _log_t(self, j: int) -> float:
        lt = self.log_t[j]
        if lt is None:
            lt = self.log_t[j] = log(self.nodes[j].estimate(self.batch)[0])
        return lt

    def time_ns(self, kv: float) -> float | None:
        """None beyond the grid (the caller asks the tables, which extrapolate)."""
        kv_lo, kv_hi, log_kv_lo, log_kv_span, lo, span = self.bracket
        if kv_lo < kv < kv_hi:  # every decode step asks: the last bracket, no search
            return exp(lo + (log(kv) - log_kv_lo) / log_kv_span * span)
        if kv >= self.limit:
            return exp(self._log_t(-1)) if kv == self.limit else None
        if kv <= self.first:
            return exp(self._log_t(0)) if kv == self.first else None
        kvs = self.kv
        j = bisect_left(kvs, kv)
        if kvs[j] == kv:
            return exp(self._log_t(j))
        log_t = self.log_t
        lo, hi = log_t[j - 1], log_t[j]
        if lo is None or hi is None:
            lo, hi = self._log_t(j - 1), self._log_t(j)
        log_kv = self.log_kv
        self.bracket = (kvs[j - 1], kvs[j], log_kv[j - 1], log_kv[j] - log_kv[j - 1], lo, hi - lo)
        w = (log(kv) - log_kv[j - 1]) / (log_kv[j] - log_kv[j - 1])
        return exp(lo + w * (hi - lo))
