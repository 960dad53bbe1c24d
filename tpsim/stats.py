"""Summary statistics in plain Python (no numpy on the simulation path).

Percentiles interpolate linearly between order statistics, like numpy's
default and DuckDB's ``quantile_cont``.
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from itertools import accumulate, compress, islice, repeat
from operator import and_, le, mul, rshift, sub


def percentile_sorted(values: list, q: float) -> float:
    """``q`` in [0, 100] of an already sorted list."""
    n = len(values)
    if n == 0:
        return float("nan")
    pos = (n - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, n - 1)
    frac = pos - lo
    return values[lo] + (values[hi] - values[lo]) * frac


def describe(values: list, scale: float = 1.0) -> dict | None:
    """mean, p50, p90, p99 of ``values`` multiplied by ``scale``."""
    if not values:
        return None
    s = sorted(values)
    return {
        "mean": round(sum(s) / len(s) * scale, 6),
        "p50": round(percentile_sorted(s, 50) * scale, 6),
        "p90": round(percentile_sorted(s, 90) * scale, 6),
        "p99": round(percentile_sorted(s, 99) * scale, 6),
    }


def weighted_percentile(pairs: list[tuple[float, int]], q: float) -> float:
    """Percentile of a distribution given as sorted (value, count) pairs, same interpolation."""
    total = sum(c for _, c in pairs)
    if total == 0:
        return float("nan")
    pos = (total - 1) * q / 100.0
    lo_rank = int(pos)
    frac = pos - lo_rank

    def at(rank: int) -> float:
        seen = 0
        for v, c in pairs:
            seen += c
            if rank < seen:
                return v
        return pairs[-1][0]

    lo = at(lo_rank)
    hi = at(min(lo_rank + 1, total - 1))
    return lo + (hi - lo) * frac


def describe_weighted(counts: dict, scale: float = 1.0) -> dict | None:
    pairs = sorted((v, c) for v, c in counts.items() if c > 0)
    total = sum(c for _, c in pairs)
    if total == 0:
        return None
    mean = sum(v * c for v, c in pairs) / total
    return {
        "mean": round(mean * scale, 6),
        "p50": round(weighted_percentile(pairs, 50) * scale, 6),
        "p90": round(weighted_percentile(pairs, 90) * scale, 6),
        "p99": round(weighted_percentile(pairs, 99) * scale, 6),
    }


# ---------------------------------------------------------------------------- compact samples
#: at most this many values are sorted in memory at once; larger samples are narrowed by histogram passes
SORT_LIMIT = 1 << 20
_BUCKETS = 1 << 14


class Values:
    """A sample's part: integer values (an ``array('q')``, 8 bytes each), each counted once."""

    def __init__(self, values):
        self.values = values
        self._bounds: tuple[int, int] | None = None

    def weight(self) -> int:
        return len(self.values)

    def entries(self) -> int:
        """How many distinct entries (value, weight) the part holds."""
        return len(self.values)

    def bounds(self) -> tuple[int, int] | None:
        if self._bounds is None and len(self.values):
            self._bounds = min(self.values), max(self.values)
        return self._bounds

    def columns(self, lo: int, hi: int) -> tuple:
        """(values, weights) of the entries in [lo, hi], as two iterables in the same order."""
        b = self.bounds()
        if b is None:
            return (), ()
        if lo <= b[0] and b[1] <= hi:  # the whole part, at C speed
            return self.values, repeat(1, len(self.values))
        inside = list(compress(self.values, _in_range(self.values, self.values, lo, hi)))
        return inside, repeat(1, len(inside))

    def total(self) -> int:
        return sum(self.values)


class StepGaps:
    """A sample's part: the durations of consecutive steps (``ends[i] - ends[i - 1]``), step ``i`` counted
    ``weights[i]`` times; nothing but the two arrays is held (the iterators below stream them at C speed:
    a million-request run has millions of steps)."""

    def __init__(self, ends, weights):
        self.ends = ends
        self.weights = weights
        self._bounds: tuple[int, int] | None = None

    def _gaps(self):
        """The gaps of the steps of positive weight, in step order."""
        ends, weights = self.ends, self.weights
        return compress(map(sub, islice(ends, 1, None), ends), islice(weights, 1, None))

    def _counts(self):
        """Their weights, in the same order."""
        return compress(islice(self.weights, 1, None), islice(self.weights, 1, None))

    def weight(self) -> int:
        return sum(self.weights[1:])

    def entries(self) -> int:
        w = self.weights
        return len(w) - 1 - w.count(0) + (w[0] == 0) if len(w) else 0

    def bounds(self) -> tuple[int, int] | None:
        if self._bounds is None and self.entries():
            self._bounds = min(self._gaps()), max(self._gaps())
        return self._bounds

    def columns(self, lo: int, hi: int) -> tuple:
        b = self.bounds()
        if b is None:
            return (), ()
        if lo <= b[0] and b[1] <= hi:
            return self._gaps(), self._counts()
        keep = _in_range(self._gaps(), self._gaps(), lo, hi)
        return compress(self._gaps(), keep), compress(self._counts(), keep)

    def total(self) -> int:
        return sum(map(mul, self._gaps(), self._counts()))


