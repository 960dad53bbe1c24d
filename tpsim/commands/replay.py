"""``tpsim replay``: simulate a measured vLLM replay directory with the engine settings it ran with.

Example::

    tpsim replay --measured ../shared/validation/rtxpro6000-llama-3.1-8b-tp1 \\
        --output outputs/replay.csv --perf-model analytical
    tpsim validate --measured ../shared/validation/rtxpro6000-llama-3.1-8b-tp1 --sim outputs/replay.csv

Inputs taken from the directory (layout: :mod:`tpsim.validation`):

* ``config.json``: the cluster config (``--cluster-config``);
* ``trace.jsonl``: the requests (``--dataset``);
* ``vllm/meta.json``: ``engine_kwargs`` (max_num_seqs, max_num_batched_tokens,
  dtype, kv_cache_dtype, seed, max_model_len) and, where the run recorded it, the ``kv_cache``
  block (block_size, enable_prefix_caching, gpu_memory_utilization, and
  num_gpu_blocks: the KV capacity vLLM allocated, used instead of tpsim's
  estimate, as ``--num-gpu-blocks-override``) and
  ``resolved_config`` (chunked prefill, async scheduling); without those,
  async scheduling follows the vLLM version (on from 0.12);
* ``model_config.json``: the model's Hugging Face config.  The cluster config
  names the model (``meta-llama/Llama-3.1-8B``); the run keeps that name (the
  CSV's model column and the profile-bundle lookup use it) but reads the
  architecture from the directory's file, handed to the run as an object
  (``RunConfig.models``), so the catalog is not consulted for it.

TTFT, latency and queuing delay start at vLLM's engine pickup (``--ttft-origin
pickup``: vLLM's ``queued_ts``, from which the measured runs' publishers define
them); ``--ttft-origin arrival`` measures from the arrival, as ``tpsim run`` does.

Every other ``tpsim run`` flag is accepted; a flag given explicitly wins over
the directory's value.  The run summary gains a ``replay`` block saying where
each setting came from.
"""

from __future__ import annotations

import re
import sys

#: meta.json engine setting -> run-flag destination
_META_DESTS = ("max_num_seqs", "max_num_batched_tokens", "dtype", "kv_cache_dtype", "seed", "block_size",
               "enable_prefix_caching", "npu_memory_utilization", "enable_chunked_prefill", "async_scheduling",
               "num_gpu_blocks_override", "max_model_len")
#: placeholder default: "not given on the command line" (not a string: argparse would parse a string default)
_UNSET = object()
_KV_DTYPES = {"auto": "auto", "fp8": "fp8", "fp8_e4m3": "fp8", "fp8_e5m2": "fp8"}
_DTYPES = {"auto": None, "bfloat16": "bfloat16", "float16": "float16", "half": "float16", "float32": "float32",
           "float": "float32"}
#: vLLM turned async scheduling on by default in this version
ASYNC_SCHEDULING_SINCE = (0, 12)


def register(subparsers) -> None:
    from tpsim.commands.run import add_run_arguments

    p = subparsers.add_parser(
        "replay", help="simulate a measured vLLM replay directory with its engine settings",
        description="Run tpsim on a measured replay directory (config.json, trace.jsonl, vllm/meta.json, "
                    "model_config.json) with the engine settings vLLM ran with; then compare with `tpsim validate`. "
                    "Any `tpsim run` flag may be added and wins over the directory's value.")
    p.add_argument("--measured", required=True, metavar="DIR", help="measured replay directory")
    add_run_arguments(p)
    p.set_defaults(func=handle, cluster_config=None, ttft_origin=_UNSET, **{d: _UNSET for d in _META_DESTS})


def _version(text) -> tuple[int, ...] | None:
    m = re.match(r"^v?(\d+)\.(\d+)", str(text or ""))
    return (int(m.group(1)), int(m.group(2))) if m else None


def engine_from_meta(meta: dict, where: str) -> tuple[dict, dict, list[str]]:
    """vLLM's recorded settings -> (run-flag values, their sources, notes)."""
    values: dict = {}
    source: dict = {}
    notes: list[str] = []

    def take(dest, value, src):
        values[dest] = value
        source[dest] = src

    _from_engine_kwargs(meta, where, take, notes)
    _from_kv_cache(meta.get("kv_cache"), take, where)
    _from_scheduler_config(meta.get("resolved_config"), take)
    if "async_scheduling" not in values:
        _async_from_version(meta.get("vllm_version"), take)
    return values, source, notes


