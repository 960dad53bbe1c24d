"""Turn validated configs into ready-to-simulate instances.

Everything that can be wrong with the inputs is found here, before the first
simulated nanosecond: unknown names, impossible parallelism, a model that does
not fit.  Instances sharing a model or hardware name share the parsed objects.
"""

from __future__ import annotations

import msgspec

from tpsim.config.cluster import ClusterConfig, InstanceConfig
from tpsim.config.engine import EngineConfig, resolve_engine
from tpsim.config.hardware import HardwareSpec, load_hardware
from tpsim.config.model import ModelSpec, load_model
from tpsim.config.parallel import ParallelLayout, resolve_layouts
from tpsim.errors import InputError, NotSupportedError
from tpsim.memory import MemoryPlan, plan_memory
from tpsim.perf.base import LatencyModel
from tpsim.perf.factory import make_latency_model


class InstanceSetup(msgspec.Struct):
    config: InstanceConfig
    model: ModelSpec
    hardware: HardwareSpec
    engine: EngineConfig
    memory: MemoryPlan
    latency: LatencyModel
    layout: ParallelLayout  # DP group, EP rank(s), experts on this instance's GPUs

    @property
    def where(self) -> str:
        c = self.config
        return f"nodes[{c.node}].instances[{c.index}]"


def instance_label(cluster: ClusterConfig, inst: InstanceConfig) -> str:
    return f"{cluster.path}: instance {inst.index} (nodes[{inst.node}])"


def build_instances(cluster: ClusterConfig, cli_engine: dict, perf_model: str = "analytical",
                    profile_dir: str | None = None, models=None, hardware=None,
                    comm_model: str = "auto", notes: list | None = None,
                    routing: str = "BALANCED") -> list[InstanceSetup]:
    """One ready instance per cluster-config instance (one per DP rank).

    ``cli_engine``: engine settings by instance-key name (the flags); ``models`` / ``hardware``:
    specs given as objects, which win over the catalog for their names; ``notes`` collects keys
    that change nothing (``ep_size`` on a dense model), for the summary's ``ignored``; ``routing``:
    how tokens reach experts (``--expert-routing-policy``, MoE models only).
    """
    models = dict(models or {})
    hardware = dict(hardware or {})
    for inst in cluster.instances:
        try:
            if inst.model_name not in models:
                models[inst.model_name] = load_model(inst.model_name)
            if inst.hardware not in hardware:
                hardware[inst.hardware] = load_hardware(inst.hardware)
        except InputError as exc:
            raise type(exc)(f"{instance_label(cluster, inst)}: {exc}") from None
    layouts, moot = resolve_layouts(cluster.instances, [models[i.model_name] for i in cluster.instances], cluster.path)
    if notes is not None:
        notes.extend(moot)
    setups = []
    for inst, layout in zip(cluster.instances, layouts):
        where = instance_label(cluster, inst)
        model = models[inst.model_name]
        hw = hardware[inst.hardware]
        engine = engine_for(model, cli_engine, inst.engine_overrides, inst.npu_mem.mem_util, where)
        memory = plan_memory(model, inst.tp_size, inst.pp_size, engine, inst.npu_mem.mem_size_gib,
                             hw.perf.activation_reserve_gib, where, layout)
        latency = make_latency_model(perf_model, model=model, hardware=hw, engine=engine, tp=inst.tp_size,
                                     pp=inst.pp_size, mem_bw_gbps=inst.npu_mem.mem_bw_gbps,
                                     link_bw_gbps=cluster.link_bw_gbps, link_latency_ns=cluster.link_latency_ns,
                                     profile_dir=profile_dir, comm_model=comm_model, where=where, layout=layout,
                                     routing=routing)
        setups.append(InstanceSetup(inst, model, hw, engine, memory, latency, layout))
    return setups


def engine_for(model: ModelSpec, cli_engine: dict, overrides: dict, mem_util: float | None, where: str) -> EngineConfig:
    """The engine settings of one instance: defaults < flags < the instance's keys."""
    if overrides.get("dtype") == "int8" or cli_engine.get("dtype") == "int8":
        raise NotSupportedError(f"{where}: dtype int8 is not supported; choose float16, bfloat16, float32 or fp8")
    return resolve_engine(cli_engine, overrides, model.torch_dtype, model.max_position_embeddings, mem_util, where)


def standalone(model_name: str, hardware_name: str, *, tp: int = 1, pp: int = 1, engine_keys: dict | None = None,
               perf_model: str = "analytical", mem_bw_gbps: float | None = None, link_bw_gbps: float | None = None,
               link_latency_ns: float | None = None, profile_dir: str | None = None, comm_model: str = "auto",
               where: str = "", dp: int = 1, ep_size: int | None = None, enable_expert_parallel: bool | None = None,
               routing: str = "BALANCED") -> tuple[ModelSpec, HardwareSpec, EngineConfig, LatencyModel]:
    """Model, hardware, engine and latency model of one instance outside a cluster config (``tpsim step``,
    ``tpsim calibrate``); memory bandwidth and link default to the hardware catalog's.  ``dp``, ``ep_size``
    and ``enable_expert_parallel`` place an MoE model's experts as the cluster-config keys of those names
    do (the instance is DP rank 0 of ``dp``); the latency model's ``layout`` is the result."""
    from tpsim.config.engine import DEFAULTS
    from tpsim.memory import check_parallelism

    model = load_model(model_name)
    hw = load_hardware(hardware_name)
    check_parallelism(model, tp, pp, where)
    layout = standalone_layout(model, hardware_name, tp, pp, dp, ep_size, enable_expert_parallel, where)
    engine = engine_for(model, {**DEFAULTS, **(engine_keys or {})}, {}, None, where)
    latency = make_latency_model(
        perf_model, model=model, hardware=hw, engine=engine, tp=tp, pp=pp,
        mem_bw_gbps=hw.memory_bw_gbps if mem_bw_gbps is None else mem_bw_gbps,
        link_bw_gbps=hw.link_bw_gbps if link_bw_gbps is None else link_bw_gbps,
        link_latency_ns=hw.link_latency_ns if link_latency_ns is None else link_latency_ns,
        profile_dir=profile_dir, comm_model=comm_model, where=where, layout=layout, routing=routing)
    return model, hw, engine, latency


def standalone_layout(model: ModelSpec, hardware_name: str, tp: int, pp: int, dp: int, ep_size: int | None,
                      enable_expert_parallel: bool | None, where: str) -> ParallelLayout:
    """DP rank 0's layout of ``dp`` identical instances, checked by the cluster config's rules."""
    from tpsim.config.cluster import InstanceConfig, NpuMem

    mem = NpuMem(1.0, 1.0, 0.0, None)
    group = "step" if dp > 1 else None
    instances = [InstanceConfig(i, 0, model.name, hardware_name, mem, tp * pp, tp, pp, None, {}, entry="step",
                                ep_size=ep_size, enable_expert_parallel=enable_expert_parallel, dp_group=group)
                 for i in range(dp)]
    return resolve_layouts(instances, [model] * dp, where)[0][0]
