"""The on-disk format of tpsim's kernel tables (``configs/kernels/<GPU>/``).

One gzip-compressed JSON file per table kind and dtype, so a run reads only the tables
its ops need.  A table holds *groups* (one per categorical key,
e.g. an attention head configuration or a collective's GPU count), each a grid of sorted
axes with a latency per node, row-major (last axis fastest), ``null`` where the source has
no measurement.  Latencies are ns rounded to 5 significant digits (the source's run-to-run
noise is ~1 %).  ``provenance.json`` beside them says where every table came from and how
it was cleaned; see configs/kernels/README.md.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import msgspec

from tpsim.errors import InputError

TABLE_FORMAT = "tpsim-kernel-table/1"
PROVENANCE_FORMAT = "tpsim-kernel-provenance/1"
PROVENANCE_FILE = "provenance.json"
TABLE_SUFFIX = ".json.gz"


def table_name(kind: str, dtype: str, kv_dtype: str | None = None) -> str:
    """``gemm.bfloat16``, ``generation_attention.bfloat16.kv_fp8``, ``nccl.int8``, ..."""
    return f"{kind}.{dtype}" + (f".kv_{kv_dtype}" if kv_dtype else "")


def format_latency(ns: float | None) -> str:
    return "null" if ns is None else format(ns, ".5g")


def render_table(header: dict, groups: list[dict]) -> bytes:
    """The file's bytes: deterministic JSON (sorted header keys) in a gzip stream with no mtime."""
    head = json.dumps({"format": TABLE_FORMAT, **header}, sort_keys=True, separators=(",", ":"))
    parts = []
    for g in groups:
        values = ",".join(format_latency(v) for v in g["latency_ns"])
        parts.append('{"key":' + json.dumps(g["key"], separators=(",", ":"))
                     + ',"axes":' + json.dumps(g["axes"], separators=(",", ":"))
                     + ',"latency_ns":[' + values + "]}")
    text = head[:-1] + ',"groups":[' + ",".join(parts) + "]}\n"
    return gzip.compress(text.encode("utf-8"), compresslevel=9, mtime=0)


def read_table(path: Path) -> dict:
    """Parse one table file; a damaged or foreign file is an InputError naming it.  msgspec parses it (the same
    values as the standard library, in a third of the time; strict JSON: no NaN)."""
    try:
        doc = msgspec.json.decode(gzip.decompress(Path(path).read_bytes()))
    except (OSError, EOFError, ValueError, msgspec.DecodeError) as exc:  # gzip.BadGzipFile is an OSError
        raise InputError(f"{path}: not a tpsim kernel table ({exc}); re-run `tpsim import aic`") from None
    if not isinstance(doc, dict) or doc.get("format") != TABLE_FORMAT:
        raise InputError(f"{path}: format is {doc.get('format') if isinstance(doc, dict) else None!r}, "
                         f"expected {TABLE_FORMAT!r}; re-run `tpsim import aic`")
    return doc


def render_provenance(doc: dict) -> str:
    return json.dumps({"format": PROVENANCE_FORMAT, **doc}, indent=1, sort_keys=True, allow_nan=False) + "\n"


def read_provenance(path: Path) -> dict:
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read ({exc}); re-run `tpsim import aic`") from None
    if not isinstance(doc, dict) or doc.get("format") != PROVENANCE_FORMAT:
        raise InputError(f"{path}: format is {doc.get('format') if isinstance(doc, dict) else None!r}, "
                         f"expected {PROVENANCE_FORMAT!r}; re-run `tpsim import aic`")
    return doc
