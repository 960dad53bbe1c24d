"""Aggregate a campaign's runs into DuckDB, Parquet and CSV.

Reads exactly the files it is given -- per run ``run.json`` (parameters), ``requests.csv``
(tpsim's per-request CSV) and ``requests.summary.json`` (tpsim's run summary) -- and writes

* ``campaign.duckdb`` with the tables ``requests`` (every request of every run, with the run's
  parameters) and ``runs`` (one row per run: parameters, status, percentiles of TTFT / TPOT /
  ITL / latency / queuing delay, throughput, memory per GPU, provenance);
* both tables as Parquet and CSV (``runs.parquet``, ``runs.csv``, ``requests.parquet``,
  ``requests.csv``).  Rows are sorted, so these files are byte-identical for identical runs.

Infeasible runs (model does not fit, tp_size not dividing the heads, ...) have a row in ``runs``
with ``status = 'infeasible'`` and the reason, and no requests.

One run's odd number must not cost a campaign its tables: integer columns that take values from
outside the campaign's own checks (the base config's pp_size and engine limits, tpsim's engine
settings) are BIGINT, and a value that still does not fit its column (or has the wrong JSON type)
is stored as NULL with a warning in the log (:func:`fit`).

As a Snakemake script it takes ``snakemake.input.runs/.csv/.summaries`` and the outputs ``db``,
``runs_parquet``, ``runs_csv``, ``requests_parquet``, ``requests_csv``.  From the command line::

    python workflow/scripts/aggregate.py --out-dir DIR RUN_DIR [RUN_DIR ...]
"""

import argparse
import json
import os
import sys
from pathlib import Path

CSV_HEADER = "instance id,request id,model,input,output,arrival,end_time,latency,queuing_delay,TTFT,TPOT,ITL"
CSV_COLUMNS = {
    "instance id": "BIGINT",
    "request id": "BIGINT",
    "model": "VARCHAR",
    "input": "BIGINT",
    "output": "BIGINT",
    "arrival": "BIGINT",
    "end_time": "BIGINT",
    "latency": "BIGINT",
    "queuing_delay": "BIGINT",
    "TTFT": "BIGINT",
    "TPOT": "BIGINT",
    "ITL": "VARCHAR",
}
# Run parameters, in the order they appear in both tables.
PARAMS = {
    "campaign": "VARCHAR",
    "run_id": "VARCHAR",
    "model": "VARCHAR",
    "hardware": "VARCHAR",
    "tp_size": "INTEGER",
    "pp_size": "BIGINT",
    "num_npus": "BIGINT",
    "num_instances": "INTEGER",
    "link_bw": "DOUBLE",
    "link_latency": "DOUBLE",
    "rate": "DOUBLE",
    "seed": "INTEGER",
    "max_num_seqs": "BIGINT",
    "max_num_batched_tokens": "BIGINT",
    "perf_model": "VARCHAR",
    "workload": "VARCHAR",
}
# Per-run results taken from the summary.
RESULTS = {
    "status": "VARCHAR",
    "reason": "VARCHAR",
    "requests": "BIGINT",
    "finished": "BIGINT",
    "rejected": "BIGINT",
    "input_tokens": "BIGINT",
    "output_tokens": "BIGINT",
    "preemptions": "BIGINT",
    "recomputed_tokens": "BIGINT",
    "prefix_hit_tokens": "BIGINT",
    "iterations": "BIGINT",
    "simulated_time_s": "DOUBLE",
    "throughput_rps": "DOUBLE",
    "input_tokens_per_s": "DOUBLE",
    "output_tokens_per_s": "DOUBLE",
    "total_tokens_per_s": "DOUBLE",
    "weights_gb": "DOUBLE",
    "weights_gib": "DOUBLE",
    "activation_peak_gb": "DOUBLE",
    "reserve_gb": "DOUBLE",
    "budget_gb": "DOUBLE",
    "kv_capacity_gb": "DOUBLE",
    "kv_capacity_gib": "DOUBLE",
    "kv_capacity_tokens": "BIGINT",
    "kv_capacity_blocks": "BIGINT",
    "kv_bytes_per_token": "BIGINT",
    "block_size": "BIGINT",
    "peak_kv_blocks_used": "BIGINT",
    "peak_kv_utilization": "DOUBLE",
    "peak_npu_mem_gb": "DOUBLE",
    "engine_max_num_seqs": "BIGINT",
    "engine_max_num_batched_tokens": "BIGINT",
    "engine_dtype": "VARCHAR",
    "tpsim_version": "VARCHAR",
    "git_commit": "VARCHAR",
    "git_dirty": "BOOLEAN",
    "cluster_config_sha256": "VARCHAR",
    "dataset_sha256": "VARCHAR",
    "model_config_sha256": "VARCHAR",
    "hardware_sha256": "VARCHAR",
    "n_warnings": "INTEGER",
    "sim_wall_time_s": "DOUBLE",
    "run_dir": "VARCHAR",
}
METRICS = ("ttft", "tpot", "itl", "latency", "queuing_delay")
QUANTILES = (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))  # tpsim's summary reports the same


