"""Write one run's cluster config and its parameter record (the first half of a ``simulate`` job).

    python -m tpsim.campaign.derive --base=BASE.json --params='{...}' \
        --cluster-out=RUN/cluster.json --run-out=RUN/run.json [--hardware=configs/hardware/H100.yaml] \
        [--record dataset=TRACE --record model_config=MODEL.json --record hardware=HW.yaml]

Reads only ``--base``, when the run's hardware differs from the base config's the catalog
entry ``--hardware`` (for ``npu_mem.mem_size``/``mem_bw``), and the ``--record`` files (hashed).  The rules are in
:func:`derive_cluster_config`.  ``run.json`` holds the run's parameters plus the path
and SHA-256 of every input of the run (also for runs that turn out infeasible, whose tpsim
summary hashes only the cluster config), and ``git_dirty``: whether the checkout had uncommitted
changes to tracked files when the run was derived (the commit alone then does not reproduce it).
Both files are written atomically.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tpsim.campaign.checks import first_pp
from tpsim.campaign.layouts import apply_layout, has_layout
from tpsim.campaign.outputs import JSON_INDENT
from tpsim.campaign.provenance import file_sha256, git_dirty
from tpsim.errors import InputError
from tpsim.hashing import sha256_file
from tpsim.io.files import (
    decode_utf8,
    parse_yaml,
    read_bytes,
    read_json_file,
    show_path,
)
from tpsim.io.writing import atomic_write_json


def hardware_memory(hw_yaml_path) -> tuple[float, float]:
    """(memory_gib, memory_bw_gbps) from a hardware catalog entry, via tpsim's own parser."""
    from tpsim.config.hardware import parse_hardware

    where = show_path(str(hw_yaml_path))
    doc = parse_yaml(decode_utf8(read_bytes(hw_yaml_path, "hardware entry", "--hardware"), where), where)
    spec = parse_hardware(doc, Path(hw_yaml_path).stem, str(hw_yaml_path))
    return spec.memory_gib, spec.memory_bw_gbps


def derive_cluster_config(base: dict, params: dict, hw_memory: tuple[float, float] | None = None,
                          model_path: str | None = None) -> dict:
    """The run's cluster config: the base with the run's parameters applied to every instance.

    * ``link_bw`` (and ``link_latency`` when the run has one) replace the top-level values;
    * every instance gets the model (a model given as a path to a .json: ``model_path``, the file
      the campaign resolved, so that tpsim finds it from the working folder), ``tp_size`` and
      ``num_npus = tp_size x pp_size`` (its own pp);
    * ``hardware``: when it differs from an instance's, ``npu_mem.mem_size`` (GiB) and ``mem_bw``
      come from the catalog (``hw_memory``); otherwise the base's ``npu_mem`` stays;
    * ``max_num_seqs`` / ``max_num_batched_tokens`` become instance keys when set;
    * ``dp_size`` / ``ep_size`` (when the run has them): one node holding the run's DP group
      (:func:`tpsim.campaign.layouts.apply_layout`).
    """
    doc = json.loads(json.dumps(base))
    doc["link_bw"] = params["link_bw"]
    if params.get("link_latency") is not None:
        doc["link_latency"] = params["link_latency"]
    for node in doc["nodes"]:
        for inst in node["instances"]:
            pp = first_pp(inst)
            inst["model_name"] = model_path if model_path and params["model"].endswith(".json") else params["model"]
            inst["tp_size"] = params["tp_size"]
            inst["pp_size"] = pp
            inst["num_npus"] = params["tp_size"] * pp
            if params.get("hardware") and inst["hardware"] != params["hardware"]:
                if hw_memory is None:
                    raise ValueError(f"hardware {params['hardware']} differs from the base's {inst['hardware']}: "
                                     "its catalog entry is needed")
                inst["hardware"] = params["hardware"]
                inst["npu_mem"] = dict(inst["npu_mem"], mem_size=hw_memory[0], mem_bw=hw_memory[1])
            for key in ("max_num_seqs", "max_num_batched_tokens"):
                if params.get(key) is not None:
                    inst[key] = params[key]
    if has_layout(params):
        apply_layout(doc, params)
    return doc


def _input(path: str) -> dict:
    return {"path": path, "sha256": file_sha256(path)}


def derive_run(base_path: str, params: dict, cluster_out: str, run_out: str, hardware: str | None = None,
               records: dict | None = None, dirty: bool | None = None) -> None:
    """Write the run's cluster config and ``run.json`` (both atomically); raises InputError, ValueError,
    KeyError, TypeError or OSError on a bad input (:func:`main` prints them as one line).

    ``dirty``: ``git_dirty`` as found once by a caller deriving many runs (a batch job); None asks git.
    """
    records = dict(records or {})
    base, _ = read_json_file(base_path, "base cluster config", "--base")
    hw_memory = hardware_memory(hardware) if hardware else None
    doc = derive_cluster_config(base, params, hw_memory, records.get("model_config"))
    atomic_write_json(cluster_out, doc, indent=JSON_INDENT)
    record = dict(params)
    # the cluster config just written: hashed afresh (a batch writes many files under one process's hash cache)
    record["inputs"] = {"base_cluster_config": _input(base_path),
                        "cluster_config": {"path": cluster_out, "sha256": sha256_file(Path(cluster_out))}}
    if hardware:
        record["inputs"]["hardware_catalog"] = _input(hardware)
    for name, path in records.items():
        record["inputs"][name] = _input(path)
    record["git_dirty"] = git_dirty() if dirty is None else dirty
    atomic_write_json(run_out, record, indent=JSON_INDENT)


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
    records = dict(item.partition("=")[::2] for item in args.record)
    try:
        derive_run(args.base, params, args.cluster_out, args.run_out, args.hardware, records)
    except (InputError, ValueError, KeyError, TypeError, OSError) as exc:
        print(f"derive_config: error: {one_line(exc)}", file=sys.stderr)
        return 1
    return 0


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (how a failed derivation is reported)."""
    return " ".join(str(exc).split())


if __name__ == "__main__":
    sys.exit(main())
