"""The discrete-event loop: request arrivals and iteration completions, in time order.

At each event time ``now`` the loop (1) completes every batch that ends at
``now``, (2) routes every request that has arrived by ``now``, (3) lets every
free instance with work schedule its next step.  Completions come before
arrivals at equal times, and a step scheduled at ``now`` sees every request
that arrived at or before ``now`` — exactly as an engine that finishes a step
and then polls its queue.

The DP ranks of an MoE group (:class:`~tpsim.sim.lockstep.LockstepGroup`) step together: an event of
one of them is an event of all, and their steps start and end at once.  Requests reach such a group
through vLLM's DP load balancer (:class:`~tpsim.sim.router.DPBalancer`), whose view of the ranks'
queues is refreshed every 100 ms of simulated time; the cluster-level router then picks among
groups and lone instances.
"""

from __future__ import annotations

import heapq

import msgspec

from tpsim.errors import InputError
from tpsim.sim.arrivals import Arrivals, request_from_trace
from tpsim.sim.instance import Instance
from tpsim.sim.request import Request
from tpsim.sim.router import STATS_INTERVAL_NS, DPBalancer, Router

INF = float("inf")
#: rejections kept with their reason (the summary lists them); later ones are only counted
MAX_LISTED_REJECTIONS = 10_000


class Rejection(msgspec.Struct):
    request_id: int
    reason: str


class SimResult(msgspec.Struct):
    instances: list[Instance]
    rejected: list[Rejection]  # the first MAX_LISTED_REJECTIONS
    num_rejected: int
    end_ns: int
    interval_ns: int
    prompt_bins: dict = msgspec.field(default_factory=dict)  # interval index -> prompt tokens credited
    gen_bins: dict = msgspec.field(default_factory=dict)  # interval index -> tokens sampled
    occupancy_ns: int = 0  # integral of the number of requests in the system over time
    groups: list = msgspec.field(default_factory=list)  # the lockstep DP groups (tpsim.sim.lockstep.LockstepGroup)

    @property
    def iterations(self) -> int:
        return sum(len(inst.iter_ends) for inst in self.instances)


def _fmt_rate(x: float) -> str:
    if x >= 1e6:
        return f"{x / 1e6:.1f}M"
    if x >= 1e3:
        return f"{x / 1e3:.1f}k"
    return f"{x:.0f}"


