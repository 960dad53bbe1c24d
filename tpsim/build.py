"""Turn validated configs into ready-to-simulate instances.

Everything that can be wrong with the inputs is found here, before the first
simulated nanosecond: unknown names, impossible parallelism, a model that does
not fit.  Instances sharing a model or hardware name share the parsed objects.
"""

from __future__ import annotations

from dataclasses import dataclass

from tpsim.config.cluster import ClusterConfig, InstanceConfig
from tpsim.config.engine import EngineConfig, resolve_engine
from tpsim.config.hardware import HardwareSpec, load_hardware
from tpsim.config.model import ModelSpec, load_model
from tpsim.errors import InputError, NotSupportedError
from tpsim.memory import MemoryPlan, plan_memory
from tpsim.perf.base import LatencyModel
from tpsim.perf.factory import make_latency_model


@dataclass
class InstanceSetup:
    config: InstanceConfig
    model: ModelSpec
    hardware: HardwareSpec
    engine: EngineConfig
    memory: MemoryPlan
    latency: LatencyModel

    @property
    def where(self) -> str:
        c = self.config
        return f"nodes[{c.node}].instances[{c.index}]"


def instance_label(cluster: ClusterConfig, inst: InstanceConfig) -> str:
    return f"{cluster.path}: instance {inst.index} (nodes[{inst.node}])"


def build_instances(cluster: ClusterConfig, cli_engine: dict, perf_model: str = "analytical",
                    profile_dir: str | None = None) -> list[InstanceSetup]:
    models: dict[str, ModelSpec] = {}
    hardware: dict[str, HardwareSpec] = {}
    setups = []
    for inst in cluster.instances:
        where = instance_label(cluster, inst)
        try:
            if inst.model_name not in models:
                models[inst.model_name] = load_model(inst.model_name)
            if inst.hardware not in hardware:
                hardware[inst.hardware] = load_hardware(inst.hardware)
        except InputError as exc:
            raise type(exc)(f"{where}: {exc}") from None
        model = models[inst.model_name]
        hw = hardware[inst.hardware]
        if inst.engine_overrides.get("dtype") == "int8" or cli_engine.get("dtype") == "int8":
            raise NotSupportedError(f"{where}: dtype int8 is not supported; choose float16, bfloat16, float32 or fp8")
        engine = resolve_engine(cli_engine, inst.engine_overrides, model.torch_dtype, model.max_position_embeddings,
                                inst.npu_mem.mem_util, where)
        memory = plan_memory(model, inst.tp_size, inst.pp_size, engine, inst.npu_mem.mem_size_gib,
                             hw.perf.activation_reserve_gib, where)
        latency = make_latency_model(perf_model, model=model, hardware=hw, engine=engine, tp=inst.tp_size,
                                     pp=inst.pp_size, mem_bw_gbps=inst.npu_mem.mem_bw_gbps,
                                     link_bw_gbps=cluster.link_bw_gbps, link_latency_ns=cluster.link_latency_ns,
                                     profile_dir=profile_dir, where=where)
        setups.append(InstanceSetup(inst, model, hw, engine, memory, latency))
    return setups
