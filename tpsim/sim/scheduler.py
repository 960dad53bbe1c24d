"""vLLM V1's scheduling policy for one instance, over a paged KV cache, timed by a latency model.

Scheduling policy (vLLM V1 ``Scheduler.schedule()``), one engine step at a time:

1. running requests first, in admission order, each taking
   ``min(remaining, long_prefill_token_threshold, budget)`` tokens; when the
   KV cache cannot hold them, the newest running request is preempted
   (recompute: blocks freed, back to the front of the queue); if that is the
   request itself, the running phase stops;
2. if nothing was preempted, waiting requests in FCFS order while the token
   budget and ``max_num_seqs`` allow, each after a prefix-cache lookup, with
   all-or-nothing block allocation (no preemption on their behalf).

Two implementations of that one policy live here:

* the *reference* path keeps every request's counters explicit and walks the
  running list every step (simple; also used for pipeline parallelism);
* the *fast* path keeps requests that are simply decoding in a decode cohort
  (:mod:`tpsim.sim.cohort`): their counters are derived from the step index,
  the batch's context sum is an aggregate, and per-request work happens only
  at events (a request finishing, needing a new KV block, a block filling up).
  Runs of steps with no event are computed in one go (``_extend``).  Whenever a
  step does not meet the fast path's preconditions (decodes that would not all
  fit the budget, KV blocks running out, a decode admitted after a
  still-prefilling request), the cohort is dissolved and the reference path
  runs that step.

Both paths produce identical results; the tests run every scenario both ways.
This is the simulator's hottest code: attributes used in loops are read into
locals first, and the per-step fast path avoids call layers it can do without.
"""

from __future__ import annotations

from tpsim.config.engine import EngineConfig
from tpsim.errors import InputError
from tpsim.perf.base import BatchShape, LatencyModel
from tpsim.sim.cohort import DecodeCohort
from tpsim.sim.kv_cache import BlockCounter
from tpsim.sim.request import BY_ADMISSION, FINISHED, RUNNING, WAITING, Request
from tpsim.sim.stats import InstanceStats
from tpsim.sim.waiting import WaitingQueue

MAX_SPAN = 1 << 16  # most steps one fast-forwarded batch covers
#: step end times are kept as 8-byte integers (ns); 2^63 ns is 292 years, past any --max-sim-time (1e9 s at most)
MAX_TIME_NS = (1 << 63) - 1


class Batch:
    """What one engine step (or a run of identical decode steps) does."""

    __slots__ = ("items", "end", "ends", "span", "first_iter", "n_cohort", "reference")

    def __init__(self, items, start):
        self.items = items  # explicit (request, tokens scheduled) pairs
        self.end = start
        self.ends: list[int] = []  # end time of each step (len == span)
        self.span = 1
        self.first_iter = 0
        self.n_cohort = 0  # decode-cohort requests in every step of this batch
        self.reference = False  # scheduled by the reference path


