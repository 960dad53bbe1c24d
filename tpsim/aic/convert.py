"""Import one AIC system: read its tables, apply the rules, write tpsim's kernel tables.

The output folder (``configs/kernels/<GPU>/``) gets one ``<table>.json.gz`` per kernel kind
and dtype, ``provenance.json`` (source, versions, GPU as recorded, what every rule did),
AIC's Apache-2.0 ``LICENSE`` and a ``NOTICE`` saying what this derivative is.  Same inputs,
same bytes: nothing time- or machine-dependent is written.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tpsim.aic import clean, source
from tpsim.aic.specs import SOURCES
from tpsim.errors import InputError
from tpsim.kernels import store
from tpsim.kernels.roofline import Spec

SOURCE_NAME = "NVIDIA AIConfigurator systems database"
SOURCE_URL = "https://github.com/ai-dynamo/aiconfigurator"
COPYRIGHT = "Copyright (c) 2025-2026 NVIDIA CORPORATION & AFFILIATES"


@dataclass
class Imported:
    """Everything one import writes, and the report it prints."""

    hardware: str
    files: dict = field(default_factory=dict)      # file name -> bytes or text
    report: list = field(default_factory=list)     # lines


def spec_from_yaml(doc: dict, label: str) -> tuple[Spec, dict]:
    """Tensor-core peaks, DRAM and link bandwidth from AIC's system yaml (B/s and FLOP/s)."""
    def need(section, name):
        try:
            return float(doc[section][name])
        except (KeyError, TypeError, ValueError):
            raise InputError(f"{label}: {section}.{name} missing or not a number; the importer needs it "
                             f"for the roofline checks") from None

    peaks = {"bfloat16": need("gpu", "bfloat16_tc_flops") / 1e12}
    fp8 = (doc.get("gpu") or {}).get("fp8_tc_flops")
    if fp8 is not None:
        peaks["fp8"] = float(fp8) / 1e12
    out = {"peak_tflops": peaks, "memory_bw_gbps": need("gpu", "mem_bw") / 1e9,
           "link_bw_gbps": need("node", "intra_node_bw") / 1e9,
           "source": f"{label}: gpu.bfloat16_tc_flops, gpu.fp8_tc_flops, gpu.mem_bw, node.intra_node_bw"}
    return Spec.from_json(out), out


def find_license(systems_dir: Path) -> str:
    """AIC's licence text, from beside its systems/ folder or the installed package's metadata."""
    folders = (systems_dir, *list(systems_dir.parents)[:4])
    candidates = [p / name for p in folders for name in ("LICENSE", "LICENSE.txt")]
    if source.package_systems_dir() == systems_dir:
        from importlib.metadata import files

        candidates += [Path(f.locate()) for f in (files("aiconfigurator-core") or []) if f.name.startswith("LICENSE")]
    for path in candidates:
        if path.is_file():
            text = path.read_text(encoding="utf-8")
            if "Apache License" in text and "Version 2.0" in text:
                return text
    raise InputError(f"no Apache-2.0 LICENSE found beside {systems_dir} (nor up to four folders above it); AIC's "
                     f"licence must travel with tables derived from it: put its LICENSE there")


def _read_sources(systems_dir: Path, system: str, engine: str, log) -> dict:
    files = {}
    for spec in SOURCES:
        paths = source.find_tables(systems_dir, system, spec.op_folder, spec.engine_folder or engine, spec.parquet)
        read = []
        for path in paths:
            f = source.read_parquet(path, systems_dir)
            log(f"  read {f.relpath}: {len(f.rows)} rows")
            read.append(f)
        files[spec.kind] = read
    return files


def _engine_rows(files: dict, column: str, version: str | None = None) -> Counter:
    counts: Counter = Counter()
    for spec in SOURCES:
        if spec.engine_folder is not None:
            continue
        for f in files[spec.kind]:
            if column not in f.columns or "version" not in f.columns:
                continue
            i, iv = f.columns.index(column), f.columns.index("version")
            counts.update(str(r[i]) for r in f.rows if version is None or str(r[iv]) == version)
    return counts


