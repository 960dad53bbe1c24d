"""The seeded draws of a synthetic trace: arrivals, lengths, prefix groups and token ids, one request at a time."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator

from tpsim.errors import InputError
from tpsim.tracegen.lognormal import std_normal, truncation
from tpsim.tracegen.spec import MAX_REQUESTS, NS_PER_S, TraceSpec


class _LengthSampler:
    def __init__(self, spec: TraceSpec, side: str, rng: random.Random):
        self.rng = rng
        self.dist = getattr(spec, f"{side}_dist")
        self.lo, self.hi = spec.length_bounds(side)
        if self.dist == "lognormal":
            sigma = getattr(spec, f"{side}_sigma")
            self.mu = math.log(getattr(spec, f"{side}_len")) - sigma * sigma / 2
            self.sigma = sigma
            self.p_lo, _, self.mass = truncation(self.mu, sigma, self.lo, self.hi)
            self.inv_cdf = std_normal().inv_cdf

    def draw(self) -> int:
        if self.dist == "fixed":
            return self.lo
        if self.dist == "uniform":
            return self.rng.randint(self.lo, self.hi)
        # inverse-CDF sampling of the truncated normal in log space: one uniform per draw
        u = self.p_lo + self.rng.random() * self.mass
        u = min(max(u, 1e-300), 1.0 - 1e-16)
        x = math.exp(self.mu + self.sigma * self.inv_cdf(u))
        return min(max(round(x), self.lo), self.hi)


def _streams(seed: int) -> dict[str, random.Random]:
    # str seeds are hashed with SHA-512 by random.Random: stable across runs and platforms
    return {name: random.Random(f"tpsim-trace/{seed}/{name}")
            for name in ("arrival", "input", "output", "group", "prefix", "ids")}


def _arrivals(spec: TraceSpec, rng: random.Random):
    """Yield arrival times in ns (non-decreasing), forever or until --duration-s is spent."""
    start = round(spec.start_s * NS_PER_S)
    if spec.is_burst:
        while True:
            yield start
    if spec.arrival == "gamma":
        shape = 1.0 / (spec.cv * spec.cv)
        scale = 1.0 / (spec.rate * shape)

        def gap() -> int:
            return round(rng.gammavariate(shape, scale) * NS_PER_S)
    else:
        def gap() -> int:
            return round(rng.expovariate(spec.rate) * NS_PER_S)
    end = None if spec.duration_s is None else start + round(spec.duration_s * NS_PER_S)
    t = start + gap() if spec.first_gap else start
    while end is None or t < end:
        yield t
        t += gap()


def _prefixes(spec: TraceSpec, rng: random.Random, vocab: range) -> list[list[int]]:
    """Each prefix group's shared prompt tokens (groups differ within their first block)."""
    prefixes: list[list[int]] = []
    seen = set()
    head = min(spec.prefix_len or 0, 16)
    while len(prefixes) < spec.prefix_groups:
        p = rng.choices(vocab, k=spec.prefix_len)
        if tuple(p[:head]) not in seen:
            seen.add(tuple(p[:head]))
            prefixes.append(p)
    return prefixes


def iter_requests(spec: TraceSpec) -> Iterator[dict]:
    """The trace's requests in arrival order, drawn one at a time, as dicts with keys in file order."""
    rng = _streams(spec.seed)
    in_len = _LengthSampler(spec, "input", rng["input"])
    out_len = _LengthSampler(spec, "output", rng["output"])
    vocab = range(spec.vocab_size)
    ids_rng = rng["ids"]
    prefixes = _prefixes(spec, rng["prefix"], vocab)
    limit = spec.num_reqs if spec.num_reqs is not None else MAX_REQUESTS
    count = 0
    for arrival in _arrivals(spec, rng["arrival"]):
        if count >= limit:
            break
        count += 1
        n_in, n_out = in_len.draw(), out_len.draw()
        group = rng["group"].randrange(spec.prefix_groups) if spec.prefix_groups else None
        if group is not None:
            n_in = max(n_in, spec.prefix_len + 1)
        n_out = min(n_out, spec.max_total_toks - n_in)
        req = {"input_toks": n_in, "output_toks": n_out, "arrival_time_ns": arrival}
        if spec.token_ids:
            if group is None:
                req["input_tok_ids"] = ids_rng.choices(vocab, k=n_in)
            else:
                req["input_tok_ids"] = prefixes[group] + ids_rng.choices(vocab, k=n_in - spec.prefix_len)
            req["output_tok_ids"] = ids_rng.choices(vocab, k=n_out)
        yield req
    if not count:
        raise InputError(f"no request arrives within --duration-s {spec.duration_s:g}; "
                         "lengthen it, raise --rate or drop --first-gap")


def generate(spec: TraceSpec) -> list[dict]:
    """The whole trace as a list (small traces, tests); :func:`iter_requests` streams it."""
    return list(iter_requests(spec))
