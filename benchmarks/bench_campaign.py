"""Campaign pipeline benchmark (printed, never asserted in tests).

A 48-run campaign -- 3 models (Qwen3-8B, Qwen3-32B, Llama-3.1-70B) x TP 1/2/4/8 x link_bw
16/64/128/450 GB/s on RTX PRO 6000, 300 ShareGPT-like requests per run -- end to end through
Snakemake (trace, 48 cluster configs, 48 `tpsim run`s, DuckDB aggregation, the six figures),
from an empty results folder.  Target: < 60 s wall on 2 cores.

It reports the pipeline's cost per run beside the simulator's own:

* pipeline core-seconds per run: the wall time from the first to the last simulate job
  (from Snakemake's job records) x cores / runs;
* `tpsim run` process per run: the same 48 commands run one after another outside Snakemake
  (interpreter start-up, imports, simulation, writing the outputs);
* simulator per run: the in-process simulation time tpsim reports (`timing.wall_time_s`);
* overhead per run = pipeline core-seconds per run - `tpsim run` process per run
  (Snakemake's scheduling, the shell, the cluster-config job).

Run from the repository root:  python benchmarks/bench_campaign.py [--cores 2]
Works in benchmarks/out/campaign/ (git-ignored); results also go to benchmarks/out/campaign.json.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "out"
WORK = OUT / "campaign"
CAMPAIGN = """\
name: bench48
description: pipeline benchmark, 3 models x 4 TP x 4 link_bw, 300 requests each
cluster: configs/cluster/single_node_single_instance.json
workload:
  generate: {preset: sharegpt, num_reqs: 300, rate: 2, seed: 0}
matrix:
  model: [Qwen/Qwen3-8B, Qwen/Qwen3-32B, meta-llama/Llama-3.1-70B]
  tp_size: [1, 2, 4, 8]
  link_bw: [16, 64, 128, 450]
"""


def job_times(workdir: Path) -> dict:
    """rule -> list of (start, end) from Snakemake's per-output records (one per job)."""
    jobs = {}
    meta = workdir / ".snakemake" / "metadata"
    for f in meta.iterdir():
        rec = json.loads(f.read_text())
        path = base64.b64decode(f.name.replace("@", "/") + "=" * (-len(f.name) % 4)).decode(errors="replace")
        key = (rec["rule"], rec.get("job_hash"))
        if rec.get("starttime") and rec.get("endtime"):
            jobs[key] = (rec["starttime"], rec["endtime"], path)
    by_rule: dict = {}
    for (rule, _), (start, end, _path) in jobs.items():
        by_rule.setdefault(rule, []).append((start, end))
    return by_rule


def run_campaign(workdir: Path, campaign: Path, cores: int) -> float | None:
    """The campaign end to end through Snakemake in ``workdir`` (this checkout's tpsim first on
    PYTHONPATH); its wall time in s, or None (with the end of its output printed) when it fails."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "workflow" / "Snakefile"), "--directory", str(workdir),
           "--config", f"campaign={campaign}", "--cores", str(cores), "--quiet", "all"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, (str(REPO), os.environ.get("PYTHONPATH")))))
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False, env=env)
    if proc.returncode:
        print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n")
        return None
    return time.time() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cores", type=int, default=2)
    args = ap.parse_args()
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    (WORK / "campaign.yaml").write_text(CAMPAIGN)
    subprocess.run([sys.executable, "-m", "compileall", "-q", "tpsim", "workflow/scripts"], cwd=REPO, check=True)
    t0 = time.time()
    wall = run_campaign(WORK, WORK / "campaign.yaml", args.cores)
    if wall is None:
        return 1

    res = WORK / "results" / "bench48"
    run_ids = json.loads((res / "campaign.json").read_text())["runs"]
    summaries = [json.loads((res / "runs" / r / "requests.summary.json").read_text()) for r in run_ids]
    n = len(run_ids)
    n_ok = sum(s["status"] == "ok" for s in summaries)
    sim_in_process = sum(s["timing"]["wall_time_s"] for s in summaries)

    times = job_times(WORK)
    first = min(start for spans in times.values() for start, _ in spans)
    sim_end = max(end for _, end in times["simulate"])
    sim_phase = sim_end - first
    span = {rule: max(e for _, e in spans) - min(s for s, _ in spans) for rule, spans in times.items()}

    # the same tpsim commands, one after another, outside Snakemake
    t1 = time.time()
    for r in run_ids:
        d = res / "runs" / r
        subprocess.run([sys.executable, "-m", "tpsim", "run", "--cluster-config", str(d / "cluster.json"),
                        "--dataset", str(res / "workloads" / "rate=2" / "seed=0" / "trace.jsonl"),
                        "--output", str(OUT / "bench_campaign_tmp.csv"), "--record-infeasible", "--log-interval", "0",
                        "--perf-model", "auto", "--requests-format", "parquet", "--seed", "0"],
                       cwd=REPO, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    process_total = time.time() - t1
    for suffix in (".csv", ".parquet", ".summary.json"):
        (OUT / f"bench_campaign_tmp{suffix}").unlink(missing_ok=True)

    per_run_pipeline = sim_phase * args.cores / n
    result = {
        "runs": n,
        "runs_ok": n_ok,
        "runs_infeasible": n - n_ok,
        "requests_per_run": 300,
        "cores": args.cores,
        "end_to_end_wall_s": round(wall, 2),
        "target_wall_s": 60,
        "startup_s": round(first - t0, 2),
        "simulation_phase_s": round(sim_phase, 2),
        "aggregate_s": round(span.get("aggregate", 0), 2),
        "figures_s": round(span.get("figures", 0), 2),
        "per_run_pipeline_core_s": round(per_run_pipeline, 3),
        "per_run_tpsim_process_s": round(process_total / n, 3),
        "per_run_simulator_s": round(sim_in_process / n, 3),
        "per_run_overhead_s": round(per_run_pipeline - process_total / n, 3),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "campaign.json").write_text(json.dumps(result, indent=1) + "\n")
    print(f"campaign benchmark: {n} runs ({n_ok} ok, {n - n_ok} infeasible) x 300 requests, {args.cores} cores")
    print(f"  end to end (snakemake, empty results/)   {wall:6.1f} s   (target < 60 s)")
    print(f"    start-up + DAG                          {first - t0:6.1f} s")
    print(f"    trace + configs + simulations           {sim_phase:6.1f} s")
    print(f"    aggregate (DuckDB)                      {span.get('aggregate', 0):6.1f} s")
    n_figs = len(list((res / "figures").glob("*.png")))
    print(f"    figures ({n_figs} x PDF+PNG+CSV)               {span.get('figures', 0):6.1f} s")
    print("  per run:")
    print(f"    pipeline, core-seconds                  {per_run_pipeline:6.3f} s")
    print(f"    `tpsim run` process (no Snakemake)      {process_total / n:6.3f} s")
    print(f"    simulator in-process (timing.wall_time) {sim_in_process / n:6.3f} s")
    print(f"    pipeline overhead                       {per_run_pipeline - process_total / n:6.3f} s")
    print(f"wrote {OUT / 'campaign.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