def _from_engine_kwargs(meta: dict, where: str, take, notes: list[str]) -> None:
    """``engine_kwargs``: the batch limits, seed and dtypes vLLM was started with."""
    from tpsim.errors import InputError

    ek = meta.get("engine_kwargs") or {}
    if not isinstance(ek, dict):
        raise InputError(f"{where}: 'engine_kwargs' must be an object")
    for key in ("max_num_seqs", "max_num_batched_tokens", "seed"):
        _take_int(take, key, ek.get(key), f"engine_kwargs.{key}", where, 0)
    for key, table in (("dtype", _DTYPES), ("kv_cache_dtype", _KV_DTYPES)):
        if ek.get(key) is not None:
            take(key, _dtype_name(ek[key], key, table, where), f"engine_kwargs.{key}")
    _take_int(take, "max_model_len", ek.get("max_model_len"), "engine_kwargs.max_model_len", where, 1, " or null")


def _take_int(take, dest: str, value, field: str, where: str, minimum: int, alternative: str = "",
              hint: str = "") -> None:
    """A recorded integer setting (None: not recorded) to ``take``, or one error line naming the field."""
    from tpsim.errors import InputError

    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        kind = "positive" if minimum else "non-negative"
        raise InputError(f"{where}: {field} must be a {kind} integer{alternative}, got {value!r}{hint}")
    take(dest, value, field)


def _dtype_name(value, key: str, table: dict, where: str):
    """vLLM's spelling of a dtype -> tpsim's, or NotSupportedError naming the ones known."""
    from tpsim.errors import NotSupportedError

    if value not in table:
        raise NotSupportedError(f"{where}: engine_kwargs.{key} {value!r} is not supported; "
                                f"expected one of {', '.join(table)}")
    return table[value]


def _from_kv_cache(kv, take, where: str) -> None:
    """The ``kv_cache`` block: block size, prefix caching, memory utilization and the KV blocks vLLM allocated
    (where recorded; the blocks are the run's KV capacity, which tpsim would otherwise estimate)."""
    if not isinstance(kv, dict):
        return
    if isinstance(kv.get("block_size"), int) and not isinstance(kv["block_size"], bool):
        take("block_size", kv["block_size"], "kv_cache.block_size")
    if isinstance(kv.get("enable_prefix_caching"), bool):
        take("enable_prefix_caching", kv["enable_prefix_caching"], "kv_cache.enable_prefix_caching")
    util = kv.get("gpu_memory_utilization")
    if isinstance(util, (int, float)) and not isinstance(util, bool):
        take("npu_memory_utilization", float(util), "kv_cache.gpu_memory_utilization")
    _take_int(take, "num_gpu_blocks_override", kv.get("num_gpu_blocks"), "kv_cache.num_gpu_blocks", where, 1,
              hint="; fix or remove it (tpsim then estimates the KV capacity)")


def _from_scheduler_config(rc, take) -> None:
    """``resolved_config.scheduler_config``: chunked prefill and async scheduling as vLLM resolved them."""
    sched = rc.get("scheduler_config") if isinstance(rc, dict) else None
    if not isinstance(sched, dict):
        return
    for key in ("enable_chunked_prefill", "async_scheduling"):
        if isinstance(sched.get(key), bool):
            take(key, sched[key], f"resolved_config.scheduler_config.{key}")


def _async_from_version(vllm_version, take) -> None:
    """Without a recorded scheduler config, async scheduling is vLLM's default for its version."""
    ver = _version(vllm_version)
    if ver is not None:
        take("async_scheduling", ver >= ASYNC_SCHEDULING_SINCE,
             f"vllm_version {vllm_version} (async scheduling is vLLM's default from "
             f"{'.'.join(map(str, ASYNC_SCHEDULING_SINCE))})")


def _settings(args, meta: dict, meta_path) -> tuple[dict, list[str]]:
    """Each engine setting: the command line's, else the measured run's, else tpsim's default."""
    from tpsim.config.run import RunConfig

    defaults = RunConfig().flags()
    from_meta, meta_source, notes = engine_from_meta(meta, str(meta_path))
    settings = {}
    for dest in _META_DESTS:
        given = getattr(args, dest)
        if given is not _UNSET:
            settings[dest] = {"value": given, "source": "command line"}
        elif dest in from_meta:
            setattr(args, dest, from_meta[dest])
            settings[dest] = {"value": from_meta[dest], "source": f"{meta_path}: {meta_source[dest]}"}
        else:
            setattr(args, dest, defaults[dest])
            settings[dest] = {"value": defaults[dest], "source": "tpsim default"}
    if args.ttft_origin is _UNSET:
        args.ttft_origin = "pickup"
        settings["ttft_origin"] = {"value": "pickup", "source": "tpsim replay default: vLLM's queued_ts, where the "
                                                               "measured runs' TTFT and latency start"}
    else:
        settings["ttft_origin"] = {"value": args.ttft_origin, "source": "command line"}
    return settings, notes


def _inputs_from_dir(args, paths) -> None:
    from tpsim.errors import InputError

    if args.cluster_config is None:
        if not paths["config"].is_file():
            raise InputError(f"{paths['config']}: no such file; a measured directory needs the cluster config "
                             "(or pass --cluster-config)")
        args.cluster_config = str(paths["config"])
    if args.dataset is None:
        if not paths["trace"].is_file():
            raise InputError(f"{paths['trace']}: no such file; a measured directory needs trace.jsonl "
                             "(or pass --dataset)")
        args.dataset = str(paths["trace"])


