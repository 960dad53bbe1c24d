"""The requests of a run in arrival order, taken one at a time as the clock reaches them.

The event loop reads ``next_time`` (an attribute: it is read at every event) and calls ``pop`` when
the clock reaches it.  A trace is streamed (:class:`~tpsim.io.trace.TraceReader`), so a run holds
the requests that have arrived and not finished, not the whole trace.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from tpsim.sim.request import Request

INF = float("inf")


def request_from_trace(tr) -> Request:
    """The simulator's request for a trace request (session members keep their trace entry, for the
    follow-ups they release)."""
    return Request(tr.request_id, tr.arrival_ns, tr.input_toks, tr.output_toks, tr.token_ids,
                   tr.num_input_ids, tr if tr.session is not None else None)


class Arrivals:
    """``next_time`` (INF when none is left) and ``pop()``, over requests given in (arrival, id) order."""

    __slots__ = ("_source", "_next", "next_time")

    def __init__(self, requests: Iterable[Request]):
        self._source: Iterator[Request] = iter(requests)
        self._advance()

    def _advance(self) -> None:
        nxt = next(self._source, None)
        self._next = nxt
        self.next_time = nxt.arrival if nxt is not None else INF

    def pop(self) -> Request:
        req = self._next
        self._advance()
        return req
