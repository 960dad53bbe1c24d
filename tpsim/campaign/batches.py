"""A matrix campaign's runs in batches: many runs per Snakemake job, each run still keyed, checked and
recorded on its own.

Why: a Snakemake job per run cost about 0.5 core-seconds (two Python processes and Snakemake's own
work per job) against 0.1-0.3 s of simulation, and 3,000 jobs took 7-18 s to build into a job graph.
A batch job simulates its runs in one process (:mod:`tpsim.campaign.batch_job`), where the kernel
tables, the hash of every input and the DuckDB connection are loaded once.

How it fits together:

* every run has a **key**: the SHA-256 of what its outputs depend on and the job graph can see --
  its parameters, its ``tpsim run`` flags, tpsim's version, the paths of its inputs and the content
  hashes of those the pipeline does not make (base config, model config, hardware entries, a given
  trace, the latency model's folders), and the generator settings of a generated trace;
* a run is **done** when its folder holds ``done.json`` with that key (and the SHA-256 of the trace
  it read) and every output file (:func:`done_problem`);
* the runs fall into ``n`` batches (a power of two, from the estimated cost: :func:`batch_count`) by
  a hash of the run id, so a run's batch depends on its id and ``n`` only;
* a batch is one ``simulate`` job: its output the batch record ``batches/<i>-of-<n>.json``, its
  params its runs' keys (a changed key reruns the batch), its inputs the files its runs read (a
  regenerated trace reruns it); the job simulates the runs that are not done and leaves the others
  untouched, so a change reruns exactly the runs it affects.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from pathlib import Path

from tpsim.campaign.outputs import RUN_CSV, RUN_REQUESTS
from tpsim.campaign.provenance import file_sha256
from tpsim.campaign.runs import Campaign, Run, generate_flags

#: bump when what a batch job writes changes: every run's key changes, so every run reruns
KEY_FORMAT = 1
#: the run's completion record, written last (its key, the trace's hash, status, where it ran)
DONE = "done.json"
#: a run folder's files besides the optional CSV (``requests_csv: true``) and done.json
RUN_FILES = ("cluster.json", "run.json", RUN_REQUESTS, "requests.summary.json", "tpsim.log")
#: default target length of one batch job on one core (the campaign's ``limits.batch_seconds``)
BATCH_SECONDS = 120
#: cost model of a run on one core, for sizing batches only: measured on a 2-core VM (November 2026) with
#: kernel tables, 300 ShareGPT-like requests on Qwen3-8B/32B and Llama-3.1-70B at TP 1-8 took 0.03-0.35 s
#: inside a batch; the fixed part covers deriving the config, the summary and the Parquet file
RUN_FIXED_S = 0.05
REQUEST_S = 0.0008


def simulate_flags(camp: Campaign, run: Run) -> list[str]:
    """The run's ``tpsim run`` flags beyond its paths (latency model, Parquet, seed, ``tpsim_args``)."""
    flags = ["--perf-model", camp.doc["perf_model"], "--requests-format",
             "both" if camp.doc["requests_csv"] else "parquet"]
    if run.params["seed"] is not None:
        flags += ["--seed", str(run.params["seed"])]
    return flags + list(camp.doc["tpsim_args"])


def records_of(run: Run) -> dict[str, str]:
    """The inputs ``run.json`` records by name (path and SHA-256), beyond the base config and the
    hardware catalog entry: model config, hardware entry, trace, the latency model's folders."""
    records = {"model_config": run.model_config, "hardware": run.hardware_config}
    if run.trace is not None:
        records["dataset"] = run.trace
    return dict(sorted({**records, **run.latency_inputs}.items()))


def hashed_inputs(camp: Campaign, run: Run) -> dict[str, str]:
    """Every file or folder the run reads that the pipeline does not make, by name (a generated
    trace is made by the pipeline: its settings are in the key instead)."""
    files = {"base": camp.cluster, **records_of(run)}
    if run.hardware_override:
        files["hardware_override"] = run.hardware_override
    if camp.generate is not None:
        files.pop("dataset", None)
    return files


