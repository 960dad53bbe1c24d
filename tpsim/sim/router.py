"""Cross-instance request routing (LLMServingSim's policies).

* ``LOAD``: the instance with the smallest ``(4 x waiting + running) / max_num_seqs``,
  scanning from a rotating start so ties spread out (vLLM's DP load balancer);
* ``RR``: round robin;
* ``RAND``: uniform, from a generator seeded with ``--seed``.

Only instances on which the request can ever run (its context fits the model
and its KV fits the cache) are candidates.

Inside a DP group of an MoE model, vLLM's own DP load balancer picks the rank
(:class:`DPBalancer`); the policies above then choose among groups and lone
instances.
"""

from __future__ import annotations

import random

from tpsim.errors import InputError

POLICIES = ("LOAD", "RR", "RAND")


class Router:
    def __init__(self, policy: str, num_instances: int, seed: int):
        if policy not in POLICIES:
            raise InputError(f"--request-routing-policy {policy!r} is not supported; "
                             f"choose one of {', '.join(POLICIES)}")
        self.policy = policy
        self.n = num_instances
        self.next = 0
        self.rng = random.Random(seed)

    def pick(self, instances, candidates: list[int]) -> int:
        if len(candidates) == 1:
            return candidates[0]
        if self.policy == "RAND":
            return candidates[self.rng.randrange(len(candidates))]
        if self.policy == "RR":
            for _ in range(self.n):
                i = self.next
                self.next = (self.next + 1) % self.n
                if i in candidates:
                    return i
            return candidates[0]
        start = self.next
        self.next = (self.next + 1) % self.n
        allowed = set(candidates)
        best, best_load = None, None
        for off in range(self.n):
            i = (start + off) % self.n
            if i not in allowed:
                continue
            load = instances[i].load()
            if best is None or load < best_load:
                best, best_load = i, load
        return best


#: vLLM's DP coordinator publishes the ranks' request counts at most this often (coordinator.py)
STATS_INTERVAL_NS = 100_000_000


class DPBalancer:
    """vLLM 0.19's DP load balancer in front of one DP group (``DPLBAsyncMPClient``,
    ``docs/notes/vllm-0.19-moe-dp-ep.md`` §4): the rank with the lowest ``4 x waiting + running``,
    scanning from rank 0 (one API server), ties to the first; the chosen rank's waiting count goes
    up by one at once.  The counts are the engines' as the coordinator last published them:
    :meth:`refresh` is called every ``STATS_INTERVAL_NS`` of simulated time (at multiples of
    100 ms; the real coordinator's phase is not known), between refreshes only the balancer's own
    increments change them."""

    def __init__(self, members):
        self.members = members  # the group's instances, DP rank order
        self.counts = [[0, 0] for _ in members]  # [waiting, running] as last published

    def refresh(self) -> None:
        self.counts = [[len(m.waiting), m.num_running] for m in self.members]

    def pick(self, allowed: set[int]) -> int:
        """The instance index of the rank a request goes to (``allowed``: instances that can hold it)."""
        best, best_score = 0, None
        for i, m in enumerate(self.members):
            if m.index in allowed:
                waiting, running = self.counts[i]
                score = 4 * waiting + running
                if best_score is None or score < best_score:
                    best, best_score = i, score
        self.counts[best][0] += 1
        return self.members[best].index

    def load(self) -> float:
        """The group's load for the cluster-level LOAD policy: the instances' score over all its ranks."""
        return (sum(4 * len(m.waiting) + m.num_running for m in self.members)
                / sum(m.engine.max_num_seqs for m in self.members))
