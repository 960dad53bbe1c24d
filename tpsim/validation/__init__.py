"""Hold a simulation against a measured vLLM replay (``tpsim validate``).

A *measured directory* has the layout of LLMServingSim's ``bench`` artefacts
(see ``docs/validation.md``)::

    config.json          cluster config of the run (LLMServingSim schema)
    model_config.json    the model's Hugging Face config.json       (optional)
    trace.jsonl          the requests as replayed                    (for ``tpsim replay``)
    vllm/meta.json       engine arguments, vLLM version              (optional here)
    vllm/requests.jsonl  per request: request_id "bench-<i>", output_toks, queued_ts,
                         scheduled_ts, first_token_ts, last_token_ts (monotonic s)
    vllm/timeseries.csv  once a tick: prompt/generation throughput   (optional, figures)

Metric definitions (the publishers', ``bench/core/validate.py``), in ms:

* measured TTFT = first_token_ts - queued_ts; TPOT = (last_token_ts -
  first_token_ts) / (output_toks - 1), skipped when output_toks <= 1;
  latency = last_token_ts - queued_ts; queuing delay = scheduled_ts - queued_ts.
* simulated: the 12-column CSV's ``TTFT``, ``TPOT``, ``latency`` and
  ``queuing_delay`` (integer ns) / 1e6; TPOT skipped when ``output`` <= 1.

Each side is summarised over all of its requests (mean and p50/p90/p99 with
linear interpolation, numpy's default); the difference is
``(sim - measured) / measured * 100``.  The paired error pairs measured
``bench-<i>`` with the simulated ``request id`` i and reports the mean
absolute percentage error, ``mean(|sim - measured| / measured) * 100``.

Modules, one concept each (plain Python: only :mod:`~tpsim.validation.figures` imports matplotlib,
inside its function, so nothing here weighs on the simulator's import path):

=============  ====================================================================================
``measured``   the measured side: a replay directory's layout, ``vllm/requests.jsonl``, its timeseries
``simulated``  the simulated side: a 12-column CSV (:mod:`tpsim.io.results`), the run summary beside it
``compare``    per-request values of each side -> statistics, differences, paired errors
``report``     :func:`~tpsim.validation.report.validate` (both sides read and compared) and its Markdown
``figures``    CDFs and throughput over time (PDF + PNG, deterministic bytes)
``accuracy``   the campaign's accuracy table (one row per case x simulator)
``cases``      the measured cases under a folder, and the profile bundle matching a case
=============  ====================================================================================
"""