def import_system(systems_dir: Path, system: str, engine: str, version: str, hardware: str,
                  source_id: str, log=print) -> Imported:
    yaml_doc = source.read_system_yaml(systems_dir, system)
    spec, spec_json = spec_from_yaml(yaml_doc, f"systems/{system}.yaml")
    licence = find_license(systems_dir)
    log(f"tpsim import aic: {system} from {systems_dir}")
    files = _read_sources(systems_dir, system, engine, log)
    versions = _engine_rows(files, "version")
    if version not in versions:
        found = ", ".join(sorted(versions)) or "none"
        raise InputError(f"--version {version}: no {engine} rows of that version for {system} in {systems_dir}; "
                         f"rows hold: {found}")
    devices = _engine_rows(files, "device", version)
    device = min(devices, key=lambda d: (-devices[d], d))
    named = (yaml_doc.get("misc") or {}).get("nccl_version")
    nccl_version, nccl_rule = clean.choose_nccl_version(files["nccl"], None if named is None else str(named))

    out = Imported(hardware)
    tables: dict = {}
    skipped: dict = {}
    not_imported: dict = {}
    row_versions: dict = {}
    for src in SOURCES:
        want = nccl_version if src.kind == "nccl" else version
        samples, stats, dropped_dtypes, skipped_files = clean.filter_rows(src, files[src.kind], str(want), device)
        for msg in skipped_files:
            path, why = msg.split(": ", 1)
            skipped[f"systems/{path}"] = why
        if dropped_dtypes:
            not_imported[src.kind] = dict(sorted(dropped_dtypes.items()))
        row_versions[src.kind] = dict(sorted(Counter(
            str(r[f.columns.index("version")]) for f in files[src.kind] if "version" in f.columns
            for r in f.rows).items()))
        for (dtype, kv) in sorted(stats, key=str):
            name = store.table_name(src.kind, dtype, kv)
            rec = _one_table(src, name, dtype, kv, samples.get((dtype, kv), {}), stats[(dtype, kv)], spec, out)
            if "skipped" in rec:
                skipped[name] = rec["skipped"]
                continue
            rec.update(engine="nccl" if src.kind == "nccl" else engine, engine_version=want,
                       source_files=[{"path": f"systems/{f.relpath}", "sha256": f.sha256}
                                     for f in files[src.kind] if f.relpath in stats[(dtype, kv)].files])
            tables[name] = rec
    if not tables:
        raise InputError(f"{system}: no table survived the rules; nothing written")
    yaml_path = systems_dir / f"{system}.yaml"
    out.files[store.PROVENANCE_FILE] = store.render_provenance({
        "hardware": hardware,
        "gpu": device,
        "source": {"name": SOURCE_NAME, "url": SOURCE_URL, "license": "Apache-2.0", "id": source_id,
                   "system": system, "system_yaml": f"systems/{system}.yaml",
                   "system_yaml_sha256": hashlib.sha256(yaml_path.read_bytes()).hexdigest()},
        "engine": engine, "engine_version": version,
        "nccl_version": nccl_version, "nccl_rule": nccl_rule,
        "spec": spec_json,
        "rules": list(clean.RULES),
        "tables": tables,
        "skipped": skipped,
        "not_imported": not_imported,
        "source_rows_by_version": row_versions,
        "measured_by": "NVIDIA (AIConfigurator collectors); not a tpsim measurement",
    })
    out.files["LICENSE"] = licence
    out.files["NOTICE"] = _notice(hardware, device, system, engine, version, nccl_version, source_id)
    out.report = _report(system, device, engine, version, nccl_version, nccl_rule, tables, skipped, not_imported,
                         row_versions)
    return out


def _one_table(src, name, dtype, kv, samples, st, spec, out: Imported) -> dict:
    header = {"table": name, "kind": src.kind, "dtype": dtype, "kv_dtype": kv,
              "key_names": [c.name for c in src.keys], "axis_names": [c.name for c in src.axes]}
    merged = clean.merge_conflicts(samples, st)
    kept = clean.check_rooflines(src.kind, spec, header, merged, len(src.keys), st) if merged else {}
    if not kept:
        return {"skipped": st.skipped or f"no rows left after the rules ({st.rows} read)", **st.as_json()}
    groups = clean.build_groups(kept, len(src.keys), len(src.axes))
    file = name + store.TABLE_SUFFIX
    out.files[file] = store.render_table(header, groups)
    nodes = sum(len(g["latency_ns"]) for g in groups)
    shapes = sorted({"x".join(str(len(a)) for a in g["axes"]) for g in groups})
    grid = (f"{len(groups)} group(s) by ({', '.join(header['key_names']) or 'none'}), axes "
            f"({', '.join(header['axis_names'])}) of shape {', '.join(shapes[:4])}{' ...' if len(shapes) > 4 else ''}; "
            f"{nodes - len(kept)} of {nodes} nodes not measured")
    return {"file": file, "gpu": sorted(st.devices), "grid": grid, **st.as_json()}