def _cross_check(args, cluster, meta: dict, settings: dict, notes: list[str]) -> None:
    """Where the cluster config and vLLM's record disagree, the cluster config is simulated; say so."""
    models = sorted({i.model_name for i in cluster.instances})
    utils = {i.npu_mem.mem_util for i in cluster.instances}
    if None not in utils:  # the cluster config's npu_mem.mem_util wins over the flag (tpsim.config.engine)
        wanted = settings["npu_memory_utilization"]["value"]
        not_default = settings["npu_memory_utilization"]["source"] != "tpsim default"
        if not_default and any(abs(u - wanted) > 1e-9 for u in utils):
            blocks = settings["num_gpu_blocks_override"]
            sets_kv = ("; the KV capacity is the given num_gpu_blocks_override either way"
                       if blocks["value"] is not None else "")
            notes.append(f"gpu_memory_utilization {wanted} ({settings['npu_memory_utilization']['source']}) differs "
                         f"from the cluster config's npu_mem.mem_util {sorted(utils)}, which is used{sets_kv}")
        settings["npu_memory_utilization"] = {"value": min(utils) if len(utils) == 1 else sorted(utils),
                                              "source": f"{args.cluster_config}: npu_mem.mem_util"}
    ek = meta.get("engine_kwargs") if isinstance(meta.get("engine_kwargs"), dict) else {}
    tp_meta = ek.get("tensor_parallel_size")
    if tp_meta is not None and any(i.tp_size != tp_meta for i in cluster.instances):
        notes.append(f"engine_kwargs.tensor_parallel_size={tp_meta} differs from the cluster config's tp_size; "
                     "the cluster config is simulated")
    _cross_check_dp(cluster, ek, notes)
    if meta.get("model") and models != [meta["model"]]:
        notes.append(f"vllm/meta.json names model {meta['model']!r}; the cluster config names {', '.join(models)}")


def _cross_check_dp(cluster, ek: dict, notes: list[str]) -> None:
    """vLLM's data_parallel_size / enable_expert_parallel against the cluster config's DP groups and EP."""
    dp = ek.get("data_parallel_size")
    sizes: dict = {}
    for i in cluster.instances:
        sizes[i.dp_group or id(i)] = sizes.get(i.dp_group or id(i), 0) + 1
    if dp is not None and set(sizes.values()) != {dp}:
        notes.append(f"engine_kwargs.data_parallel_size={dp} differs from the cluster config's DP group sizes "
                     f"{sorted(set(sizes.values()))}; the cluster config is simulated")
    if ek.get("enable_expert_parallel") is True and isinstance(dp, int):
        for i in cluster.instances:
            if i.ep_size is not None and i.ep_size != dp * i.tp_size:
                notes.append(f"engine_kwargs.enable_expert_parallel with data_parallel_size={dp} is EP over "
                             f"{dp * i.tp_size} GPUs; the cluster config's {i.entry}.ep_size is {i.ep_size}, "
                             "which is simulated")
                break


def handle(args) -> int:
    from tpsim.api import run
    from tpsim.commands.run import config_from_args
    from tpsim.config.cluster import load_cluster
    from tpsim.config.model import load_model_file
    from tpsim.console import Console
    from tpsim.validation.measured import measured_paths, read_json

    paths = measured_paths(args.measured)
    if not args.output:
        from tpsim.errors import InputError

        raise InputError("--output is required: the per-request CSV to write (its summary goes beside it)")
    meta_path = paths["meta"]
    meta = read_json(meta_path, "vLLM run metadata") if meta_path.is_file() else {}
    settings, notes = _settings(args, meta, meta_path)
    _inputs_from_dir(args, paths)
    cluster = load_cluster(args.cluster_config)
    _cross_check(args, cluster, meta, settings, notes)
    models = sorted({i.model_name for i in cluster.instances})
    model_json = paths["model_config"]
    specs = {}
    if model_json.is_file():
        if len(models) != 1:
            from tpsim.errors import InputError

            raise InputError(f"{model_json}: one model config for a cluster of {len(models)} models "
                             f"({', '.join(models)}); replay needs a single-model cluster config")
        specs[models[0]] = load_model_file(model_json, models[0])
    for note in notes:
        if args.log_level != "ERROR":
            sys.stderr.write(f"tpsim: warning: {note}\n")
    replay = {
        "measured_dir": str(paths["dir"]),
        "vllm_version": meta.get("vllm_version"),
        "model_config": str(model_json) if specs else f"catalog entry for {', '.join(models)}",
        "settings": settings,
        "notes": notes,
    }
    config = config_from_args(args, models=specs, summary_extra={"replay": replay})
    run(config, console=Console(config.log_level), argv=sys.argv[1:])
    return 0