INT_RANGE = {"INTEGER": (-(2**31), 2**31 - 1), "BIGINT": (-(2**63), 2**63 - 1)}


class AggregateError(RuntimeError):
    pass


def fit(value, sql_type: str, what: str, log=sys.stdout):
    """``value`` as a column of ``sql_type`` takes it; None (NULL, with a warning on ``log``) when it
    does not fit: an integer out of range, a number that is not one, a list where text belongs."""
    if value is None:
        return None
    if sql_type in INT_RANGE:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        lo, hi = INT_RANGE[sql_type]
        if isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi:
            return value
    elif sql_type == "DOUBLE":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                return float(value)
            except OverflowError:  # an integer past 1.8e308
                pass
    elif sql_type == "BOOLEAN":
        if isinstance(value, bool):
            return value
    elif isinstance(value, str):
        return value
    shown = repr(value)
    print(f"aggregate: warning: {what}: {shown if len(shown) <= 80 else shown[:77] + '...'} does not fit "
          f"a {sql_type} column; stored as NULL", file=log)
    return None


def _fitted(row: dict, columns: dict, run: str, log) -> list:
    return [fit(row[k], t, f"{run}: {k}", log) for k, t in columns.items()]


def _get(d, *keys):
    for k in keys:
        if d is None:
            return None
        d = d.get(k)
    return d


def _one_value(mapping: dict | None, key: str):
    """The sha256 of the only entry of provenance.inputs.models/hardware (several: joined)."""
    if not mapping:
        return None
    return ",".join(v.get(key, "") for _, v in sorted(mapping.items()))


def run_row(params: dict, summary: dict, run_dir: str) -> dict:
    status = summary.get("status")
    if status not in ("ok", "infeasible"):
        raise AggregateError(f"{run_dir}: summary status {status!r}; expected 'ok' or 'infeasible'")
    inst = (summary.get("instances") or [None])[0] or {}
    mem = inst.get("memory") or {}
    engine = inst.get("engine") or {}
    totals = summary.get("totals") or {}
    thr = summary.get("throughput") or {}
    prov = summary.get("provenance") or {}
    inputs = prov.get("inputs") or {}
    recorded = params.get("inputs") or {}
    row = {k: params.get(k) for k in PARAMS}
    row.update(
        status=status,
        reason=summary.get("reason"),
        requests=totals.get("requests"),
        finished=totals.get("finished"),
        rejected=totals.get("rejected"),
        input_tokens=totals.get("input_tokens"),
        output_tokens=totals.get("output_tokens"),
        preemptions=totals.get("preemptions"),
        recomputed_tokens=totals.get("recomputed_tokens"),
        prefix_hit_tokens=totals.get("prefix_hit_tokens"),
        iterations=totals.get("iterations"),
        simulated_time_s=summary.get("simulated_time_s"),
        throughput_rps=thr.get("requests_per_s"),
        input_tokens_per_s=thr.get("input_tokens_per_s"),
        output_tokens_per_s=thr.get("output_tokens_per_s"),
        total_tokens_per_s=thr.get("total_tokens_per_s"),
        peak_kv_blocks_used=inst.get("peak_kv_blocks_used"),
        peak_kv_utilization=inst.get("peak_kv_utilization"),
        peak_npu_mem_gb=inst.get("peak_npu_mem_gb"),
        engine_max_num_seqs=engine.get("max_num_seqs"),
        engine_max_num_batched_tokens=engine.get("max_num_batched_tokens"),
        engine_dtype=engine.get("dtype"),
        tpsim_version=summary.get("tpsim_version"),
        git_commit=prov.get("git_commit"),
        git_dirty=params.get("git_dirty"),
        # what tpsim read, else (infeasible runs: tpsim stops after the cluster config) run.json's record
        cluster_config_sha256=_get(inputs, "cluster_config", "sha256") or _get(recorded, "cluster_config", "sha256"),
        dataset_sha256=_get(inputs, "dataset", "sha256") or _get(recorded, "dataset", "sha256"),
        model_config_sha256=_one_value(inputs.get("models"), "sha256") or _get(recorded, "model_config", "sha256"),
        hardware_sha256=_one_value(inputs.get("hardware"), "sha256") or _get(recorded, "hardware", "sha256"),
        n_warnings=len(summary.get("warnings") or []),
        sim_wall_time_s=_get(summary, "timing", "wall_time_s"),
        run_dir=run_dir,
    )
    for key in ("weights_gb", "weights_gib", "activation_peak_gb", "reserve_gb", "budget_gb", "kv_capacity_gb",
                "kv_capacity_gib", "kv_capacity_tokens", "kv_capacity_blocks", "kv_bytes_per_token", "block_size"):
        row[key] = mem.get(key)
    return row


