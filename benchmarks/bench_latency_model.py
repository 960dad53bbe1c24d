"""Latency-model hot-path benchmark (printed; never asserted in tests).

A simulation asks its latency model for every step (``iteration_ns``, ``decode_iteration_ns``,
``decode_steps``, an MoE DP rank's ``rank_gpu_ns``, ...).  This records those calls during one
``tpsim run`` of each case, then replays them on freshly built models over cold kernel tables (as a run
starts) and reports the CPU time of the replay alone: the model's share of a run, free of the
scheduler, I/O and start-up that dominate the whole-process benchmarks (bench_simulator.py).

Cases (--perf-model kernels and analytical): 3,000 ShareGPT-like requests at 50 req/s on
Llama-3.1-8B TP 1 and on Qwen3-30B-A3B DP 2 x EP 2, both on RTX PRO 6000 (configs/cluster/).

Run from the repository root:  python benchmarks/bench_latency_model.py [--repeat N] [--requests N]
Results are printed and written to benchmarks/out/latency_model.json.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import io
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "out"
sys.path.insert(0, str(REPO))

import tpsim.build as build  # noqa: E402
import tpsim.kernels.tables as kernel_tables  # noqa: E402
import tpsim.perf.factory as factory  # noqa: E402
from tpsim.cli import main as tpsim_main  # noqa: E402
from tpsim.perf.base import LatencyModel  # noqa: E402

CASES = {
    "Llama-3.1-8B TP1": "configs/cluster/rtxpro6000_llama8b_tp1.json",
    "Qwen3-30B-A3B DP2 EP2": "configs/cluster/rtxpro6000_qwen3_30b_a3b_dp2_ep2.json",
}
#: what the engine asks a latency model (tpsim/sim); calls made from inside another are not recorded
ENTRY_POINTS = ("iteration_ns", "decode_iteration_ns", "decode_steps", "rank_gpu_ns", "stage_interval_ns",
                "graph_plan", "host_visible_ns")


def record(cluster: str, trace: Path, perf_model: str) -> tuple[list, list]:
    """Run the case once: (the models built as (kind, kwargs, model), the calls as (model index, name, args))."""
    built, calls, depth = [], [], [0]
    make = build.make_latency_model

    def recording_make(kind, **kw):
        model = make(kind, **kw)
        built.append((kind, kw, model))
        return model

    def wrap(cls, name):
        f = cls.__dict__[name]

        def entry(self, *args):
            if depth[0] == 0:
                calls.append((self, name, copy.deepcopy(args) if name == "decode_steps" else args))
            depth[0] += 1
            try:
                return f(self, *args)
            finally:
                depth[0] -= 1

        return f, entry

    patched = []
    build.make_latency_model = recording_make  # where the engine's instances are built
    try:
        import tpsim.perf.analytical
        import tpsim.perf.kernels

        klasses = {klass for cls in (tpsim.perf.kernels.KernelModel, tpsim.perf.analytical.AnalyticalModel)
                   for klass in cls.__mro__ if issubclass(klass, LatencyModel)}
        for klass in klasses:
            for name in ENTRY_POINTS:
                if name in klass.__dict__:
                    f, entry = wrap(klass, name)
                    patched.append((klass, name, f))
                    setattr(klass, name, entry)
        with contextlib.redirect_stdout(io.StringIO()):
            tpsim_main(["run", "--cluster-config", cluster, "--dataset", str(trace), "--perf-model", perf_model,
                        "--output", str(OUT / "latency_model_run.csv"), "--log-interval", "1000"])
    finally:
        build.make_latency_model = make
        for klass, name, f in reversed(patched):
            setattr(klass, name, f)
    index = {id(m): i for i, (_, _, m) in enumerate(built)}
    return [(k, kw) for k, kw, _ in built], [(index[id(m)], name, args) for m, name, args in calls]


def replay(built: list, calls: list, repeat: int) -> tuple[float, str]:
    """Best CPU seconds of replaying ``calls`` on fresh models over cold tables, and a digest of the answers."""
    best, digest = float("inf"), ""
    for _ in range(repeat):
        kernel_tables._LOADED.clear()  # cold tables, as a run starts
        models = [factory.make_latency_model(kind, **kw) for kind, kw in built]
        for m in models:  # tables parse on first use: parse them before the clock starts
            for name in (getattr(m, "gemm_table", None), getattr(m, "ctx_table", None), getattr(m, "gen_table", None)):
                if name:
                    m.tables.table(name)
        todo = [(getattr(models[i], name), copy.deepcopy(args) if name == "decode_steps" else args)
                for i, name, args in calls]
        t0 = time.process_time()
        answers = [f(*args) for f, args in todo]
        best = min(best, time.process_time() - t0)
        digest = hashlib.sha256(repr(answers).encode()).hexdigest()[:16]
    return best, digest


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--requests", type=int, default=3000)
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    trace = OUT / f"sharegpt_{args.requests}_50rps.jsonl"
    subprocess.run([sys.executable, "-m", "tpsim", "trace", "--preset", "sharegpt", "--num-reqs", str(args.requests),
                    "--rate", "50", "--seed", "7", "--output", str(trace)], cwd=REPO, check=True,
                   stdout=subprocess.DEVNULL)
    results = []
    for case, cluster in CASES.items():
        for perf_model in ("kernels", "analytical"):
            built, calls = record(cluster, trace, perf_model)
            cpu_s, digest = replay(built, calls, args.repeat)
            results.append({"case": case, "perf_model": perf_model, "calls": len(calls),
                            "cpu_ms": round(cpu_s * 1e3, 1), "us_per_call": round(cpu_s * 1e6 / len(calls), 2),
                            "answers_sha256": digest})
            print(f"{case:24s} {perf_model:10s} {len(calls):7,} calls: {cpu_s * 1e3:8.1f} ms CPU "
                  f"({cpu_s * 1e6 / len(calls):.2f} us/call, best of {args.repeat}; answers {digest})", flush=True)
    (OUT / "latency_model.json").write_text(json.dumps({"python": sys.version.split()[0], "results": results},
                                                       indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
