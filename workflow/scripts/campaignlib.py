"""Campaigns for the tpsim Snakemake pipeline: load, validate, expand, derive.

A campaign YAML (``configs/campaigns/*.yaml``) names a base cluster config, a workload
and a ``matrix`` of parameters; every combination (minus ``exclude`` rules) is one
``tpsim run``.  This module is imported by ``workflow/rules/common.smk`` at parse time,
by the per-run script ``derive_config.py`` and by the tests; it needs only the standard
library, PyYAML, jsonschema (a Snakemake dependency) and ``tpsim.config.catalog``.

Run ids are Hive-style paths, one ``key=value`` folder per parameter, so DuckDB and
pandas can read them back::

    model=Qwen--Qwen3-32B/tp=2/link_bw=16            # always
    .../link_latency=20000/rate=2/seed=1 ...          # each optional matrix key present

Model names contain '/', which cannot appear in a path segment: it is written as
``--`` (``Qwen/Qwen3-32B`` -> ``Qwen--Qwen3-32B``); the tables carry the real name.
Numbers are written canonically (``16`` and ``16.0`` are the same run: ``16``).
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCHEMA = REPO / "workflow" / "schemas" / "campaign.schema.yaml"

# Matrix keys in path order, with the folder name used in run ids.
PATH_KEYS = {
    "model": "model",
    "hardware": "hardware",
    "tp_size": "tp",
    "link_bw": "link_bw",
    "link_latency": "link_latency",
    "max_num_seqs": "max_num_seqs",
    "max_num_batched_tokens": "max_num_batched_tokens",
    "rate": "rate",
    "seed": "seed",
}
ALWAYS_IN_PATH = ("model", "tp_size", "link_bw")
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
MODEL_SEP = "--"


class CampaignError(ValueError):
    """A campaign that cannot run; the message names the file and the offending key."""


# ----------------------------------------------------------------------------- helpers


def _tpsim_catalog():
    """``tpsim.config.catalog`` of this checkout (importable without installing tpsim)."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from tpsim.config import catalog

    return catalog


def git_dirty(repo: Path = REPO) -> bool | None:
    """Whether the checkout has uncommitted changes to tracked files (staged or not); None outside git.

    A run records the commit (tpsim's summary: ``git_commit``); this says whether that commit alone
    reproduces it.  Untracked files (results/, scratch files) do not count.
    """
    try:
        proc = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                              capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    return bool(proc.stdout.strip())


def canonical_number(value):
    """16.0 -> 16 (int); 12.5 stays 12.5.  Booleans are not numbers here."""
    if isinstance(value, bool):
        raise TypeError(f"not a number: {value!r}")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def match_key(value) -> tuple[str, str]:
    """How exclude rules compare values: by kind and canonical text, so '1' never matches 1 but 16.0 matches 16."""
    return ("str" if isinstance(value, str) else "num", fmt_value(value))


def fmt_value(value) -> str:
    """How a parameter value is written in a run id (and compared in exclude rules)."""
    if isinstance(value, str):
        return value
    value = canonical_number(value)
    return str(value) if isinstance(value, int) else repr(value)


def encode_model(name: str) -> str:
    return name.replace("/", MODEL_SEP)


def decode_model(segment: str) -> str:
    return segment.replace(MODEL_SEP, "/")


def run_id(params: dict, dims: list[str]) -> str:
    parts = []
    for key, folder in PATH_KEYS.items():
        if key in ALWAYS_IN_PATH or key in dims:
            value = params[key]
            text = encode_model(value) if key == "model" else fmt_value(value)
            parts.append(f"{folder}={text}")
    return "/".join(parts)


def write_json_atomic(path, doc) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1, sort_keys=False)
        f.write("\n")
    os.replace(tmp, path)


def resolve_path(path: str, roots: list[Path]) -> str | None:
    """``path`` as given if it exists from the working directory, else under the first root
    (the repository) that has it; None if nowhere."""
    p = Path(path)
    if p.is_absolute():
        return str(p) if p.exists() else None
    for root in roots:
        candidate = (root / p) if root != Path(".") else p
        if candidate.exists():
            if root == Path("."):
                return str(p)
            return str(candidate)
    return None


