"""Scale benchmark: 1 k -> 10 M ShareGPT-like requests (printed, never asserted in tests).

Each size is a seeded trace from ``tpsim trace --preset sharegpt --rate 50`` (far above the capacity
of Llama-3.1-8B on one RTX PRO 6000, about 5 req/s, so the queue grows through the run: the
hardest case for memory), simulated with the default latency model and every output written::

    python -m tpsim run --cluster-config configs/cluster/rtxpro6000_llama8b_tp1.json \\
        --dataset T --output O --log-interval 0 [--itl-format none]

Reported per size: whole-process wall time, peak RSS of the process (``wait4``), engine iterations
per second, simulated/wall speed-up and the bytes written.  Targets (issue 12, this 2-core
machine): 1 M requests under 90 s and 2 GB; 10 M under 15 minutes and 2 GB.

Run from the repository root::

    python benchmarks/bench_scale.py                       # 1k, 10k, 100k, 1M
    python benchmarks/bench_scale.py --sizes 10000000 --itl-format none

Traces are cached in benchmarks/out/scale/ (git-ignored); results go to benchmarks/out/scale.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "out"
WORK = OUT / "scale"
CONFIG = "configs/cluster/rtxpro6000_llama8b_tp1.json"


def trace(n: int) -> Path:
    path = WORK / f"sharegpt_{n}_50rps.jsonl"
    if not path.exists():
        subprocess.run([sys.executable, "-m", "tpsim", "trace", "--preset", "sharegpt", "--num-reqs", str(n),
                        "--rate", "50", "--seed", "7", "--output", str(path)], cwd=REPO, check=True,
                       stdout=subprocess.DEVNULL)
    return path


def measure(argv: list[str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (bytes) of one child process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(argv)}")
    return wall, usage.ru_maxrss * 1024  # kB on Linux


def run_size(n: int, itl_format: str) -> dict:
    t = trace(n)
    out = WORK / f"out_{n}.csv"
    argv = [sys.executable, "-m", "tpsim", "run", "--cluster-config", CONFIG, "--dataset", str(t), "--output",
            str(out), "--log-interval", "0", "--itl-format", itl_format]
    wall, rss = measure(argv)
    summary = json.loads(out.with_name(out.stem + ".summary.json").read_text())
    written = out.stat().st_size
    out.unlink()  # a 1M-request CSV with every gap is 6.7 GB
    iters = summary["totals"]["iterations"]
    sim_s = summary["simulated_time_s"]
    return {"requests": n, "itl_format": itl_format, "wall_s": round(wall, 2), "peak_rss_mb": round(rss / 1e6),
            "iterations": iters, "iterations_per_s": round(iters / wall), "simulated_s": round(sim_s, 1),
            "speedup": round(sim_s / wall), "csv_mb": round(written / 1e6, 1),
            "in_process_s": summary["timing"]["wall_time_s"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000, 1_000_000])
    ap.add_argument("--itl-format", choices=("list", "none"), default="list")
    args = ap.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "compileall", "-q", "tpsim", "serving"], cwd=REPO, check=True)
    rows = []
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs; {CONFIG}, ShareGPT-like at 50 req/s, "
          f"--itl-format {args.itl_format}")
    print(f"{'requests':>10} {'wall s':>8} {'peak RSS MB':>12} {'iterations/s':>13} {'speed-up':>9} {'CSV MB':>9}")
    for n in args.sizes:
        r = run_size(n, args.itl_format)
        rows.append(r)
        print(f"{n:>10,} {r['wall_s']:>8.1f} {r['peak_rss_mb']:>12,} {r['iterations_per_s']:>13,} "
              f"{r['speedup']:>8,}x {r['csv_mb']:>9,.1f}", flush=True)
    report = {"python": sys.version.split()[0], "cpus": os.cpu_count(), "config": CONFIG, "results": rows}
    (OUT / f"scale_{args.itl_format}.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
