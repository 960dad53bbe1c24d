"""One ``simulate`` job of a matrix campaign: the runs of one batch (:mod:`tpsim.campaign.batches`),
each derived and simulated in this process through the typed run API, as
``python -m tpsim.campaign.derive`` and ``python -m tpsim run`` would one at a time.

For each run that is not done (no ``done.json`` with its key and its trace's hash, or an output file
missing), in its own folder: its old outputs are removed (done.json first), ``tpsim.log`` is begun
with where it runs, ``cluster.json`` and ``run.json`` are derived, the run simulates with the flags
``tpsim run`` would get (the same argv goes into the summary, so the outputs are byte-identical to a
single run's, timing aside; an infeasible run is recorded, as ``--record-infeasible`` does), and
``done.json`` is written last.  Runs that are done are not touched.  With ``threads`` > 1 the runs
go to that many worker processes.

A failing run (a bad input, an unexpected error) does not stop the others: every run of the batch is
tried, the batch record is written, and then the job fails, printing the end of each failed run's
``tpsim.log``.  Snakemake deletes the failed job's output (the batch record) but not the run folders,
so the next invocation reruns the batch and simulates only the runs that are still not done.
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from tpsim.campaign.batches import DONE, done_problem, run_files
from tpsim.campaign.derive import derive_run, one_line
from tpsim.campaign.outputs import JSON_INDENT, RUN_CSV
from tpsim.campaign.provenance import file_sha256, git_dirty
from tpsim.errors import InputError
from tpsim.io.writing import atomic_write_json

#: lines of a failed run's tpsim.log printed when the job fails, and failed runs shown
TAIL_LINES = 20
MAX_FAILED_SHOWN = 5


class BatchFailed(Exception):
    """Some runs of the batch failed; the message holds the end of each one's log."""


def where() -> str:
    """The first line of every log: the host and the Slurm job (``none`` outside Slurm)."""
    return f"host={platform.node()} slurm_job={os.environ.get('SLURM_JOB_ID', 'none')}"


def argv_of(spec: dict) -> list[str]:
    """The ``tpsim run`` arguments of a run (what ``python -m tpsim run ...`` has in ``sys.argv[1:]``)."""
    folder = spec["folder"]
    return ["run", f"--cluster-config={folder}/cluster.json", f"--dataset={spec['trace']}",
            f"--output={folder}/{RUN_CSV}", "--record-infeasible", "--log-interval", "0", *spec["flags"]]


@functools.cache
def _run_parser():
    from tpsim.argspec import Parser
    from tpsim.commands.run import add_run_arguments

    parser = Parser(prog="tpsim run")
    add_run_arguments(parser)
    return parser


def trace_sha256(spec: dict) -> str | None:
    try:
        return file_sha256(spec["trace"])
    except OSError:
        return None


def simulate_run(spec: dict, dirty: bool | None, batch: str) -> dict:
    """Derive, simulate and record one run (module docstring); its outcome for the batch record."""
    from tpsim.api import run
    from tpsim.commands.run import config_from_args
    from tpsim.console import Console

    t0 = time.perf_counter()
    folder = Path(spec["folder"])
    folder.mkdir(parents=True, exist_ok=True)
    for path in reversed(run_files(spec)):  # done.json first: an interrupted run is never taken as done
        Path(path).unlink(missing_ok=True)
    Path(folder, RUN_CSV).unlink(missing_ok=True)  # a CSV from when the campaign asked for one
    log_path = folder / "tpsim.log"
    outcome = {"outcome": "failed", "status": None}
    with open(log_path, "w", encoding="utf-8") as log:
        log.write(where() + "\n")
        log.flush()
        try:
            derive_run(spec["base"], spec["params"], str(folder / "cluster.json"), str(folder / "run.json"),
                       spec["hardware"], spec["records"], dirty)
        except (InputError, ValueError, KeyError, TypeError, OSError) as exc:
            log.write(f"derive: error: {one_line(exc)}\n")
            return dict(outcome, wall_s=round(time.perf_counter() - t0, 3))
        argv = argv_of(spec)
        try:
            with contextlib.redirect_stderr(log):  # a usage error's one line goes to the log
                args = _run_parser().parse_args(argv[1:])
            config = config_from_args(args)
            result = run(config, console=Console(config.log_level, out=log, err=log), argv=argv)
        except SystemExit:
            result = None
        except InputError as exc:
            log.write(f"tpsim: error: {exc}\n")
            result = None
        except Exception:  # noqa: BLE001 - a bug in one run must not lose the batch's others
            traceback.print_exc(file=log)
            result = None
    wall_s = round(time.perf_counter() - t0, 3)
    if result is None:
        return dict(outcome, wall_s=wall_s)
    status = result.summary.status
    atomic_write_json(folder / DONE, {"key": spec["key"], "trace_sha256": trace_sha256(spec), "status": status,
                                      "batch": batch, "where": where(), "wall_s": wall_s}, indent=JSON_INDENT)
    return {"outcome": "simulated", "status": status, "wall_s": wall_s}


