"""One serving instance as the event loop, the router and the reports see it.

An instance is a model on ``tp_size x pp_size`` GPUs with its own KV cache: its identity
(index, model, engine settings, memory plan), its KV block pool, its statistics
(:mod:`tpsim.sim.stats`) and the scheduler that decides every step (:mod:`tpsim.sim.scheduler`,
vLLM V1's policy, with the decode cohort of :mod:`tpsim.sim.cohort` on its fast path).
"""

from __future__ import annotations

from operator import attrgetter

from tpsim.config.engine import EngineConfig
from tpsim.memory import MemoryPlan
from tpsim.perf.base import LatencyModel
from tpsim.sim.kv_cache import BlockCounter, PrefixCachingPool
from tpsim.sim.request import WAITING, Request
from tpsim.sim.scheduler import Scheduler
from tpsim.sim.stats import InstanceStats


def _view(path: str, doc: str) -> property:
    """A read-only attribute kept in one of the instance's parts (read by attrgetter: no Python frame)."""
    return property(attrgetter(path), doc=doc)


class Instance:
    """``schedule(now, next_arrival, next_log)``, ``complete(batch)`` and ``ready(now)`` are the
    scheduler's own methods, bound once here: the event loop calls them every step, and a
    forwarding method would add a call layer to the simulator's hottest path."""

    def __init__(self, index: int, engine: EngineConfig, memory: MemoryPlan, model: LatencyModel,
                 model_name: str, pp: int = 1, fast_forward: bool = True, trace_has_token_ids: bool = True,
                 lockstep: bool = False):
        """``lockstep``: a DP rank of an MoE group, whose steps its group times
        (:mod:`tpsim.sim.lockstep`); its scheduler plans with a :class:`~tpsim.sim.lockstep.PlannedStep`."""
        self.index = index
        self.engine = engine
        self.memory = memory
        self.model = model
        self.model_name = model_name
        self.pp = pp
        self.block_size = engine.block_size
        # prefix caching with no token ids anywhere can never hit: a counter is exact and O(1)
        caching = engine.enable_prefix_caching and trace_has_token_ids
        self.kv = (PrefixCachingPool if caching else BlockCounter)(memory.num_blocks, engine.block_size)
        self.stats = InstanceStats()
        planner = model
        if lockstep:
            from tpsim.sim.lockstep import PlannedStep

            planner = PlannedStep(model)
        self.scheduler = sched = Scheduler(engine, planner, pp, fast_forward and pp == 1, self.kv, self.stats)
        # the scheduler's queues, shared (it never rebinds them)
        self.waiting = sched.waiting
        self.waiting.instance = index
        self.inflight = sched.inflight
        # its hottest methods, bound once (see above)
        self.schedule = sched.schedule
        self.complete = sched.complete
        self.ready = sched.ready

    # ------------------------------------------------------------------ queue and load
    def add(self, req: Request) -> None:
        req.instance = self.index
        req.state = WAITING
        self.waiting.append(req)

    @property
    def num_running(self) -> int:
        s = self.scheduler
        return len(s.running) + s.cohort.n + len(s.prefillers)

    def load(self) -> float:
        """vLLM's load score for routing: queued requests weigh four times running ones."""
        return (4 * len(self.waiting) + self.num_running) / self.engine.max_num_seqs

    def has_work(self) -> bool:
        return self.scheduler.has_work()

    def kv_blocks_needed(self, req: Request) -> int:
        return -(-req.max_kv_tokens // self.block_size)

    # ------------------------------------------------------------------ read-only views of its parts
    stage_free_at = _view("scheduler.stage_free_at", "When the first pipeline stage can take the next step.")
    running = _view("scheduler.running", "Reference path: the running requests, admission order.")
    prefillers = _view("scheduler.prefillers", "Fast path: the running requests outside the decode cohort.")
    n_dec = _view("scheduler.cohort.n", "Requests in the decode cohort.")
    iter_ends = _view("stats.iter_ends", "End time (ns) of every step, by step index.")
    preemptions = _view("stats.preemptions", "Requests sent back to the queue for lack of KV blocks.")
    recomputed_tokens = _view("stats.recomputed_tokens", "Computed tokens the preemptions threw away.")
    prefix_hit_tokens = _view("stats.prefix_hit_tokens", "Prompt tokens found in the prefix cache at admission.")
    tokens_generated = _view("stats.tokens_generated", "Tokens sampled.")
    prompt_tokens_done = _view("stats.prompt_tokens_done", "Whole prompts of requests that sampled their first token.")
    last_batch_size = _view("stats.last_batch_size", "Requests in the most recent step.")
    num_finished = _view("stats.finished", "Requests finished (their rows went to the run's recorder as they did).")
