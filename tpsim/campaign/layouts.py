"""Data- and expert-parallel layouts in a campaign: the matrix keys ``dp_size`` and ``ep_size``.

``dp_size`` D is the number of data-parallel ranks: a run with it is one DP group of D instances on
one node (``dp_group: "dp"`` when D > 1), each of ``tp_size x pp_size`` GPUs, copied from the base
config's instance.  ``ep_size`` E is LLMServingSim's: the total EP degree of the group, 1 for EP
off (experts sharded by width over the group's D x T GPUs; in a group of D > 1 this is written as
``enable_expert_parallel: false``, since tpsim, as LLMServingSim, reads ``ep_size`` as a multiple of
the group size).  Without ``dp_size`` the base's group keeps its size; without ``ep_size`` the base's
EP setting stays (LLMServingSim's default: ``tp_size``).  A campaign without either key derives
exactly what it derived before they existed.

Which layouts are valid is tpsim's own cluster loader's business (:mod:`tpsim.config.parallel`): each
distinct (model, D, T, E) of a campaign is derived and resolved by it when the campaign loads.  A
layout it refuses (E not a multiple of D, E / D > T, E not dividing D x T GPUs) is a campaign
problem naming the layout and the exclude rule that leaves it out; so is E > 1 on a dense model
(the loader would ignore it: a copy of the E = 1 run).  What depends on the model's sizes (E not
dividing the experts, an expert's width not dividing over D x T / E GPUs) is left to the run, which
is recorded infeasible like a model that does not fit.
"""

from __future__ import annotations

import re

#: the matrix keys of this module, in run-id order beside tp_size (dp before, ep after)
LAYOUT_KEYS = ("dp_size", "ep_size")
#: the DP group's name in a derived cluster config
GROUP = "dp"
#: the keys of an instance that say how it is laid out (tpsim.config.cluster.PARALLEL_KEYS)
PARALLEL_KEYS = ("ep_size", "dp_group", "data_parallel_size", "enable_expert_parallel")
_WHERE = re.compile(r"^.*?instances\[\d+\]\.\w+: ")


def has_layout(params_or_matrix: dict) -> bool:
    return any(k in params_or_matrix for k in LAYOUT_KEYS)


def base_dp(instances: list[dict]) -> int:
    """DP ranks of the base config's (first) group: ``data_parallel_size``, or the instances sharing
    its ``dp_group``, else 1."""
    first = instances[0]
    if first.get("data_parallel_size") is not None:
        return int(first["data_parallel_size"])
    if first.get("dp_group") is not None:
        return sum(1 for inst in instances if inst.get("dp_group") == first["dp_group"])
    return 1


def base_problem(instances: list[dict], cluster: str) -> str | None:
    """matrix.dp_size / ep_size lay out one DP group: the base must hold one instance or one group."""
    first = instances[0]
    one_group = first.get("dp_group") is not None and all(i.get("dp_group") == first["dp_group"] for i in instances)
    if len(instances) == 1 or one_group:
        return None
    return (f"cluster: {cluster}: matrix.dp_size and matrix.ep_size lay out one DP group, but the base config has "
            f"{len(instances)} instances that are not one dp_group; use a base config with one instance")


def apply_layout(doc: dict, params: dict) -> None:
    """Rebuild ``doc`` (a derived config whose instances already carry the run's model, TP, ...) as
    one node holding the run's DP group (the module docstring)."""
    node, template = doc["nodes"][0], doc["nodes"][0]["instances"][0]
    instances = [inst for n in doc["nodes"] for inst in n["instances"]]
    dp = params.get("dp_size") or base_dp(instances)
    ep = params.get("ep_size")
    inst = {k: v for k, v in template.items() if k not in PARALLEL_KEYS or (ep is None and k in
                                                                            ("ep_size", "enable_expert_parallel"))}
    if ep is not None:
        inst.update({"enable_expert_parallel": False} if ep == 1 and dp > 1 else {"ep_size": ep})
    if dp > 1:
        inst["dp_group"] = GROUP
    node = dict(node, num_instances=dp, instances=[dict(inst) for _ in range(dp)])
    doc["num_nodes"] = 1
    doc["nodes"] = [node]


def label(dp: int, tp: int, ep: int, pp: int = 1) -> str:
    """A layout's short name: "TP4", "DP2·EP2", "DP2·TP2·EP4" (EP 1 and degrees of 1 left out)."""
    parts = [f"DP{dp}" if dp > 1 else "", f"TP{tp}" if tp > 1 or dp == 1 else "", f"PP{pp}" if pp > 1 else "",
             f"EP{ep}" if ep > 1 else ""]
    return "\u00b7".join(p for p in parts if p)


def problems(runs, base: dict, model_paths: dict, derive) -> list[str]:
    """Each distinct layout of ``runs`` that tpsim's loader refuses, and EP on a dense model (one line
    each, with the exclude rule that leaves it out); ``derive``: :func:`tpsim.campaign.derive.derive_cluster_config`
    (passed in: the derivation module imports this one)."""
    from tpsim.config.model import load_model_file
    from tpsim.errors import InputError

    out: dict[tuple, str] = {}
    dense: dict[str, list] = {}
    models: dict[str, object] = {}
    for run in runs:
        p = run.params
        name = p["model"]
        if name not in models:
            try:
                models[name] = load_model_file(model_paths[name], name)
            except InputError:  # a broken model config fails its runs, as before layouts existed
                models[name] = None
        model = models[name]
        if model is None:
            continue
        if model.moe is None and (p.get("ep_size") or 1) > 1:
            dense.setdefault(name, []).append(p["ep_size"])
            continue
        key = (p.get("dp_size"), p["tp_size"], p.get("ep_size"))
        if key not in out:
            out[key] = _refusal(base, p, model, derive)
    lines = [_layout_line(key, reason) for key, reason in out.items() if reason]
    for name, eps in dense.items():
        eps = sorted(set(eps))
        lines.append(f"matrix.ep_size: {name} is dense (no experts to place): ep_size {', '.join(map(str, eps))} "
                     f"would run as EP 1, a copy of its ep_size 1 run; leave it out with exclude: "
                     f"[{{model: {name}, ep_size: {eps}}}]")
    return lines


def _refusal(base: dict, params: dict, model, derive) -> str | None:
    """What tpsim's cluster loader says about the run's derived layout (None: it takes it; a layout the
    model's sizes forbid is the run's to record as infeasible)."""
    from tpsim.config.cluster import parse_cluster
    from tpsim.config.parallel import resolve_layouts
    from tpsim.errors import InfeasibleError, InputError

    params = {k: v for k, v in params.items() if k != "hardware"}
    doc = derive(base, params, model_path=params["model"])
    try:
        cluster = parse_cluster(doc, "derived")
        resolve_layouts(cluster.instances, [model] * len(cluster.instances), "derived")
    except InfeasibleError:
        return None
    except InputError as exc:
        return (_WHERE.sub("", str(exc)).replace("use enable_expert_parallel: false", "set ep_size to 1")
                .replace("or add dp_group", "or dp_size > 1"))
    return None


def _layout_line(key: tuple, reason: str) -> str:
    dp, tp, ep = key
    named = [(k, v) for k, v in (("dp_size", dp), ("tp_size", tp), ("ep_size", ep)) if v is not None]
    field = "ep_size" if ep is not None else "dp_size"
    layout = " x ".join(f"{k} {v}" for k, v in named)
    rule = ", ".join(f"{k}: {v}" for k, v in named)
    return (f"matrix.{field}: the layout {layout} is not one tpsim runs: {reason}; "
            f"leave it out with exclude: [{{{rule}}}]")
