"""Campaigns for the tpsim Snakemake pipeline: load, validate, expand.

A campaign YAML (``configs/campaigns/*.yaml``) names a base cluster config, a workload
and a ``matrix`` of parameters; every combination (minus ``exclude`` rules) is one
``tpsim run``.  This module is imported by ``workflow/rules/common.smk`` at parse time,
by the per-run script ``derive_config.py`` and by the tests; it needs only the standard
library, PyYAML, jsonschema (a Snakemake dependency) and ``tpsim.config.catalog``.

Loading goes from cheap to costly, so that no hostile campaign costs much before it is refused:
the document's size once YAML aliases expand (``campaign_yaml``), the matrix size against
``limits.max_runs``, then its form (``campaign_schema``) beside the checks of what it names
(files, catalog entries, exclude rules, flags), and only then the expansion into runs, whose
ids are built by ``run_ids``.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import campaign_schema as form
from campaign_checks import Checks, first_pp, import_tpsim, rel_path, scalar
from campaign_yaml import CampaignError, check_structure, load_file, printable
from run_ids import ALWAYS_IN_PATH, PATH_KEYS, canonical_number, fmt_value, match_key, run_id

REPO = Path(__file__).resolve().parents[2]
SCHEMA = form.SCHEMA
MAX_PROBLEMS = 20  # a campaign with more problems shows the first ones and a count

__all__ = ["CampaignError", "Campaign", "Run", "load_campaign", "load_campaign_file"]


# ----------------------------------------------------------------------------- helpers


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


def write_json_atomic(path, doc) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1, sort_keys=False)
        f.write("\n")
    os.replace(tmp, path)


@functools.lru_cache(maxsize=None)
def file_sha256(path: str) -> str:
    """SHA-256 of a file's content, hashed once per process (Snakemake asks once per run)."""
    import_tpsim()
    from tpsim.hashing import sha256_file

    return sha256_file(path)