def _where(path) -> str:
    """jsonschema's absolute_path as matrix.tp_size[1]."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _describe(err) -> str:
    """One readable line for a jsonschema error, naming the key."""
    where = _where(err.absolute_path)
    v = err.validator
    if v == "required":
        missing = err.message.split("'")[1] if "'" in err.message else err.message
        parent = _where(err.absolute_path)
        key = f"{parent}.{missing}" if err.absolute_path else missing
        return f"{key}: missing (required)"
    if v == "additionalProperties":
        allowed = sorted((err.schema.get("properties") or {}).keys())
        extra = sorted(set(err.instance) - set(allowed)) if isinstance(err.instance, dict) else []
        keys = ", ".join(f"{where}.{k}" if err.absolute_path else k for k in extra)
        return f"{keys}: unknown key (allowed here: {', '.join(allowed)})"
    if v == "type":
        want = err.validator_value
        want = " or ".join(want) if isinstance(want, list) else want
        return f"{where}: expected {want}, got {err.instance!r}"
    if v == "enum":
        return f"{where}: {err.instance!r} is not one of {err.validator_value}"
    if v == "uniqueItems":
        return f"{where}: values must be unique, got {err.instance!r}"
    if v == "minItems":
        return f"{where}: must not be empty"
    if v in ("minProperties", "maxProperties") and where == "workload":
        return "workload: give exactly one of 'trace' or 'generate'"
    if v == "pattern":
        return f"{where}: {err.instance!r} may only contain letters, digits, '.', '_' and '-'"
    if v == "anyOf":
        return f"{where}: expected a value or a list of values, got {err.instance!r}"
    return f"{where}: {err.message}"


def schema_problems(doc: dict, schema_path: Path = SCHEMA) -> list[tuple[tuple, str]]:
    """(path, message) of every schema error, sorted by path; the path is where the error sits
    (a missing or unknown key: the object holding it)."""
    import jsonschema
    import yaml

    with open(schema_path, encoding="utf-8") as f:
        schema = yaml.safe_load(f)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(doc), key=lambda e: (list(map(str, e.absolute_path)), e.validator))
    return [(tuple(e.absolute_path), _describe(e)) for e in errors]


def schema_errors(doc: dict, schema_path: Path = SCHEMA) -> list[str]:
    return [msg for _, msg in schema_problems(doc, schema_path)]


def load_yaml(path) -> dict:
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
    except FileNotFoundError:
        raise CampaignError(f"campaign {path}: no such file") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise CampaignError(f"campaign {path}{line}: malformed YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(doc, dict):
        raise CampaignError(f"campaign {path}: expected a mapping of keys (name, cluster, workload, matrix), got {type(doc).__name__}")
    return doc


# ----------------------------------------------------------------------------- model


@dataclass
class Run:
    id: str
    params: dict  # JSON-serialisable: what run.json records and the tables show
    trace: str  # path of the trace this run reads
    model_config: str
    hardware_config: str
    hardware_override: str | None  # catalog entry to read npu_mem from (None: keep the base's)


@dataclass
class Campaign:
    name: str
    source: str
    doc: dict  # validated, defaults filled in
    cluster: str  # resolved path of the base cluster config
    base: dict
    dims: list  # optional matrix keys present (in path order)
    runs: list = field(default_factory=list)
    trace: str | None = None  # resolved trace path, or None for a generated workload
    generate: dict | None = None  # generator settings (without rate and seed)
    traces: dict = field(default_factory=dict)  # (rate, seed) -> path, generated workloads only

    @property
    def results(self) -> str:
        return f"results/{self.name}"

    def run(self, rid: str) -> Run:
        return self._by_id[rid]

    def __post_init__(self):
        self._by_id = {}


def _base_instances(base: dict, cluster: str) -> list[dict]:
    try:
        nodes = base["nodes"]
        instances = [inst for node in nodes for inst in node["instances"]]
    except (KeyError, TypeError):
        raise CampaignError(f"cluster: {cluster}: not an LLMServingSim cluster config (needs nodes[].instances[])") from None
    if not instances:
        raise CampaignError(f"cluster: {cluster}: has no instances")
    for i, inst in enumerate(instances):
        for key in ("model_name", "hardware", "npu_mem"):
            if key not in inst:
                raise CampaignError(f"cluster: {cluster}: instance {i} has no '{key}'")
    return instances


def _first_pp(inst: dict) -> int:
    tp = inst.get("tp_size")
    pp = inst.get("pp_size")
    if pp:
        return int(pp)
    if tp and inst.get("num_npus"):
        return max(1, int(inst["num_npus"]) // int(tp))
    return 1


def load_campaign(doc: dict, *, source: str = "<config>", roots: list[Path] | None = None,
                  schema_path: Path = SCHEMA) -> Campaign:
    """Validate ``doc`` and expand it into runs.  Raises CampaignError naming every problem."""
    roots = roots if roots is not None else [Path("."), REPO]
    prefix = f"campaign {source}"
    if not isinstance(doc, dict) or not doc:
        raise CampaignError(f"{prefix}: empty; expected keys name, cluster, workload, matrix")
    # Schema errors and the checks beyond the schema are reported together.  A check beyond the
    # schema runs on every part the schema accepted (a bad exclude rule does not hide the others, a
    # bad tp_size does not hide an unknown model); only the expansion into runs needs all of it.
    schema = schema_problems(doc, schema_path)
    bad_paths = [path for path, _ in schema]

    def valid(*path) -> bool:
        """No schema error at ``path`` or inside it."""
        return not any(bad[:len(path)] == path for bad in bad_paths)

    problems: list[str] = []
    doc = json.loads(json.dumps(doc, default=str))  # a private, JSON-only copy
    doc.setdefault("perf_model", "analytical")
    doc.setdefault("tpsim_args", [])
    doc.setdefault("exclude", [])
    matrix = doc.get("matrix") if isinstance(doc.get("matrix"), dict) else {}

    def matrix_list(key: str) -> list | None:
        """matrix[key] when the schema accepted it, else None (its problems are already reported)."""
        values = matrix.get(key)
        return values if isinstance(values, list) and valid("matrix", key) else None

    def matrix_names(key: str) -> list[tuple[int, str]]:
        """(index, name) of the names in matrix[key] the schema accepted (the others are reported)."""
        values = matrix.get(key)
        return [(i, v) for i, v in enumerate(values) if isinstance(v, str) and valid("matrix", key, i)] \
            if isinstance(values, list) else []

    # base cluster config
    # (its problems are collected with the others, so one pass reports everything)
    cluster = None
    base, instances = {}, []
    if isinstance(doc.get("cluster"), str) and valid("cluster"):
        cluster = resolve_path(doc["cluster"], roots)
        if cluster is None:
            problems.append(f"cluster: {doc['cluster']} does not exist")
        else:
            try:
                with open(cluster, encoding="utf-8") as f:
                    base = json.load(f)
                instances = _base_instances(base, cluster)
            except CampaignError as exc:  # a ValueError too: catch it first
                problems.append(str(exc))
            except ValueError as exc:
                problems.append(f"cluster: {cluster}: malformed JSON ({exc})")

    # workload
    workload = doc.get("workload")
    if isinstance(workload, str):
        workload = doc["workload"] = {"trace": workload}
    trace = generate = None
    if isinstance(workload, dict) and valid("workload") and "trace" in workload:
        trace = resolve_path(workload["trace"], roots)
        if trace is None:
            problems.append(f"workload.trace: {workload['trace']} does not exist")
        if "rate" in matrix:
            problems.append("matrix.rate: only for a generated workload (workload.generate); a trace file fixes the arrivals")
    elif isinstance(workload, dict) and isinstance(workload.get("generate"), dict) and ("workload",) not in bad_paths:
        generate = dict(workload["generate"])
        generate.setdefault("seed", 0)
        generate.setdefault("rate", 1)
        if "num_reqs" not in generate and "duration_s" not in generate:
            problems.append("workload.generate: give num_reqs or duration_s")
        if "num_reqs" in generate and "duration_s" in generate:
            problems.append("workload.generate: give num_reqs or duration_s, not both")

    # matrix values
    catalog = _tpsim_catalog()
    model_paths, hardware_paths = {}, {}
    for i, model in matrix_names("model"):
        path = catalog.find("model", f"{model}.json")
        if path is None and model.endswith(".json"):
            p = resolve_path(model, roots)
            path = Path(p) if p else None
        if path is None:
            known = ", ".join(catalog.available("model", ".json"))
            problems.append(f"matrix.model[{i}]: unknown model '{model}' (no configs/model/{model}.json); known: {known}")
            continue
        if MODEL_SEP in model or any(c in model for c in " =\\") or model.startswith("/"):
            problems.append(f"matrix.model[{i}]: '{model}' cannot be written in a run path ('--', '=', spaces, backslashes are reserved)")
        model_paths[model] = rel_path(path)
    hardware_names = {hw: f"matrix.hardware[{i}]" for i, hw in reversed(matrix_names("hardware"))}
    for inst in instances:
        hardware_names.setdefault(inst["hardware"], "cluster")
    for hw, key in sorted(hardware_names.items(), key=lambda item: item[1] == "cluster"):
        path = catalog.find("hardware", f"{hw}.yaml")
        if path is None:
            known = ", ".join(catalog.available("hardware", ".yaml"))
            problems.append(f"{key}: unknown hardware '{hw}' (no configs/hardware/{hw}.yaml); known: {known}")
            continue
        hardware_paths[hw] = rel_path(path)
    for key in matrix:
        if key in ("model", "hardware") or key not in PATH_KEYS:
            continue
        seen = {}
        for i, v in enumerate(matrix_list(key) or []):
            text = fmt_value(v)
            if text in seen:
                problems.append(f"matrix.{key}[{i}]: {v!r} repeats matrix.{key}[{seen[text]}]")
            seen[text] = i

    # tpsim_args: no flag the pipeline sets, nor an abbreviation argparse would expand to one
    for i, arg in enumerate(doc["tpsim_args"] if isinstance(doc["tpsim_args"], list) else []):
        if not isinstance(arg, str):
            continue
        flag = arg.split("=", 1)[0]
        if flag in RESERVED_FLAGS:
            problems.append(f"tpsim_args[{i}]: {flag} is set by the pipeline; use the matrix or perf_model instead")
        elif flag.startswith("--") and len(flag) > 2 and any(r.startswith(flag) for r in RESERVED_FLAGS):
            reserved = " or ".join(r for r in RESERVED_FLAGS if r.startswith(flag))
            problems.append(f"tpsim_args[{i}]: {flag} abbreviates {reserved}, which the pipeline sets; "
                            "flags may not be abbreviated")

    # exclude rules: every key a matrix key, every value one of the matrix's (a rule or value the
    # schema refused is reported by the schema; the others are still checked)
    required = ("model", "tp_size", "link_bw")  # a missing one is reported by the schema
    for r, rule in enumerate(doc["exclude"] if isinstance(doc["exclude"], list) else []):
        if not isinstance(rule, dict):
            continue
        for key, value in rule.items():
            if key not in PATH_KEYS or not valid("exclude", r, key):
                continue
            if key not in matrix:
                if key not in required:
                    problems.append(f"exclude[{r}].{key}: not a key of this campaign's matrix "
                                    f"({', '.join(k for k in matrix if k in PATH_KEYS)})")
                continue
            if matrix_list(key) is None:
                continue
            allowed = {match_key(v) for v in matrix[key]}
            for v in value if isinstance(value, list) else [value]:
                if match_key(v) not in allowed:
                    problems.append(f"exclude[{r}].{key}: {v!r} is not in matrix.{key} {matrix[key]}")

    if schema or problems:
        raise CampaignError("\n".join(f"{prefix}: {p}" for p in [msg for _, msg in schema] + problems))

    first = instances[0]
    dims = [k for k in PATH_KEYS if k in matrix and k not in ALWAYS_IN_PATH]
    camp = Campaign(name=doc["name"], source=source, doc=doc, cluster=rel_path(Path(cluster)), base=base, dims=dims,
                    trace=rel_path(Path(trace)) if trace else None, generate=generate)

    keys = [k for k in PATH_KEYS if k in matrix]
    excluded = 0
    for combo in itertools.product(*(matrix[k] for k in keys)):
        values = dict(zip(keys, combo))
        if any(_matches(rule, values) for rule in doc["exclude"]):
            excluded += 1
            continue
        values = {k: (v if isinstance(v, str) else canonical_number(v)) for k, v in values.items()}
        hardware = values.get("hardware", first["hardware"])
        pp = _first_pp(first)
        params = {
            "campaign": camp.name,
            "run_id": None,
            "model": values["model"],
            "hardware": hardware,
            "tp_size": values["tp_size"],
            "pp_size": pp,
            "num_npus": values["tp_size"] * pp,
            "num_instances": len(instances),
            "link_bw": values["link_bw"],
            "link_latency": values.get("link_latency", canonical_number(_scalar(base.get("link_latency")))),
            "rate": values.get("rate", generate["rate"] if generate else None),
            "seed": values.get("seed", generate["seed"] if generate else None),
            "max_num_seqs": values.get("max_num_seqs", first.get("max_num_seqs")),
            "max_num_batched_tokens": values.get("max_num_batched_tokens", first.get("max_num_batched_tokens")),
            "perf_model": doc["perf_model"],
            "workload": "generated" if generate else camp.trace,
        }
        rid = run_id(values, dims)
        params["run_id"] = rid
        if generate:
            rate_s, seed_s = fmt_value(params["rate"]), fmt_value(params["seed"])
            trace_path = f"{camp.results}/workloads/rate={rate_s}/seed={seed_s}/trace.jsonl"
            camp.traces[(rate_s, seed_s)] = trace_path
        else:
            trace_path = camp.trace
        override = hardware_paths[hardware] if "hardware" in values and any(
            inst["hardware"] != hardware for inst in instances) else None
        run = Run(id=rid, params=params, trace=trace_path, model_config=model_paths[values["model"]],
                  hardware_config=hardware_paths[hardware], hardware_override=override)
        camp.runs.append(run)
        camp._by_id[rid] = run
    if not camp.runs:
        raise CampaignError(f"{prefix}: exclude: the rules remove all {excluded} runs of the matrix")
    return camp


def _scalar(v):
    return v[0] if isinstance(v, list) and v else v


def rel_path(path: Path) -> str:
    """Relative to the working directory when inside it (readable DAG), else absolute."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path.resolve())


