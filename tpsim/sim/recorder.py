"""What a run keeps of each request as it finishes: its row, sent on to the sink, and its metrics.

The event loop hands every step's finished requests to :class:`Recorder` (``on_finish``) and keeps
nothing of them, so a run's memory follows the requests in flight, not the trace.  The recorder

* formats the 12-column row (:class:`~tpsim.io.results.RequestRow`) and writes it to the sink:
  instance 0's rows at once, other instances' to a spool file each, replayed after the run, so the
  CSV is grouped by instance in completion order as LLMServingSim writes it;
* keeps the summary's samples in typed arrays, 8 bytes a value (TTFT, TPOT, latency, queuing delay
  per request; the inter-token gaps as one weight per step plus the few gaps that span a pause),
  so the summary's percentiles stay exact (:func:`tpsim.stats.describe_samples`);
* measures TTFT, latency and queuing delay from the request's arrival, or (``--ttft-origin pickup``) from
  the moment vLLM's engine loop takes it from its input queue (:meth:`_InstanceRows.pickup`).

A decode step's gap is shared by every request that sampled in it: its text is made once, in a
window of recent steps that moves past a step once no live request can still need it.
"""

from __future__ import annotations

import json
import os
import tempfile
from array import array
from bisect import bisect_left
from typing import IO

from tpsim.io.results import RequestRow
from tpsim.stats import StepGaps, Values, describe_samples

#: steps whose gap text is kept before the window is checked for steps no live request needs
_GAP_WINDOW = 1 << 16


