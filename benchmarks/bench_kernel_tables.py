"""Kernel-table benchmarks (printed; never asserted in tests).

(a) Load: time to parse each shipped table (gzip + JSON + grids), best of --repeat fresh loads.
(b) Queries: microseconds per query, uncached (distinct random shapes inside and beyond the
    grids) and cached (the same shape again, as a simulation's repeated decode steps ask).
(c) Start-up: what ``tpsim import``'s registration adds to every command's start-up, and
    proof that ``tpsim run`` imports neither tpsim.kernels nor tpsim.aic (tables unused).

Run from the repository root:  python benchmarks/bench_kernel_tables.py [--repeat N]
Results are printed and written to benchmarks/out/kernel_tables.json.
"""

from __future__ import annotations

import argparse
import importlib
import json
import random
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "out"
sys.path.insert(0, str(REPO))

from tpsim.kernels.store import read_provenance  # noqa: E402
from tpsim.kernels.tables import KernelTables  # noqa: E402

KERNELS = REPO / "configs" / "kernels"


def fresh(hw: str) -> KernelTables:
    folder = KERNELS / hw
    return KernelTables(hw, folder, read_provenance(folder / "provenance.json"))


def bench_loads(repeat: int) -> list[dict]:
    rows = []
    for folder in sorted(p for p in KERNELS.iterdir() if p.is_dir()):
        names = fresh(folder.name).available()
        for name in names:
            best = float("inf")
            for _ in range(repeat):
                kt = fresh(folder.name)
                t0 = time.perf_counter()
                kt.table(name)
                best = min(best, time.perf_counter() - t0)
            size = (folder / f"{name}.json.gz").stat().st_size
            rows.append({"hardware": folder.name, "table": name, "kb": round(size / 1e3, 1),
                         "load_ms": round(best * 1e3, 2)})
            print(f"  load {folder.name:11s} {name:42s} {size / 1e3:7.1f} kB {best * 1e3:7.2f} ms")
    return rows


def bench_queries(n: int) -> list[dict]:
    rng = random.Random(0)
    kt = fresh("H100")
    cases = {  # kind -> (query, random arguments inside and beyond the grid)
        "gemm": (kt.gemm, lambda: (rng.randint(1, 40000), rng.randint(32, 80000), rng.randint(32, 80000))),
        "context_attention": (kt.context_attention, lambda: (rng.randint(1, 300), rng.randint(1, 20000), 32, 8, 128)),
        "generation_attention": (kt.generation_attention,
                                 lambda: (rng.randint(1, 2048), rng.randint(2, 150000), 32, 8, 128)),
        "custom_allreduce": (kt.custom_allreduce, lambda: (rng.choice((2, 4, 8)), rng.randint(128, 1 << 30))),
        "nccl": (lambda *a: kt.nccl("all_gather", *a), lambda: (rng.choice((2, 4, 8)), rng.randint(256, 1 << 29))),
        "moe": (kt.moe, lambda: (rng.randint(1, 20000), 2048, 768, 8, 128)),
    }
    rows = []
    for name, (query, draw) in cases.items():
        shapes = [draw() for _ in range(n)]
        query(*shapes[0])  # loads the table
        t0 = time.perf_counter()
        for shape in shapes:
            query(*shape)
        uncached = (time.perf_counter() - t0) / n
        t0 = time.perf_counter()
        for _ in range(n):
            query(*shapes[0])  # the same shape again: a memo hit, as repeated decode steps produce
        cached = (time.perf_counter() - t0) / n
        rows.append({"kind": name, "uncached_us": round(uncached * 1e6, 1), "cached_us": round(cached * 1e6, 2)})
        print(f"  query {name:22s} uncached {uncached * 1e6:7.1f} us   cached {cached * 1e6:6.2f} us")
    return rows


def bench_startup(repeat: int) -> dict:
    from tpsim.cli import _Parser

    best = float("inf")
    for _ in range(repeat):
        sys.modules.pop("tpsim.commands.import_tables", None)
        t0 = time.perf_counter()
        module = importlib.import_module("tpsim.commands.import_tables")
        module.register(_Parser(prog="x").add_subparsers(parser_class=_Parser))
        best = min(best, time.perf_counter() - t0)
    probe = ("import runpy, sys; sys.argv = ['tpsim', 'run', '--help']\n"
             "try:\n    runpy.run_module('tpsim', run_name='__main__')\nexcept SystemExit:\n    pass\n"
             "print([m for m in sys.modules if m.startswith(('tpsim.kernels', 'tpsim.aic', 'duckdb'))])")
    res = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)
    imported = res.stdout.strip().splitlines()[-1]
    print(f"  start-up: registering `tpsim import` adds {best * 1e3:.2f} ms; modules of tables/importer imported "
          f"by `tpsim run`: {imported}")
    return {"import_command_registration_ms": round(best * 1e3, 3), "run_imports": imported}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--queries", type=int, default=2000)
    args = ap.parse_args()
    print("kernel tables: load")
    loads = bench_loads(args.repeat)
    print("kernel tables: queries (H100)")
    queries = bench_queries(args.queries)
    print("start-up")
    startup = bench_startup(args.repeat)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "kernel_tables.json").write_text(json.dumps({"loads": loads, "queries": queries, "startup": startup},
                                                       indent=1) + "\n")
    print(f"wrote {OUT / 'kernel_tables.json'}")


if __name__ == "__main__":
    main()
