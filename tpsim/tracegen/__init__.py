"""Seeded synthetic request traces in LLMServingSim's JSONL format (``tpsim trace``).

One request per line, keys in this order, compact JSON::

    {"input_toks":812,"output_toks":230,"arrival_time_ns":1250000,
     "input_tok_ids":[...],"output_tok_ids":[...]}          # ids optional

The same :class:`TraceSpec` (including ``seed``) always gives the same requests
and byte-identical files.  Each random quantity has its own stream derived from
the seed (arrivals, input lengths, output lengths, prefix groups, token ids), so
turning token ids on or off, or adding prefix groups, leaves the arrivals and
drawn lengths unchanged, and the first ``k`` requests of a longer trace equal a
``k``-request trace.

Semantics (documented in ``workloads/README.md``):

* Arrivals: the first request arrives at ``start_s`` (default 0) unless
  ``first_gap`` is set, in which case one gap is drawn before it, as
  LLMServingSim's generator does.  ``poisson`` gaps are exponential with mean
  ``1/rate``; ``gamma`` gaps have mean ``1/rate`` and coefficient of variation
  ``cv`` (shape ``1/cv**2``); ``burst`` (or ``rate == 0``) puts every request at
  ``start_s``.  Gaps are rounded to whole nanoseconds and summed, so arrival
  times are exact integers, non-decreasing.
* Lengths (input and output independently): ``fixed`` (``len``), ``uniform``
  (integers in ``[min, max]`` inclusive) or ``lognormal`` (``len`` is the mean of
  the lognormal, ``sigma`` its shape: median ``= len * exp(-sigma**2 / 2)``).
  ``min``/``max`` *truncate* the lognormal (values outside are never drawn, like
  LLMServingSim's length filters drop requests) instead of clamping, which would
  pile probability onto the bounds.  Draws are rounded to integers.
* ``max_total_toks`` (default 16384, LLMServingSim's ``--max-kv-toks``): when
  ``input + output`` would exceed it, the output is shortened to fit.
* Shared prefixes: each request joins one of ``prefix_groups`` groups (uniform);
  its prompt starts with the group's ``prefix_len`` token ids, followed by
  random ids.  The prefix counts inside ``input_toks``; a drawn input shorter
  than ``prefix_len + 1`` is raised to ``prefix_len + 1``.

Requests are generated one at a time (:func:`iter_requests`) and written as they are drawn, so a
10-million-request trace needs no more memory than a short one.  Pure standard library on purpose:
the simulator may import the generator.

Modules: :mod:`~tpsim.tracegen.spec` (the settings, presets and their checks),
:mod:`~tpsim.tracegen.lognormal` (the truncated lognormal's maths), :mod:`~tpsim.tracegen.generate`
(the seeded draws) and :mod:`~tpsim.tracegen.output` (JSONL text, atomic streamed file, statistics).
"""
from tpsim.tracegen.generate import generate, iter_requests
from tpsim.tracegen.lognormal import truncated_lognormal_stats
from tpsim.tracegen.output import TraceStats, dumps, summarize, write_jsonl
from tpsim.tracegen.spec import (
    ARRIVALS,
    DISTS,
    MAX_RATE,
    MAX_REQUESTS,
    MAX_SECONDS,
    MIN_RATE,
    NS_PER_S,
    PRESETS,
    SHAREGPT_SOURCE,
    TraceSpec,
)

__all__ = ["ARRIVALS", "DISTS", "MAX_RATE", "MAX_REQUESTS", "MAX_SECONDS", "MIN_RATE", "NS_PER_S", "PRESETS",
           "SHAREGPT_SOURCE", "TraceSpec", "TraceStats", "dumps", "generate", "iter_requests", "summarize",
           "truncated_lognormal_stats", "write_jsonl"]
