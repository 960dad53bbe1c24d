"""A capacity search's tables: ``capacity`` (one row per configuration: its parameters, the search's
outcome and the probe at the capacity) and ``probes`` (one row per probe of every search), in
``campaign.duckdb`` and as Parquet and CSV, from each configuration's ``capacity.json``
(:mod:`~tpsim.campaign.capacity_job`).  Written together or not at all, rows sorted, so the files are
byte-identical for identical searches.

    python -m tpsim.campaign.capacity_tables --out-dir DIR CONFIG_DIR [CONFIG_DIR ...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tpsim.campaign import slo
from tpsim.campaign.aggregate import cli_call, export, logged
from tpsim.campaign.capacity_job import PROBE_METRICS
from tpsim.campaign.outputs import CAPACITY_TABLE_FILES, CAPACITY_TABLES
from tpsim.campaign.tables import PARAMS, AggregateError, fitted
from tpsim.io.files import read_json_file

#: one probe's numbers (capacity_job's record), as columns
PROBE = {
    "rate": "DOUBLE",
    "status": "VARCHAR",
    "requests": "BIGINT",
    "finished": "BIGINT",
    "simulated_time_s": "DOUBLE",
    "throughput_rps": "DOUBLE",
    "output_tokens_per_s": "DOUBLE",
    **{f"{m}_{s}_ms": "DOUBLE" for m, s in PROBE_METRICS},
    **slo.COLUMNS,
}
#: one configuration's outcome
OUTCOME = {
    "status": "VARCHAR",
    "reason": "VARCHAR",
    "capacity_rps": "DOUBLE",
    "first_failing_rps": "DOUBLE",
    "relative_bracket": "DOUBLE",
    "tolerance": "DOUBLE",
    "n_probes": "INTEGER",
    "memory_needed_gb": "DOUBLE",
}
#: the probe at the capacity, prefixed
AT_CAPACITY = {f"cap_{k}": t for k, t in PROBE.items() if k not in ("rate", "status")}
CONFIG_PARAMS = {k: t for k, t in PARAMS.items() if k != "rate"}


def rows_of(path: str, index: int, log) -> tuple[list, list]:
    """(the capacity row, the probe rows) of one configuration's capacity.json."""
    doc, _ = read_json_file(path, "capacity result", "the configuration folder")
    if not isinstance(doc, dict) or "probes" not in doc:
        raise AggregateError(f"{path}: not a capacity search result (no 'probes')")
    where = str(Path(path).parent)
    params = fitted({k: doc.get(k) for k in CONFIG_PARAMS}, CONFIG_PARAMS, where, log)
    needed = doc.get("memory_needed") or {}
    outcome = {k: doc.get(k) for k in OUTCOME}
    outcome.update(n_probes=len(doc["probes"]), memory_needed_gb=needed.get("needed_gb"))
    at = doc.get("at_capacity") or {}
    row = [index] + params + fitted(outcome, OUTCOME, where, log) + fitted(
        {f"cap_{k}": at.get(k) for k in PROBE}, AT_CAPACITY, where, log)
    probes = [[index, i] + params + fitted({k: p.get(k) for k in PROBE}, PROBE, f"{where}: probe {i}", log)
              for i, p in enumerate(doc["probes"])]
    return row, probes


def _columns(spec: dict) -> str:
    return ", ".join(f'"{k}" {t}' for k, t in spec.items())


def capacity_tables(results: list[str], outputs: dict, log=sys.stdout) -> dict:
    """The tables from the configurations' capacity.json files; ``outputs``: key -> path
    (:data:`~tpsim.campaign.outputs.CAPACITY_TABLE_FILES`)."""
    import duckdb

    from tpsim.io.writing import AtomicFiles

    rows, probes = [], []
    for i, path in enumerate(results):
        row, ps = rows_of(path, i, log)
        rows.append(row)
        probes += ps
    with AtomicFiles() as out:
        targets = {key: out.reserve(path) for key, path in outputs.items()}
        con = duckdb.connect(targets["db"])
        try:
            con.execute(f"CREATE TEMP TABLE _c (config_index INTEGER, {_columns(CONFIG_PARAMS)}, {_columns(OUTCOME)}, "
                        f"{_columns(AT_CAPACITY)})")
            width = 1 + len(CONFIG_PARAMS) + len(OUTCOME) + len(AT_CAPACITY)
            con.executemany(f"INSERT INTO _c VALUES ({', '.join(['?'] * width)})", rows)
            con.execute(f"CREATE TEMP TABLE _p (config_index INTEGER, probe INTEGER, {_columns(CONFIG_PARAMS)}, "
                        f"{_columns(PROBE)})")
            if probes:
                con.executemany(f"INSERT INTO _p VALUES ({', '.join(['?'] * (2 + len(CONFIG_PARAMS) + len(PROBE)))})",
                                probes)
            con.execute("CREATE TABLE capacity AS SELECT * EXCLUDE (config_index) FROM _c ORDER BY config_index")
            con.execute("CREATE TABLE probes AS SELECT * EXCLUDE (config_index) FROM _p ORDER BY config_index, probe")
            export(con, CAPACITY_TABLES, targets)
            status = dict(con.execute("SELECT status, count(*) FROM capacity GROUP BY ALL ORDER BY ALL").fetchall())
        finally:
            con.close()
            Path(targets["db"] + ".wal").unlink(missing_ok=True)
    print(f"aggregated {len(rows)} capacity searches ({', '.join(f'{v} {k}' for k, v in status.items())}), "
          f"{len(probes)} probes -> {outputs['db']}", file=log)
    return {"configs": len(rows), "probes": len(probes), "status": status}


def capacity_tables_logged(results: list[str], outputs: dict, log_path: str) -> dict:
    return logged(capacity_tables, log_path, results, outputs)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("config_dirs", nargs="+", help="folders holding capacity.json")
    args = ap.parse_args(argv)
    outputs = {k: str(Path(args.out_dir) / v) for k, v in CAPACITY_TABLE_FILES.items()}
    return cli_call("capacity_tables",
                    lambda: capacity_tables([str(Path(d) / "capacity.json") for d in args.config_dirs], outputs))


if __name__ == "__main__":
    sys.exit(main())