def _check_csv(path: str, params: dict, summary: dict) -> None:
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\r\n")
    if header != CSV_HEADER:
        raise AggregateError(f"{path}: unexpected header {header!r}; expected {CSV_HEADER!r}")
    if summary.get("status") == "infeasible" and os.path.getsize(path) > len(CSV_HEADER) + 2:
        raise AggregateError(f"{path}: run is infeasible but its CSV has rows")


def _sql_text(text: str) -> str:
    """A string literal for SQL (COPY takes no parameter for its target)."""
    return "'" + text.replace("'", "''") + "'"


def _itl_value(itl, name: str):
    return itl.get(name) if isinstance(itl, dict) else None


def _atomic_targets(outputs: dict) -> dict:
    return {k: str(Path(v).with_name(f".{Path(v).name}.{os.getpid()}.tmp")) for k, v in outputs.items()}


def aggregate(run_jsons: list[str], csvs: list[str], summaries: list[str], outputs: dict, log=sys.stdout) -> dict:
    """Build the tables; ``outputs`` maps db/runs_parquet/runs_csv/requests_parquet/requests_csv to paths."""
    import duckdb

    if not (len(run_jsons) == len(csvs) == len(summaries)):
        raise AggregateError(f"got {len(run_jsons)} run.json, {len(csvs)} CSVs and {len(summaries)} summaries")
    params_rows, run_rows, files = [], [], []
    for idx, (pj, csv, sj) in enumerate(zip(run_jsons, csvs, summaries)):
        with open(pj, encoding="utf-8") as f:
            params = json.load(f)
        with open(sj, encoding="utf-8") as f:
            summary = json.load(f)
        run_dir = str(Path(csv).parent)
        if Path(pj).parent != Path(csv).parent or Path(sj).parent != Path(csv).parent:
            raise AggregateError(f"inputs of run {idx} are not in one folder: {pj}, {csv}, {sj}")
        _check_csv(csv, params, summary)
        row = run_row(params, summary, run_dir)
        run_rows.append({"run_index": idx, **row, "_itl": _get(summary, "metrics_ms", "itl")})
        params_rows.append([idx] + _fitted(row, PARAMS, run_dir, log))
        files.append((csv, idx))

    targets = _atomic_targets(outputs)
    for tmp in targets.values():
        Path(tmp).parent.mkdir(parents=True, exist_ok=True)
        if os.path.exists(tmp):
            os.remove(tmp)
    con = duckdb.connect(targets["db"])
    try:
        con.execute("CREATE TABLE _params (run_index INTEGER, "
                    + ", ".join(f'"{k}" {t}' for k, t in PARAMS.items()) + ")")
        con.executemany(f"INSERT INTO _params VALUES ({', '.join(['?'] * (len(PARAMS) + 1))})", params_rows)
        con.execute("CREATE TABLE _files (filename VARCHAR, run_index INTEGER)")
        con.executemany("INSERT INTO _files VALUES (?, ?)", [[f, i] for f, i in files])
        param_cols = ", ".join(f'p."{k}"' for k in PARAMS)
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
            {"files": [f for f, _ in files], "columns": CSV_COLUMNS},
        )
        # per-run statistics from the requests (quantile_cont = the summary's linear interpolation)
        stat_cols = []
        for m in ("ttft", "tpot", "latency", "queuing_delay"):
            col = f"{m}_ns"
            filt = " FILTER (WHERE output_tokens > 1)" if m == "tpot" else ""
            stat_cols.append(f"avg({col}){filt} / 1e6 AS {m}_mean_ms")
            stat_cols += [f"quantile_cont({col}, {q}){filt} / 1e6 AS {m}_{name}_ms" for name, q in QUANTILES]
        con.execute(f"""CREATE TEMP TABLE _stats AS SELECT run_id, count(*) AS n_rows, {', '.join(stat_cols)}
                        FROM requests GROUP BY run_id""")
        # ITL over every gap of every request: tpsim's summary has exactly that (the same interpolation);
        # recomputing it here would unnest every list (the slowest step by far)
        con.execute("CREATE TEMP TABLE _itl (run_id VARCHAR, "
                    + ", ".join(f"itl_{n}_ms DOUBLE" for n in ("mean", *(q for q, _ in QUANTILES))) + ")")
        itl_names = ("mean", *(q for q, _ in QUANTILES))
        con.executemany(f"INSERT INTO _itl VALUES ({', '.join(['?'] * (len(QUANTILES) + 2))})",
                        [[fit(r["run_id"], "VARCHAR", "run_id", log)]
                         + [fit(_itl_value(r["_itl"], n), "DOUBLE", f"{r['run_dir']}: itl {n}", log) for n in itl_names]
                         for r in run_rows])
        con.execute("CREATE TEMP TABLE _results (run_index INTEGER, "
                    + ", ".join(f'"{k}" {t}' for k, t in RESULTS.items()) + ")")
        con.executemany(f"INSERT INTO _results VALUES ({', '.join(['?'] * (len(RESULTS) + 1))})",
                        [[r["run_index"]] + _fitted(r, RESULTS, r["run_dir"], log) for r in run_rows])
        metric_cols = []
        for m in METRICS:
            src = "i" if m == "itl" else "s"
            metric_cols += [f"{src}.{m}_mean_ms"] + [f"{src}.{m}_{n}_ms" for n, _ in QUANTILES]
        keys = list(RESULTS)
        split = keys.index("weights_gb")  # counts and throughput, then the metrics, then memory and provenance
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
        for table in ("runs", "requests"):
            con.execute(f"COPY {table} TO {_sql_text(targets[table + '_parquet'])} (FORMAT parquet, COMPRESSION zstd)")
            con.execute(f"COPY {table} TO {_sql_text(targets[table + '_csv'])} (FORMAT csv, HEADER true)")
        counts = dict(con.execute(
            "SELECT 'runs', count(*) FROM runs UNION ALL SELECT 'requests', count(*) FROM requests").fetchall())
        status = dict(con.execute("SELECT status, count(*) FROM runs GROUP BY status ORDER BY status").fetchall())
    finally:
        con.close()
    for key, tmp in targets.items():
        os.replace(tmp, outputs[key])
    print(f"aggregated {counts['runs']} runs ({', '.join(f'{v} {k}' for k, v in status.items())}), "
          f"{counts['requests']} requests -> {outputs['db']}", file=log)
    return {"runs": counts["runs"], "requests": counts["requests"], "status": status}


