"""Aggregate a campaign's runs into DuckDB, Parquet and CSV.

Reads exactly the files it is given -- per run ``run.json`` (parameters), ``requests.csv``
(tpsim's per-request CSV, columns from :mod:`tpsim.io.results`) and ``requests.summary.json``
(tpsim's run summary, read through :mod:`tpsim.io.summary`) -- and writes

* ``campaign.duckdb`` with the tables ``requests`` (every request of every run, with the run's
  parameters) and ``runs`` (one row per run: parameters, status, percentiles of TTFT / TPOT /
  ITL / latency / queuing delay, throughput, memory per GPU, provenance; columns in
  :mod:`~tpsim.campaign.tables`);
* both tables as Parquet and CSV (``runs.parquet``, ``runs.csv``, ``requests.parquet``,
  ``requests.csv``).  Rows are sorted, so these files are byte-identical for identical runs.

All five appear together or not at all (:class:`tpsim.io.writing.AtomicFiles`).  Infeasible runs
(model does not fit, tp_size not dividing the heads, ...) have a row in ``runs`` with
``status = 'infeasible'`` and the reason, and no requests.  From the command line::

    python -m tpsim.campaign.aggregate --out-dir DIR RUN_DIR [RUN_DIR ...]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from tpsim.campaign.outputs import TABLE_FILES, TABLES
from tpsim.campaign.tables import (
    CSV_TYPES,
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
from tpsim.io.results import HEADER
from tpsim.io.summary import RunSummary, load_summary
from tpsim.io.writing import AtomicFiles

_HEADER_LINE = HEADER.rstrip("\n")
_ITL_STATS = ("mean", *(q for q, _ in QUANTILES))


def read_summary(path: str) -> RunSummary:
    """The run summary, or AggregateError naming the file when it is not one tpsim wrote."""
    try:
        return load_summary(path)
    except TypeError as exc:  # a required field missing
        raise AggregateError(f"{path}: not a tpsim run summary ({exc})") from None


def check_csv(path: str, summary: RunSummary) -> None:
    """The CSV has tpsim's header, and no rows when the run was infeasible."""
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\r\n")
    if header != _HEADER_LINE:
        raise AggregateError(f"{path}: unexpected header {header!r}; expected {_HEADER_LINE!r}")
    if summary.status == "infeasible" and os.path.getsize(path) > len(_HEADER_LINE) + 2:
        raise AggregateError(f"{path}: run is infeasible but its CSV has rows")


def read_runs(run_jsons: list[str], csvs: list[str], summaries: list[str]) -> list[dict]:
    """One ``runs`` row per run (plus ``run_index``, ``csv`` and the summary's ITL statistics)."""
    if not (len(run_jsons) == len(csvs) == len(summaries)):
        raise AggregateError(f"got {len(run_jsons)} run.json, {len(csvs)} CSVs and {len(summaries)} summaries")
    rows = []
    for idx, (pj, csv, sj) in enumerate(zip(run_jsons, csvs, summaries)):
        if Path(pj).parent != Path(csv).parent or Path(sj).parent != Path(csv).parent:
            raise AggregateError(f"inputs of run {idx} are not in one folder: {pj}, {csv}, {sj}")
        params, _ = read_json_file(pj, "run record", "the run folder")
        summary = read_summary(sj)
        check_csv(csv, summary)
        row = run_row(params, summary, str(Path(csv).parent))
        rows.append({"run_index": idx, **row, "csv": csv, "_itl": (summary.metrics_ms or {}).get("itl")})
    return rows


def _sql_text(text: str) -> str:
    """A string literal for SQL (COPY takes no parameter for its target)."""
    return "'" + text.replace("'", "''") + "'"


def _placeholders(n: int) -> str:
    return ", ".join(["?"] * n)


def _itl_value(itl, name: str):
    return itl.get(name) if isinstance(itl, dict) else None


def _load_runs(con, rows: list[dict], log) -> None:
    """_params (the parameters), _files (CSV -> run) and _results (the summary's numbers)."""
    con.execute("CREATE TABLE _params (run_index INTEGER, " + ", ".join(f'"{k}" {t}' for k, t in PARAMS.items()) + ")")
    con.executemany(f"INSERT INTO _params VALUES ({_placeholders(len(PARAMS) + 1)})",
                    [[r["run_index"]] + fitted(r, PARAMS, r["run_dir"], log) for r in rows])
    con.execute("CREATE TABLE _files (filename VARCHAR, run_index INTEGER)")
    con.executemany("INSERT INTO _files VALUES (?, ?)", [[r["csv"], r["run_index"]] for r in rows])
    con.execute("CREATE TEMP TABLE _results (run_index INTEGER, "
                + ", ".join(f'"{k}" {t}' for k, t in RESULTS.items()) + ")")
    con.executemany(f"INSERT INTO _results VALUES ({_placeholders(len(RESULTS) + 1)})",
                    [[r["run_index"]] + fitted(r, RESULTS, r["run_dir"], log) for r in rows])


