"""vLLM's waiting queue of one instance: first come, first served, preempted requests at the front.

A run far above capacity keeps most of its trace waiting; as full :class:`~tpsim.sim.request.Request`
objects (about 400 bytes each) ten million waiting requests would not fit in a few GB.  Once more
than :data:`PACK_AFTER` requests wait, later arrivals wait *packed*: their trace fields in typed
arrays (32 bytes a request: four 8-byte integers; plus token ids and session links kept by reference when present),
rebuilt into a Request when they reach the head of the queue.  Only requests that have never been
scheduled are packed (they have nothing else to remember), so the order and every decision are
those of a plain deque.
"""

from __future__ import annotations

from array import array
from collections import deque

from tpsim.sim.request import WAITING, Request

#: requests waiting as objects before later arrivals are packed
PACK_AFTER = 4096


class WaitingQueue:
    """``append`` (an arrival), ``appendleft`` (a preempted request), ``popleft``, ``head()``, ``len``."""

    __slots__ = ("instance", "front", "_rid", "_arrival", "_prompt", "_output", "_extras", "_next")

    def __init__(self, instance: int = -1):
        self.instance = instance
        self.front: deque[Request] = deque()  # requests held as objects, ahead of the packed ones
        self._rid = array("q")
        self._arrival = array("q")
        self._prompt = array("l")
        self._output = array("l")
        self._extras: dict[int, tuple] = {}  # rid -> (token_ids, num_input_ids, trace), when any is set
        self._next = 0  # index of the first packed request still waiting

    def __len__(self) -> int:
        return len(self.front) + len(self._rid) - self._next

    def append(self, req: Request) -> None:
        """An arrival joins the back of the queue (packed once the queue is long)."""
        if len(self._rid) == self._next and len(self.front) < PACK_AFTER:
            self.front.append(req)
            return
        self._rid.append(req.rid)
        self._arrival.append(req.arrival)
        self._prompt.append(req.prompt)
        self._output.append(req.output)
        if req.token_ids is not None or req.trace is not None:
            self._extras[req.rid] = (req.token_ids, req.num_input_ids, req.trace)

    def appendleft(self, req: Request) -> None:
        """A preempted request goes back to the front."""
        self.front.appendleft(req)

    def head(self) -> Request:
        """The request at the front (the queue must not be empty)."""
        if not self.front:
            self._unpack_one()
        return self.front[0]

    def popleft(self) -> Request:
        if not self.front:
            self._unpack_one()
        return self.front.popleft()

    def _unpack_one(self) -> None:
        i = self._next
        rid = self._rid[i]
        token_ids, num_input_ids, trace = self._extras.pop(rid, (None, 0, None))
        req = Request(rid, self._arrival[i], self._prompt[i], self._output[i], token_ids, num_input_ids, trace)
        req.instance = self.instance
        req.state = WAITING
        self.front.append(req)
        self._next = i + 1
        if self._next >= 65536 and 2 * self._next >= len(self._rid):  # drop the unpacked prefix
            for arr in (self._rid, self._arrival, self._prompt, self._output):
                del arr[:self._next]
            self._next = 0
