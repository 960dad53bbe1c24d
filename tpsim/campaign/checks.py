"""The checks of a campaign beyond its form: the files and catalog entries it names, its base
cluster config, its tpsim_args and its exclude rules.

Each check runs on the parts the schema (and the text check) accepted, so that every problem is
reported at once; :class:`Checks` also collects what the expansion into runs needs (resolved
paths, the base config's instances).
"""

from __future__ import annotations

import functools
import json
import os
import re
from pathlib import Path

from tpsim.campaign import form
from tpsim.campaign.layouts import base_problem, has_layout
from tpsim.campaign.reading import CampaignError, printable
from tpsim.campaign.run_ids import ALWAYS_IN_PATH, PATH_KEYS, match_key
from tpsim.config import catalog
from tpsim.errors import InputError

# Snakemake's wildcard syntax in a path: {name} or {name,constraint}
SNAKEMAKE_WILDCARD = re.compile(r"\{\s*[.\w]+\s*(,([^{}]+|\{\d+(,\d+)?\})*)?\s*\}")
# Flags the pipeline sets itself; a campaign's tpsim_args may not override them.
RESERVED_FLAGS = (
    "--cluster-config",
    "--dataset",
    "--output",
    "--run-id",
    "--record-infeasible",
    "--perf-model",
    "--seed",
    "--max-num-seqs",
    "--max-num-batched-tokens",
)


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except (OSError, ValueError):  # a name too long for the file system, ...
        return False


def resolve_path(path: str, roots: list[Path]) -> str | None:
    """``path`` as given if it exists from the working directory, else under the first root
    (the repository) that has it; None if nowhere."""
    p = Path(path)
    if p.is_absolute():
        return str(p) if _exists(p) else None
    for root in roots:
        candidate = (root / p) if root != Path(".") else p
        if _exists(candidate):
            return str(p) if root == Path(".") else str(candidate)
    return None


def rel_path(path: Path) -> str:
    """Relative to the working directory when inside it (readable DAG), else absolute."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path.resolve())


def _count(value) -> int | None:
    """A whole number >= 1 from a base config (JSON: 2 or 2.0), else None."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else None


