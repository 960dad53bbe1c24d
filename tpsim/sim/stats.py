"""What one instance has done so far: the counters the run summary, the log lines and the CSV read.

Kept apart from the scheduler, which only increments them, so that what an instance *reports* has
one home; the KV pool keeps its own (peak blocks used, prefix-cache queries and hits).
"""

from __future__ import annotations

from array import array


class InstanceStats:
    __slots__ = ("iter_ends", "preemptions", "recomputed_tokens", "prefix_hit_tokens", "prompt_tokens_done",
                 "tokens_generated", "last_batch_size", "finished")

    def __init__(self) -> None:
        self.iter_ends = array("q")  # end time (ns) of every step, by step index (8 bytes a step)
        self.preemptions = 0  # requests sent back to the queue for lack of KV blocks (recompute)
        self.recomputed_tokens = 0  # computed tokens those preemptions threw away
        self.prefix_hit_tokens = 0  # prompt tokens found in the prefix cache at admission
        self.prompt_tokens_done = 0  # whole prompts of requests that sampled their first token
        self.tokens_generated = 0  # tokens sampled
        self.last_batch_size = 0  # requests in the most recent step
        self.finished = 0  # requests finished