def _notice(hardware, device, system, engine, version, nccl_version, source_id) -> str:
    return (
        f"tpsim kernel tables for {hardware} ({device})\n\n"
        f"This folder is a derivative of the {SOURCE_NAME}\n({SOURCE_URL}),\n{source_id},\n"
        f"{COPYRIGHT},\nlicensed under the Apache License, Version 2.0 (LICENSE in this folder).\n\n"
        f"Changes: the parquet tables of systems/data/{system}/ ({engine} {version}, NCCL {nccl_version})\n"
        f"were converted by `tpsim import aic` into gzip-compressed JSON grids: rows selected,\n"
        f"de-duplicated, merged and checked by the rules listed in provenance.json, latencies\n"
        f"converted from ms to ns and rounded to 5 significant digits.\n\n"
        f"These are NVIDIA's measurements, not the tpsim project's.\n")


def _report(system, device, engine, version, nccl_version, nccl_rule, tables, skipped, not_imported,
            row_versions) -> list:
    lines = [f"{system}: GPU {device!r} (from the rows), {engine} {version}, NCCL {nccl_version}",
             f"  NCCL: {nccl_rule}"]
    for kind, versions in sorted(row_versions.items()):
        if len(versions) > 1:
            lines.append(f"  {kind} rows by version: " + ", ".join(f"{v} {n}" for v, n in versions.items())
                         + f" (kept {nccl_version if kind == 'nccl' else version})")
    for name, rec in sorted(tables.items()):
        lines.append(f"  {name}: {_counts(rec)} -> {rec['points']} points; {rec['grid']}")
    for name, why in sorted(skipped.items()):
        lines.append(f"  skipped {name}: {why}")
    for kind, dtypes in sorted(not_imported.items()):
        lines.append(f"  not imported ({kind}): " + ", ".join(f"{d} {n} rows" for d, n in dtypes.items()))
    return lines


def _counts(rec: dict) -> str:
    parts = [f"{rec['rows_read']} rows"]
    for label, field_name in (("other version", "rows_other_version"), ("other GPU", "rows_other_gpu"),
                              ("out of scope", "rows_out_of_scope")):
        if rec[field_name]:
            parts.append(f"{label} " + ", ".join(f"{k}: {v}" for k, v in rec[field_name].items()))
    parts.append(f"{rec['exact_duplicates_dropped']} exact duplicates dropped")
    conflicts = f"{rec['conflicting_keys']} conflicting keys"
    if rec["conflicting_keys"]:
        conflicts += (f" ({rec['conflicting_rows_merged']} rows, max/min up to "
                      f"{rec['worst_conflict_max_over_min']}) -> median")
    parts.append(conflicts)
    parts.append(f"{rec['hard_roofline_violators_dropped']} below the hard roofline dropped")
    if rec["worst_dram_roofline_ratio"] is not None:
        parts.append(f"{rec['dram_roofline_violators_kept']} below the DRAM roofline kept (lowest "
                     f"{rec['worst_dram_roofline_ratio']}x)")
    return "; ".join(parts)


def write_output(out_dir: Path, imported: Imported) -> int:
    """Write every file at once (temporary names, then renames) and remove stale tables;
    returns the bytes written."""
    from tpsim.io.writing import atomic_write_files

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out {out_dir}: is a file; pass a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / store.PROVENANCE_FILE).is_file():
        raise InputError(f"--out {out_dir}: holds files that are not kernel tables; pass an empty or new folder")
    atomic_write_files([(out_dir / name, data) for name, data in sorted(imported.files.items())])
    for stale in out_dir.glob("*" + store.TABLE_SUFFIX):
        if stale.name not in imported.files:
            stale.unlink()
    return sum(len(d if isinstance(d, bytes) else d.encode()) for d in imported.files.values())
