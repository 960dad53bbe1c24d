"""One serving instance: vLLM V1's scheduler over a paged KV cache, timed by a latency model.

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
* the *fast* path keeps requests that are simply decoding in a "decode
  cohort": each one's counters are derived from the step index
  (``num_computed = offset + step``), the batch's context sum is an aggregate,
  and per-request work happens only at events (a request finishing, needing a
  new KV block, a block filling up).  Runs of steps with no event are computed
  in one go.  Whenever a step does not meet the fast path's preconditions
  (decodes that would not all fit the budget, KV blocks running out, a decode
  admitted after a still-prefilling request), the cohort is materialised and
  the reference path runs that step.

Both paths produce identical results; the tests run every scenario both ways.
"""

from __future__ import annotations

import heapq
from collections import deque

from tpsim.config.engine import EngineConfig
from tpsim.memory import MemoryPlan
from tpsim.perf.base import BatchShape, LatencyModel
from tpsim.sim.kv_cache import BlockCounter, PrefixCachingPool
from tpsim.sim.request import FINISHED, RUNNING, WAITING, Request

MAX_SPAN = 1 << 16
_ALLOC, _REGISTER = 1, 0  # caching-pool cohort events (registration first at equal steps)


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


class Instance:
    def __init__(self, index: int, engine: EngineConfig, memory: MemoryPlan, model: LatencyModel,
                 model_name: str, pp: int = 1, fast_forward: bool = True, trace_has_token_ids: bool = True):
        self.index = index
        self.engine = engine
        self.memory = memory
        self.model = model
        self.model_name = model_name
        self.pp = pp
        self.fast = fast_forward and pp == 1
        # prefix caching with no token ids anywhere can never hit: a counter is exact and O(1)
        caching = engine.enable_prefix_caching and trace_has_token_ids
        self.kv = (PrefixCachingPool if caching else BlockCounter)(memory.num_blocks, engine.block_size)
        self.counting = not caching
        self.block_size = engine.block_size
        self.max_seqs = engine.max_num_seqs
        self.max_tokens = engine.max_num_batched_tokens
        self.threshold = engine.long_prefill_token_threshold
        self.chunked = engine.enable_chunked_prefill
        self.reserve_full = engine.reserve_full_isl
        self.needs_ctx_max = getattr(model, "needs_ctx_max", False)
        # async scheduling: step N+1 is planned while step N runs, so a request arriving
        # during step N is first seen when step N+2 is planned
        self.async_lag = engine.async_scheduling and pp == 1
        self.last_start = -1  # start and end of the most recent step
        self.last_end = -1
        self.cutoff = 0  # arrivals after this are not yet visible to the scheduler
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []  # reference path: every running request, admission order
        self.inflight: list[Batch] = []
        self.stage_free_at = 0
        self.iter_ends: list[int] = []  # end time of every step, by step index
        self.finished: list[Request] = []
        self.admissions = 0
        # fast path: decode cohort + explicit prefilling requests
        self.prefillers: list[Request] = []
        self.n_dec = 0
        self.off_sum = 0
        self.bucket = [0] * self.block_size  # counting pool: cohort requests by offset mod block size
        self.finish_heap: list = []  # (last step, admit_seq, epoch, request)
        self.event_heap: list = []  # caching pool: (step, kind, admit_seq, epoch, request)
        self.seq_heap: list = []  # (-admit_seq, epoch, request): newest cohort member
        self.ctx_heap: list = []  # (-offset, admit_seq, epoch, request): longest context (if the model asks)
        # statistics
        self.preemptions = 0
        self.recomputed_tokens = 0
        self.prefix_hit_tokens = 0
        self.prompt_tokens_done = 0
        self.tokens_generated = 0
        self.last_batch_size = 0

    # ------------------------------------------------------------------ queue and load
    def add(self, req: Request) -> None:
        req.instance = self.index
        req.state = WAITING
        self.waiting.append(req)

    @property
    def num_running(self) -> int:
        return len(self.running) + self.n_dec + len(self.prefillers)

    def load(self) -> float:
        """vLLM's load score for routing: queued requests weigh four times running ones."""
        return (4 * len(self.waiting) + self.num_running) / self.max_seqs

    def has_work(self) -> bool:
        return bool(self.waiting or self.running or self.n_dec or self.prefillers)

    def kv_blocks_needed(self, req: Request) -> int:
        return -(-req.max_kv_tokens // self.block_size)

    # ------------------------------------------------------------------ cohort
    def _join(self, r: Request, s: int) -> None:
        """``r`` decodes one token per step from step ``s`` on."""
        r.cohort = True
        r.epoch += 1
        r.base_step = s
        r.offset = off = r.num_computed - s
        r.gen_base = r.generated
        self.n_dec += 1
        self.off_sum += off
        ep = r.epoch
        seq = r.admit_seq
        heapq.heappush(self.finish_heap, (s + r.output - r.generated - 1, seq, ep, r))
        heapq.heappush(self.seq_heap, (-seq, ep, r))
        if self.needs_ctx_max:
            heapq.heappush(self.ctx_heap, (-off, seq, ep, r))
        if self.counting:
            self.bucket[off % self.block_size] += 1
        else:
            self._push_block_events(r, s)

    def _push_block_events(self, r: Request, s: int) -> None:
        """Next block allocation (and, with token ids, the step the last block fills)."""
        cap = len(r.blocks) * self.block_size
        alloc_step = cap - r.offset  # first step whose token does not fit
        heapq.heappush(self.event_heap, (alloc_step, _ALLOC, r.admit_seq, r.epoch, r))
        if r.token_ids is not None and alloc_step - 1 >= s and cap > r.num_registered * self.block_size:
            heapq.heappush(self.event_heap, (alloc_step - 1, _REGISTER, r.admit_seq, r.epoch, r))

    def _materialize(self, r: Request, s: int) -> None:
        """Make ``r``'s counters explicit as of the start of step ``s`` and leave the cohort."""
        steps = s - r.base_step
        r.num_computed = r.offset + s
        r.generated = r.gen_base + steps
        r.num_tokens = r.num_computed + 1
        if steps > 0:
            r.emit(r.base_step, steps)
        if self.counting:
            r.nblocks = -(-r.num_computed // self.block_size)
            self.bucket[r.offset % self.block_size] -= 1
        r.cohort = False
        self.n_dec -= 1
        self.off_sum -= r.offset

    def _cohort_members(self) -> list[Request]:
        live = {}
        for _, ep, r in self.seq_heap:
            if r.cohort and r.epoch == ep:
                live[id(r)] = r
        return sorted(live.values(), key=lambda r: r.admit_seq)

    def _dissolve(self, s: int) -> None:
        """Fallback: put everything back into the explicit running list (admission order)."""
        members = self._cohort_members()
        for r in members:
            self._materialize(r, s)
        self.running = sorted(members + self.prefillers, key=lambda r: r.admit_seq)
        self.prefillers = []
        self.finish_heap.clear()
        self.event_heap.clear()
        self.seq_heap.clear()
        self.ctx_heap.clear()

    def _rebuild(self) -> None:
        """After a reference step: steady decoders rejoin the cohort, the rest stay explicit."""
        s = len(self.iter_ends)
        for r in self.running:
            if r.num_computed + 1 == r.num_tokens and 0 < r.generated < r.output:
                self._join(r, s)
            else:
                self.prefillers.append(r)
        self.running = []

    def _newest_cohort_seq(self) -> int:
        h = self.seq_heap
        while h:
            _, ep, r = h[0]
            if r.cohort and r.epoch == ep:
                return r.admit_seq
            heapq.heappop(h)
        return -1

    def _next_finish_step(self) -> float:
        h = self.finish_heap
        while h:
            step, _, ep, r = h[0]
            if r.cohort and r.epoch == ep:
                return step
            heapq.heappop(h)
        return float("inf")

    def _next_event_step(self) -> float:
        h = self.event_heap
        while h:
            step, _, _, ep, r = h[0]
            if r.cohort and r.epoch == ep:
                return step
            heapq.heappop(h)
        return float("inf")

    def _ctx_max(self, s: int) -> int:
        if not self.needs_ctx_max or not self.n_dec:
            return 0
        h = self.ctx_heap
        while h:
            negoff, _, ep, r = h[0]
            if r.cohort and r.epoch == ep:
                return -negoff + s + 1
            heapq.heappop(h)
        return 0

    # ------------------------------------------------------------------ shared phases
    def _preempt(self, victim: Request) -> None:
        self.kv.free(victim)
        self.recomputed_tokens += victim.num_computed
        victim.num_computed = 0
        victim.state = WAITING
        victim.preemptions += 1
        self.preemptions += 1
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
        while True:
            if not waiting:
                return running_count >= self.max_seqs  # otherwise an arrival could be admitted
            if budget <= 0 or running_count >= self.max_seqs:
                return True
            r = waiting[0]
            if r.arrival > self.cutoff and r.first_scheduled < 0:
                return False  # arrived while the previous step was being planned: next time
            hits, hit_tokens = kv.lookup(r) if r.num_computed == 0 else ((), 0)
            computed = r.num_computed + hit_tokens
            num_new = r.num_tokens - computed
            if 0 < threshold < num_new:
                num_new = threshold
            if not self.chunked and num_new > budget:
                return True
            if num_new > budget:
                num_new = budget
            if self.reserve_full and not kv.can_fit(r.num_tokens - hit_tokens):
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
                self.prefix_hit_tokens += hit_tokens
            if r.first_scheduled < 0:
                r.first_scheduled = now
            kv.queried_tokens += r.num_tokens
            kv.hit_tokens += hit_tokens
            items.append((r, num_new))
            budget -= num_new

    def _explicit_shape(self, items: list, prefill: list) -> tuple[int, int, int, int]:
        """Advance explicit requests (vLLM does it at schedule time) and describe them."""
        kv = self.kv
        caching = kv.caching
        pp = self.pp > 1
        n_dec = ctx_sum = ctx_max = sampled = 0
        for r, num_new in items:
            c = r.num_computed
            r.num_computed = c + num_new
            r.inflight = pp
            if num_new == 1 and c + 1 == r.num_tokens:
                n_dec += 1
                ctx_sum += c + 1
                if c + 1 > ctx_max:
                    ctx_max = c + 1
                sampled += 1
            else:
                prefill.append((num_new, c))
                if r.num_computed >= r.num_tokens:
                    sampled += 1
            if caching:
                kv.register(r)
        return n_dec, ctx_sum, ctx_max, sampled

    def _finalize(self, batch: Batch, now: int, shape: BatchShape | None, size: int) -> Batch:
        batch.end = batch.ends[-1]
        self.last_start = batch.ends[-2] if len(batch.ends) > 1 else now
        self.last_end = batch.end
        batch.first_iter = len(self.iter_ends)
        self.iter_ends.extend(batch.ends)
        if self.pp > 1 and shape is not None:
            self.stage_free_at = now + self.model.stage_interval_ns(shape)
        else:
            self.stage_free_at = batch.end
        self.inflight.append(batch)
        self.last_batch_size = size
        return batch

    # ------------------------------------------------------------------ reference step
    def _set_cutoff(self, now: int) -> None:
        """Arrivals the scheduler sees: under async scheduling, those before the previous step began
        (when this step was planned) if the engine was busy; every arrival so far if it was idle."""
        self.cutoff = self.last_start if self.async_lag and now == self.last_end else now

    def _schedule_reference(self, now: int) -> Batch | None:
        self._set_cutoff(now)
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
        n_dec, ctx_sum, ctx_max, sampled = self._explicit_shape(items, prefill)
        shape = BatchShape(tuple(prefill), n_dec, ctx_sum, ctx_max, sampled)
        if prefill:
            dt = self.model.iteration_ns(shape)
        else:
            dt = self.model.decode_iteration_ns(n_dec, ctx_sum, ctx_max)
        batch = Batch(items, now)
        batch.reference = True
        batch.ends.append(now + dt)
        return self._finalize(batch, now, shape, len(items))

    # ------------------------------------------------------------------ fast step
    def schedule(self, now: int, next_arrival: float, next_log: float) -> Batch | None:
        if not self.fast:
            return self._schedule_reference(now)
        self._set_cutoff(now)
        s = len(self.iter_ends)
        n = self.n_dec
        kv = self.kv
        prefillers = self.prefillers
        if n and (n > self.max_tokens or (prefillers and self._newest_cohort_seq() > prefillers[0].admit_seq)):
            self._dissolve(s)
            return self._schedule_reference(now)
        # the cohort's KV blocks for this step
        if n:
            if self.counting:
                need = self.bucket[-s % self.block_size]
                if need > kv.num_free:
                    self._dissolve(s)
                    return self._schedule_reference(now)
                kv.num_free -= need
                used = kv.num_blocks - kv.num_free
                if used > kv.peak_used:
                    kv.peak_used = used
            elif self._next_event_step() <= s:
                if not self._cohort_block_events(s):
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
        e_dec, e_sum, e_max, e_sampled = self._explicit_shape(items, prefill)
        c_sum = self.off_sum + n * (s + 1)
        c_max = self._ctx_max(s)
        n_total = n + e_dec
        ctx_sum = c_sum + e_sum
        ctx_max = c_max if c_max > e_max else e_max
        model = self.model
        batch = Batch(items, now)
        batch.n_cohort = n
        if prefill:
            shape = BatchShape(tuple(prefill), n_total, ctx_sum, ctx_max, n + e_sampled)
            end = now + model.iteration_ns(shape)
            batch.ends.append(end)
        else:
            shape = None
            end = now + model.decode_iteration_ns(n_total, ctx_sum, ctx_max)
            batch.ends.append(end)
            if not items and stable and end < next_log:
                if not (n < self.max_seqs and not self.waiting and end >= next_arrival):
                    self._extend(batch, s, n, ctx_sum, ctx_max, next_arrival, next_log)
        return self._finalize(batch, now, shape, n + len(items))

    def _cohort_block_events(self, s: int) -> bool:
        """Caching pool: allocate the blocks cohort members need at step ``s``; register full ones."""
        h = self.event_heap
        due = []
        while h and h[0][0] <= s:
            ev = heapq.heappop(h)
            r = ev[4]
            if r.cohort and r.epoch == ev[3]:
                due.append(ev)
        allocs = [ev[4] for ev in due if ev[1] == _ALLOC]
        if len(allocs) > self.kv.num_free:
            return False
        kv = self.kv
        for ev in due:
            r = ev[4]
            if ev[1] == _ALLOC:
                kv.allocate(r, r.offset + s + 1)
                self._push_block_events(r, s)
        for ev in due:
            if ev[1] == _REGISTER:
                r = ev[4]
                r.num_computed = r.offset + s + 1  # tokens computed once this step runs
                kv.register(r)
        return True

    def _blocks_for_steps(self, s: int, j: int) -> int:
        """Counting pool: blocks the cohort needs for steps s+1 .. s+j (a full cycle of B steps needs n)."""
        bs = self.block_size
        bucket = self.bucket
        total = (j // bs) * self.n_dec
        for i in range(j - j % bs + 1, j + 1):
            total += bucket[-(s + i) % bs]
        return total

    def _extend(self, batch: Batch, s: int, n: int, ctx_sum: int, ctx_max: int,
                next_arrival: float, next_log: float) -> None:
        """Run identical cohort-only steps after step ``s`` until the next event."""
        k_max = self._next_finish_step() - s + 1  # the first finisher's step ends the run
        if not self.counting:
            k_max = min(k_max, self._next_event_step() - s)
        k_max = int(min(k_max, MAX_SPAN))
        kv = self.kv
        if self.counting and k_max > 1 and self._blocks_for_steps(s, k_max - 1) > kv.num_free:
            lo, hi = 0, k_max - 1  # largest number of extra steps whose blocks fit
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if self._blocks_for_steps(s, mid) <= kv.num_free:
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
        self.model.decode_steps(n, ctx_sum, ctx_max, ends[0], k_max - 1, bound, ends)
        batch.span = len(ends)
        if self.counting:
            taken = self._blocks_for_steps(s, batch.span - 1)
            if taken:
                kv.num_free -= taken
                used = kv.num_blocks - kv.num_free
                if used > kv.peak_used:
                    kv.peak_used = used

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
        finished: list[Request] = []
        sampled = batch.n_cohort
        prompt_credit = 0
        if batch.n_cohort:
            h = self.finish_heap
            while h and h[0][0] <= last:
                _, _, ep, r = heapq.heappop(h)
                if r.cohort and r.epoch == ep:
                    self._materialize(r, last + 1)
                    r.finish = batch.ends[-1]
                    r.state = FINISHED
                    finished.append(r)
        rejoin = []
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
            elif self.fast and not batch.reference:
                rejoin.append(r)
        if finished:
            if batch.reference or not self.fast:
                running = self.running
                for r in finished:
                    running.remove(r)
            else:
                prefillers = self.prefillers
                for r in finished:
                    if r in prefillers:
                        prefillers.remove(r)
            kv = self.kv
            for r in finished:
                kv.free(r)
            finished.sort(key=lambda r: r.admit_seq)
            self.finished.extend(finished)
        if rejoin:
            nxt = last + 1
            prefillers = self.prefillers
            for r in rejoin:
                prefillers.remove(r)
                self._join(r, nxt)
        if batch.reference and self.fast:
            self._rebuild()
        self.tokens_generated += sampled * k
        self.prompt_tokens_done += prompt_credit
        return finished, sampled, prompt_credit