OUTPUT_NAMES = {
    "db": "campaign.duckdb",
    "runs_parquet": "runs.parquet",
    "runs_csv": "runs.csv",
    "requests_parquet": "requests.parquet",
    "requests_csv": "requests.csv",
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("run_dirs", nargs="+", help="folders holding run.json, requests.csv, requests.summary.json")
    args = ap.parse_args(argv)
    outputs = {k: str(Path(args.out_dir) / v) for k, v in OUTPUT_NAMES.items()}
    dirs = [Path(d) for d in args.run_dirs]
    try:
        aggregate([str(d / "run.json") for d in dirs], [str(d / "requests.csv") for d in dirs],
                  [str(d / "requests.summary.json") for d in dirs], outputs)
    except (AggregateError, OSError, ValueError) as exc:
        print(f"aggregate: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__" and "snakemake" not in globals():
    sys.exit(main())
elif "snakemake" in globals():
    _sm = globals()["snakemake"]
    with open(_sm.log[0], "w", encoding="utf-8") as _log:
        try:
            aggregate(list(_sm.input.runs), list(_sm.input.csv), list(_sm.input.summaries),
                      {k: _sm.output[k] for k in OUTPUT_NAMES}, log=_log)
        except Exception as _exc:
            print(f"aggregate: error: {_exc}", file=_log)
            raise