def plain(value):
    """A private copy as JSON types: mapping keys as text, dates and other YAML scalars as text
    (NaN and infinities stay floats; the schema refuses them)."""
    if isinstance(value, dict):
        return {k if isinstance(k, str) else str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


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


def _report(prefix: str, problems: list[str]) -> CampaignError:
    lines = [f"{prefix}: {p}" for p in problems[:MAX_PROBLEMS]]
    if len(problems) > MAX_PROBLEMS:
        lines.append(f"{prefix}: ... and {len(problems) - MAX_PROBLEMS} more problems")
    return CampaignError("\n".join(lines))


def load_campaign(doc: dict, *, source: str = "<config>", roots: list[Path] | None = None,
                  schema_path: Path = SCHEMA) -> Campaign:
    """Validate ``doc`` and expand it into runs.  Raises CampaignError naming every problem."""
    roots = roots if roots is not None else [Path("."), REPO]
    prefix = f"campaign {printable(str(source))}"
    if not isinstance(doc, dict) or not doc:
        raise CampaignError(f"{prefix}: empty; expected keys name, cluster, workload, matrix")
    check_structure(doc, prefix.removeprefix("campaign "))  # before anything walks it
    doc = plain(doc)  # a private, JSON-only copy
    form.check_matrix_size(doc, prefix)  # before anything walks the matrix
    # Schema errors and the checks beyond the schema are reported together.  A check beyond the
    # schema runs on every part the schema accepted (a bad exclude rule does not hide the others, a
    # bad tp_size does not hide an unknown model); only the expansion into runs needs all of it.
    schema = form.form_problems(doc, schema_path)
    doc.setdefault("perf_model", "analytical")
    doc.setdefault("tpsim_args", [])
    doc.setdefault("exclude", [])
    checks = Checks(doc, [path for path, _ in schema], roots)
    problems = [msg for _, msg in schema] + checks.run_all()
    if problems:
        raise _report(prefix, problems)
    return _expand(doc, checks, source, prefix)


def _expand(doc: dict, checks: Checks, source: str, prefix: str) -> Campaign:
    matrix, instances, generate = checks.matrix, checks.instances, checks.generate
    first = instances[0]
    dims = [k for k in PATH_KEYS if k in matrix and k not in ALWAYS_IN_PATH]
    camp = Campaign(name=doc["name"], source=source, doc=doc, cluster=rel_path(Path(checks.cluster)), base=checks.base,
                    dims=dims, trace=rel_path(Path(checks.trace)) if checks.trace else None, generate=generate)
    keys = [k for k in PATH_KEYS if k in matrix]
    excluded = _exclusions(doc["exclude"], keys)
    pp = first_pp(first)
    n_excluded = 0
    for combo in itertools.product(*(matrix[k] for k in keys)):
        mk = [match_key(v) for v in combo]
        if any(tuple(mk[i] for i in idx) in combos for idx, combos in excluded.items()):
            n_excluded += 1
            continue
        values = {k: (v if isinstance(v, str) else canonical_number(v)) for k, v in zip(keys, combo)}
        hardware = values.get("hardware", first["hardware"])
        params = {
            "campaign": camp.name,
            "run_id": run_id(values, dims),
            "model": values["model"],
            "hardware": hardware,
            "tp_size": values["tp_size"],
            "pp_size": pp,
            "num_npus": values["tp_size"] * pp,
            "num_instances": len(instances),
            "link_bw": values["link_bw"],
            "link_latency": values.get("link_latency", canonical_number(scalar(checks.base.get("link_latency")))),
            "rate": values.get("rate", generate["rate"] if generate else None),
            "seed": values.get("seed", generate["seed"] if generate else None),
            "max_num_seqs": values.get("max_num_seqs", first.get("max_num_seqs")),
            "max_num_batched_tokens": values.get("max_num_batched_tokens", first.get("max_num_batched_tokens")),
            "perf_model": doc["perf_model"],
            "workload": "generated" if generate else camp.trace,
        }
        if generate:
            rate_s, seed_s = fmt_value(params["rate"]), fmt_value(params["seed"])
            trace_path = f"{camp.results}/workloads/rate={rate_s}/seed={seed_s}/trace.jsonl"
            camp.traces[(rate_s, seed_s)] = trace_path
        else:
            trace_path = camp.trace
        override = checks.hardware_paths[hardware] if "hardware" in values and any(
            inst["hardware"] != hardware for inst in instances) else None
        run = Run(id=params["run_id"], params=params, trace=trace_path,
                  model_config=checks.model_paths[values["model"]], hardware_config=checks.hardware_paths[hardware],
                  hardware_override=override)
        camp.runs.append(run)
        camp._by_id[run.id] = run
    if not camp.runs:
        raise CampaignError(f"{prefix}: exclude: the rules remove all {n_excluded} runs of the matrix")
    return camp


def _exclusions(rules: list[dict], keys: list[str]) -> dict[tuple, set]:
    """The excluded value combinations, by the positions in ``keys`` of the keys a rule names: a run
    is excluded when its values there are one of that rule's combinations.  Linear in the rules and
    runs (a rule's values are all in the matrix, so its combinations are at most the runs)."""
    out: dict[tuple, set] = {}
    for rule in rules:
        idx = tuple(i for i, k in enumerate(keys) if k in rule)
        wanted = [{match_key(v) for v in (rule[keys[i]] if isinstance(rule[keys[i]], list) else [rule[keys[i]]])}
                  for i in idx]
        out.setdefault(idx, set()).update(itertools.product(*wanted))
    return out


def load_campaign_file(path, **kw) -> Campaign:
    """A campaign file, read within the bounds of ``campaign_yaml``, loaded by :func:`load_campaign`."""
    return load_campaign(load_file(path), source=str(path), **kw)


# ----------------------------------------------------------------------------- workload


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