def run_key(camp: Campaign, run: Run, tpsim_version: str) -> str:
    """The run's key (module docstring); inputs are hashed once per process."""
    doc = {
        "format": KEY_FORMAT,
        "tpsim_version": tpsim_version,
        "params": run.params,
        "flags": simulate_flags(camp, run),
        "base": camp.cluster,
        "hardware_override": run.hardware_override,
        # the paths run.json records: a run reading a file or folder elsewhere reruns, even with the same
        # content, so that its record names what it read
        "paths": records_of(run),
        "sha256": {name: file_sha256(path) for name, path in sorted(hashed_inputs(camp, run).items())},
        "generate": generate_flags(camp.generate) if camp.generate is not None else None,
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def run_spec(camp: Campaign, run: Run, tpsim_version: str) -> dict:
    """Everything a batch job needs to derive, simulate and record one run (JSON-serialisable)."""
    return {
        "id": run.id,
        "folder": f"{camp.results}/runs/{run.id}",
        "base": camp.cluster,
        "params": run.params,
        "hardware": run.hardware_override,
        "records": records_of(run),
        "trace": run.trace,
        "flags": simulate_flags(camp, run),
        "csv": bool(camp.doc["requests_csv"]),
        "key": run_key(camp, run, tpsim_version),
        "cost_s": round(estimate_s(camp, run), 4),
    }


def run_files(spec: dict) -> list[str]:
    """The run's output files, done.json last."""
    names = list(RUN_FILES) + ([RUN_CSV] if spec["csv"] else []) + [DONE]
    return [f"{spec['folder']}/{name}" for name in names]


def estimate_s(camp: Campaign, run: Run) -> float:
    """Estimated seconds of one run on one core (:data:`REQUEST_S` per request), to size batches."""
    gen = camp.generate
    if gen is not None:
        requests = gen.get("num_reqs") or (run.params["rate"] or 1) * gen.get("duration_s", 0)
    else:
        requests = _lines(run.trace)
    return RUN_FIXED_S + REQUEST_S * requests


@functools.cache
def _lines(path: str) -> int:
    """Lines of a given trace (its requests), counted once per process; 0 when unreadable."""
    try:
        with open(path, "rb") as f:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    except OSError:
        return 0


def batch_count(total_s: float, runs: int, batch_seconds: float) -> int:
    """Batches for ``runs`` runs of ``total_s`` estimated seconds: the power of two that makes each at most
    ``batch_seconds`` long on one core, at most the runs (a power of two, so that a campaign that grows
    a little keeps its batches; each doubling splits every batch in two)."""
    if runs <= 1:
        return 1
    wanted = max(1, math.ceil(total_s / batch_seconds))
    count = 1 << (wanted - 1).bit_length()
    return min(count, 1 << (runs.bit_length() - 1))


def batch_of(run_id: str, count: int) -> str:
    """The batch a run belongs to, ``<i>-of-<count>`` (1-based), from a hash of its id."""
    index = int(hashlib.sha256(run_id.encode("utf-8")).hexdigest()[:16], 16) % count
    return f"{index + 1}-of-{count}"


def plan(camp: Campaign, tpsim_version: str, batch_seconds: float = BATCH_SECONDS) -> dict[str, list[dict]]:
    """The campaign's run specs by batch name (batches in order, runs in campaign order; empty
    batches left out)."""
    specs = [run_spec(camp, run, tpsim_version) for run in camp.runs]
    count = batch_count(sum(s["cost_s"] for s in specs), len(specs), batch_seconds)
    batches: dict[str, list[dict]] = {}
    for spec in specs:
        batches.setdefault(batch_of(spec["id"], count), []).append(spec)
    return dict(sorted(batches.items(), key=lambda item: int(item[0].split("-")[0])))


def read_done(spec: dict) -> dict | None:
    """The run's done.json, or None when it is missing or unreadable."""
    try:
        doc = json.loads(Path(spec["folder"], DONE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def done_problem(spec: dict, trace_sha256: str | None = None) -> str | None:
    """Why the run is not done (None when it is): no done.json, another key, another trace (when
    ``trace_sha256`` is given), or a missing output file."""
    done = read_done(spec)
    if done is None:
        return "not run"
    if done.get("key") != spec["key"]:
        return "inputs or settings changed"
    if trace_sha256 is not None and done.get("trace_sha256") != trace_sha256:
        return "trace changed"
    for path in run_files(spec)[:-1]:
        if not Path(path).is_file():
            return f"{Path(path).name} missing"
    return None


def status_lines(camp: Campaign, batches: dict[str, list[dict]], records: dict[str, str]) -> list[str]:
    """What the workflow says when it loads a matrix campaign: the runs, the batches, how many runs are not
    done; and a warning for runs without their outputs in batches whose record says they were done
    (Snakemake does not rerun those batches by itself: it sees only the record)."""
    problems = {}
    for specs in batches.values():
        for spec in specs:
            problem = done_problem(spec)
            if problem is not None:
                problems[spec["id"]] = problem
    n = sum(len(specs) for specs in batches.values())
    lines = [(f"tpsim: campaign {camp.name}: {n} runs in {len(batches)} batch job(s); "
              f"{len(problems)} to simulate, {n - len(problems)} done")]
    lost = []
    for name, specs in batches.items():
        recorded = _record_keys(records[name])
        if recorded is not None and recorded == {s["id"]: s["key"] for s in specs}:
            lost += [(name, s) for s in specs if s["id"] in problems]
    if lost:
        names = sorted({name for name, _ in lost})
        first = lost[0][1]
        lines.append(f"tpsim: warning: {len(lost)} run(s) of finished batches lack outputs (first: {first['folder']}: "
                     f"{problems[first['id']]}); re-simulate them (only them) with: snakemake --forcerun "
                     + " ".join(records[name] for name in names))
    return lines


def _record_keys(path: str) -> dict | None:
    """run id -> key from a batch record, or None when there is none."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
        return {rid: entry["key"] for rid, entry in doc["runs"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