def describe_samples(parts: list, scale: float = 1.0, total: float | None = None) -> dict | None:
    """mean, p50, p90, p99 (as :func:`describe`) of integer samples held compactly in ``parts``
    (:class:`Values`, :class:`StepGaps`).

    Exact: a large sample is narrowed by histogram passes to the few values around each rank, which
    are then sorted, so memory stays at the arrays themselves.  ``total`` is the samples' sum when the
    caller knows it (saves a pass).
    """
    count = sum(p.weight() for p in parts)
    if count == 0:
        return None
    if total is None:
        total = sum(p.total() for p in parts)
    ranks: set[int] = set()
    for q in (50, 90, 99):
        pos = (count - 1) * q / 100.0
        ranks.update((int(pos), min(int(pos) + 1, count - 1)))
    bounds = [b for b in (p.bounds() for p in parts) if b is not None]
    at = _select(parts, min(b[0] for b in bounds), max(b[1] for b in bounds), 0, count, sorted(ranks), whole=True)

    def pct(q: float) -> float:
        pos = (count - 1) * q / 100.0
        lo = int(pos)
        return at[lo] + (at[min(lo + 1, count - 1)] - at[lo]) * (pos - lo)

    return {"mean": round(total / count * scale, 6), "p50": round(pct(50) * scale, 6),
            "p90": round(pct(90) * scale, 6), "p99": round(pct(99) * scale, 6)}


def _in_range(values, again, lo: int, hi: int) -> bytes:
    """1 for each of ``values`` in [lo, hi], else 0 (``again``: the same values, a second iterator), at C speed."""
    return bytes(map(and_, map(le, repeat(lo), values), map(le, again, repeat(hi))))


def _columns(parts: list, lo: int, hi: int) -> tuple[array, array]:
    """The values in [lo, hi] of every part and their weights, as two arrays in the same order."""
    values, weights = array("q"), array("q")
    for part in parts:
        v, w = part.columns(lo, hi)
        values.extend(v)
        weights.extend(w)
    return values, weights


def _ranked(values: array, weights: array, below: int, ranks: list[int]) -> dict[int, int]:
    """The values at ``ranks`` (``below`` samples precede these): the entries in value order (an index sort:
    ints compare faster than pairs), each rank at the first entry whose running weight passes it."""
    order = sorted(range(len(values)), key=values.__getitem__)
    running = list(accumulate(map(weights.__getitem__, order)))
    return {rank: values[order[bisect_right(running, rank - below)]] for rank in ranks}


def _shift(lo: int, hi: int) -> int:
    """Buckets of [lo, hi] are ``2 ** shift`` values wide, few enough to count (at most :data:`_BUCKETS`)."""
    return max(0, (hi - lo).bit_length() - _BUCKETS.bit_length() + 1)


def _histogram(parts: list, lo: int, hi: int, shift: int) -> tuple[list[int], list[int]]:
    """Per bucket of [lo, hi] (``(value - lo) >> shift``): the samples' weight and the entries (one pass)."""
    counts = [0] * _BUCKETS
    sizes = [0] * _BUCKETS
    for part in parts:
        v, w = part.columns(lo, hi)
        for b, c in zip(map(rshift, map(sub, v, repeat(lo)), repeat(shift)), w):
            counts[b] += c  # the one loop in Python: a weighted histogram has no C-speed form here
            sizes[b] += 1
    return counts, sizes


def _gather(parts: list, lo: int, hi: int, shift: int, buckets: set[int]) -> dict[int, tuple[array, array]]:
    """The entries of ``buckets`` (of [lo, hi], as in :func:`_histogram`), one pass over the parts."""
    out = {b: (array("q"), array("q")) for b in buckets}
    for part in parts:
        v, w = part.columns(lo, hi)
        for x, c in zip(v, w):
            b = (x - lo) >> shift
            if b in out:
                values, weights = out[b]
                values.append(x)
                weights.append(c)
    return out


def _select(parts: list, lo: int, hi: int, below: int, inside: int, ranks: list[int],
            whole: bool = False) -> dict[int, int]:
    """Values at ``ranks`` among the samples in [lo, hi] (``below`` samples are smaller, ``inside`` in it;
    ``whole``: [lo, hi] holds every sample)."""
    if lo == hi:  # one value left (many equal samples): no need to sort them
        return dict.fromkeys(ranks, lo)
    if inside > SORT_LIMIT and (not whole or sum(p.entries() for p in parts) > SORT_LIMIT):
        shift = _shift(lo, hi)
        counts, sizes = _histogram(parts, lo, hi, shift)
        if sum(sizes) > SORT_LIMIT:  # too many to sort: narrow each rank to its bucket
            jobs = []
            seen = below
            for b, c in enumerate(counts):
                mine = [r for r in ranks if seen <= r < seen + c]
                if mine:
                    jobs.append((b, seen, c, mine))
                seen += c
            small = {b for b, _, _, _ in jobs if sizes[b] <= SORT_LIMIT}  # gathered together in one more pass
            gathered = _gather(parts, lo, hi, shift, small) if small else {}
            out: dict[int, int] = {}
            for b, seen, c, mine in jobs:
                if b in gathered:
                    out.update(_ranked(*gathered[b], seen, mine))
                else:
                    b_lo = lo + (b << shift)
                    out.update(_select(parts, b_lo, min(hi, b_lo + (1 << shift) - 1), seen, c, mine))
            return out
    if all(type(p) is Values for p in parts):  # unweighted: sort the values themselves
        if whole:
            ordered = sorted(v for p in parts for v in p.values) if len(parts) > 1 else sorted(parts[0].values)
        else:
            ordered = sorted(v for p in parts for v in p.values if lo <= v <= hi)
        return {rank: ordered[rank - below] for rank in ranks}
    return _ranked(*_columns(parts, lo, hi), below, ranks)
