"""Data-parallel groups and expert placement: where each instance sits, as vLLM 0.19 lays it out.

One instance is one DP rank: ``tp_size x pp_size`` GPUs with their own scheduler, KV cache,
attention, embedding and LM head (replicated across the group, TP-sharded inside the rank).  The
MoE layers of one pipeline stage span all ``D x T`` GPUs of the group
(``docs/notes/vllm-0.19-moe-dp-ep.md`` §1.1, §1.4).  GPU ``f = dp_rank * T + tp_rank`` (vLLM's
flattened rank, §1.2) holds EP rank ``f // expert_tp`` with ``expert_tp = D*T / ep_size`` GPUs
splitting each expert's width:

* EP on (``ep_size = D*T``, vLLM's ``enable_expert_parallel``): whole experts, ``E / (D*T)`` each;
* EP off (``ep_size = 1``): every expert on every GPU at width ``I / (D*T)`` (vLLM flattens the MoE
  TP group over DP, §1.2);
* in between (LLMServingSim's ``ep_size`` below ``D*T``): ``E / ep`` experts at width ``I / expert_tp``.

EP rank ``r`` owns experts ``[r*base + min(r, rem), ...)``, ``base + 1`` of them for the first
``rem = E % ep`` ranks (vLLM's linear placement, ``determine_expert_map``, §1.3).

The cluster config spells this two ways (:mod:`tpsim.config.cluster`): LLMServingSim's ``dp_group``
and ``ep_size`` with its rules (``serving/core/config_builder.py``: ``ep_size`` defaults to
``tp_size`` for MoE; without a group ``ep_size <= tp_size``; in a group it is the total EP degree,
a multiple of the group size with ``ep_size / D <= tp_size``; it divides the experts; a dense group
gets EP 1), or vLLM's ``data_parallel_size`` and ``enable_expert_parallel``.  tpsim adds that
``ep_size`` divides ``D x T`` (each EP rank a whole number of GPUs) and that the expert width
divides over ``expert_tp``.
"""

from __future__ import annotations

import msgspec

from tpsim.errors import InfeasibleError, InputError


class ParallelLayout(msgspec.Struct, frozen=True):
    """One instance (= one DP rank) in its DP group, and the experts on its GPUs."""

    instance: int  # global instance index (its ``instance id`` in the CSV)
    tp_size: int
    pp_size: int
    dp_size: int  # DP ranks (instances) in the group; 1: no group
    dp_rank: int  # this instance's rank in the group (file order)
    dp_group: str | None  # the group's name; None: no group
    group: tuple[int, ...]  # instance indices of the group's DP ranks, in dp_rank order
    ep_size: int  # EP ranks the routed experts are split over, across the group; 1: EP off (or dense)
    num_experts: int  # routed experts per MoE layer; 0: dense model
    ep_source: str = ""  # what set ep_size: "ep_size", "enable_expert_parallel", "default" or "" (dense)

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def expert_parallel(self) -> bool:
        """Experts split by expert (not only by width) over the group: vLLM's ``use_ep``."""
        return self.ep_size > 1

    @property
    def lockstep(self) -> bool:
        """The group's ranks run every step together (an idle one runs a dummy step): MoE only,
        vLLM runs dense DP ranks as independent engines (note §1.5, §3.1)."""
        return self.is_moe and self.dp_size > 1

    @property
    def moe_world(self) -> int:
        """GPUs that share one pipeline stage's MoE layers: ``dp_size x tp_size``."""
        return self.dp_size * self.tp_size

    @property
    def expert_tp(self) -> int:
        """GPUs splitting each routed expert's width (vLLM's MoE ``tp_size``: 1 with EP on)."""
        return self.moe_world // self.ep_size

    def ep_rank(self, tp_rank: int = 0) -> int:
        """The EP rank of this instance's GPU ``tp_rank``."""
        return (self.dp_rank * self.tp_size + tp_rank) // self.expert_tp

    @property
    def ep_ranks(self) -> tuple[int, ...]:
        """EP rank of each of this instance's GPUs, by TP rank."""
        return tuple(self.ep_rank(t) for t in range(self.tp_size))

    def experts_of(self, ep_rank: int) -> range:
        """Expert ids EP rank ``ep_rank`` owns (vLLM's linear placement)."""
        base, rem = divmod(self.num_experts, self.ep_size)
        start = ep_rank * base + min(ep_rank, rem)
        return range(start, start + base + (1 if ep_rank < rem else 0))

    @property
    def local_experts(self) -> tuple[range, ...]:
        """Expert ids on each of this instance's GPUs, by TP rank (empty ranges for a dense model)."""
        return tuple(self.experts_of(r) for r in self.ep_ranks) if self.is_moe else ()

    @property
    def max_local_experts(self) -> int:
        """Experts on this instance's fullest GPU."""
        return max((len(r) for r in self.local_experts), default=0)

    @property
    def plain(self) -> bool:
        """Neither data nor expert parallelism: a dense single instance, as before DP/EP existed."""
        return not self.is_moe and self.dp_size == 1

    def as_dict(self) -> dict:
        return {
            "dp_group": self.dp_group,
            "dp_size": self.dp_size,
            "dp_rank": self.dp_rank,
            "group_instances": list(self.group),
            "ep_size": self.ep_size,
            "ep_source": self.ep_source,
            "expert_parallel": self.expert_parallel,
            "expert_tp": self.expert_tp if self.is_moe else None,
            "ep_ranks": list(self.ep_ranks) if self.is_moe else [],
            "experts_per_gpu": [len(r) for r in self.local_experts],
            "lockstep": self.lockstep,
        }


