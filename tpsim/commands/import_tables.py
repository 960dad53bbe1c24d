"""``tpsim import aic``: convert NVIDIA AIConfigurator's kernel database into tpsim's tables.

DuckDB (the ``workflow`` extra) reads the parquet files and is imported only here; the
tables it writes are read by :mod:`tpsim.kernels` with the standard library.
"""

from __future__ import annotations

import argparse

DESCRIPTION = """\
Convert one system of NVIDIA AIConfigurator's kernel database (Apache-2.0; per-kernel
timings measured with the serving engine's own kernels) into tpsim's compact kernel
tables: GEMM, prefill and decode attention, vLLM's custom all-reduce, NCCL collectives
and fused MoE, in bfloat16 and fp8 where present.

The source is cleaned by stated rules (versions and GPU names from the rows, not the
folders; exact duplicates dropped; conflicting measurements merged into their median;
physically impossible times dropped) and the report says what each rule did.  The output
folder gets the tables, provenance.json, AIC's LICENSE and a NOTICE.
"""

EPILOG = """\
examples:
  tpsim import aic --from ../shared/aic --system h100_sxm --version 0.19.0
  tpsim import aic --system b200_sxm --version 0.19.0 --out /tmp/B200   # from pip's aiconfigurator-core
"""


def register(subparsers) -> None:
    p = subparsers.add_parser("import", help="convert public kernel measurements into tpsim's kernel tables",
                              description="Convert public kernel measurements into tpsim's kernel tables.")
    sources = p.add_subparsers(dest="source", metavar="SOURCE", parser_class=type(p))
    sources.required = True
    a = sources.add_parser("aic", help="NVIDIA AIConfigurator's systems database",
                           description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    a.add_argument("--from", dest="from_dir", metavar="DIR", default=None,
                   help="AIC's systems/ folder, or a folder holding it (default: the installed aiconfigurator-core "
                        "package's, pip install 'tpsim[aic]')")
    a.add_argument("--system", required=True, metavar="NAME", help="AIC system, e.g. h100_sxm, rtx_pro_6000_server")
    a.add_argument("--engine", default="vllm", choices=["vllm"], help="serving engine whose tables to take (vllm)")
    a.add_argument("--version", required=True, metavar="V",
                   help="engine version to keep, as the rows record it (e.g. 0.19.0)")
    a.add_argument("--hardware", default=None, metavar="NAME",
                   help="tpsim hardware catalog name (default: from the system, e.g. h100_sxm -> H100)")
    a.add_argument("--out", default=None, metavar="DIR",
                   help="output folder (default ./configs/kernels/<hardware>, found by the config search order)")
    a.add_argument("--source-id", default=None, metavar="TEXT",
                   help="how the provenance names this copy of the database, e.g. 'commit 095f58a5 (snapshot "
                        "2026-08-21)' (default: the package version, or 'unversioned copy at DIR')")
    a.set_defaults(func=handle)


def handle(args) -> int:
    from pathlib import Path

    from tpsim.aic import convert, source
    from tpsim.errors import InputError

    hardware = args.hardware or source.SYSTEM_HARDWARE.get(args.system)
    if hardware is None:
        known = ", ".join(f"{s} -> {h}" for s, h in source.SYSTEM_HARDWARE.items())
        raise InputError(f"--system {args.system}: no tpsim hardware name known for it ({known}); pass --hardware NAME")
    systems_dir = source.resolve_systems_dir(args.from_dir)
    source_id = args.source_id
    if source_id is None:
        pkg = source.package_version() if args.from_dir is None else None
        source_id = f"aiconfigurator-core {pkg}" if pkg else f"unversioned copy at {args.from_dir}"
    out_dir = Path(args.out) if args.out else Path.cwd() / "configs" / "kernels" / hardware
    imported = convert.import_system(systems_dir, args.system, args.engine, args.version, hardware, source_id)
    nbytes = convert.write_output(out_dir, imported)
    for line in imported.report:
        print(line)
    tables = sum(1 for n in imported.files if n.endswith(".json.gz"))
    print(f"wrote {tables} tables, provenance.json, LICENSE and NOTICE to {out_dir} ({nbytes / 1e6:.2f} MB)")
    return 0
