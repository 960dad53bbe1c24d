"""Capacity-search benchmark (printed, never asserted in tests).

The shipped campaign configs/campaigns/capacity_h100.yaml -- 3 models (Llama-3.1-8B, Qwen3-32B,
Llama-3.1-70B) x TP 1/2/4/8 x link_bw 64/450 GB/s on H100, SLO TTFT <= 1 s and TPOT <= 50 ms for
90 % of requests, every probe 60 s of ShareGPT-like Poisson arrivals, tolerance 5 % -- end to end
through Snakemake (24 search jobs, the tables, the three figures), from an empty results folder.
Target: within 10 minutes on 2 cores.  Prints the wall time, the probes and requests simulated, and
the slowest search.

Run from the repository root:  python benchmarks/bench_capacity.py [--cores 2]
Works in benchmarks/out/capacity/ (git-ignored); results also go to benchmarks/out/capacity.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

# this folder is first on sys.path when run as a script
from bench_campaign import run_campaign

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "out"
WORK = OUT / "capacity"
CAMPAIGN = REPO / "configs" / "campaigns" / "capacity_h100.yaml"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cores", type=int, default=2)
    args = ap.parse_args()
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    wall = run_campaign(WORK, CAMPAIGN, args.cores)
    if wall is None:
        return 1
    res = WORK / "results" / "capacity_h100"
    docs = [json.loads(p.read_text()) for p in sorted(res.glob("runs/**/capacity.json"))]
    probes = [p for d in docs for p in d["probes"]]
    by_status: dict = {}
    for d in docs:
        by_status[d["status"]] = by_status.get(d["status"], 0) + 1
    logs = {p.parent.relative_to(res / "runs"): p.read_text() for p in res.glob("runs/**/search.log")}
    slowest = max(logs.items(), key=lambda kv: sum(float(x.split("(")[-1].split(" s)")[0])
                                                   for x in kv[1].splitlines() if x.startswith("probe ")))
    result = {"configurations": len(docs), "status": by_status, "probes": len(probes),
              "requests_simulated": sum(p.get("requests") or 0 for p in probes), "cores": args.cores,
              "end_to_end_wall_s": round(wall, 1), "target_wall_s": 600, "slowest_search": str(slowest[0])}
    (OUT / "capacity.json").write_text(json.dumps(result, indent=1) + "\n")
    print(f"capacity benchmark: {len(docs)} searches ({', '.join(f'{v} {k}' for k, v in by_status.items())}), "
          f"{len(probes)} probes, {result['requests_simulated']:,} requests simulated, {args.cores} cores")
    print(f"  end to end (snakemake, empty results/)   {wall:6.1f} s   (target < 600 s)")
    print(f"  slowest search: {slowest[0]}")
    print(f"wrote {OUT / 'capacity.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