def _matches(rule: dict, values: dict) -> bool:
    for key, want in rule.items():
        wanted = {match_key(v) for v in (want if isinstance(want, list) else [want])}
        if match_key(values[key]) not in wanted:
            return False
    return True


def load_campaign_file(path, **kw) -> Campaign:
    return load_campaign(load_yaml(path), source=str(path), **kw)


# ----------------------------------------------------------------------------- per run


def hardware_memory(hw_yaml_path: str) -> tuple[float, float]:
    """(memory_gib, memory_bw_gbps) from a hardware catalog entry, via tpsim's own parser."""
    import yaml

    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from tpsim.config.hardware import parse_hardware

    with open(hw_yaml_path, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    spec = parse_hardware(doc, Path(hw_yaml_path).stem, str(hw_yaml_path))
    return spec.memory_gib, spec.memory_bw_gbps


def derive_cluster_config(base: dict, params: dict, hw_memory: tuple[float, float] | None = None) -> dict:
    """The run's cluster config: the base with the run's parameters applied to every instance.

    * ``link_bw`` (and ``link_latency`` when the run has one) replace the top-level values;
    * every instance gets the model, ``tp_size`` and ``num_npus = tp_size x pp_size`` (its own pp);
    * ``hardware``: when it differs from an instance's, ``npu_mem.mem_size`` (GiB) and ``mem_bw``
      come from the catalog (``hw_memory``); otherwise the base's ``npu_mem`` stays;
    * ``max_num_seqs`` / ``max_num_batched_tokens`` become instance keys when set.
    """
    doc = json.loads(json.dumps(base))
    doc["link_bw"] = params["link_bw"]
    if params.get("link_latency") is not None:
        doc["link_latency"] = params["link_latency"]
    for node in doc["nodes"]:
        for inst in node["instances"]:
            pp = _first_pp(inst)
            inst["model_name"] = params["model"]
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
    return doc


def generate_flags(generate: dict) -> list[str]:
    """``tpsim trace`` flags for the generator settings, without --rate/--seed/--output."""
    flags = []
    for key, value in generate.items():
        if key in ("rate", "seed"):
            continue
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            if key == "first_gap":
                if value:
                    flags.append(flag)
            else:
                flags.append(flag if value else f"--no-{key.replace('_', '-')}")
        else:
            flags += [flag, fmt_value(value)]
    return flags
