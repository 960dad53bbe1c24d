"""LLMServingSim's cluster-config JSON, validated into typed objects.

Schema (LLMServingSim 2.0): ``num_nodes``, ``link_bw`` (GB/s), ``link_latency``
(ns), ``nodes[]`` with ``num_instances``, ``cpu_mem`` and ``instances[]``; each
instance has ``model_name``, ``hardware``, ``npu_mem`` {mem_size, mem_bw,
mem_latency, mem_util}, ``num_npus`` / ``tp_size`` / ``pp_size``, ``pd_type``
and optional per-instance engine keys.

Units: ``npu_mem.mem_size`` is read as GiB (2**30 bytes), exactly as
LLMServingSim reads it (its docs say "GB"); ``mem_bw`` and ``link_bw`` are GB/s
(1e9 B/s); latencies are ns.  Keys we do not know are collected (with their
path) so the run can warn about them and list them in the summary.  Features
we do not model (PIM, CXL, power, offloading, data-parallel groups,
prefill/decode disaggregation) are rejected, never silently ignored.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from tpsim.config import typed
from tpsim.errors import InputError, NotSupportedError
from tpsim.hashing import sha256_bytes
from tpsim.io.files import read_json_file, show_path

#: per-instance engine keys LLMServingSim accepts in ``instances[i]``
ENGINE_KEYS = (
    "max_num_seqs",
    "max_num_batched_tokens",
    "long_prefill_token_threshold",
    "block_size",
    "dtype",
    "kv_cache_dtype",
    "enable_chunked_prefill",
    "enable_prefix_caching",
    "reserve_full_isl",
    "async_scheduling",
    "num_gpu_blocks_override",
    "max_model_len",
)
#: per-instance keys that switch on features tpsim does not model
UNSUPPORTED_INSTANCE_KEYS = {
    "enable_local_offloading": "weight offloading",
    "enable_attn_offloading": "attention offloading to PIM",
    "enable_sub_batch_interleaving": "sub-batch interleaving",
    "placement": "per-layer/per-block memory placement",
}
#: keys that exist in LLMServingSim but change nothing in tpsim (recorded as ignored)
IGNORED_INSTANCE_KEYS = {
    "enable_block_copy": "a trace-generation shortcut of LLMServingSim; tpsim computes every layer anyway",
}
#: data and expert parallelism: LLMServingSim's spelling (``dp_group``: one entry per DP rank, ``ep_size``:
#: the total EP degree of the group) and vLLM's (``data_parallel_size``: one entry expands to that many
#: DP ranks, ``enable_expert_parallel``); resolved against the model in :mod:`tpsim.config.parallel`
PARALLEL_KEYS = ("ep_size", "dp_group", "data_parallel_size", "enable_expert_parallel")
_INSTANCE_KEYS = {"model_name", "hardware", "npu_mem", "num_npus", "tp_size", "pp_size", "pd_type"}
_NPU_MEM_KEYS = {"mem_size", "mem_bw", "mem_latency", "mem_util"}
_NODE_KEYS = {"num_instances", "cpu_mem", "instances", "power"}
_CPU_MEM_KEYS = {"mem_size", "mem_bw", "mem_latency", "pim_config"}
_TOP_KEYS = {"num_nodes", "link_bw", "link_latency", "nodes", "cxl_mem"}


class NpuMem(msgspec.Struct, frozen=True):
    mem_size_gib: float
    mem_bw_gbps: float
    mem_latency_ns: float
    mem_util: float | None


class InstanceConfig(msgspec.Struct, frozen=True):
    index: int  # global instance id, in file order
    node: int
    model_name: str
    hardware: str
    npu_mem: NpuMem
    num_npus: int
    tp_size: int
    pp_size: int
    pd_type: str | None
    engine_overrides: dict  # per-instance engine keys, as given
    ignored_keys: tuple[str, ...] = ()
    entry: str = ""  # where the instance is in the file: "nodes[n].instances[j]" (shared by expanded DP ranks)
    ep_size: int | None = None  # LLMServingSim's ep_size as given (the DP group's total EP degree)
    enable_expert_parallel: bool | None = None  # vLLM's flag as given
    dp_group: str | None = None  # the DP group's name (for data_parallel_size: "data_parallel_size@<entry>")


class ClusterConfig(msgspec.Struct, frozen=True):
    path: str
    sha256: str
    num_nodes: int
    link_bw_gbps: float
    link_latency_ns: float
    instances: tuple[InstanceConfig, ...]
    unknown_keys: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


#: limits no real deployment reaches; each is named in its error
MAX_NODES = 4096
MAX_INSTANCES = 4096
MAX_GPUS = 65536  # per instance: num_npus, tp_size, pp_size
MAX_LINK_BW_GBPS = 1e6  # 1 PB/s per direction
MAX_LATENCY_NS = 1e10  # 10 s
MAX_MEM_GIB = 1e5  # 100 TiB per GPU
MAX_MEM_BW_GBPS = 1e6


def _key(key: str) -> str:
    """An unknown key as it appears in warnings: printable, at most 60 characters."""
    return key if key.isprintable() and len(key) <= 60 else typed.show(key)


def _dimension_value(value, where: str, allow_zero: bool, maximum: float) -> tuple[float, str | None]:
    """Scalar or per-topology-dimension list; tensor parallelism uses dimension 0."""
    note = None
    if isinstance(value, list):
        if not value:
            raise InputError(f"{where} must be a number or a non-empty list of numbers")
        if len(value) > 1:
            note = f"{where.split(': ')[-1]} lists {len(value)} dimensions; tpsim uses the first (intra-instance) one"
        for k, v in enumerate(value[1:], 1):  # the other dimensions are unused but must still be numbers
            typed.number(v, f"{where}[{k}]", 0.0, maximum, allow_minimum=allow_zero)
        value = value[0]
    return typed.number(value, where, 0.0, maximum, allow_minimum=allow_zero), note


def _parse_npu_mem(obj, where: str) -> NpuMem:
    if not isinstance(obj, dict):
        raise InputError(f"{where} must be an object with mem_size (GiB), mem_bw (GB/s), mem_latency (ns)")
    for key in ("mem_size", "mem_bw"):
        if key not in obj:
            raise InputError(f"{where}.{key} is missing; add it (mem_size in GiB, mem_bw in GB/s)")
    size = typed.positive(obj["mem_size"], f"{where}.mem_size", MAX_MEM_GIB)
    bw = typed.positive(obj["mem_bw"], f"{where}.mem_bw", MAX_MEM_BW_GBPS)
    latency = typed.number(obj.get("mem_latency", 0), f"{where}.mem_latency", 0.0, MAX_LATENCY_NS)
    util = obj.get("mem_util")
    if util is not None:
        util = typed.fraction(util, f"{where}.mem_util")
    return NpuMem(size, bw, latency, util)


def resolve_parallelism(inst: dict, where: str) -> tuple[int, int, int]:
    """LLMServingSim's rules: num_npus = tp_size x pp_size, inferring the missing one."""
    num_npus = inst.get("num_npus")
    tp = inst.get("tp_size")
    pp = inst.get("pp_size")
    for key, value in (("num_npus", num_npus), ("tp_size", tp), ("pp_size", pp)):
        if value is not None:
            typed.integer(value, f"{where}.{key}", 1, MAX_GPUS)
    if pp is None:
        if num_npus is not None and tp is not None:
            if num_npus % tp:
                raise InputError(
                    f"{where}: num_npus ({num_npus}) is not a multiple of tp_size ({tp}); "
                    "set num_npus = tp_size x pp_size"
                )
            pp = num_npus // tp
        else:
            pp = 1
    if tp is None:
        if num_npus is None:
            tp = 1
        elif num_npus % pp:
            raise InputError(f"{where}: num_npus ({num_npus}) is not a multiple of pp_size ({pp})")
        else:
            tp = num_npus // pp
    if num_npus is None:
        num_npus = tp * pp
    if num_npus != tp * pp:
        raise InputError(
            f"{where}: num_npus ({num_npus}) != tp_size ({tp}) x pp_size ({pp}); "
            f"set num_npus to {tp * pp} or change tp_size/pp_size"
        )
    return num_npus, tp, pp


