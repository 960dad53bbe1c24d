"""Aggregate a campaign's runs into DuckDB, Parquet (and CSV).

Reads exactly the files it is given -- per run ``run.json`` (parameters), ``requests.parquet``
(``tpsim run --requests-format parquet``: the per-request rows, columns as :data:`REQUEST_COLUMNS`)
and ``requests.summary.json`` (tpsim's run summary, read through :mod:`tpsim.io.summary`) -- and
writes

* ``campaign.duckdb`` with the tables ``requests`` (every request of every run, with the run's
  parameters; the ITL lists only in ``requests.parquet``, where they are a third of the bytes they
  would take in the database) and ``runs`` (one row per run: parameters, status, throughput, SLO attainment,
  goodput and overload class (:mod:`~tpsim.campaign.slo`), percentiles of TTFT / TPOT / ITL / latency
  / queuing delay, memory per GPU, provenance; columns in :mod:`~tpsim.campaign.tables`);
* both tables as Parquet, ``runs`` as CSV, and ``requests`` as CSV only when the campaign asks
  (``requests_csv: true``; the ITL lists make it about 2 MB per 300-request run).  Rows are sorted,
  so these files are byte-identical for identical runs.

All outputs appear together or not at all (:class:`tpsim.io.writing.AtomicFiles`).  Infeasible runs
(model does not fit, tp_size not dividing the heads, ...) have a row in ``runs`` with
``status = 'infeasible'``, the reason and, when memory is the reason, its numbers, and no requests.
From the command line::

    python -m tpsim.campaign.aggregate --out-dir DIR [--slo JSON] RUN_DIR [RUN_DIR ...]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tpsim.campaign import slo as slo_mod
from tpsim.campaign.outputs import RUN_REQUESTS, TABLE_FILES
from tpsim.campaign.tables import (
    METRICS,
    PARAMS,
    QUANTILES,
    RESULTS,
    AggregateError,
    fit,
    fitted,
    run_row,
)
from tpsim.errors import InputError
from tpsim.io.files import read_json_file
from tpsim.io.results import PARQUET_COLUMNS
from tpsim.io.summary import RunSummary, load_summary

_ITL_STATS = ("mean", *(q for q, _ in QUANTILES))
#: the per-request columns a run's Parquet file holds (tpsim's own ``model`` column is the run's parameter)
REQUEST_COLUMNS = tuple(c for c in PARQUET_COLUMNS if c != "model")


def read_summary(path: str) -> RunSummary:
    """The run summary, or AggregateError naming the file when it is not one tpsim wrote."""
    try:
        return load_summary(path)
    except TypeError as exc:  # a required field missing
        raise AggregateError(f"{path}: not a tpsim run summary ({exc})") from None


def read_runs(run_jsons: list[str], request_files: list[str], summaries: list[str]) -> list[dict]:
    """One ``runs`` row per run (plus ``run_index``, the requests file and the summary's ITL statistics)."""
    if not (len(run_jsons) == len(request_files) == len(summaries)):
        raise AggregateError(f"got {len(run_jsons)} run.json, {len(request_files)} request files and "
                             f"{len(summaries)} summaries")
    rows = []
    for idx, (pj, rq, sj) in enumerate(zip(run_jsons, request_files, summaries)):
        if Path(pj).parent != Path(rq).parent or Path(sj).parent != Path(rq).parent:
            raise AggregateError(f"inputs of run {idx} are not in one folder: {pj}, {rq}, {sj}")
        params, _ = read_json_file(pj, "run record", "the run folder")
        summary = read_summary(sj)
        row = run_row(params, summary, str(Path(rq).parent))
        rows.append({"run_index": idx, **row, "requests_file": rq, "_itl": (summary.metrics_ms or {}).get("itl")})
    return rows


def _sql_text(text: str) -> str:
    """A string literal for SQL (COPY takes no parameter for its target)."""
    return "'" + text.replace("'", "''") + "'"


def _placeholders(n: int) -> str:
    return ", ".join(["?"] * n)


#: rows per INSERT statement (DuckDB's executemany binds and runs one statement per row: 10x slower)
INSERT_CHUNK = 256


def _insert_rows(con, table: str, rows: list[list]) -> None:
    """``rows`` into ``table``, many rows per statement, in order."""
    for k in range(0, len(rows), INSERT_CHUNK):
        chunk = rows[k:k + INSERT_CHUNK]
        row = f"({_placeholders(len(chunk[0]))})"
        con.execute(f"INSERT INTO {table} VALUES " + ", ".join([row] * len(chunk)), [v for r in chunk for v in r])


def _itl_value(itl, name: str):
    return itl.get(name) if isinstance(itl, dict) else None


def _load_runs(con, rows: list[dict], log) -> None:
    """_params (the parameters), _files (requests file -> run) and _results (the summary's numbers), in one
    transaction (a row per transaction cost 11 s for a 3,000-run campaign's three tables, on disk)."""
    con.execute("BEGIN TRANSACTION")
    _insert_runs(con, rows, log)
    con.execute("COMMIT")


def _insert_runs(con, rows: list[dict], log) -> None:
    con.execute("CREATE TABLE _params (run_index INTEGER, " + ", ".join(f'"{k}" {t}' for k, t in PARAMS.items()) + ")")
    _insert_rows(con, "_params", [[r["run_index"]] + fitted(r, PARAMS, r["run_dir"], log) for r in rows])
    con.execute("CREATE TABLE _files (filename VARCHAR, run_index INTEGER)")
    _insert_rows(con, "_files", [[r["requests_file"], r["run_index"]] for r in rows])
    con.execute("CREATE TEMP TABLE _results (run_index INTEGER, "
                + ", ".join(f'"{k}" {t}' for k, t in RESULTS.items()) + ")")
    _insert_rows(con, "_results", [[r["run_index"]] + fitted(r, RESULTS, r["run_dir"], log) for r in rows])


def _check_request_files(con, files: list[str]) -> None:
    """Every file is a per-request Parquet file with tpsim's columns (AggregateError naming the first that is not)."""
    import duckdb

    try:
        found = con.execute("SELECT file_name, list(name) FROM parquet_schema($f) GROUP BY file_name",
                            {"f": files}).fetchall()
    except duckdb.Error as exc:  # not Parquet, unreadable
        raise AggregateError(f"per-request files: {' '.join(str(exc).split())[:300]}") from None
    for name, columns in found:
        missing = [c for c in REQUEST_COLUMNS if c not in columns]
        if missing:
            raise AggregateError(f"{name}: not tpsim's per-request Parquet (no column {', '.join(missing)}); "
                                 "expected tpsim run --requests-format parquet")


def _requests_table(con, rows: list[dict], param_cols: str, targets: dict) -> None:
    """``requests`` in the database without the ITL lists (they are most of the bytes: about 0.5 MB per
    300-request run), and the full rows, ITL included, streamed to requests.parquet (and .csv)."""
    _check_request_files(con, [r["requests_file"] for r in rows])
    cols = ", ".join(f"r.{c}" for c in REQUEST_COLUMNS)
    query = f"""
        SELECT {param_cols}, {cols}
        FROM read_parquet({_sql_list([r["requests_file"] for r in rows])}, filename = true) r
        JOIN _files f ON r.filename = f.filename
        JOIN _params p ON p.run_index = f.run_index
        ORDER BY p.run_index, instance_id, request_id"""
    con.execute(f"CREATE TABLE requests AS SELECT * EXCLUDE (itl_ns) FROM ({query})")
    for fmt, options in (("parquet", "FORMAT parquet, COMPRESSION zstd"), ("csv", "FORMAT csv, HEADER true")):
        if f"requests_{fmt}" in targets:
            con.execute(f"COPY ({query}) TO {_sql_text(targets[f'requests_{fmt}'])} ({options})")


def _sql_list(items: list[str]) -> str:
    return "[" + ", ".join(_sql_text(i) for i in items) + "]"


def _statistics(con, rows: list[dict], log) -> None:
    """_stats: per-run statistics from the requests (quantile_cont = the summary's linear
    interpolation); _itl: ITL over every gap of every request, which tpsim's summary has exactly
    (the same interpolation; recomputing it here would unnest every list, the slowest step by far)."""
    stat_cols = []
    for m in ("ttft", "tpot", "latency", "queuing_delay"):
        col = f"{m}_ns"
        filt = " FILTER (WHERE output_tokens > 1)" if m == "tpot" else ""
        stat_cols.append(f"avg({col}){filt} / 1e6 AS {m}_mean_ms")
        stat_cols += [f"quantile_cont({col}, {q}){filt} / 1e6 AS {m}_{name}_ms" for name, q in QUANTILES]
    con.execute(f"""CREATE TEMP TABLE _stats AS SELECT run_id, count(*) AS n_rows, {', '.join(stat_cols)}
                    FROM requests GROUP BY run_id""")
    con.execute("CREATE TEMP TABLE _itl (run_id VARCHAR, " + ", ".join(f"itl_{n}_ms DOUBLE" for n in _ITL_STATS) + ")")
    _insert_rows(con, "_itl", [[fit(r["run_id"], "VARCHAR", "run_id", log)]
                               + [fit(_itl_value(r["_itl"], n), "DOUBLE", f"{r['run_dir']}: itl {n}", log)
                                  for n in _ITL_STATS] for r in rows])


_SLO_INPUTS = ("arrival_ns", "ttft_ns", "tpot_ns", "latency_ns", "output_tokens")


def _slo_table(con, rows: list[dict], slo: slo_mod.SLO | None) -> None:
    """_slo: each run's SLO attainment, goodput, tokens per GPU and overload class (:mod:`~tpsim.campaign.slo`)."""
    lists = ", ".join(f"list({c} ORDER BY instance_id, request_id)" for c in _SLO_INPUTS)
    per_run = {rid: dict(zip(_SLO_INPUTS, vals)) for rid, *vals in
               con.execute(f"SELECT run_id, {lists} FROM requests GROUP BY run_id").fetchall()}
    empty = {c: [] for c in _SLO_INPUTS}
    out = []
    for r in rows:
        if r["status"] != "ok":
            out.append([r["run_id"]] + [None] * len(slo_mod.COLUMNS))
            continue
        thr = r.get("output_tokens_per_s")
        gpus = (r.get("num_npus") or 0) * (r.get("num_instances") or 0)
        stats = slo_mod.run_stats(per_run.get(r["run_id"], empty), slo, r.get("requests"), r.get("simulated_time_s"),
                                  thr, gpus)
        out.append([r["run_id"]] + [stats[k] for k in slo_mod.COLUMNS])
    con.execute("CREATE TEMP TABLE _slo (run_id VARCHAR, "
                + ", ".join(f'"{k}" {t}' for k, t in slo_mod.COLUMNS.items()) + ")")
    _insert_rows(con, "_slo", out)


def _runs_table(con, param_cols: str) -> None:
    """runs: parameters, counts and throughput, SLO and load, then the metrics, then memory and provenance."""
    metric_cols = []
    for m in METRICS:
        src = "i" if m == "itl" else "s"
        metric_cols += [f"{src}.{m}_mean_ms"] + [f"{src}.{m}_{n}_ms" for n, _ in QUANTILES]
    keys = list(RESULTS)
    split = keys.index("weights_gb")
    head = ", ".join(f'x."{k}"' for k in keys[:split])
    tail = ", ".join(f'x."{k}"' for k in keys[split:])
    slo_cols = ", ".join(f'g."{k}"' for k in slo_mod.COLUMNS)
    con.execute(
        f"""
        CREATE TABLE runs AS
        SELECT {param_cols}, {head}, {slo_cols}, {', '.join(metric_cols)}, {tail}
        FROM _params p JOIN _results x USING (run_index)
        LEFT JOIN _stats s ON s.run_id = p.run_id
        LEFT JOIN _itl i ON i.run_id = p.run_id
        LEFT JOIN _slo g ON g.run_id = p.run_id
        ORDER BY p.run_index
        """
    )
    bad = con.execute(
        """SELECT r.run_id, r.status, r.finished, coalesce(s.n_rows, 0) FROM runs r LEFT JOIN _stats s USING (run_id)
           WHERE (r.status = 'ok' AND r.finished IS DISTINCT FROM coalesce(s.n_rows, 0))
              OR (r.status != 'ok' AND coalesce(s.n_rows, 0) > 0)"""
    ).fetchall()
    if bad:
        raise AggregateError("per-request rows differ from the summary: " + "; ".join(
            f"{r}: summary {'infeasible' if st != 'ok' else f'{f} finished'}, {n} rows" for r, st, f, n in bad))
    con.execute("DROP TABLE _params")
    con.execute("DROP TABLE _files")


def _build(db_path: str, rows: list[dict], targets: dict, slo: slo_mod.SLO | None, log) -> tuple[dict, dict]:
    """The database at ``db_path``, the tables exported to ``targets``; (counts, runs by status)."""
    import duckdb

    con = duckdb.connect(db_path)
    try:
        param_cols = ", ".join(f'p."{k}"' for k in PARAMS)
        _load_runs(con, rows, log)
        _requests_table(con, rows, param_cols, targets)
        _statistics(con, rows, log)
        _slo_table(con, rows, slo)
        _runs_table(con, param_cols)
        export(con, ("runs",), targets)
        counts = dict(con.execute(
            "SELECT 'runs', count(*) FROM runs UNION ALL SELECT 'requests', count(*) FROM requests").fetchall())
        status = dict(con.execute("SELECT status, count(*) FROM runs GROUP BY status ORDER BY status").fetchall())
    finally:
        con.close()
    return counts, status


def export(con, tables, targets: dict) -> None:
    """Each table to the Parquet and CSV files ``targets`` names (``<table>_parquet``, ``<table>_csv``)."""
    for table in tables:
        for fmt, options in (("parquet", "FORMAT parquet, COMPRESSION zstd"), ("csv", "FORMAT csv, HEADER true")):
            if f"{table}_{fmt}" in targets:
                con.execute(f"COPY {table} TO {_sql_text(targets[f'{table}_{fmt}'])} ({options})")


def aggregate(run_jsons: list[str], request_files: list[str], summaries: list[str], outputs: dict,
              log=sys.stdout, slo: dict | None = None) -> dict:
    """Build the tables; ``outputs`` maps db/runs_parquet/runs_csv/requests_parquet (and requests_csv,
    when wanted) to paths; ``slo`` is the campaign's ``slo:`` block."""
    from tpsim.io.writing import AtomicFiles

    rows = read_runs(run_jsons, request_files, summaries)
    with AtomicFiles() as out:
        targets = {key: out.reserve(path) for key, path in outputs.items()}
        try:
            counts, status = _build(targets["db"], rows, targets, slo_mod.SLO.from_doc(slo), log)
        finally:
            Path(targets["db"] + ".wal").unlink(missing_ok=True)  # DuckDB's log, left when it fails
    print(f"aggregated {counts['runs']} runs ({', '.join(f'{v} {k}' for k, v in status.items())}), "
          f"{counts['requests']} requests -> {outputs['db']}", file=log)
    return {"runs": counts["runs"], "requests": counts["requests"], "status": status}


def logged(func, log_path: str, *args, **kw):
    """``func(*args, log=LOG, **kw)`` with its progress and any error in the log file (a Snakemake rule's log)."""
    with open(log_path, "w", encoding="utf-8") as log:
        try:
            return func(*args, log=log, **kw)
        except Exception as exc:
            print(f"{func.__name__}: error: {exc}", file=log)
            raise


def aggregate_logged(run_jsons: list[str], request_files: list[str], summaries: list[str], outputs: dict,
                     log_path: str, slo: dict | None = None) -> dict:
    """:func:`aggregate` with its progress and any error in the log file (the Snakemake rule's log)."""
    return logged(aggregate, log_path, run_jsons, request_files, summaries, outputs, slo=slo)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--slo", help="the campaign's slo: block as JSON")
    ap.add_argument("--requests-csv", action="store_true", help="also write requests.csv")
    ap.add_argument("run_dirs", nargs="+", help="folders holding run.json, requests.parquet, requests.summary.json")
    args = ap.parse_args(argv)
    outputs = {k: str(Path(args.out_dir) / v) for k, v in TABLE_FILES.items()
               if args.requests_csv or k != "requests_csv"}
    dirs = [Path(d) for d in args.run_dirs]
    return cli_call("aggregate", lambda: aggregate(
        [str(d / "run.json") for d in dirs], [str(d / RUN_REQUESTS) for d in dirs],
        [str(d / "requests.summary.json") for d in dirs], outputs, slo=json.loads(args.slo) if args.slo else None))


def cli_call(name: str, call) -> int:
    """A table command's exit status: 0, or 1 with one ``NAME: error: ...`` line for a problem of its inputs."""
    try:
        call()
    except (AggregateError, InputError, OSError, ValueError) as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