class _InstanceRows:
    """One instance's rows: the gap-text window over its steps and its inter-token gap samples."""

    def __init__(self, inst):
        self.inst = inst
        self.ends = inst.iter_ends  # the instance's step end times (appended by its scheduler)
        self.gap_base = 1  # gap_text[i] is the gap of step gap_base + i: ends[s] - ends[s - 1]
        self.gap_text: list[str] = []
        self.trim_at = _GAP_WINDOW
        self.step_weight = array("i")  # difference array: requests sampling at step i after sampling at i - 1
        self.pause_gaps = array("q")  # gaps across a pause (preemption, a step skipped): not one step long

    def _gaps(self, first: int, stop: int) -> list[str]:
        """The gap texts of steps first .. stop - 1."""
        text = self.gap_text
        ends = self.ends
        i = self.gap_base + len(text)
        while i < stop:
            text.append(str(ends[i] - ends[i - 1]))
            i += 1
        return text[first - self.gap_base:stop - self.gap_base]

    def _count_run(self, first: int, stop: int) -> None:
        """Requests sampled at steps first .. stop - 1, each after sampling at the step before."""
        w = self.step_weight
        if len(w) <= stop:
            w.frombytes(bytes(w.itemsize * max(stop + 1 - len(w), len(w) // 2)))  # grows geometrically
        w[first] += 1
        w[stop] -= 1

    def pickup(self, r) -> int:
        """When vLLM's engine loop takes ``r`` from its input queue (its ``queued_ts``).  The loop polls the
        queue between steps (``EngineCore.run_busy_loop``: input, then a step), so a request arriving while a
        step runs is taken when that step ends, one finding the engine idle at once (it is then scheduled at
        its arrival); never after its first scheduling."""
        ends = self.ends
        k = bisect_left(ends, r.arrival)
        if k < len(ends) and ends[k] < r.first_scheduled:
            return ends[k]
        return r.first_scheduled

    def row(self, r, text: bool, itl: bool = True, origin: int | None = None) -> RequestRow | None:
        """``r``'s row (None when ``text`` is False: only its gaps are counted; ``itl`` False: ITL '[]');
        ``origin``: where TTFT, latency and queuing delay start (default: the arrival)."""
        ends = self.ends
        em = r.emissions
        parts: list[str] = []
        gaps = text and itl
        prev = -1
        for j in range(0, len(em), 2):
            s, c = em[j], em[j + 1]
            if prev >= 0:
                gap = ends[s] - prev
                self.pause_gaps.append(gap)
                if gaps:
                    parts.append(str(gap))
            if c > 1:
                self._count_run(s + 1, s + c)
                if gaps:
                    parts.append(", ".join(self._gaps(s + 1, s + c)))
            prev = ends[s + c - 1]
        if not text:
            return None
        start = r.arrival if origin is None else origin
        latency = r.finish - start
        ttft = r.first_token - start
        tpot = (latency - ttft) // (r.output - 1) if r.output > 1 else 0
        inst = self.inst
        return RequestRow(inst.index, r.rid, inst.model_name, r.prompt, r.output, r.arrival, r.finish, latency,
                          r.first_scheduled - start, ttft, tpot, f"[{', '.join(parts)}]")

    def maybe_trim(self) -> None:
        """Drop gap texts of steps before every live request's first sampled step (amortised: the check
        runs again only after the window has doubled)."""
        if len(self.gap_text) < self.trim_at:
            return
        oldest = self.inst.scheduler.oldest_sampling_step()
        cut = min(oldest + 1, self.gap_base + len(self.gap_text)) - self.gap_base
        if cut > 0:
            del self.gap_text[:cut]
            self.gap_base += cut
        # the next check once the window has doubled (the check reads the requests held as objects: the running
        # ones and the preempted; packed waiting requests have never sampled)
        self.trim_at = max(_GAP_WINDOW, 2 * len(self.gap_text))

    def gap_parts(self) -> list:
        """The inter-token gaps as parts of a sample (:func:`tpsim.stats.describe_samples`): each step's duration
        weighted by the requests that sampled in it and the step before, and the gaps across a pause."""
        w = self.step_weight
        del w[len(self.ends):]
        running = 0
        for i, d in enumerate(w):  # the difference array becomes the weights, in place
            running += d
            w[i] = running
        return [StepGaps(self.ends, w), Values(self.pause_gaps)]


class RunMetrics:
    """The summary's per-request samples, typed arrays in ns, and the token totals; with ``pickup``, TTFT,
    latency and queuing delay start at the engine's pickup and the waits for it are kept too."""

    def __init__(self, pickup: bool = False) -> None:
        self.ttft = array("q")
        self.tpot = array("q")  # requests with more than one output token
        self.latency = array("q")
        self.queuing_delay = array("q")
        self.finished = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.itl_sum = 0  # every gap: a request's gaps sum to its latency minus its TTFT
        self.itl_parts: list = []
        self.pickup_delay = array("q") if pickup else None

    def add(self, r, origin: int | None = None) -> None:
        start = r.arrival
        if origin is not None and self.pickup_delay is not None:
            self.pickup_delay.append(origin - start)
            start = origin
        ttft = r.first_token - start
        latency = r.finish - start
        self.ttft.append(ttft)
        self.latency.append(latency)
        self.queuing_delay.append(r.first_scheduled - start)
        if r.output > 1:
            self.tpot.append((latency - ttft) // (r.output - 1))
        self.finished += 1
        self.input_tokens += r.prompt
        self.output_tokens += r.output
        self.itl_sum += latency - ttft

    def describe_ms(self) -> dict:
        """mean, p50, p90, p99 of each metric in ms (exact)."""
        ms = 1e-6
        out = {
            "ttft": describe_samples([Values(self.ttft)], ms),
            "tpot": describe_samples([Values(self.tpot)], ms),
            "itl": describe_samples(self.itl_parts, ms, total=self.itl_sum),
            "latency": describe_samples([Values(self.latency)], ms),
            "queuing_delay": describe_samples([Values(self.queuing_delay)], ms),
        }
        if self.pickup_delay is not None:
            out["pickup_delay"] = describe_samples([Values(self.pickup_delay)], ms)
        return out


class Recorder:
    """``on_finish(instance, requests)`` for the event loop: rows to ``sink`` (None: no rows), metrics kept."""

    def __init__(self, num_instances: int, sink=None, spool_dir: str | None = None, itl: bool = True,
                 progress=None, pickup: bool = False):
        """``itl`` False writes the ITL column as ``[]`` (``--itl-format none``); the gaps are still counted.
        ``progress(finished)`` is called every 10,000 finished requests (long runs on a terminal).  ``pickup``:
        TTFT, latency and queuing delay from the engine's pickup (``--ttft-origin pickup``)."""
        self.sink = sink
        self.itl = itl
        self.pickup = pickup
        self.progress = progress
        self._next_progress = 10_000
        self.metrics = RunMetrics(pickup)
        self._rows: list[_InstanceRows | None] = [None] * num_instances
        self._spools: dict[int, IO[str]] = {}
        self._spool_dir = spool_dir

    def __call__(self, inst, finished: list) -> None:
        rows = self._rows[inst.index]
        if rows is None:
            rows = self._rows[inst.index] = _InstanceRows(inst)
        text = self.sink is not None
        add = self.metrics.add
        pickup = rows.pickup if self.pickup else None
        for r in finished:
            origin = None if pickup is None else pickup(r)
            add(r, origin)
            row = rows.row(r, text, self.itl, origin)
            if row is not None:
                self._write(inst.index, row)
        rows.maybe_trim()
        if self.progress is not None and self.metrics.finished >= self._next_progress:
            self._next_progress += 10_000
            self.progress(self.metrics.finished)

    def _write(self, index: int, row: RequestRow) -> None:
        if index == 0:
            self.sink.write(row)
            return
        spool = self._spools.get(index)
        if spool is None:
            spool = self._spools[index] = tempfile.TemporaryFile("w+", encoding="utf-8", newline="",
                                                                 dir=self._spool_dir)
        spool.write(json.dumps(row.as_list()) + "\n")

    def close(self) -> None:
        """The run is over: replay the other instances' rows in instance order; the ITL samples are final."""
        try:
            for index in sorted(self._spools):
                spool = self._spools[index]
                spool.seek(0)
                for line in spool:
                    self.sink.write(RequestRow(*json.loads(line)))
        finally:
            self.discard()
        for rows in self._rows:
            if rows is not None:
                self.metrics.itl_parts.extend(rows.gap_parts())

    def discard(self) -> None:
        for spool in self._spools.values():
            spool.close()
        self._spools = {}


def spool_folder(output: str | None) -> str | None:
    """Spool files go beside the output (same disk as the result), else to the system's temporary folder."""
    return os.path.dirname(os.path.abspath(output)) if output else None
