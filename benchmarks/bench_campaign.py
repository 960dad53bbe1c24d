"""Campaign pipeline benchmark (printed, never asserted in tests).

Two campaigns of 300 ShareGPT-like requests per run on RTX PRO 6000, end to end through Snakemake
(traces, the batch jobs that derive and simulate the runs, DuckDB aggregation, the six figures) from
an empty results folder:

* default: 48 runs -- 3 models (Qwen3-8B, Qwen3-32B, Llama-3.1-70B) x TP 1/2/4/8 x link_bw
  16/64/128/450 GB/s; target < 60 s wall on 2 cores;
* ``--runs N`` (a multiple of 120): the same models and TPs x 10 link_bw values x N/120 seeds
  (one trace per seed); ``--runs 3000`` is the scale target, < 8 minutes on 2 cores.  A smaller N
  is measured and extrapolated to 3,000 runs (printed as such).

It times the job graph (``snakemake -n``, which loads the campaign, keys every run and plans the
batches) and reports the pipeline's cost per run beside the simulator's own:

* pipeline core-seconds per run: the wall time from the first job's start to the last simulate
  (batch) job's end (from Snakemake's job records) x cores / runs;
* simulator per run: the in-process simulation time tpsim reports (``timing.wall_time_s``);
* overhead per run = the difference (Snakemake, trace generation, deriving the config, the
  summary and the Parquet file, worker processes).

The 48-run mode also runs the 48 ``tpsim run`` commands one after another outside Snakemake (the
cost of one process per run, which the batch jobs avoid).

Run from the repository root:  python benchmarks/bench_campaign.py [--cores 2] [--runs 3000]
Works in benchmarks/out/campaign/ (git-ignored); results also go to benchmarks/out/campaign*.json.
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
MODELS = "[Qwen/Qwen3-8B, Qwen/Qwen3-32B, meta-llama/Llama-3.1-70B]"
CAMPAIGN48 = f"""\
name: bench48
description: pipeline benchmark, 3 models x 4 TP x 4 link_bw, 300 requests each
cluster: configs/cluster/single_node_single_instance.json
workload:
  generate: {{preset: sharegpt, num_reqs: 300, rate: 2, seed: 0}}
matrix:
  model: {MODELS}
  tp_size: [1, 2, 4, 8]
  link_bw: [16, 64, 128, 450]
"""
SCALE_RUNS = 3000
TARGET_SCALE_S = 8 * 60


def scale_campaign(runs: int) -> str:
    """A campaign of ``runs`` runs: 3 models x 4 TP x 10 link_bw x runs/120 seeds."""
    seeds = list(range(runs // 120))
    return f"""\
name: bench{runs}
description: pipeline scale benchmark, 3 models x 4 TP x 10 link_bw x {len(seeds)} seeds, 300 requests each
cluster: configs/cluster/single_node_single_instance.json
workload:
  generate: {{preset: sharegpt, num_reqs: 300, rate: 2}}
matrix:
  model: {MODELS}
  tp_size: [1, 2, 4, 8]
  link_bw: [16, 32, 48, 64, 96, 128, 200, 300, 400, 450]
  seed: {json.dumps(seeds)}
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