class Scheduler:
    """The policy and the state it keeps: the queue, the running requests, the batches in flight.

    ``waiting`` and ``inflight`` are never rebound (an :class:`~tpsim.sim.instance.Instance`
    shares them); ``running`` (reference path) and ``prefillers`` (fast path: running requests
    outside the cohort, admission order) are.
    """

    def __init__(self, engine: EngineConfig, model: LatencyModel, pp: int, fast: bool, kv: BlockCounter,
                 stats: InstanceStats):
        self.model = model
        self.pp = pp
        self.fast = fast
        self.kv = kv
        self.stats = stats
        self.counting = not kv.caching
        self.block_size = engine.block_size
        self.max_seqs = engine.max_num_seqs
        self.max_tokens = engine.max_num_batched_tokens
        self.threshold = engine.long_prefill_token_threshold
        self.chunked = engine.enable_chunked_prefill
        self.reserve_full = engine.reserve_full_isl
        # async scheduling: step N+1 is planned while step N runs, so a request arriving
        # during step N is first seen when step N+2 is planned
        self.async_lag = engine.async_scheduling and pp == 1
        self.last_start = -1  # start and end of the most recent step
        self.last_end = -1
        self.cutoff = 0  # arrivals after this are not yet visible to the scheduler
        self.stage_free_at = 0  # when the first pipeline stage can take the next step
        self.waiting = WaitingQueue()  # FCFS; preempted requests at the front
        self.running: list[Request] = []  # reference path: every running request, admission order
        self.prefillers: list[Request] = []  # fast path: running requests outside the cohort
        self.cohort = DecodeCohort(engine.block_size, self.counting, getattr(model, "needs_ctx_max", False))
        self.inflight: list[Batch] = []
        self.admissions = 0

    # ------------------------------------------------------------------ state
    def has_work(self) -> bool:
        return bool(self.waiting or self.running or self.cohort.n or self.prefillers)

    def ready(self, now: int) -> bool:
        """Can start a step at ``now`` (first stage free, room for another batch) and has work
        (``has_work`` written out: the event loop asks at every event)."""
        return (self.stage_free_at <= now and len(self.inflight) < self.pp
                and bool(self.waiting or self.running or self.cohort.n or self.prefillers))

    def oldest_sampling_step(self) -> int:
        """The earliest step at which a request still in the system sampled a token (the recorder keeps the
        gap texts from there on); the step count when none has."""
        oldest = len(self.stats.iter_ends)
        for group in (self.waiting.front, self.running, self.prefillers):  # packed waiting ones never sampled
            for r in group:
                if r.emissions and r.emissions[0] < oldest:
                    oldest = r.emissions[0]
        for r in self.cohort.members():
            first = r.emissions[0] if r.emissions else r.base_step
            if first < oldest:
                oldest = first
        return oldest

    def _dissolve(self, s: int) -> None:
        """Fallback: put everything back into the explicit running list (admission order)."""
        members = self.cohort.dissolve(s)
        self.running = sorted(members + self.prefillers, key=BY_ADMISSION)
        self.prefillers = []

    def _rebuild(self) -> None:
        """After a reference step: steady decoders rejoin the cohort, the rest stay explicit."""
        s = len(self.stats.iter_ends)
        join = self.cohort.join
        for r in self.running:
            if r.num_computed + 1 == r.num_tokens and 0 < r.generated < r.output:
                join(r, s)
            else:
                self.prefillers.append(r)
        self.running = []

    # ------------------------------------------------------------------ shared phases
    def _preempt(self, victim: Request) -> None:
        self.kv.free(victim)
        self.stats.recomputed_tokens += victim.num_computed
        victim.num_computed = 0
        victim.state = WAITING
        victim.preemptions += 1
        self.stats.preemptions += 1
        self.waiting.appendleft(victim)

    def _run_explicit(self, running: list[Request], budget: int, items: list) -> tuple[int, bool]:
        """Phase 1 over explicit requests (admission order); the newest are preempted for blocks."""
        kv = self.kv
        threshold = self.threshold
        preempted = False
        i = 0
        while i < len(running) and budget > 0:
            r = running[i]
            if r.inflight:
                i += 1
                continue
            num_new = r.num_tokens - r.num_computed
            if 0 < threshold < num_new:
                num_new = threshold
            if num_new > budget:
                num_new = budget
            scheduled = True
            while not kv.allocate(r, r.num_computed + num_new):
                victim = None
                for j in range(len(running) - 1, -1, -1):
                    if not running[j].inflight:
                        victim = running.pop(j)
                        break
                if victim is None:
                    scheduled = False
                    break
                self._preempt(victim)
                preempted = True
                if victim is r:
                    scheduled = False
                    break
            if not scheduled:
                break
            items.append((r, num_new))
            budget -= num_new
            i += 1
        return budget, preempted

    def _admit(self, now: int, budget: int, running_count: int, target: list, items: list) -> bool:
        """Phase 2: FCFS admission; returns True if no waiting request can be admitted until a finish."""
        kv = self.kv
        threshold = self.threshold
        waiting = self.waiting
        max_seqs = self.max_seqs
        cutoff = self.cutoff
        chunked = self.chunked
        reserve_full = self.reserve_full
        while True:
            if not waiting:
                return running_count >= max_seqs  # otherwise an arrival could be admitted
            if budget <= 0 or running_count >= max_seqs:
                return True
            r = waiting.head()
            if r.arrival > cutoff and r.first_scheduled < 0:
                return False  # arrived while the previous step was being planned: next time
            hits, hit_tokens = kv.lookup(r) if r.num_computed == 0 else ((), 0)
            computed = r.num_computed + hit_tokens
            num_new = r.num_tokens - computed
            if 0 < threshold < num_new:
                num_new = threshold
            if not chunked and num_new > budget:
                return True
            if num_new > budget:
                num_new = budget
            if reserve_full and not kv.can_fit(r.num_tokens - hit_tokens):
                return True
            if not kv.allocate(r, computed + num_new, hits):
                return True  # free blocks only shrink while nothing finishes
            waiting.popleft()
            r.state = RUNNING
            r.admit_seq = self.admissions
            self.admissions += 1
            target.append(r)
            running_count += 1
            if hit_tokens:
                r.num_computed = computed
                r.prefix_hit_tokens += hit_tokens
                self.stats.prefix_hit_tokens += hit_tokens
            if r.first_scheduled < 0:
                r.first_scheduled = now
            kv.record_lookup(r.num_tokens, hit_tokens)
            items.append((r, num_new))
            budget -= num_new

    def _explicit_shape(self, items: list, prefill: list) -> tuple[int, int, int, int, int]:
        """Advance explicit requests (vLLM does it at schedule time) and describe them: decodes, their
        context sum, maximum and sum of squares, and the sequences sampling a token."""
        pp = self.pp > 1
        n_dec = ctx_sum = ctx_max = ctx_sq = sampled = 0
        for r, num_new in items:
            c = r.num_computed
            r.num_computed = c + num_new
            r.inflight = pp
            if num_new == 1 and c + 1 == r.num_tokens:
                n_dec += 1
                c += 1
                ctx_sum += c
                ctx_sq += c * c
                if c > ctx_max:
                    ctx_max = c
                sampled += 1
            else:
                prefill.append((num_new, c))
                if r.num_computed >= r.num_tokens:
                    sampled += 1
        return n_dec, ctx_sum, ctx_max, ctx_sq, sampled

    def _finalize(self, batch: Batch, now: int, shape: BatchShape | None, size: int) -> Batch:
        iter_ends = self.stats.iter_ends
        batch.end = batch.ends[-1]
        if batch.end > MAX_TIME_NS:
            raise InputError(f"a step would end {batch.end / 1e9:.3g} s into the simulation, past any --max-sim-time: "
                             "the hardware is too slow for the model; check mem_bw, link_bw and the hardware entry")
        self.last_start = batch.ends[-2] if len(batch.ends) > 1 else now
        self.last_end = batch.end
        batch.first_iter = len(iter_ends)
        iter_ends.extend(batch.ends)
        if self.pp > 1 and shape is not None:
            self.stage_free_at = now + self.model.stage_interval_ns(shape)
        else:
            self.stage_free_at = batch.end
        self.inflight.append(batch)
        self.stats.last_batch_size = size
        return batch

    # ------------------------------------------------------------------ reference step
    def _schedule_reference(self, now: int) -> Batch | None:
        """One step, every request explicit (``cutoff`` set by ``schedule``)."""
        items: list = []
        budget, preempted = self._run_explicit(self.running, self.max_tokens, items)
        if not preempted:
            self._admit(now, budget, len(self.running), self.running, items)
            if not items and self.cutoff < now:  # nothing left to run: the idle engine plans at once
                self.cutoff = now
                self._admit(now, budget, len(self.running), self.running, items)
        if not items:
            return None
        prefill: list = []
        n_dec, ctx_sum, ctx_max, ctx_sq, sampled = self._explicit_shape(items, prefill)
        shape = BatchShape(tuple(prefill), n_dec, ctx_sum, ctx_max, sampled, ctx_sq)
        if prefill:
            dt = self.model.iteration_ns(shape)
        else:
            dt = self.model.decode_iteration_ns(n_dec, ctx_sum, ctx_max, ctx_sq)
        batch = Batch(items, now)
        batch.reference = True
        batch.ends.append(now + dt)
        return self._finalize(batch, now, shape, len(items))

    # ------------------------------------------------------------------ fast step
    def schedule(self, now: int, next_arrival: float, next_log: float) -> Batch | None:
        """The next step at ``now`` (None: nothing can run); identical cohort-only steps up to
        ``next_arrival`` / ``next_log`` may be folded into one batch."""
        # the arrivals the scheduler sees: under async scheduling, those before the previous step
        # began (when this step was planned) if the engine was busy; every arrival so far if idle
        self.cutoff = self.last_start if self.async_lag and now == self.last_end else now
        if not self.fast:
            return self._schedule_reference(now)
        s = len(self.stats.iter_ends)
        cohort = self.cohort
        n = cohort.n
        prefillers = self.prefillers
        if n and (n > self.max_tokens or (prefillers and cohort.newest_seq() > prefillers[0].admit_seq)
                  or not cohort.reserve_blocks(s, self.kv)):
            self._dissolve(s)
            return self._schedule_reference(now)
        items: list = []
        budget = self.max_tokens - n
        preempted = False
        if prefillers:
            budget, preempted = self._run_explicit(prefillers, budget, items)
        stable = False
        if not preempted:
            stable = self._admit(now, budget, n + len(prefillers), prefillers, items)
            if not items and not n and self.cutoff < now:  # nothing left to run: the idle engine plans at once
                self.cutoff = now
                stable = self._admit(now, budget, len(prefillers), prefillers, items)
        if not items and not n:
            return None
        prefill: list = []
        if items:
            e_dec, e_sum, e_max, e_sq, e_sampled = self._explicit_shape(items, prefill)
        else:
            e_dec = e_sum = e_max = e_sq = e_sampled = 0
        ctx_sum = cohort.off_sum + n * (s + 1) + e_sum
        ctx_sq = cohort.ctx_sq_sum(s) + e_sq
        ctx_max = cohort.ctx_max(s) if n and cohort.track_ctx_max else 0
        if e_max > ctx_max:
            ctx_max = e_max
        n_total = n + e_dec
        batch = Batch(items, now)
        batch.n_cohort = n
        if prefill:
            shape = BatchShape(tuple(prefill), n_total, ctx_sum, ctx_max, n + e_sampled, ctx_sq)
            batch.ends.append(now + self.model.iteration_ns(shape))
        else:
            shape = None
            end = now + self.model.decode_iteration_ns(n_total, ctx_sum, ctx_max, ctx_sq)
            batch.ends.append(end)
            if not items and stable and end < next_log:
                if not (n < self.max_seqs and not self.waiting and end >= next_arrival):
                    self._extend(batch, s, n, ctx_sum, ctx_max, ctx_sq, next_arrival, next_log)
        return self._finalize(batch, now, shape, n + len(items))

    def _extend(self, batch: Batch, s: int, n: int, ctx_sum: int, ctx_max: int, ctx_sq: int,
                next_arrival: float, next_log: float) -> None:
        """Run identical cohort-only steps after step ``s`` until the next event."""
        cohort = self.cohort
        k_max = cohort.next_finish_step() - s + 1  # the first finisher's step ends the run
        k_max = int(min(k_max, MAX_SPAN))
        kv = self.kv
        if k_max > 1 and cohort.blocks_for_steps(s, k_max - 1) > kv.num_free:
            lo, hi = 0, k_max - 1  # largest number of extra steps whose blocks fit
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if cohort.blocks_for_steps(s, mid) <= kv.num_free:
                    lo = mid
                else:
                    hi = mid
            k_max = lo + 1
        if k_max <= 1:
            return
        bound = next_log
        if n < self.max_seqs and not self.waiting and next_arrival < bound:
            bound = next_arrival
        ends = batch.ends
        self.model.decode_steps(n, ctx_sum, ctx_max, ends[0], k_max - 1, bound, ends, ctx_sq)
        batch.span = len(ends)
        if self.counting:
            taken = cohort.blocks_for_steps(s, batch.span - 1)
            if taken:
                kv.take(taken)  # fits: k_max was bounded by the free blocks
        else:  # the steps' blocks, step by step (each fits, as above): opened, filled, registered
            for step in range(s + 1, s + batch.span):
                cohort.reserve_blocks(step, kv)

    def retime(self, batch: Batch, end: int) -> None:
        """Set the end of the one step just planned (a DP group times its members' steps together:
        :mod:`tpsim.sim.lockstep`)."""
        batch.ends[-1] = batch.end = end
        self.stats.iter_ends[-1] = end
        self.last_end = self.stage_free_at = end

    # ------------------------------------------------------------------ completion
    def complete(self, batch: Batch) -> tuple[list[Request], int, int]:
        """Apply a finished step (or run of steps): sample tokens, finish requests, free their KV.

        Returns the finished requests, the tokens sampled per step, and the
        prompt tokens credited (whole prompts of requests sampling their first
        token, as vLLM's prompt-throughput statistic counts them).
        """
        self.inflight.remove(batch)
        k = batch.span
        it0 = batch.first_iter
        last = it0 + k - 1
        first_end = batch.ends[0]
        sampled = batch.n_cohort
        prompt_credit = 0
        finished = self.cohort.finish_through(last) if sampled else []
        for r in finished:
            r.finish = batch.ends[-1]
            r.state = FINISHED
        rejoin = []
        fast = self.fast and not batch.reference
        for r, _ in batch.items:
            r.inflight = False
            if r.num_computed < r.num_tokens:
                continue  # an intermediate prefill chunk samples nothing
            sampled += 1
            if r.generated == 0:
                r.first_token = first_end
                prompt_credit += r.prompt
            r.generated += k
            r.num_tokens += k
            r.emit(it0, k)
            if r.generated >= r.output:
                r.finish = batch.ends[-1]
                r.state = FINISHED
                finished.append(r)
            elif fast:
                rejoin.append(r)
        if finished:
            self._retire(finished, fast)
        if rejoin:
            nxt = last + 1
            prefillers = self.prefillers
            join = self.cohort.join
            for r in rejoin:
                prefillers.remove(r)
                join(r, nxt)
        if batch.reference and self.fast:
            self._rebuild()
        stats = self.stats
        stats.tokens_generated += sampled * k
        stats.prompt_tokens_done += prompt_credit
        return finished, sampled, prompt_credit

    def _retire(self, finished: list[Request], fast: bool) -> None:
        """Drop finished requests from the running lists, free their KV, count them; ``finished`` is left in
        admission order (the order of their rows)."""
        if fast:
            prefillers = self.prefillers
            for r in finished:
                if r in prefillers:
                    prefillers.remove(r)
        else:
            running = self.running
            for r in finished:
                running.remove(r)
        kv = self.kv
        for r in finished:
            kv.free(r)
        finished.sort(key=BY_ADMISSION)
        self.stats.finished += len(finished)
