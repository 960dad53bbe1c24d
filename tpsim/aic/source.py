"""Where AIConfigurator's tables are and how they are read.

The layout is AIC's ``systems/`` folder: ``<system>.yaml`` (spec sheet) beside
``data/<system>/<op>/<engine or nccl>/<version>/<table>.parquet``.  Folder names are not
trusted (some hold rows of another version); every row is read with its columns.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from tpsim.errors import InputError

#: AIC system name -> tpsim hardware catalog name (configs/hardware/<NAME>.yaml)
SYSTEM_HARDWARE = {
    "h100_sxm": "H100",
    "h200_sxm": "H200",
    "b200_sxm": "B200",
    "a100_sxm": "A100",
    "rtx_pro_6000_server": "RTXPRO6000",
    "l40s": "L40S",
}

PACKAGE = "aiconfigurator_core"


@dataclass(frozen=True)
class SourceFile:
    """One parquet table as read: its path relative to ``systems/``, columns, rows, digest."""

    relpath: str
    folder_version: str
    columns: tuple[str, ...]
    rows: list[tuple]
    sha256: str


def package_systems_dir() -> Path | None:
    """``aiconfigurator_core/systems`` of the installed package (found, not imported), or None."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "systems"
    return path if path.is_dir() else None


def package_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("aiconfigurator-core")
    except PackageNotFoundError:
        return None


def resolve_systems_dir(from_dir: str | None) -> Path:
    """AIC's ``systems/`` folder: ``--from`` (the folder itself, or a folder holding it), else
    the installed ``aiconfigurator-core`` package's."""
    if from_dir is None:
        found = package_systems_dir()
        if found is None:
            raise InputError("no AIConfigurator database: pass --from DIR (AIC's systems/ folder, or a folder "
                             "holding it), or install the package: pip install 'tpsim[aic]'")
        return found
    base = Path(from_dir)
    if not base.is_dir():
        raise InputError(f"--from {from_dir}: no such folder; pass AIC's systems/ folder (or a folder holding it)")
    for cand in (base, base / "systems", base / "aic-core" / "src" / PACKAGE / "systems"):
        if (cand / "data").is_dir():
            return cand
    raise InputError(f"--from {from_dir}: neither it nor {base / 'systems'} has a data/ folder; pass AIC's "
                     f"systems/ folder (it holds <system>.yaml and data/<system>/)")


def available_systems(systems_dir: Path) -> list[str]:
    return sorted(p.stem for p in systems_dir.glob("*.yaml") if (systems_dir / "data" / p.stem).is_dir())


def read_system_yaml(systems_dir: Path, system: str) -> dict:
    import yaml

    path = systems_dir / f"{system}.yaml"
    if not path.is_file() or not (systems_dir / "data" / system).is_dir():
        names = ", ".join(available_systems(systems_dir)) or "none"
        raise InputError(f"--system {system}: no {system}.yaml with a data/{system}/ folder in {systems_dir}; "
                         f"systems there: {names}")
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: malformed YAML ({' '.join(str(exc).split())})") from None
    if not isinstance(doc, dict):
        raise InputError(f"{path}: expected a mapping with gpu: and node: sections")
    return doc


def find_tables(systems_dir: Path, system: str, op_folder: str, engine_folder: str, parquet: str) -> list[Path]:
    """Every ``data/<system>/<op>/<engine>/<version>/<parquet>``, in folder order."""
    base = systems_dir / "data" / system / op_folder / engine_folder
    return sorted(base.glob(f"*/{parquet}"), key=lambda p: p.parent.name)


def read_parquet(path: Path, systems_dir: Path) -> SourceFile:
    try:
        import duckdb
    except ImportError:
        raise InputError("tpsim import aic reads parquet with DuckDB, which is not installed: "
                         "pip install 'tpsim[aic]' (or 'tpsim[workflow]')") from None

    con = duckdb.connect()
    try:
        cur = con.execute("SELECT * FROM read_parquet(?)", [str(path)])
        columns = tuple(d[0] for d in cur.description)
        rows = cur.fetchall()
    except duckdb.Error as exc:
        raise InputError(f"{path}: cannot read parquet ({' '.join(str(exc).split())})") from None
    finally:
        con.close()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return SourceFile(path.relative_to(systems_dir).as_posix(), path.parent.name, columns, rows, digest)
