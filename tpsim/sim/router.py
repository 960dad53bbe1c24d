"""Cross-instance request routing (LLMServingSim's policies).

* ``LOAD``: the instance with the smallest ``(4 x waiting + running) / max_num_seqs``,
  scanning from a rotating start so ties spread out (vLLM's DP load balancer);
* ``RR``: round robin;
* ``RAND``: uniform, from a generator seeded with ``--seed``.

Only instances on which the request can ever run (its context fits the model
and its KV fits the cache) are candidates.
"""

from __future__ import annotations

import random

from tpsim.errors import InputError

POLICIES = ("LOAD", "RR", "RAND")


class Router:
    def __init__(self, policy: str, num_instances: int, seed: int):
        if policy not in POLICIES:
            raise InputError(f"--request-routing-policy {policy!r} is not supported; choose one of {', '.join(POLICIES)}")
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
