"""Capacity search: the highest request rate at which a configuration still meets the campaign's SLO.

For one configuration (a model, TP degree, link, GPU, ... and one seed) the search probes generated
workloads -- the campaign's ``workload.generate`` settings at a chosen rate and the seed -- and
asks of each probe whether its SLO attainment reaches the required fraction (:mod:`~tpsim.campaign.slo`):

1. **bracketing**: from the workload's ``rate``, double the rate while probes pass (or halve it while
   they fail) until one rate passes and the next one up fails;
2. **bisection**: probe the middle of the bracket [passing, failing] until its width is at most
   ``tolerance`` (default 0.05) of the passing rate.

The capacity is the highest passing rate; the first failing rate above it bounds it.  Every trace of
one seed draws its request sizes and its (exponential or gamma) gaps from the same random streams
(:mod:`tpsim.tracegen`), so a higher rate is the same requests arriving closer together and the
attainment falls with the rate almost always; where it does not, the search still ends at one
pass/fail transition.  The search is a pure function of the probes' outcomes (:func:`next_rate`), so a
job that stops half way resumes from its record of probes (:mod:`~tpsim.campaign.capacity_job`)
and ends where an uninterrupted one would.

Outcomes (``status``): ``ok`` (bracketed to the tolerance), ``unattainable`` (not even
``min_rate`` meets the SLO), ``above_max_rate`` (``max_rate`` still passes: the capacity is at least
that), ``max_probes`` (the probe budget ran out first: the bracket is reported as it stands),
``infeasible`` (the model does not fit, or the parallelism is impossible).
"""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_TOLERANCE = 0.05
DEFAULT_MIN_RATE = 0.01  # req/s
DEFAULT_MAX_RATE = 10_000.0  # req/s
DEFAULT_MAX_PROBES = 40
#: a recorded probe answers a rate when the two differ by less than this (relative)
SAME_RATE = 1e-9


def check(doc: dict, matrix: dict, generate: dict | None, valid) -> list[str]:
    """What a capacity search needs beyond its schema: an SLO to keep to, a workload it can generate
    at any rate, no rate in the matrix, no measured runs (nothing to draw them beside), and min_rate
    below max_rate."""
    cap = doc.get("capacity")
    if not isinstance(cap, dict) or not valid("capacity"):
        return []
    problems = []
    if not isinstance(doc.get("slo"), dict):
        problems.append("capacity: needs slo: (the thresholds and attainment the search keeps to)")
    if generate is None and isinstance(doc.get("workload"), (dict, str)):
        problems.append("capacity: needs a generated workload (workload.generate): each probe generates it at its rate")
    if "rate" in matrix:
        problems.append("matrix.rate: a capacity search chooses the rate itself; remove matrix.rate "
                        "(workload.generate.rate is where the search starts)")
    if doc.get("measured"):
        problems.append("measured: a capacity search's figures have no measured counterpart (capacity, Pareto front); "
                        "name measured runs in a matrix campaign")
    if cap.get("min_rate", DEFAULT_MIN_RATE) >= cap.get("max_rate", DEFAULT_MAX_RATE):
        problems.append(f"capacity: min_rate {cap.get('min_rate', DEFAULT_MIN_RATE)!r} must be below max_rate "
                        f"{cap.get('max_rate', DEFAULT_MAX_RATE)!r}")
    return problems


@dataclass(frozen=True)
class Settings:
    """The ``capacity:`` block, with the workload's rate as the first probe."""

    start_rate: float
    tolerance: float = DEFAULT_TOLERANCE
    min_rate: float = DEFAULT_MIN_RATE
    max_rate: float = DEFAULT_MAX_RATE
    max_probes: int = DEFAULT_MAX_PROBES

    @classmethod
    def from_doc(cls, doc: dict, start_rate: float) -> Settings:
        return cls(start_rate=min(max(start_rate, doc.get("min_rate", DEFAULT_MIN_RATE)),
                                  doc.get("max_rate", DEFAULT_MAX_RATE)),
                   tolerance=doc.get("tolerance", DEFAULT_TOLERANCE),
                   min_rate=doc.get("min_rate", DEFAULT_MIN_RATE), max_rate=doc.get("max_rate", DEFAULT_MAX_RATE),
                   max_probes=doc.get("max_probes", DEFAULT_MAX_PROBES))


@dataclass
class State:
    """What the probes so far say: the highest passing and the lowest failing rate."""

    passed: float | None = None
    failed: float | None = None
    outcomes: list = field(default_factory=list)  # (rate, passed) in probe order

    def add(self, rate: float, ok: bool) -> None:
        self.outcomes.append((rate, ok))
        if ok and (self.passed is None or rate > self.passed):
            self.passed = rate
        if not ok and (self.failed is None or rate < self.failed):
            self.failed = rate


def next_rate(s: Settings, state: State) -> tuple[float | None, str]:
    """(the next rate to probe, '') or (None, the search's status) when it is over."""
    if len(state.outcomes) >= s.max_probes and not _converged(s, state):
        return None, "max_probes"
    if not state.outcomes:
        return s.start_rate, ""
    if state.passed is None:  # every probe failed: halve below the lowest
        nxt = state.failed / 2
        return (nxt, "") if nxt >= s.min_rate * (1 - SAME_RATE) else (None, "unattainable")
    if state.failed is None:  # every probe passed: double above the highest
        if state.passed >= s.max_rate * (1 - SAME_RATE):
            return None, "above_max_rate"
        return min(state.passed * 2, s.max_rate), ""
    if _converged(s, state):
        return None, "ok"
    return (state.passed + state.failed) / 2, ""


def _converged(s: Settings, state: State) -> bool:
    return (state.passed is not None and state.failed is not None
            and state.failed - state.passed <= s.tolerance * state.passed * (1 + SAME_RATE))


def same_rate(a: float, b: float) -> bool:
    return abs(a - b) <= SAME_RATE * max(abs(a), abs(b))


def search(s: Settings, probe) -> tuple[State, str]:
    """Run the search: ``probe(rate) -> bool`` (the probe passed) for each rate the search asks
    for, in order.  Returns the final state and status.  (A resumed job answers the rates it has
    recorded from its record, :mod:`~tpsim.campaign.capacity_job`.)"""
    state = State()
    while True:
        rate, status = next_rate(s, state)
        if rate is None:
            return state, status
        state.add(rate, probe(rate))