def parallel_keys(inst: dict, where: str, entry: str) -> dict:
    """The data/expert-parallel keys of one instance entry, typed; the two spellings may not be mixed."""
    for a, b in (("ep_size", "enable_expert_parallel"), ("dp_group", "data_parallel_size")):
        if inst.get(a) is not None and inst.get(b) is not None:
            raise InputError(f"{where}: '{a}' and '{b}' both given; they are two spellings of one setting "
                             f"(LLMServingSim's and vLLM's), keep one")
    out: dict = {"ep_size": None, "enable_expert_parallel": None, "dp_group": None, "data_parallel_size": None}
    if inst.get("ep_size") is not None:
        out["ep_size"] = typed.integer(inst["ep_size"], f"{where}.ep_size", 1, MAX_GPUS)
    if inst.get("enable_expert_parallel") is not None:
        out["enable_expert_parallel"] = typed.boolean(inst["enable_expert_parallel"], f"{where}.enable_expert_parallel")
    if inst.get("dp_group") is not None:
        out["dp_group"] = typed.text(inst["dp_group"], f"{where}.dp_group", 128)
    if inst.get("data_parallel_size") is not None:
        ranks = typed.integer(inst["data_parallel_size"], f"{where}.data_parallel_size", 1, MAX_INSTANCES)
        out["data_parallel_size"] = ranks
        out["dp_group"] = f"{_NATIVE_GROUP}{entry}"
    return out