class Simulation:
    def __init__(self, instances: list[Instance], router: Router, arrivals: Arrivals, interval_ns: int, log=None,
                 bytes_per_block: list[int] | None = None, weights_bytes: list[int] | None = None, debug=None,
                 horizon_ns: float = INF, groups=(), on_finish=None):
        """``groups``: the lockstep DP groups (:class:`~tpsim.sim.lockstep.LockstepGroup`); ``router`` then
        routes among groups and lone instances (as many endpoints as it was built for).  ``on_finish(instance,
        requests)`` receives the requests each completed step finished (admission order), as they finish:
        nothing here keeps them."""
        self.instances = instances
        self.groups = list(groups)
        self.group_of: list[int | None] | None = None  # instance -> its lockstep group (None: no groups)
        self.balancers: list[DPBalancer] = []
        self.endpoint_of: list[int] = []  # instance -> routing endpoint (a group's balancer or the instance)
        self.endpoints: list = []
        if self.groups:
            self._set_up_groups()
        self.router = router
        self.arrivals = arrivals
        self.on_finish = on_finish
        self.interval = interval_ns  # 0: no throughput lines and no timeline bins
        self.horizon_ns = horizon_ns
        self.log = log
        self.debug = debug  # per-step trace (--log-level DEBUG)
        self.bytes_per_block = bytes_per_block or [0] * len(instances)
        self.weights_bytes = weights_bytes or [0] * len(instances)
        self.released: list[tuple[int, int, Request]] = []  # heap of session follow-ups
        self.pending_followups = 0  # session follow-ups of arrived sessions, neither released nor aborted
        self.rejected: list[Rejection] = []
        self.num_rejected = 0
        self.end_ns = 0  # the last finish so far
        self.prompt_bins: dict[int, int] = {}
        self.gen_bins: dict[int, int] = {}
        n = len(instances)
        self.last_line = [0] * n
        self.next_log = [interval_ns or INF] * n
        self.line_prompt = [0] * n
        self.line_gen = [0] * n
        self.in_system = 0  # routed, not yet finished
        self.occupancy_ns = 0  # integral over time of in_system (Little's law: = sum of latencies)

    def _set_up_groups(self) -> None:
        self.group_of = [None] * len(self.instances)
        seen: dict[int, int] = {}
        for gi, g in enumerate(self.groups):
            for idx in g.indices:
                self.group_of[idx] = gi
        for inst in self.instances:
            gi = self.group_of[inst.index]
            if gi is None:
                self.endpoint_of.append(len(self.endpoints))
                self.endpoints.append(inst)
            else:
                if gi not in seen:
                    seen[gi] = len(self.endpoints)
                    balancer = DPBalancer(self.groups[gi].members)
                    self.balancers.append(balancer)
                    self.endpoints.append(balancer)
                self.endpoint_of.append(seen[gi])

    # ------------------------------------------------------------------ helpers
    def _reject_reason(self, inst: Instance, req: Request) -> str | None:
        e = inst.engine
        total = req.prompt + req.output
        if total > e.max_model_len:
            return (f"context {total} tokens (input {req.prompt} + output {req.output}) "
                    f"exceeds max_model_len {e.max_model_len}")
        need = inst.kv_blocks_needed(req)
        if need > inst.kv.num_blocks:
            return (f"needs {need} KV blocks for {req.max_kv_tokens} tokens "
                    f"but the KV cache holds {inst.kv.num_blocks} blocks")
        if not e.enable_chunked_prefill and req.max_kv_tokens > e.max_num_batched_tokens:
            return (f"sequence of up to {req.max_kv_tokens} tokens exceeds max_num_batched_tokens "
                    f"{e.max_num_batched_tokens} with chunked prefill disabled")
        return None

    def _route(self, req: Request) -> int | None:
        candidates = []
        reason = None
        for inst in self.instances:
            why = self._reject_reason(inst, req)
            if why is None:
                candidates.append(inst.index)
            elif reason is None:
                reason = why
        if not candidates:
            self._reject(req, reason)
            return None
        if self.group_of is not None:
            idx = self._route_to_endpoint(candidates)
        else:
            idx = candidates[0] if len(candidates) == 1 else self.router.pick(self.instances, candidates)
        self.instances[idx].add(req)
        return idx

    def _route_to_endpoint(self, candidates: list[int]) -> int:
        """With DP groups: the cluster router picks a group or a lone instance, a group's balancer its rank."""
        endpoint_of = self.endpoint_of
        eps: list[int] = []
        for idx in candidates:
            if endpoint_of[idx] not in eps:
                eps.append(endpoint_of[idx])
        ep = eps[0] if len(eps) == 1 else self.router.pick(self.endpoints, eps)
        target = self.endpoints[ep]
        if isinstance(target, DPBalancer):
            return target.pick(set(candidates))
        return target.index

    def _reject(self, req: Request, reason: str) -> None:
        self._record_rejection(req.rid, reason)
        follow = req.trace.next_in_session if req.trace is not None else None
        while follow is not None:  # the rest of an agentic session never starts
            self.pending_followups -= 1
            self._record_rejection(follow.request_id, f"session aborted: request {req.rid} was rejected")
            follow = follow.next_in_session

    def _record_rejection(self, rid: int, reason: str) -> None:
        self.num_rejected += 1
        if len(self.rejected) < MAX_LISTED_REJECTIONS:
            self.rejected.append(Rejection(rid, reason))

    def _credit(self, inst: Instance, batch, sampled: int, prompt: int) -> None:
        """Throughput statistics: tokens by interval and for the next log line."""
        interval = self.interval
        if not interval:
            return
        ends = batch.ends
        gen_bins = self.gen_bins
        if sampled:
            k = len(ends)
            if k > 1:  # all but the last step of a span end inside one interval
                b = ends[0] // interval
                gen_bins[b] = gen_bins.get(b, 0) + sampled * (k - 1)
            b = ends[-1] // interval
            gen_bins[b] = gen_bins.get(b, 0) + sampled
            self.line_gen[inst.index] += sampled * k
        if prompt:
            b = ends[0] // interval
            self.prompt_bins[b] = self.prompt_bins.get(b, 0) + prompt
            self.line_prompt[inst.index] += prompt

    def _log_line(self, inst: Instance, now: int) -> None:
        """The throughput line of an instance (due: ``now`` reached its ``next_log``)."""
        i = inst.index
        if self.log is not None:
            dt = (now - self.last_line[i]) / 1e9
            dt = dt if dt > 0 else 1.0
            mem = self.weights_bytes[i] + inst.kv.num_used * self.bytes_per_block[i]
            prefix = f"[INFO] inst={i} " if len(self.instances) > 1 else "[INFO] "
            self.log(
                f"{prefix}step={len(inst.iter_ends)} batch={inst.last_batch_size} "
                f"prompt_t={_fmt_rate(self.line_prompt[i] / dt)} tok/s "
                f"decode_t={_fmt_rate(self.line_gen[i] / dt)} tok/s npu_mem={mem / 1e9:.1f} GB"
            )
        self.line_prompt[i] = 0
        self.line_gen[i] = 0
        self.last_line[i] = now
        self.next_log[i] = (now // self.interval + 1) * self.interval

    def _release_followups(self, finished: list[Request]) -> None:
        """The next request of each finished request's agentic session arrives after its tool call."""
        for r in finished:
            follow = r.trace.next_in_session if r.trace is not None else None
            if follow is not None:
                nxt = request_from_trace(follow)
                nxt.arrival = r.finish + r.trace.tool_duration_ns  # the tool call after request k
                self.pending_followups -= 1
                heapq.heappush(self.released, (nxt.arrival, nxt.rid, nxt))

    # ------------------------------------------------------------------ loop
    def _complete(self, inst: Instance, now: int) -> None:
        inflight = inst.inflight
        if len(inflight) == 1 and inflight[0].end <= now:  # one batch at a time: the common case, quickly
            done = inflight[:]
        else:
            done = [b for b in inflight if b.end <= now]
            if len(done) > 1:
                done.sort(key=lambda b: b.end)
        next_log = self.next_log
        for batch in done:
            finished, sampled, prompt = inst.complete(batch)
            self._credit(inst, batch, sampled, prompt)
            if finished:
                self.in_system -= len(finished)
                end = finished[0].finish  # one completion: every request it finished ends with its last step
                if end > self.end_ns:
                    self.end_ns = end
                if self.on_finish is not None:
                    self.on_finish(inst, finished)
                if self.pending_followups:
                    self._release_followups(finished)
            if now >= next_log[inst.index]:
                self._log_line(inst, now)

    def _arrive(self, now: int, dirty: list[int]) -> None:
        """Route every request arrived by ``now`` (trace order, then released follow-ups).  Instances
        that received one join ``dirty``."""
        arrivals = self.arrivals
        released = self.released
        while True:
            t = arrivals.next_time
            if t <= now and (not released or t <= released[0][0]):
                req = arrivals.pop()
                follow = req.trace.next_in_session if req.trace is not None else None
                while follow is not None:  # a session's first request: its follow-ups are now pending
                    self.pending_followups += 1
                    follow = follow.next_in_session
            elif released and released[0][0] <= now:
                req = heapq.heappop(released)[2]
            else:
                break
            idx = self._route(req)
            if idx is not None:
                self.in_system += 1
                if idx not in dirty:
                    dirty.append(idx)
        if len(dirty) > 1:
            dirty.sort()

    def _start_steps(self, now: int, dirty: list[int], events: list, seq: int) -> int:
        """Let every instance in ``dirty`` that is free and has work start its next step; returns
        the next event sequence number."""
        instances = self.instances
        released = self.released
        next_arrival = self.arrivals.next_time
        if released and released[0][0] < next_arrival:
            next_arrival = released[0][0]
        if self.pending_followups and len(instances) > 1 and events:
            # a completion elsewhere may release a session follow-up before then
            next_arrival = min(next_arrival, events[0][0])
        next_log = self.next_log
        group_of = self.group_of
        started: list[int] = []
        for idx in dirty:
            if group_of is not None and group_of[idx] is not None:
                if group_of[idx] not in started:
                    started.append(group_of[idx])
                    seq = self._start_group(self.groups[group_of[idx]], now, events, seq)
                continue
            inst = instances[idx]
            if len(inst.inflight) >= inst.pp or not inst.ready(now):  # the first test is a quick "busy"
                continue
            batch = inst.schedule(now, next_arrival, next_log[idx])
            if batch is None:
                if not inst.inflight and inst.waiting:
                    raise RuntimeError(
                        f"internal error: instance {idx} cannot schedule any of its {len(inst.waiting)} "
                        "waiting requests with nothing running; please report this with your inputs"
                    )
                continue
            heapq.heappush(events, (batch.end, seq, idx))
            seq += 1
            if self.debug is not None:
                self.debug(f"t={now} ns inst={idx} step={batch.first_iter} steps={batch.span} "
                           f"decoding={batch.n_cohort} explicit={[(r.rid, n) for r, n in batch.items]} "
                           f"end={batch.end} ns waiting={len(inst.waiting)} kv_free={inst.kv.num_free}")
            if inst.pp > 1 and inst.stage_free_at < batch.end:
                heapq.heappush(events, (inst.stage_free_at, seq, idx))
                seq += 1
        return seq

    def _start_group(self, group, now: int, events: list, seq: int) -> int:
        """A lockstep group's next step, if it is due (:meth:`LockstepGroup.due`)."""
        if not group.due(now):
            return seq
        end = group.step(now)
        if end is None:
            return seq
        heapq.heappush(events, (end, seq, group.indices[0]))
        if self.debug is not None:
            self.debug(f"t={now} ns DP group {group.indices} step {group.steps}: "
                       + "; ".join(f"inst={m.index} waiting={len(m.waiting)} running={m.num_running}"
                                   for m in group.members) + f"; end={end} ns")
        return seq + 1

    def _with_group_members(self, dirty: list[int]) -> list[int]:
        """An event of a lockstep group's rank is an event of every rank of the group."""
        out = list(dirty)
        for idx in dirty:
            gi = self.group_of[idx]
            if gi is not None:
                out += [m for m in self.groups[gi].indices if m not in out]
        out.sort()
        return out

    def run(self) -> SimResult:
        instances = self.instances
        events: list[tuple[int, int, int]] = []  # (time, sequence, instance): a batch ends, a stage frees
        seq = 0
        arrivals = self.arrivals
        released = self.released
        last = 0
        next_stats = 0  # when the DP balancers next see the ranks' queues
        while True:
            t_event = events[0][0] if events else INF
            t_arrival = arrivals.next_time
            if released and released[0][0] < t_arrival:
                t_arrival = released[0][0]
            now = t_event if t_event < t_arrival else t_arrival
            if now == INF:
                break
            if now > self.horizon_ns:
                raise InputError(f"the simulation passed --max-sim-time ({self.horizon_ns / 1e9:g} s of simulated "
                                 "time) before every request finished; raise --max-sim-time or shorten the trace")
            self.occupancy_ns += self.in_system * (now - last)  # time-integral of requests in the system
            last = now
            if self.balancers and now >= next_stats:  # the state since the last event: the queues at the tick
                for b in self.balancers:
                    b.refresh()
                next_stats = (now // STATS_INTERVAL_NS + 1) * STATS_INTERVAL_NS
            dirty: list[int] = []
            while events and events[0][0] == now:
                idx = heapq.heappop(events)[2]
                if idx not in dirty:
                    dirty.append(idx)
            if self.group_of is not None:
                dirty = self._with_group_members(dirty)
            elif len(dirty) > 1:
                dirty.sort()
            for idx in dirty:
                self._complete(instances[idx], now)
            if t_arrival <= now:
                self._arrive(now, dirty)
            if dirty:
                seq = self._start_steps(now, dirty, events, seq)
        return SimResult(instances, self.rejected, self.num_rejected, self.end_ns, self.interval, self.prompt_bins,
                         self.gen_bins, self.occupancy_ns, self.groups)