def resolve_layouts(instances, models, where: str) -> tuple[list[ParallelLayout], list[str]]:
    """The layout of every instance (``models[i]``: the ModelSpec of ``instances[i]``) and notes on
    keys that change nothing (EP on a dense model).  ``where`` names the cluster file."""
    groups: dict[str, list[int]] = {}
    for i, inst in enumerate(instances):
        if inst.dp_group is not None:
            groups.setdefault(inst.dp_group, []).append(i)
    for members in groups.values():
        _check_members(instances, members, where)
    layouts, notes = [], []
    for i, (inst, model) in enumerate(zip(instances, models)):
        members = groups.get(inst.dp_group, [i]) if inst.dp_group is not None else [i]
        ep, source, note = _ep_size(inst, model, len(members), where)
        if note:
            notes.append(note)
        layouts.append(ParallelLayout(
            instance=inst.index, tp_size=inst.tp_size, pp_size=inst.pp_size, dp_size=len(members),
            dp_rank=members.index(i), dp_group=inst.dp_group, group=tuple(instances[m].index for m in members),
            ep_size=ep, num_experts=model.moe.num_experts if model.moe else 0, ep_source=source))
    return layouts, notes


#: what the members of one DP group must agree on (LLMServingSim checks tp/pp/ep; one vLLM engine
#: serves one model on one kind of GPU)
_AGREE = ("model_name", "hardware", "tp_size", "pp_size", "ep_size", "enable_expert_parallel")


def _check_members(instances, members: list[int], where: str) -> None:
    first = instances[members[0]]
    for m in members[1:]:
        inst = instances[m]
        for key in _AGREE:
            a, b = getattr(first, key), getattr(inst, key)
            if a != b:
                raise InputError(
                    f"{where}: {inst.entry}.{key}: dp_group {_group_name(inst)} members disagree on {key} "
                    f"({_show(a)} in {first.entry}, {_show(b)} here); the DP ranks of one group must match")


def _group_name(inst) -> str:
    return repr(inst.dp_group)


def _show(value) -> str:
    return "absent" if value is None else repr(value)


def _ep_size(inst, model, dp: int, where: str) -> tuple[int, str, str | None]:
    """EP degree of the group of ``inst``, what set it, and a note when the key is moot (dense)."""
    here = f"{where}: {inst.entry}"
    if inst.ep_size is not None and inst.dp_group is None and inst.ep_size > inst.tp_size:
        raise InputError(f"{here}.ep_size: ep_size ({inst.ep_size}) > tp_size ({inst.tp_size}) needs a dp_group "
                         "(then ep_size is the group's total EP degree); set ep_size <= tp_size or add dp_group")
    if model.moe is None:
        given = inst.ep_size not in (None, 1) or inst.enable_expert_parallel
        key = "ep_size" if inst.ep_size is not None else "enable_expert_parallel"
        note = f"{here}.{key} ignored: {model.name} is dense (no experts to place); EP 1" if given else None
        return 1, "", note
    world = dp * inst.tp_size
    if inst.enable_expert_parallel is not None:
        ep = world if inst.enable_expert_parallel else 1
        key = source = "enable_expert_parallel"
    else:
        ep, key = (inst.ep_size if inst.ep_size is not None else inst.tp_size), "ep_size"
        source = "ep_size" if inst.ep_size is not None else "default"
        _check_ep_size(inst, model, ep, dp, here)
    width = model.moe.expert_intermediate_size
    if width % (world // ep):
        raise InfeasibleError(
            f"{here}.{key}: each expert's width {width} of {model.name} would be split over {world // ep} GPUs "
            f"(dp {dp} x tp {inst.tp_size} / EP {ep}), which does not divide it; choose another tp_size or EP")
    return ep, source, None


def _check_ep_size(inst, model, ep: int, dp: int, here: str) -> None:
    """LLMServingSim's rules for ``ep_size`` (stated in the module docstring), plus ep | D*T."""
    given = f"ep_size ({ep}{'' if inst.ep_size is not None else ', by default tp_size'})"
    experts = model.moe.num_experts
    if dp > 1 and ep % dp:
        raise InputError(
            f"{here}.ep_size: {given} must be a multiple of the {dp} DP ranks of dp_group {_group_name(inst)} "
            f"(it is the group's total EP degree); set ep_size to {dp * inst.tp_size} for expert parallelism over the "
            "group, or use enable_expert_parallel: false for experts sharded by width (vLLM's default)")
    if ep // dp > inst.tp_size:
        raise InputError(f"{here}.ep_size: {given} over {dp} DP ranks is {ep // dp} EP ranks per instance, more than "
                         f"its tp_size ({inst.tp_size}) GPUs; set ep_size <= {dp * inst.tp_size}")
    if experts % ep:
        world = dp * inst.tp_size
        choices = [d for d in range(dp, world + 1, dp) if experts % d == 0 and world % d == 0]
        fix = (f"choose ep_size in {choices}" if choices else
               "no ep_size fits this group; use enable_expert_parallel (vLLM places the remainder experts)")
        raise InfeasibleError(f"{here}.ep_size: {given} does not divide {model.name}'s {experts} experts; {fix}")
    if (dp * inst.tp_size) % ep:
        raise InputError(f"{here}.ep_size: {given} does not divide the group's {dp * inst.tp_size} GPUs "
                         f"(dp {dp} x tp_size {inst.tp_size}); each EP rank must be a whole number of GPUs")