def first_pp(inst: dict) -> int:
    """The instance's pp_size: its own, else num_npus / tp_size, else 1."""
    pp, tp, npus = _count(inst.get("pp_size")), _count(inst.get("tp_size")), _count(inst.get("num_npus"))
    if pp:
        return pp
    return max(1, npus // tp) if tp and npus else 1


def _base_instances(base, cluster: str) -> list[dict]:
    """The base config's instances, each with a text model_name and hardware and an npu_mem."""
    cluster = printable(cluster)
    nodes = base.get("nodes") if isinstance(base, dict) else None
    if not isinstance(nodes, list) or not all(isinstance(n, dict) and isinstance(n.get("instances"), list)
                                              for n in nodes):
        raise CampaignError(f"cluster: {cluster}: not an LLMServingSim cluster config (needs nodes[].instances[])")
    instances = [inst for node in nodes for inst in node["instances"]]
    if not instances:
        raise CampaignError(f"cluster: {cluster}: has no instances")
    for i, inst in enumerate(instances):
        if not isinstance(inst, dict):
            raise CampaignError(f"cluster: {cluster}: instance {i} is not an object")
        for key in ("model_name", "hardware", "npu_mem"):
            if key not in inst:
                raise CampaignError(f"cluster: {cluster}: instance {i} has no '{key}'")
        if not isinstance(inst["hardware"], str) or not isinstance(inst["npu_mem"], dict):
            raise CampaignError(f"cluster: {cluster}: instance {i}: hardware must be a name and npu_mem an object")
        if inst.get("pp_size") is not None and _count(inst["pp_size"]) is None:
            raise CampaignError(f"cluster: {cluster}: instance {i}: pp_size {form.show(inst['pp_size'])} "
                                "is not a whole number >= 1")
    return instances


def read_base(cluster: str) -> tuple[dict, list[dict]]:
    """The base cluster config and its instances; CampaignError naming the file otherwise."""
    shown = printable(cluster)
    try:
        with open(cluster, encoding="utf-8") as f:
            base = json.load(f)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise CampaignError(f"cluster: {shown}: malformed JSON ({form.show(str(exc))[1:-1]})") from None
    except OSError as exc:
        raise CampaignError(f"cluster: {shown}: cannot read it ({exc.strerror or exc})") from None
    return base, _base_instances(base, cluster)


class Checks:
    """The checks beyond the schema, each on the parts the schema (and the text check) accepted, so
    that every problem is reported at once; collects what the expansion needs."""

    def __init__(self, doc: dict, bad_paths: list, roots: list[Path]):
        self.doc, self.bad_paths, self.roots = doc, bad_paths, roots
        self.problems: list[str] = []
        self.matrix = doc.get("matrix") if isinstance(doc.get("matrix"), dict) else {}
        self.cluster, self.base, self.instances = None, {}, []
        self.trace = self.generate = None
        self.model_paths: dict[str, str] = {}
        self.hardware_paths: dict[str, str] = {}

    def valid(self, *path) -> bool:
        """No schema or text problem at ``path`` or inside it."""
        return not any(bad[:len(path)] == path for bad in self.bad_paths)

    def matrix_list(self, key: str) -> list | None:
        """matrix[key] when the schema accepted it, else None (its problems are already reported)."""
        values = self.matrix.get(key)
        return values if isinstance(values, list) and self.valid("matrix", key) else None

    def matrix_names(self, key: str) -> list[tuple[int, str]]:
        """(index, name) of the names in matrix[key] the schema accepted (the others are reported)."""
        values = self.matrix.get(key)
        return [(i, v) for i, v in enumerate(values) if isinstance(v, str) and self.valid("matrix", key, i)] \
            if isinstance(values, list) else []

    def _file(self, key: str, path: str) -> str | None:
        if self._wildcard(key, path):
            return None
        found = resolve_path(path, self.roots)
        if found is None:
            self.problems.append(f"{key}: {printable(path)} does not exist")
        elif not os.path.isfile(found):
            self.problems.append(f"{key}: {printable(path)} is not a file")
            return None
        return found

    def cluster_config(self) -> None:
        if isinstance(self.doc.get("cluster"), str) and self.valid("cluster"):
            self.cluster = self._file("cluster", self.doc["cluster"])
            if self.cluster is not None:
                try:
                    self.base, self.instances = read_base(self.cluster)
                except CampaignError as exc:
                    self.problems.append(str(exc))
                    return
                if has_layout(self.matrix):
                    self.problems += [p for p in [base_problem(self.instances, printable(self.cluster))] if p]

    def workload(self) -> None:
        workload = self.doc.get("workload")
        if isinstance(workload, str):
            workload = self.doc["workload"] = {"trace": workload}
        if isinstance(workload, dict) and self.valid("workload") and "trace" in workload:
            self.trace = self._file("workload.trace", workload["trace"])
            if "rate" in self.matrix:
                self.problems.append("matrix.rate: only for a generated workload (workload.generate); "
                                     "a trace file fixes the arrivals")
        elif isinstance(workload, dict) and isinstance(workload.get("generate"), dict) \
                and ("workload",) not in self.bad_paths:
            gen = self.generate = dict(workload["generate"])
            gen.setdefault("seed", 0)
            gen.setdefault("rate", 1)
            if "num_reqs" not in gen and "duration_s" not in gen:
                self.problems.append("workload.generate: give num_reqs or duration_s")
            if "num_reqs" in gen and "duration_s" in gen:
                self.problems.append("workload.generate: give num_reqs or duration_s, not both")

    def _wildcard(self, key: str, path: str) -> bool:
        """Snakemake reads '{name}' (and '{name,regex}') in an input path as a wildcard, with no
        escape: such a path cannot be a job's input, whatever quoting the shell gets."""
        match = SNAKEMAKE_WILDCARD.search(path)
        if match:
            self.problems.append(f"{key}: {form.show(path)} contains {match.group(0)!r}, which Snakemake reads as a "
                                 "wildcard; rename the file (braces around anything but a plain word are fine)")
        return bool(match)

    def _catalog_find(self, kind: str, name: str):
        try:
            return catalog.find(kind, name)
        except (OSError, ValueError):  # a name too long for the file system, ...
            return None

    @functools.cached_property
    def known_models(self) -> str:
        return ", ".join(catalog.available("model", ".json"))

    def _catalog_name(self, kind: str, key: str, name: str) -> bool:
        """tpsim's rule for a catalog name (no '..', not absolute, letters, digits, '._+-')."""
        try:
            catalog.check_name(kind, name)
        except InputError as exc:
            self.problems.append(f"{key}: {printable(str(exc))}")
            return False
        return True

    def models(self) -> None:
        """As tpsim resolves them: a name ending in .json is a file path; any other is a catalog name."""
        for i, model in self.matrix_names("model"):
            key = f"matrix.model[{i}]"
            if self._wildcard(key, model):
                continue
            if model.endswith(".json"):
                path = self._file(key, model)
            elif self._catalog_name("model", key, model):
                path = self._catalog_find("model", f"{model}.json")
                if path is None:
                    self.problems.append(f"{key}: unknown model {form.show(model)} (no configs/model/"
                                         f"{form.show(model)[1:-1]}.json); known: {self.known_models}")
            else:
                path = None
            if path is not None:
                self.model_paths[model] = rel_path(path)

    def hardware(self) -> None:
        names = {hw: f"matrix.hardware[{i}]" for i, hw in reversed(self.matrix_names("hardware"))}
        for inst in self.instances:
            names.setdefault(inst["hardware"], "cluster")
        for hw, key in sorted(names.items(), key=lambda item: item[1] == "cluster"):
            if not self._catalog_name("hardware", key, hw):
                continue
            path = self._catalog_find("hardware", f"{hw}.yaml")
            if path is None:
                known = ", ".join(catalog.available("hardware", ".yaml"))
                self.problems.append(f"{key}: unknown hardware {form.show(hw)} (no configs/hardware/"
                                     f"{form.show(hw)[1:-1]}.yaml); known: {known}")
                continue
            self.hardware_paths[hw] = rel_path(path)

    def gpus(self) -> None:
        """tp_size x each instance's pp_size within tpsim's GPUs per instance."""
        from tpsim.config.cluster import MAX_GPUS

        pp = max((first_pp(inst) for inst in self.instances), default=1)
        for i, tp in enumerate(self.matrix_list("tp_size") or []):
            if isinstance(tp, int) and tp * pp > MAX_GPUS:
                self.problems.append(f"matrix.tp_size[{i}]: {tp} x the base config's pp_size {pp} = {tp * pp:,} GPUs "
                                     f"per instance, more than tpsim takes ({MAX_GPUS:,})")

    def base_link(self) -> None:
        """The base's link_bw / link_latency go into every run's parameters unless the matrix sets them
        or a hardware sweep takes each GPU's catalogued link (:mod:`~tpsim.campaign.links`)."""
        if not self.instances or "hardware" in self.matrix:
            return
        for key, low in (("link_bw", "> 0"), ("link_latency", ">= 0")):
            value = scalar(self.base.get(key))
            if key not in self.matrix and (not form.finite_number(value) or value < 0 or (key == "link_bw"
                                                                                           and value == 0)):
                self.problems.append(f"cluster: {printable(self.cluster)}: {key} {form.show(value)} is not a "
                                     f"number {low} (or give matrix.{key})")

    def analysis(self) -> None:
        """The slo:, capacity: and measured: blocks (each module checks its own)."""
        from tpsim.campaign import capacity, measured_runs, slo

        self.problems += slo.check(self.doc, self.valid)
        self.problems += capacity.check(self.doc, self.matrix, self.generate, self.valid)
        if isinstance(self.doc.get("measured"), list) and self.valid("measured"):
            base_hw = self.instances[0]["hardware"] if self.instances else None
            self.problems += measured_runs.check(self.doc, self.matrix, base_hw,
                                                 lambda path: self._dir(path))

    def _dir(self, path: str) -> str | None:
        found = resolve_path(path, self.roots)
        return rel_path(found) if found is not None else None

    def tpsim_args(self) -> None:
        """No flag the pipeline sets, nor an abbreviation argparse would expand to one."""
        args = self.doc["tpsim_args"] if isinstance(self.doc["tpsim_args"], list) else []
        for i, arg in enumerate(args):
            if not isinstance(arg, str) or not self.valid("tpsim_args", i):
                continue
            flag = printable(arg.split("=", 1)[0])
            if flag in RESERVED_FLAGS:
                self.problems.append(f"tpsim_args[{i}]: {flag} is set by the pipeline; use the matrix or "
                                     "perf_model instead")
            elif flag.startswith("--") and len(flag) > 2 and any(r.startswith(flag) for r in RESERVED_FLAGS):
                reserved = " or ".join(r for r in RESERVED_FLAGS if r.startswith(flag))
                self.problems.append(f"tpsim_args[{i}]: {flag} abbreviates {reserved}, which the pipeline sets; "
                                     "flags may not be abbreviated")

    def exclude(self) -> None:
        """Every key a matrix key, every value one of the matrix's (a rule or value the schema refused
        is reported by the schema; the others are still checked)."""
        rules = self.doc["exclude"] if isinstance(self.doc["exclude"], list) else []
        for r, rule in enumerate(rules):
            if isinstance(rule, dict):
                for key, value in rule.items():
                    if key in PATH_KEYS and self.valid("exclude", r, key):
                        self._exclude_value(r, key, value)

    def _exclude_value(self, r: int, key: str, value) -> None:
        if key not in self.matrix:
            if key not in ALWAYS_IN_PATH:  # a missing required key is reported by the schema
                self.problems.append(f"exclude[{r}].{key}: not a key of this campaign's matrix "
                                     f"({', '.join(k for k in self.matrix if k in PATH_KEYS)})")
            return
        if self.matrix_list(key) is None:
            return
        allowed = {match_key(v) for v in self.matrix[key]}
        for v in value if isinstance(value, list) else [value]:
            if match_key(v) not in allowed:
                self.problems.append(f"exclude[{r}].{key}: {form.show(v)} is not in matrix.{key} "
                                     f"{form.show(self.matrix[key])}")
                break

    def run_all(self) -> list[str]:
        for check in (self.cluster_config, self.workload, self.models, self.hardware, self.gpus,
                      self.base_link, self.tpsim_args, self.exclude, self.analysis):
            check()
        return self.problems


def scalar(v):
    return v[0] if isinstance(v, list) and v else v
