"""Write one run's cluster config and its parameter record.

    python workflow/scripts/derive_config.py --base BASE.json --params '{...}' \
        --cluster-out RUN/cluster.json --run-out RUN/run.json [--hardware configs/hardware/H100.yaml] \
        [--record dataset=TRACE --record model_config=MODEL.json --record hardware=HW.yaml]

Reads only ``--base``, when the run's hardware differs from the base config's the catalog
entry ``--hardware`` (for ``npu_mem.mem_size``/``mem_bw``), and the ``--record`` files (hashed).  The rules are in
``campaignlib.derive_cluster_config``.  ``run.json`` holds the run's parameters plus the path
and SHA-256 of every input of the run (also for runs that turn out infeasible, whose tpsim
summary hashes only the cluster config), and ``git_dirty``: whether the checkout had uncommitted
changes to tracked files when the run was derived (the commit alone then does not reproduce it).
Both files are written atomically.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import campaignlib


def sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", required=True)
    ap.add_argument("--params", required=True, help="the run's parameters as JSON")
    ap.add_argument("--hardware", help="catalog entry of the run's hardware, when it differs from the base's")
    ap.add_argument("--record", action="append", default=[], metavar="NAME=PATH",
                    help="another input of the run (trace, model config, hardware entry) whose path and SHA-256 "
                         "go into run.json: tpsim's own summary lists only what it read, which for an infeasible "
                         "run is the cluster config alone")
    ap.add_argument("--cluster-out", required=True)
    ap.add_argument("--run-out", required=True)
    args = ap.parse_args(argv)
    params = json.loads(args.params)
    with open(args.base, encoding="utf-8") as f:
        base = json.load(f)
    hw_memory = campaignlib.hardware_memory(args.hardware) if args.hardware else None
    try:
        doc = campaignlib.derive_cluster_config(base, params, hw_memory)
    except ValueError as exc:
        print(f"derive_config: error: {exc}", file=sys.stderr)
        return 1
    campaignlib.write_json_atomic(args.cluster_out, doc)
    record = dict(params)
    record["inputs"] = {"base_cluster_config": {"path": args.base, "sha256": sha256(args.base)},
                        "cluster_config": {"path": args.cluster_out, "sha256": sha256(args.cluster_out)}}
    if args.hardware:
        record["inputs"]["hardware_catalog"] = {"path": args.hardware, "sha256": sha256(args.hardware)}
    for item in args.record:
        name, _, path = item.partition("=")
        record["inputs"][name] = {"path": path, "sha256": sha256(path)}
    record["git_dirty"] = campaignlib.git_dirty()
    campaignlib.write_json_atomic(args.run_out, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
