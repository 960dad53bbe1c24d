"""A request's life in the simulator: arrival, scheduling, tokens, finish.

Token bookkeeping follows vLLM V1: ``num_tokens`` is the prompt plus the tokens
generated so far (all known tokens); ``num_computed`` is how many of them have
KV in the cache.  A step that makes ``num_computed`` catch up with
``num_tokens`` samples one new token.  Preemption (recompute) resets
``num_computed`` to 0 but keeps the generated tokens.
"""

from __future__ import annotations

from operator import attrgetter

WAITING, RUNNING, FINISHED = 0, 1, 2
BY_ADMISSION = attrgetter("admit_seq")  # sort key: admission order (a C-level key, no Python call)


class Request:
    __slots__ = (
        "rid", "arrival", "prompt", "output", "token_ids", "num_input_ids", "trace",
        "num_tokens", "num_computed", "generated", "state", "instance",
        "first_scheduled", "first_token", "finish", "emissions",
        "blocks", "nblocks", "hashes", "num_registered", "inflight", "preemptions", "prefix_hit_tokens",
        "admit_seq", "cohort", "base_step", "offset", "gen_base", "epoch",
    )

    def __init__(self, rid: int, arrival: int, prompt: int, output: int, token_ids, num_input_ids: int, trace=None):
        self.rid = rid
        self.arrival = arrival
        self.prompt = prompt
        self.output = output
        self.token_ids = token_ids
        self.num_input_ids = num_input_ids
        self.trace = trace  # the TraceRequest (for agentic follow-ups)
        self.num_tokens = prompt
        self.num_computed = 0
        self.generated = 0
        self.state = WAITING
        self.instance = -1
        self.first_scheduled = -1
        self.first_token = -1
        self.finish = -1
        # token emission iterations, run-length encoded: [start0, count0, start1, count1, ...]
        self.emissions: list[int] = []
        self.blocks: list[int] = []  # KV block ids (prefix-caching pool only)
        self.nblocks = 0
        self.hashes: list[int] | None = None  # chained block hashes, computed lazily
        self.num_registered = 0  # leading full blocks already in the prefix-cache index
        self.inflight = False  # part of a batch still running (pipeline parallelism)
        self.preemptions = 0
        self.prefix_hit_tokens = 0
        # decode-cohort bookkeeping (see tpsim.sim.cohort): while ``cohort`` is set the
        # request decodes one token per step and its counters are derived, not stored:
        # num_computed before step s = offset + s; generated = gen_base + (s - base_step).
        # ``epoch`` changes on joining and on leaving, so heap entries of an older membership
        # are recognisably stale (tpsim.sim.lazy_heap)
        self.admit_seq = -1
        self.cohort = False
        self.base_step = 0
        self.offset = 0
        self.gen_base = 0
        self.epoch = 0

    @property
    def max_kv_tokens(self) -> int:
        """KV entries at the end: the last sampled token is never fed back."""
        return self.prompt + self.output - 1

    def emit(self, iteration: int, count: int) -> None:
        """Record ``count`` tokens sampled at consecutive iterations from ``iteration`` on."""
        em = self.emissions
        if em and em[-2] + em[-1] == iteration:
            em[-1] += count
        else:
            em.append(iteration)
            em.append(count)
