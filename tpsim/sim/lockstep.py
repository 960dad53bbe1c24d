"""The DP ranks of an MoE group stepping together, as vLLM 0.19's DP engines do.

vLLM runs the DP ranks of an MoE model as separate engines whose forward passes meet in every MoE
layer's all-gather and reduce-scatter (``docs/notes/vllm-0.19-moe-dp-ep.md`` §3): so every rank runs
one forward per step while any rank has work, and a rank with nothing scheduled runs a dummy forward
of one decode token (``execute_dummy_batch``), padded like the others.  Here:

* each member's scheduler plans its step as it would alone (its latency model replaced by
  :class:`PlannedStep`, which records the step's shape and takes no time);
* the ranks' CUDA-graph modes and token counts are synchronised (:func:`~tpsim.perf.vllm_exec.dp_synchronize`);
* the step lasts as long as the slowest rank's GPU work plus the host time none of them hides, and
  ends on every rank at once: no rank ever runs ahead;
* when every rank has run out of work the group keeps stepping (dummy steps) until its step counter
  reaches a multiple of 32, where vLLM's ranks agree to pause (``_has_global_unfinished_reqs``).
"""

from __future__ import annotations

from tpsim.perf.base import BatchShape, LatencyModel
from tpsim.perf.vllm_exec import dp_synchronize

#: vLLM's DP ranks check whether all of them are idle every this many steps (core.py)
WAVE_CHECK_STEPS = 32


class PlannedStep(LatencyModel):
    """A lockstep member's stand-in latency model: records what its scheduler planned, takes no time."""

    name = "planned"

    def __init__(self, model: LatencyModel):
        self.needs_ctx_max = getattr(model, "needs_ctx_max", False)
        self.pp = model.pp
        self.shape: BatchShape | None = None

    def iteration_ns(self, batch: BatchShape) -> int:
        self.shape = batch
        return 0

    def decode_iteration_ns(self, num_decode: int, ctx_sum: int, ctx_max: int, ctx_sq: int = 0) -> int:
        self.shape = BatchShape((), num_decode, ctx_sum, ctx_max, num_decode, ctx_sq)
        return 0

    def stage_interval_ns(self, batch: BatchShape) -> int:
        return 0


class LockstepGroup:
    """One DP group of an MoE model: its member instances (DP rank order) and its step state."""

    def __init__(self, members: list):
        self.members = members
        self.indices = [m.index for m in members]
        self.busy_until = 0  # end of the step in flight (members are free from then)
        self.counter = 0  # steps since the group last paused (vLLM's step_counter)
        self.steps = 0
        self.ends: list[int] = []  # end time of every group step
        self.dummy_steps = [0] * len(members)  # per rank
        self.wait_ns = 0.0  # rank-time spent waiting for the slowest rank (GPU)
        self.gpu_ns = 0.0  # group GPU time

    def has_work(self) -> bool:
        return any(m.scheduler.has_work() for m in self.members)

    def due(self, now: int) -> bool:
        """Free at ``now`` and with a step to run: a rank's work, or the dummy steps before a pause."""
        if self.busy_until > now:
            return False
        return self.has_work() or self.counter % WAVE_CHECK_STEPS != 0

    def step(self, now: int) -> int | None:
        """Plan and time one step of every rank starting at ``now``; its end, or None if none can run."""
        batches, shapes = [], []
        for m in self.members:
            recorder = m.scheduler.model
            recorder.shape = None
            batch = m.schedule(now, now, now)  # bounds at now: never fast-forward
            batches.append(batch)
            shapes.append(recorder.shape if batch is not None else None)
        if all(b is None for b in batches):
            if self.has_work():
                self._stuck()
            if self.counter % WAVE_CHECK_STEPS == 0:
                self.counter = 0
                return None
        models = [m.model for m in self.members]
        mode, tokens = dp_synchronize([lat.graph_plan(s) for lat, s in zip(models, shapes)])
        gpus = [lat.rank_gpu_ns(s, mode, tokens, i) for i, (lat, s) in enumerate(zip(models, shapes))]
        gpu = max(gpus)
        seqs = max((s.num_seqs for s in shapes if s is not None), default=0)
        end = now + int(round(gpu + models[0].host_visible_ns(gpu, seqs)))
        for i, (m, batch) in enumerate(zip(self.members, batches)):
            if batch is None:
                self.dummy_steps[i] += 1
            else:
                m.scheduler.retime(batch, end)
        self.busy_until = end
        self.ends.append(end)
        self.counter += 1
        self.steps += 1
        self.gpu_ns += gpu
        self.wait_ns += sum(gpu - g for g in gpus)
        return end

    def _stuck(self) -> None:
        waiting = [(m.index, len(m.waiting)) for m in self.members if m.waiting and not m.inflight]
        if waiting:
            raise RuntimeError(f"internal error: DP group of instances {self.indices} cannot schedule the waiting "
                               f"requests {waiting} with nothing running; please report this with your inputs")

    def summary(self) -> dict:
        """The group's lockstep statistics for the run summary."""
        ranks = len(self.members)
        return {"instances": self.indices, "steps": self.steps, "dummy_steps": list(self.dummy_steps),
                "mean_wait_for_slowest_rank": round(self.wait_ns / (ranks * self.gpu_ns), 6) if self.gpu_ns else 0.0}
