"""The one interface every latency model implements, and the batch it is asked about.

A batch is described by shape only: the prefill chunks (new tokens and the
context already cached before them), the decoding requests (how many, and the
sum, maximum and sum of squares of their context lengths), and how many
sequences sample a token.  ``context`` always counts the tokens attention reads, the new ones
included.
"""

from __future__ import annotations

from operator import itemgetter

import msgspec

_NEW_TOKENS = itemgetter(0)  # of a prefill chunk (new tokens, cached context); faster than a generator, once a step


class BatchShape(msgspec.Struct, frozen=True):
    prefill: tuple[tuple[int, int], ...] = ()  # (new tokens, cached context before them) per chunk
    num_decode: int = 0
    decode_ctx_sum: int = 0  # sum over decoding requests of their context length (incl. the new token)
    decode_ctx_max: int = 0
    num_sampled: int = 0  # sequences that produce a token this step
    decode_ctx_sq_sum: int = 0  # sum of the squared decode contexts (their spread); 0: not tracked

    @property
    def num_prefill_tokens(self) -> int:
        return sum(map(_NEW_TOKENS, self.prefill))

    @property
    def num_tokens(self) -> int:
        return self.num_prefill_tokens + self.num_decode

    @property
    def num_seqs(self) -> int:
        return len(self.prefill) + self.num_decode

    @classmethod
    def parse(cls, prefill: list[tuple[int, int]], decode: list[tuple[int, int]], sample_prefills: bool = True):
        """Build from ``--prefill LEN@CTX`` and ``--decode N@CTX`` style pairs."""
        n = sum(count for count, _ in decode)
        ctx_sum = sum(count * ctx for count, ctx in decode)
        ctx_max = max((ctx for count, ctx in decode if count), default=0)
        sampled = n + (len(prefill) if sample_prefills else 0)
        return cls(tuple(prefill), n, ctx_sum, ctx_max, sampled, sum(count * ctx * ctx for count, ctx in decode))


class OpTime(msgspec.Struct, frozen=True):
    """One operation's predicted time on one GPU, and where the number came from."""

    name: str
    component: str  # "layer" (per decoder layer), "comm" (per layer), "head" (once per step), "overhead"
    time_ns: float  # per occurrence
    count: int  # occurrences per iteration (e.g. layers per stage)
    flops: float = 0.0
    bytes: float = 0.0
    bound: str = ""  # compute / memory / latency / fixed
    source: str = "analytical"  # analytical / measured / interpolated / extrapolated

    @property
    def total_ns(self) -> float:
        return self.time_ns * self.count


class Breakdown(msgspec.Struct):
    ops: list[OpTime] = msgspec.field(default_factory=list)
    num_layers: int = 0  # decoder layers on the critical path (all stages)
    pp: int = 1

    @property
    def total_ns(self) -> int:
        return int(round(sum(op.total_ns for op in self.ops)))

    @property
    def per_layer_compute_ns(self) -> float:
        return sum(op.time_ns for op in self.ops if op.component == "layer")

    @property
    def per_layer_comm_ns(self) -> float:
        return sum(op.time_ns for op in self.ops if op.component == "comm")

    def by_source(self) -> dict[str, float]:
        """Share of the step's time by where it came from (measured, interpolated, extrapolated, modelled,
        analytical), host overhead excluded."""
        totals: dict[str, float] = {}
        for op in self.ops:
            if op.component != "overhead":
                totals[op.source] = totals.get(op.source, 0.0) + op.total_ns
        whole = sum(totals.values()) or 1.0
        return {k: round(v / whole, 4) for k, v in sorted(totals.items())}

    def by_component(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for op in self.ops:
            out[op.component] = out.get(op.component, 0.0) + op.total_ns
        return out


class LatencyModel:
    """Predicts the duration of one engine iteration of one instance, in ns.

    Subclasses implement :meth:`explain`; :meth:`iteration_ns` and
    :meth:`decode_iteration_ns` are the hot-path entry points and may be
    overridden with cached or closed-form versions that must agree with
    ``explain(batch).total_ns``.
    """

    name = "base"
    pp: int = 1
    moe = None  # an MoE model's layer (tpsim.perf.moe.MoELayer); its steps go through tpsim.perf.step

    def explain(self, batch: BatchShape) -> Breakdown:  # pragma: no cover - interface
        raise NotImplementedError

    def iteration_ns(self, batch: BatchShape) -> int:
        return self.explain(batch).total_ns

    def decode_iteration_ns(self, num_decode: int, ctx_sum: int, ctx_max: int, ctx_sq: int = 0) -> int:
        """A step of ``num_decode`` decoding requests and nothing else (``ctx_sq``: their contexts' squares
        summed; 0 where not tracked)."""
        return self.iteration_ns(BatchShape((), num_decode, ctx_sum, ctx_max, num_decode, ctx_sq))

    def decode_steps(self, num_decode: int, ctx_sum: int, ctx_max: int, t: int, steps: int, bound: float,
                     ends: list, ctx_sq: int = 0) -> None:
        """Append the end times of up to ``steps`` further pure-decode steps after time ``t``.

        Every step adds one token to each request's context.  Stops after the
        first step ending at or after ``bound``.  Must equal calling
        :meth:`decode_iteration_ns` step by step (a dense model may hoist constants in
        :meth:`dense_decode_steps`).
        """
        if self.moe is None and self.dense_decode_steps(num_decode, ctx_sum, ctx_max, t, steps, bound, ends, ctx_sq):
            return
        for _ in range(steps):
            if ctx_sq:
                ctx_sq += 2 * ctx_sum + num_decode  # every context one longer
            ctx_sum += num_decode
            if ctx_max:
                ctx_max += 1
            t += self.decode_iteration_ns(num_decode, ctx_sum, ctx_max, ctx_sq)
            ends.append(t)
            if t >= bound:
                return

    def dense_decode_steps(self, num_decode: int, ctx_sum: int, ctx_max: int, t: int, steps: int,
                           bound: float, ends: list, ctx_sq: int = 0) -> bool:
        """:meth:`decode_steps` of a dense model with the per-step constants hoisted; False where a
        model has no such loop (the generic one runs)."""
        return False

    def stage_interval_ns(self, batch: BatchShape) -> int:
        """With pipeline parallelism, how soon the first stage can take the next batch."""
        return self.iteration_ns(batch)

    def describe(self) -> dict:
        """Provenance of the model's parameters, for the run summary."""
        return {"name": self.name}