_NATIVE_GROUP = "data_parallel_size@"


def check_group_names(instances: list[InstanceConfig], where: str) -> None:
    """A ``dp_group`` name may not pose as the group of a ``data_parallel_size`` entry."""
    for inst in instances:
        group = inst.dp_group or ""
        if group.startswith(_NATIVE_GROUP) and group != f"{_NATIVE_GROUP}{inst.entry}":
            raise InputError(f"{where}: {inst.entry}.dp_group {group!r}: names starting with '{_NATIVE_GROUP}' "
                             "are reserved for data_parallel_size; choose another name")


def parse_cluster(doc, path: str, sha256: str = "") -> ClusterConfig:
    where = path
    if not isinstance(doc, dict):
        raise InputError(f"{where}: expected a JSON object with num_nodes, link_bw, link_latency, nodes")
    unknown: list[str] = [_key(k) for k in doc if k not in _TOP_KEYS]
    for key in ("num_nodes", "link_bw", "link_latency", "nodes"):
        if key not in doc:
            raise InputError(f"{where}: missing field '{key}'")
    if "cxl_mem" in doc:
        raise NotSupportedError(f"{where}: field 'cxl_mem' (CXL memory pools) is not supported by tpsim; remove it")
    num_nodes = typed.integer(doc["num_nodes"], f"{where}: num_nodes", 1, MAX_NODES)
    link_bw, note_bw = _dimension_value(doc["link_bw"], f"{where}: link_bw", False, MAX_LINK_BW_GBPS)
    link_latency, note_lat = _dimension_value(doc["link_latency"], f"{where}: link_latency", True, MAX_LATENCY_NS)
    notes = [n for n in (note_bw, note_lat) if n]
    nodes = doc["nodes"]
    if not isinstance(nodes, list) or not nodes:
        raise InputError(f"{where}: 'nodes' must be a non-empty list")
    if len(nodes) != num_nodes:
        raise InputError(f"{where}: num_nodes is {num_nodes} but 'nodes' lists {len(nodes)}; make them agree")
    instances: list[InstanceConfig] = []
    for n, node in enumerate(nodes):
        for j, inst in enumerate(_node_instances(node, n, where, unknown)):
            instances += _parse_instance(inst, n, j, len(instances), where, unknown)
    check_group_names(instances, where)
    return ClusterConfig(
        path=path,
        sha256=sha256,
        num_nodes=num_nodes,
        link_bw_gbps=link_bw,
        link_latency_ns=link_latency,
        instances=tuple(instances),
        unknown_keys=tuple(unknown),
        notes=tuple(notes),
    )