def attempt_run(spec: dict, dirty: bool | None, batch: str) -> dict:
    """:func:`simulate_run`, with any error it lets through (an unwritable folder, a bug) recorded in the run's
    log as its failure: one run never loses the batch's others, in this process or in a worker."""
    try:
        return simulate_run(spec, dirty, batch)
    except Exception:  # noqa: BLE001 - see the docstring
        note_failure(spec, traceback.format_exc())
        return {"outcome": "failed", "status": None, "wall_s": 0.0}


def note_failure(spec: dict, text: str) -> None:
    """Append ``text`` to the run's tpsim.log, where the job's error report reads it (if it can be written)."""
    with contextlib.suppress(OSError), open(Path(spec["folder"], "tpsim.log"), "a", encoding="utf-8") as log:
        log.write(text.rstrip("\n") + "\n")


def run_batch(specs: list[dict], record_path: str, log_path: str, threads: int = 1, batch: str = "") -> dict:
    """Simulate the runs of ``specs`` that are not done; write the batch record to ``record_path`` and
    progress to ``log_path``.  Returns the record; raises :class:`BatchFailed` after the record when a
    run failed."""
    t0 = time.time()
    file_sha256.cache_clear()  # inputs may have changed since this process last hashed them
    batch = batch or Path(record_path).stem
    entries = {s["id"]: {"key": s["key"], "outcome": "done", "status": None} for s in specs}
    with open(log_path, "w", encoding="utf-8") as log:
        todo = []
        for spec in specs:
            problem = done_problem(spec, trace_sha256(spec))
            if problem is not None:
                todo.append(spec)
                entries[spec["id"]]["reason"] = problem
        _say(log, f"{where()} batch={batch}: {len(specs)} runs, {len(todo)} to simulate, "
                  f"{len(specs) - len(todo)} done; {threads} worker(s)")
        dirty = git_dirty() if todo else None
        for i, (spec, outcome) in enumerate(_simulate_all(todo, dirty, batch, threads), 1):
            entries[spec["id"]].update(outcome)
            _say(log, f"[{i}/{len(todo)}] {spec['id']}: {outcome['status'] or 'FAILED'} ({outcome['wall_s']:.2f} s)")
        failed = [s for s in specs if entries[s["id"]]["outcome"] == "failed"]
        record = {"batch": batch, "where": where(), "runs": entries, "simulated": len(todo) - len(failed),
                  "failed": len(failed), "done": len(specs) - len(todo), "wall_s": round(time.time() - t0, 3)}
        atomic_write_json(record_path, record, indent=JSON_INDENT)
        _say(log, f"batch={batch}: {record['simulated']} simulated, {len(failed)} failed, {record['done']} done "
                  f"before, {record['wall_s']:.1f} s")
    if failed:
        raise BatchFailed(failure_report(failed))
    return record


def _simulate_all(todo: list[dict], dirty, batch: str, threads: int):
    """(spec, outcome) for each run, as they finish: in this process, or in ``threads`` workers
    (the costliest runs first)."""
    workers = min(threads, len(todo))
    if workers <= 1:
        for spec in todo:
            yield spec, attempt_run(spec, dirty, batch)
        return
    order = sorted(todo, key=lambda s: -s["cost_s"])
    with ProcessPoolExecutor(max_workers=workers) as pool:  # forked: the parent's input hashes come along
        futures = {pool.submit(attempt_run, spec, dirty, batch): spec for spec in order}
        for future in as_completed(futures):
            spec = futures[future]
            try:
                yield spec, future.result()
            except Exception as exc:  # noqa: BLE001 - a worker that died: the run failed, say why
                note_failure(spec, f"batch worker failed: {one_line(exc)}")
                yield spec, {"outcome": "failed", "status": None, "wall_s": 0.0}


def _say(log, line: str) -> None:
    log.write(line + "\n")
    log.flush()


def failure_report(failed: list[dict]) -> str:
    """The end of each failed run's log (the first :data:`MAX_FAILED_SHOWN`), as the job's error."""
    parts = []
    for spec in failed[:MAX_FAILED_SHOWN]:
        log = Path(spec["folder"], "tpsim.log")
        try:
            tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-TAIL_LINES:]
        except OSError:
            tail = ["(no log)"]
        parts.append(f"run failed, end of {log}:\n" + "\n".join(tail))
    if len(failed) > MAX_FAILED_SHOWN:
        parts.append(f"... and {len(failed) - MAX_FAILED_SHOWN} more failed runs (see their tpsim.log)")
    return f"{len(failed)} run(s) of this batch failed\n" + "\n".join(parts)


def main_snakemake(sm) -> None:
    """The ``simulate`` rule's script (workflow/scripts/simulate_batch.py): ``sm`` is Snakemake's object."""
    try:
        run_batch(list(sm.params.runs), sm.output[0], sm.log[0], threads=sm.threads, batch=sm.wildcards.batch)
    except BatchFailed as exc:
        print(exc, file=sys.stderr)
        sys.exit(1)
