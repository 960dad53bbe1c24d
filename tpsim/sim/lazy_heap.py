"""A min-heap whose entries expire lazily: the decode cohort's priority queues.

A request leaving the decode cohort would otherwise have to be found and removed from every
heap that holds it (O(n) each).  Instead each entry records the request's epoch when it was
pushed, the request's epoch changes whenever it joins or leaves the cohort, and an entry whose
epoch no longer matches is stale: it is dropped when it reaches the top.

Entries are tuples ``(key, ..., epoch, item)`` compared as tuples (the keys must break every tie
before ``item``, which need not be orderable); ``item.epoch`` is read to tell live from stale.
"""

from __future__ import annotations

from functools import partial
from heapq import heapify, heappop, heappush


class LazyHeap:
    """``push(entry)`` adds ``(key, ..., epoch, item)``, live while ``item.epoch == epoch``."""

    __slots__ = ("entries", "push")

    def __init__(self) -> None:
        self.entries: list[tuple] = []  # a heapq heap, stale entries included
        self.push = partial(heappush, self.entries)  # heapq.heappush onto it, without a Python frame

    def peek(self) -> tuple | None:
        """The smallest live entry (stale ones above it are dropped), or None."""
        h = self.entries
        while h:
            e = h[0]
            if e[-1].epoch == e[-2]:
                return e
            heappop(h)
        return None

    def pop_through(self, key: float) -> list[tuple]:
        """Remove and return, smallest first, the live entries whose first key is <= ``key``."""
        h = self.entries
        out = []
        while h and h[0][0] <= key:
            e = heappop(h)
            if e[-1].epoch == e[-2]:
                out.append(e)
        return out

    def live(self) -> list[tuple]:
        """Every live entry, in no particular order."""
        return [e for e in self.entries if e[-1].epoch == e[-2]]

    def compact(self) -> None:
        """Drop every stale entry (they are otherwise dropped only on reaching the top, and an entry that
        never does -- an old request in a newest-first heap -- would keep its request alive)."""
        h = self.entries
        h[:] = [e for e in h if e[-1].epoch == e[-2]]  # in place: ``push`` holds this list
        heapify(h)

    def clear(self) -> None:
        self.entries.clear()  # in place: ``push`` holds this list