def _requests_table(con, rows: list[dict], param_cols: str) -> None:
    con.execute(
        f"""
        CREATE TABLE requests AS
        SELECT {param_cols},
               r."instance id" AS instance_id, r."request id" AS request_id,
               r."input" AS input_tokens, r."output" AS output_tokens,
               r.arrival AS arrival_ns, r.end_time AS end_time_ns, r.latency AS latency_ns,
               r.queuing_delay AS queuing_delay_ns, r.TTFT AS ttft_ns, r.TPOT AS tpot_ns,
               from_json(r.ITL, '["BIGINT"]') AS itl_ns
        FROM read_csv($files, header = true, columns = $columns, auto_detect = false, filename = true) r
        JOIN _files f ON r.filename = f.filename
        JOIN _params p ON p.run_index = f.run_index
        ORDER BY p.run_index, instance_id, request_id
        """,
        {"files": [r["csv"] for r in rows], "columns": CSV_TYPES},
    )


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
    con.executemany(f"INSERT INTO _itl VALUES ({_placeholders(len(_ITL_STATS) + 1)})",
                    [[fit(r["run_id"], "VARCHAR", "run_id", log)]
                     + [fit(_itl_value(r["_itl"], n), "DOUBLE", f"{r['run_dir']}: itl {n}", log) for n in _ITL_STATS]
                     for r in rows])


def _runs_table(con, param_cols: str) -> None:
    """runs: parameters, counts and throughput, then the metrics, then memory and provenance."""
    metric_cols = []
    for m in METRICS:
        src = "i" if m == "itl" else "s"
        metric_cols += [f"{src}.{m}_mean_ms"] + [f"{src}.{m}_{n}_ms" for n, _ in QUANTILES]
    keys = list(RESULTS)
    split = keys.index("weights_gb")
    head = ", ".join(f'x."{k}"' for k in keys[:split])
    tail = ", ".join(f'x."{k}"' for k in keys[split:])
    con.execute(
        f"""
        CREATE TABLE runs AS
        SELECT {param_cols}, {head}, {', '.join(metric_cols)}, {tail}
        FROM _params p JOIN _results x USING (run_index)
        LEFT JOIN _stats s ON s.run_id = p.run_id
        LEFT JOIN _itl i ON i.run_id = p.run_id
        ORDER BY p.run_index
        """
    )
    bad = con.execute(
        """SELECT r.run_id, r.finished, coalesce(s.n_rows, 0) FROM runs r LEFT JOIN _stats s USING (run_id)
           WHERE r.status = 'ok' AND r.finished IS DISTINCT FROM coalesce(s.n_rows, 0)"""
    ).fetchall()
    if bad:
        raise AggregateError("CSV rows differ from the summary's finished count: "
                             + "; ".join(f"{r}: summary {f}, CSV {n}" for r, f, n in bad))
    con.execute("DROP TABLE _params")
    con.execute("DROP TABLE _files")


def _build(db_path: str, rows: list[dict], targets: dict, log) -> tuple[dict, dict]:
    """The database at ``db_path``, the tables exported to ``targets``; (counts, runs by status)."""
    import duckdb

    con = duckdb.connect(db_path)
    try:
        param_cols = ", ".join(f'p."{k}"' for k in PARAMS)
        _load_runs(con, rows, log)
        _requests_table(con, rows, param_cols)
        _statistics(con, rows, log)
        _runs_table(con, param_cols)
        for table in TABLES:
            con.execute(f"COPY {table} TO {_sql_text(targets[table + '_parquet'])} (FORMAT parquet, COMPRESSION zstd)")
            con.execute(f"COPY {table} TO {_sql_text(targets[table + '_csv'])} (FORMAT csv, HEADER true)")
        counts = dict(con.execute(
            "SELECT 'runs', count(*) FROM runs UNION ALL SELECT 'requests', count(*) FROM requests").fetchall())
        status = dict(con.execute("SELECT status, count(*) FROM runs GROUP BY status ORDER BY status").fetchall())
    finally:
        con.close()
    return counts, status


def aggregate(run_jsons: list[str], csvs: list[str], summaries: list[str], outputs: dict, log=sys.stdout) -> dict:
    """Build the tables; ``outputs`` maps db/runs_parquet/runs_csv/requests_parquet/requests_csv to paths."""
    rows = read_runs(run_jsons, csvs, summaries)
    with AtomicFiles() as out:
        targets = {key: out.reserve(path) for key, path in outputs.items()}
        try:
            counts, status = _build(targets["db"], rows, targets, log)
        finally:
            Path(targets["db"] + ".wal").unlink(missing_ok=True)  # DuckDB's log, left when it fails
    print(f"aggregated {counts['runs']} runs ({', '.join(f'{v} {k}' for k, v in status.items())}), "
          f"{counts['requests']} requests -> {outputs['db']}", file=log)
    return {"runs": counts["runs"], "requests": counts["requests"], "status": status}


def aggregate_logged(run_jsons: list[str], csvs: list[str], summaries: list[str], outputs: dict,
                     log_path: str) -> dict:
    """:func:`aggregate` with its progress and any error in the log file (the Snakemake rule's log)."""
    with open(log_path, "w", encoding="utf-8") as log:
        try:
            return aggregate(run_jsons, csvs, summaries, outputs, log=log)
        except Exception as exc:
            print(f"aggregate: error: {exc}", file=log)
            raise


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("run_dirs", nargs="+", help="folders holding run.json, requests.csv, requests.summary.json")
    args = ap.parse_args(argv)
    outputs = {k: str(Path(args.out_dir) / v) for k, v in TABLE_FILES.items()}
    dirs = [Path(d) for d in args.run_dirs]
    try:
        aggregate([str(d / "run.json") for d in dirs], [str(d / "requests.csv") for d in dirs],
                  [str(d / "requests.summary.json") for d in dirs], outputs)
    except (AggregateError, InputError, OSError, ValueError) as exc:
        print(f"aggregate: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