def _node_instances(node, n: int, where: str, unknown: list[str]) -> list:
    """The instance entries of ``nodes[n]``, after the node's own keys are checked."""
    nwhere = f"{where}: nodes[{n}]"
    if not isinstance(node, dict):
        raise InputError(f"{nwhere} must be an object")
    unknown += [f"nodes[{n}].{_key(k)}" for k in node if k not in _NODE_KEYS]
    if "power" in node:
        raise NotSupportedError(f"{nwhere}.power: power modelling is not supported by tpsim; remove the 'power' block")
    cpu_mem = node.get("cpu_mem")
    if isinstance(cpu_mem, dict):
        if cpu_mem.get("pim_config"):
            raise NotSupportedError(f"{nwhere}.cpu_mem.pim_config: PIM is not supported by tpsim; remove it")
        unknown += [f"nodes[{n}].cpu_mem.{_key(k)}" for k in cpu_mem if k not in _CPU_MEM_KEYS]
    if "instances" not in node:
        raise InputError(f"{nwhere}: missing field 'instances'")
    insts = node["instances"]
    if not isinstance(insts, list) or not insts:
        raise InputError(f"{nwhere}.instances must be a non-empty list")
    declared = typed.integer(node.get("num_instances", len(insts)), f"{nwhere}.num_instances", 1, MAX_INSTANCES)
    if declared != len(insts):
        raise InputError(
            f"{nwhere}: num_instances is {declared} but 'instances' lists {len(insts)}; make them agree"
        )
    return insts


_KNOWN_INSTANCE_KEYS = (_INSTANCE_KEYS | set(ENGINE_KEYS) | set(UNSUPPORTED_INSTANCE_KEYS) | set(IGNORED_INSTANCE_KEYS)
                        | set(PARALLEL_KEYS))


def _parse_instance(inst, n: int, j: int, first_index: int, where: str, unknown: list[str]) -> list[InstanceConfig]:
    """``nodes[n].instances[j]``: one instance, or one per DP rank with ``data_parallel_size``."""
    entry = f"nodes[{n}].instances[{j}]"
    iwhere = f"{where}: {entry}"
    if not isinstance(inst, dict):
        raise InputError(f"{iwhere} must be an object")
    for key in ("model_name", "hardware", "npu_mem"):
        if key not in inst:
            raise InputError(f"{iwhere}: missing field '{key}'")
    for key in ("model_name", "hardware"):
        typed.text(inst[key], f"{iwhere}.{key}", max_len=1024 if key == "model_name" else 128)
    for key, what in UNSUPPORTED_INSTANCE_KEYS.items():
        if inst.get(key) not in (None, False, ""):
            raise NotSupportedError(f"{iwhere}.{key}: {what} is not supported by tpsim; remove the key")
    pd_type = inst.get("pd_type")
    if pd_type is not None:
        if pd_type not in ("prefill", "decode"):
            raise InputError(f"{iwhere}.pd_type must be null, \"prefill\" or \"decode\", got {typed.show(pd_type)}")
        raise NotSupportedError(
            f"{iwhere}.pd_type={pd_type!r}: prefill/decode disaggregation is not supported yet; "
            "use pd_type null (colocated)"
        )
    num_npus, tp, pp = resolve_parallelism(inst, iwhere)
    keys = parallel_keys(inst, iwhere, entry)
    overrides = {k: inst[k] for k in ENGINE_KEYS if k in inst}
    npu_mem = _parse_npu_mem(inst["npu_mem"], f"{iwhere}.npu_mem")
    unknown += [f"{entry}.npu_mem.{_key(k)}" for k in inst["npu_mem"] if k not in _NPU_MEM_KEYS]
    unknown += [f"{entry}.{_key(k)}" for k in inst if k not in _KNOWN_INSTANCE_KEYS]
    ignored = tuple(k for k in IGNORED_INSTANCE_KEYS if k in inst)
    ranks = keys.pop("data_parallel_size") or 1
    if first_index + ranks > MAX_INSTANCES:
        raise InputError(f"{where}: more than {MAX_INSTANCES} instances; split the cluster")
    return [
        InstanceConfig(
            index=first_index + r,
            node=n,
            model_name=inst["model_name"],
            hardware=inst["hardware"],
            npu_mem=npu_mem,
            num_npus=num_npus,
            tp_size=tp,
            pp_size=pp,
            pd_type=None,
            engine_overrides=overrides,
            ignored_keys=ignored,
            entry=entry,
            **keys,
        )
        for r in range(ranks)
    ]


def load_cluster(path: str | Path) -> ClusterConfig:
    doc, raw = read_json_file(path, "cluster config", "--cluster-config")
    return parse_cluster(doc, show_path(str(path)), sha256_bytes(raw))