def snakemake(workdir: Path, campaign: Path, cores: int, *extra: str) -> tuple[float, subprocess.CompletedProcess]:
    """Snakemake on the campaign in ``workdir`` (this checkout's tpsim first on PYTHONPATH): wall time
    and the finished process."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "workflow" / "Snakefile"), "--directory", str(workdir),
           "--config", f"campaign={campaign}", "--cores", str(cores), *extra]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, (str(REPO), os.environ.get("PYTHONPATH")))))
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False, env=env)
    if proc.returncode:
        print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n")
    return time.time() - t0, proc


def process_per_run(res: Path, run_ids: list[str]) -> float:
    """Seconds per run of the campaign's ``tpsim run`` commands run one after another, one process each."""
    t1 = time.time()
    for r in run_ids:
        d = res / "runs" / r
        subprocess.run([sys.executable, "-m", "tpsim", "run", "--cluster-config", str(d / "cluster.json"),
                        "--dataset", str(res / "workloads" / "rate=2" / "seed=0" / "trace.jsonl"),
                        "--output", str(OUT / "bench_campaign_tmp.csv"), "--record-infeasible", "--log-interval", "0",
                        "--perf-model", "auto", "--requests-format", "parquet", "--seed", "0"],
                       cwd=REPO, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for suffix in (".csv", ".parquet", ".summary.json"):
        (OUT / f"bench_campaign_tmp{suffix}").unlink(missing_ok=True)
    return (time.time() - t1) / len(run_ids)


def measure(name: str, text: str, cores: int) -> dict | None:
    """Dry run, then the campaign end to end; the numbers (None when Snakemake failed)."""
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    campaign = WORK / "campaign.yaml"
    campaign.write_text(text)
    dry_s, proc = snakemake(WORK, campaign, cores, "-n", "--quiet", "all")
    if proc.returncode:
        return None
    t0 = time.time()
    wall, proc = snakemake(WORK, campaign, cores, "--quiet", "all")
    if proc.returncode:
        return None
    res = WORK / "results" / name
    run_ids = json.loads((res / "campaign.json").read_text())["runs"]
    summaries = [json.loads((res / "runs" / r / "requests.summary.json").read_text()) for r in run_ids]
    times = job_times(WORK)
    first = min(start for spans in times.values() for start, _ in spans)
    sim_phase = max(end for _, end in times["simulate"]) - first
    span = {rule: max(e for _, e in spans) - min(s for s, _ in spans) for rule, spans in times.items()}
    n = len(run_ids)
    per_run = sim_phase * cores / n
    simulator = sum(s["timing"]["wall_time_s"] for s in summaries) / n
    return {
        "runs": n, "runs_ok": sum(s["status"] == "ok" for s in summaries), "requests_per_run": 300, "cores": cores,
        "batch_jobs": len(times["simulate"]), "dry_run_s": round(dry_s, 2), "end_to_end_wall_s": round(wall, 2),
        "startup_s": round(first - t0, 2), "simulation_phase_s": round(sim_phase, 2),
        "aggregate_s": round(span.get("aggregate", 0), 2), "figures_s": round(span.get("figures", 0), 2),
        "per_run_pipeline_core_s": round(per_run, 3), "per_run_simulator_s": round(simulator, 3),
        "per_run_overhead_s": round(per_run - simulator, 3), "_res": res, "_run_ids": run_ids,
    }


def report(r: dict, target_s: float) -> None:
    print(f"campaign benchmark: {r['runs']} runs ({r['runs_ok']} ok, {r['runs'] - r['runs_ok']} infeasible) "
          f"x 300 requests, {r['cores']} cores, {r['batch_jobs']} batch job(s)")
    print(f"  job graph (snakemake -n)                  {r['dry_run_s']:6.1f} s")
    print(f"  end to end (snakemake, empty results/)    {r['end_to_end_wall_s']:6.1f} s   (target < {target_s:.0f} s)")
    print(f"    start-up + DAG                          {r['startup_s']:6.1f} s")
    print(f"    traces + batch jobs                     {r['simulation_phase_s']:6.1f} s")
    print(f"    aggregate (DuckDB)                      {r['aggregate_s']:6.1f} s")
    print(f"    figures (PDF+PNG+CSV)                   {r['figures_s']:6.1f} s")
    print("  per run:")
    print(f"    pipeline, core-seconds                  {r['per_run_pipeline_core_s']:6.3f} s")
    if "per_run_tpsim_process_s" in r:
        print(f"    `tpsim run` process (no Snakemake)      {r['per_run_tpsim_process_s']:6.3f} s")
    print(f"    simulator in-process (timing.wall_time) {r['per_run_simulator_s']:6.3f} s")
    print(f"    pipeline overhead                       {r['per_run_overhead_s']:6.3f} s")


def extrapolate(r: dict) -> dict:
    """The measured campaign scaled to :data:`SCALE_RUNS` runs: the simulation phase per run, aggregation
    per run, start-up and figures as measured (their cost hardly grows with the runs)."""
    k = SCALE_RUNS / r["runs"]
    rest = r["end_to_end_wall_s"] - r["startup_s"] - r["simulation_phase_s"] - r["aggregate_s"] - r["figures_s"]
    return {"runs": SCALE_RUNS, "from_runs": r["runs"],
            "end_to_end_wall_s": round(r["startup_s"] + k * (r["simulation_phase_s"] + r["aggregate_s"])
                                       + r["figures_s"] + max(rest, 0), 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--runs", type=int, default=48, help="48 (default), or a multiple of 120 (3000: the scale target)")
    args = ap.parse_args()
    if args.runs != 48 and (args.runs < 120 or args.runs % 120):
        ap.error("--runs: 48, or a multiple of 120 (3 models x 4 TP x 10 link_bw x seeds)")
    subprocess.run([sys.executable, "-m", "compileall", "-q", "tpsim", "workflow/scripts"], cwd=REPO, check=True)
    scale = args.runs != 48
    name = f"bench{args.runs}"
    result = measure(name, scale_campaign(args.runs) if scale else CAMPAIGN48, args.cores)
    if result is None:
        return 1
    res, run_ids = result.pop("_res"), result.pop("_run_ids")
    if not scale:
        result["per_run_tpsim_process_s"] = round(process_per_run(res, run_ids), 3)
    report(result, TARGET_SCALE_S if scale else 60)
    if scale and args.runs != SCALE_RUNS:
        result["extrapolated"] = extrapolate(result)
        print(f"  extrapolated to {SCALE_RUNS} runs (per-run phases x {SCALE_RUNS / args.runs:.2f}):  "
              f"{result['extrapolated']['end_to_end_wall_s']:6.1f} s   (target < {TARGET_SCALE_S} s)")
    OUT.mkdir(parents=True, exist_ok=True)
    out = OUT / ("campaign.json" if not scale else f"campaign_{args.runs}.json")
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
