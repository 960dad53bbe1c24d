"""The measured cases of ``snakemake validate``: which folders under the validation root are cases,
and which measured profile bundle (if any) matches a case, so that the profile model is scored
where it can run.  Used while Snakemake parses ``workflow/rules/validation_common.smk``."""

from __future__ import annotations

from pathlib import Path

from tpsim.errors import InputError
from tpsim.validation.measured import read_json


def discover_cases(root) -> list[str]:
    """Names of the measured replay directories under ``root`` (each with config.json, trace.jsonl and
    vllm/requests.jsonl), sorted; [] if ``root`` does not exist."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir()
                  if p.is_dir() and (p / "config.json").is_file() and (p / "trace.jsonl").is_file()
                  and (p / "vllm" / "requests.jsonl").is_file())


def profile_model_available() -> bool:
    """Whether this build has the profile-driven latency model (``--perf-model profile``)."""
    import importlib.util

    return importlib.util.find_spec("tpsim.perf.profile") is not None


def case_has_kernel_tables(case_dir) -> bool:
    """Every GPU of a case's cluster config has kernel tables (``--perf-model kernels`` can run)."""
    from tpsim.kernels import load_kernel_tables

    try:
        cluster = read_json(Path(case_dir) / "config.json", "cluster config")
        names = {inst["hardware"]
                 for node in cluster.get("nodes") or []
                 for inst in (node or {}).get("instances") or []}
    except (InputError, KeyError, TypeError):
        return False
    return bool(names) and all(isinstance(n, str) and load_kernel_tables(n) is not None for n in names)


def case_profile_bundle(case_dir, profiles_root) -> Path | None:
    """The measured profile bundle matching a case's hardware, model, dtype and tp under ``profiles_root``
    (every instance must have one), or None."""
    from tpsim.perf.bundle_paths import locate

    case_dir, profiles_root = Path(case_dir), Path(profiles_root)
    if not profiles_root.is_dir():
        return None
    try:
        cluster = read_json(case_dir / "config.json", "cluster config")
        meta = read_json(case_dir / "vllm" / "meta.json", "vLLM run metadata") \
            if (case_dir / "vllm" / "meta.json").is_file() else {}
        model_cfg = read_json(case_dir / "model_config.json", "model config") \
            if (case_dir / "model_config.json").is_file() else {}
    except InputError:
        return None
    ek = meta.get("engine_kwargs") if isinstance(meta.get("engine_kwargs"), dict) else {}
    dtype = ek.get("dtype") if ek.get("dtype") not in (None, "auto") else model_cfg.get("torch_dtype", "bfloat16")
    kv = "fp8" if str(ek.get("kv_cache_dtype", "auto")).startswith("fp8") else "auto"
    found = None
    for node in cluster.get("nodes") or []:
        for inst in (node or {}).get("instances") or []:
            try:
                hit = locate([profiles_root], inst["hardware"], inst["model_name"], dtype, kv,
                             int(inst.get("tp_size", inst.get("num_npus", 1))))
            except (KeyError, TypeError, ValueError):
                return None
            if hit is None:
                return None
            found = found or hit
    return found
