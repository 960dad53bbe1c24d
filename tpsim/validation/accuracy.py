"""The accuracy table of ``snakemake validate``: one row per case x simulator, from the
``results/validation/<case>/<simulator>/validation.json`` files ``tpsim validate`` wrote, as
``accuracy.csv`` and ``accuracy.md``::

    python -m tpsim.validation.accuracy --csv OUT.csv --md OUT.md RESULT/validation.json ...
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tpsim.io.writing import atomic_write_text

#: accuracy-table columns: name -> (metric, field)
TABLE_COLUMNS = {
    "ttft_mean_diff_pct": ("ttft", "mean"),
    "tpot_mean_diff_pct": ("tpot", "mean"),
    "latency_mean_diff_pct": ("latency", "mean"),
    "ttft_p90_diff_pct": ("ttft", "p90"),
    "tpot_p90_diff_pct": ("tpot", "p90"),
    "latency_p90_diff_pct": ("latency", "p90"),
    "ttft_mape_pct": ("ttft", "mape"),
    "tpot_mape_pct": ("tpot", "mape"),
    "latency_mape_pct": ("latency", "mape"),
    "ttft_from_arrival_mean_diff_pct": ("ttft_from_arrival", "mean"),
    "ttft_from_arrival_mape_pct": ("ttft_from_arrival", "mape"),
}
SIMULATOR_ORDER = ("tpsim-kernels", "tpsim-analytical", "tpsim-profile", "LLMServingSim")


def accuracy_rows(entries) -> list[dict]:
    """``entries``: (case, simulator, validation.json path) -> one row per case x simulator."""
    rows = []
    for case, simulator, path in entries:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
        row = {"case": case, "simulator": simulator, "paired": doc["pairing"]["paired"],
               "requests": doc["pairing"]["measured_requests"]}
        for col, (metric, fld) in TABLE_COLUMNS.items():
            m = doc["metrics"].get(metric)
            if m is None:
                row[col] = None
            elif fld == "mape":
                row[col] = m["paired"]["mape_pct"]
            else:
                row[col] = m["diff_pct"][fld]
        rows.append(row)
    order = {s: j for j, s in enumerate(SIMULATOR_ORDER)}
    rows.sort(key=lambda r: (r["case"], order.get(r["simulator"], len(order)), r["simulator"]))
    return rows


def write_accuracy_table(rows: list[dict], csv_path, md_path) -> None:
    cols = ["case", "simulator", "requests", "paired", *TABLE_COLUMNS]
    lines = [",".join(cols)]
    for r in rows:
        lines.append(",".join("" if r[c] is None else (f"{r[c]:.2f}" if isinstance(r[c], float) else str(r[c]))
                              for c in cols))
    atomic_write_text(csv_path, "\n".join(lines) + "\n")
    head = ["case", "simulator", "paired", "TTFT mean Δ%", "TPOT mean Δ%", "latency mean Δ%", "TTFT p90 Δ%",
            "TPOT p90 Δ%", "latency p90 Δ%", "TTFT MAPE %", "TPOT MAPE %", "latency MAPE %",
            "TTFT from arrival mean Δ%", "TTFT from arrival MAPE %"]
    md = ["| " + " | ".join(head) + " |", "|" + "---|" * 3 + "---:|" * (len(head) - 3)]
    for r in rows:
        cells = [r["case"], r["simulator"], f"{r['paired']}/{r['requests']}"]
        for col in TABLE_COLUMNS:
            v = r[col]
            cells.append("n/a" if v is None else (f"{v:.1f}" if col.endswith("mape_pct") else f"{v:+.1f}"))
        md.append("| " + " | ".join(cells) + " |")
    md.append("")
    md.append("Δ% = (simulated − measured) / measured × 100 over all requests of each side; MAPE = mean absolute "
              "percentage error over requests paired by id (measured bench-<i> ↔ simulated request id i). TTFT and "
              "latency are measured from vLLM's queued_ts as the publishers define them, when vLLM's engine loop takes "
              "the request from its input queue (between steps); tpsim's replays start them at that pickup as they "
              "model it (--ttft-origin pickup), LLMServingSim at the arrival. 'From arrival' adds each request's wait "
              "for the pickup on both sides (docs/validation.md).")
    atomic_write_text(md_path, "\n".join(md) + "\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--csv", required=True)
    p.add_argument("--md", required=True)
    p.add_argument("reports", nargs="*", help="<case>/<simulator>/validation.json files")
    args = p.parse_args(argv)
    entries = [(Path(r).parent.parent.name, Path(r).parent.name, r) for r in args.reports]
    rows = accuracy_rows(entries)
    write_accuracy_table(rows, args.csv, args.md)
    print(f"{len(rows)} rows -> {args.csv}, {args.md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
