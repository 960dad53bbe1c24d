"""Service-level objectives, goodput and overload: what a run's requests say about the service.

A campaign's ``slo:`` names thresholds on TTFT, TPOT and end-to-end latency (each optional, in ms)
and the fraction of requests that must meet all of them (``attainment``, default 0.9).  Per run:

* ``slo_attainment``: requests meeting every threshold / all requests of the trace (rejected and
  unfinished requests never meet it; the TPOT threshold does not apply to a one-token answer);
* ``slo_met``: ``slo_attainment >= attainment``;
* goodput: those requests per second (``goodput_rps``) and their generated tokens per second
  (``goodput_output_tokens_per_s``), over the run's simulated time -- also per GPU;
* ``output_tokens_per_s_per_gpu``: every generated token per second per GPU (``num_npus`` x
  instances).

Overload (:func:`overload`): a run is **overloaded** when its requests arrive faster than it serves
them, so that its TTFT is set by how long the trace is, not by the system.  The measure is the
least-squares slope of TTFT against arrival time over the requests that arrive in the second half
of the arrival window (``ttft_growth``, seconds of TTFT per second of arrivals): in a stable system
TTFT does not drift, so the slope is near 0; when arrivals outpace service by a factor rho > 1 the
queue -- and with it the TTFT of each new request -- grows at about rho - 1.  A run is overloaded
when ``ttft_growth`` > :data:`OVERLOAD_GROWTH` (0.05: arrivals at least ~5 % above what the run
serves) **and** that growth over the second half of the window exceeds the median TTFT of the first
half (the queue at least doubles the TTFT: a short trace's jitter is not a queue); stable otherwise;
unclassified (NULL) with fewer than :data:`MIN_CLASSIFIED` requests in the second half.
"""

from __future__ import annotations

from dataclasses import dataclass

#: ttft_growth above which a run is overloaded (s of TTFT per s of arrivals; about rho - 1)
OVERLOAD_GROWTH = 0.05
#: requests needed in the second half of the arrival window to classify a run
MIN_CLASSIFIED = 8
DEFAULT_ATTAINMENT = 0.9
THRESHOLDS = ("ttft_ms", "tpot_ms", "latency_ms")
#: the runs-table columns this module adds, with their SQL types
COLUMNS = {
    "load": "VARCHAR",
    "ttft_growth": "DOUBLE",
    "slo_attainment": "DOUBLE",
    "slo_met": "BOOLEAN",
    "goodput_rps": "DOUBLE",
    "goodput_output_tokens_per_s": "DOUBLE",
    "output_tokens_per_s_per_gpu": "DOUBLE",
    "goodput_output_tokens_per_s_per_gpu": "DOUBLE",
}


@dataclass(frozen=True)
class SLO:
    """Thresholds in ms (None: no threshold) and the required attainment (a fraction)."""

    ttft_ms: float | None = None
    tpot_ms: float | None = None
    latency_ms: float | None = None
    attainment: float = DEFAULT_ATTAINMENT

    @classmethod
    def from_doc(cls, doc: dict | None) -> SLO | None:
        """The campaign's ``slo:`` block (validated), or None when it has none."""
        if not doc:
            return None
        return cls(**{k: doc.get(k) for k in THRESHOLDS}, attainment=doc.get("attainment", DEFAULT_ATTAINMENT))

    def describe(self) -> str:
        """'TTFT <= 2000 ms, TPOT <= 100 ms for 90 % of requests'."""
        parts = [f"{name} <= {value:g} ms" for name, value in
                 (("TTFT", self.ttft_ms), ("TPOT", self.tpot_ms), ("latency", self.latency_ms)) if value is not None]
        return f"{', '.join(parts)} for {self.attainment * 100:g} % of requests"

    def met_by(self, ttft_ns: int, tpot_ns: int, latency_ns: int, output_tokens: int) -> bool:
        """Whether one finished request meets every threshold."""
        if self.ttft_ms is not None and ttft_ns > self.ttft_ms * 1e6:
            return False
        if self.tpot_ms is not None and output_tokens > 1 and tpot_ns > self.tpot_ms * 1e6:
            return False
        return self.latency_ms is None or latency_ns <= self.latency_ms * 1e6


def check(doc: dict, valid) -> list[str]:
    """Problems of the ``slo:`` block beyond its schema (``valid(path)``: the schema accepted it)."""
    slo = doc.get("slo")
    if isinstance(slo, dict) and valid("slo") and not any(slo.get(k) is not None for k in THRESHOLDS):
        return [f"slo: give at least one threshold ({', '.join(THRESHOLDS)}); attainment alone says nothing"]
    return []


def ttft_growth(arrival_ns, ttft_ns) -> float | None:
    """Least-squares slope of TTFT against arrival time over the second half of the arrival window
    (dimensionless); None with fewer than MIN_CLASSIFIED requests there."""
    return overload(arrival_ns, ttft_ns)[0]


def overload(arrival_ns, ttft_ns) -> tuple[float | None, str | None]:
    """(ttft_growth, 'overloaded' / 'stable' / None) of a run's requests (see the module docstring)."""
    if not arrival_ns:
        return None, None
    lo, hi = min(arrival_ns), max(arrival_ns)
    mid = (lo + hi) / 2
    late = [(a, t) for a, t in zip(arrival_ns, ttft_ns) if a >= mid]
    if len(late) < MIN_CLASSIFIED:
        return None, None
    n = len(late)
    ma = sum(a for a, _ in late) / n
    mt = sum(t for _, t in late) / n
    sxx = sum((a - ma) ** 2 for a, _ in late)
    if sxx == 0:  # every request arrives at once: no arrival rate to outpace
        return None, None
    growth = sum((a - ma) * (t - mt) for a, t in late) / sxx
    early = sorted(t for a, t in zip(arrival_ns, ttft_ns) if a < mid)
    base = early[len(early) // 2] if early else 0
    overloaded = growth > OVERLOAD_GROWTH and growth * (hi - mid) > base
    return growth, "overloaded" if overloaded else "stable"


def run_stats(req: dict, slo: SLO | None, requests: int | None, simulated_time_s: float | None,
              output_tokens_per_s: float | None, gpus: int | None) -> dict:
    """The :data:`COLUMNS` of one run from its finished requests (``req``: lists ``arrival_ns``,
    ``ttft_ns``, ``tpot_ns``, ``latency_ns``, ``output_tokens``), the trace's request count, the
    simulated time, the throughput and the GPU count."""
    growth, load = overload(req["arrival_ns"], req["ttft_ns"])
    out = dict.fromkeys(COLUMNS)
    out.update(load=load, ttft_growth=growth)
    if gpus and output_tokens_per_s is not None:
        out["output_tokens_per_s_per_gpu"] = output_tokens_per_s / gpus
    if slo is None or not requests:
        return out
    good = [slo.met_by(t, p, lat, o) for t, p, lat, o in
            zip(req["ttft_ns"], req["tpot_ns"], req["latency_ns"], req["output_tokens"])]
    n_good = sum(good)
    out["slo_attainment"] = n_good / requests
    out["slo_met"] = out["slo_attainment"] >= slo.attainment
    if simulated_time_s:
        out["goodput_rps"] = n_good / simulated_time_s
        out["goodput_output_tokens_per_s"] = sum(o for o, g in zip(req["output_tokens"], good) if g) / simulated_time_s
        if gpus:
            out["goodput_output_tokens_per_s_per_gpu"] = out["goodput_output_tokens_per_s"] / gpus
    return out
