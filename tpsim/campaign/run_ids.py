"""Run ids: one Hive-style ``key=value`` folder per parameter, every byte safe in a path.

A run id is a relative path such as ``model=Qwen--Qwen3-32B/tp=2/link_bw=16`` (the matrix keys
beyond model and tp_size join it, when the matrix has them, in the fixed order of :data:`PATH_KEYS`:
``model=Qwen--Qwen3-30B-A3B/dp=2/tp=2/ep=4/link_bw=16`` with data and expert parallelism), so DuckDB
and pandas can read the parameters back, and every folder name is safe for a shell, a path and Snakemake's patterns:

* numbers are written canonically (``16`` and ``16.0`` are the same run: ``16``);
* a model name (it may be any file path) is written in the alphabet ``[A-Za-z0-9._+-]`` plus
  ``%XX`` escapes: ``/`` becomes ``--``; letters, digits, ``.``, ``_`` and ``+`` stay; ``-`` stays
  unless it touches another ``-`` or a ``/`` (then ``%2D``, so that ``--`` always means ``/``);
  every other byte of its UTF-8 form becomes ``%XX`` (``%`` itself ``%25``, a space ``%20``,
  ``$`` ``%24``).  The encoding is reversible (:func:`decode_name`);
* a model name whose encoding is longer than :data:`MAX_VALUE_BYTES` bytes is cut there and ends
  in ``~`` and 16 hex digits of its SHA-256 (folder names are limited to 255 bytes); the tables
  always carry the full name.
"""

from __future__ import annotations

import hashlib
import re

# Matrix keys in path order, with the folder name used in run ids.
PATH_KEYS = {
    "model": "model",
    "hardware": "hardware",
    "dp_size": "dp",
    "tp_size": "tp",
    "ep_size": "ep",
    "link_bw": "link_bw",
    "link_latency": "link_latency",
    "max_num_seqs": "max_num_seqs",
    "max_num_batched_tokens": "max_num_batched_tokens",
    "rate": "rate",
    "seed": "seed",
}
ALWAYS_IN_PATH = ("model", "tp_size")
SEP = "--"  # '/' in a model name
SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._+")
MAX_VALUE_BYTES = 200
_ESCAPE = re.compile(r"%([0-9A-F]{2})")


def canonical_number(value):
    """16.0 -> 16 (int); 12.5 stays 12.5.  Booleans are not numbers here."""
    if isinstance(value, bool):
        raise TypeError(f"not a number: {value!r}")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def fmt_value(value) -> str:
    """How a parameter value is written in a run id (and compared in exclude rules)."""
    if isinstance(value, str):
        return value
    value = canonical_number(value)
    return str(value) if isinstance(value, int) else repr(value)


def match_key(value) -> tuple[str, str]:
    """How exclude rules compare values: by kind and canonical text, so '1' never matches 1 but 16.0 matches 16."""
    return ("str" if isinstance(value, str) else "num", fmt_value(value))


def encode_name(name: str) -> str:
    """A model name as one folder name (see the module docstring); reversible unless cut."""
    raw = name.encode("utf-8", "surrogatepass")
    out = []
    for i, byte in enumerate(raw):
        if byte == 0x2F:  # '/'
            out.append(SEP)
        elif byte in SAFE:
            out.append(chr(byte))
        elif byte == 0x2D and not _touches_dash_or_slash(raw, i):  # '-'
            out.append("-")
        else:
            out.append(f"%{byte:02X}")
    text = "".join(out)
    if len(text) <= MAX_VALUE_BYTES:
        return text
    cut = MAX_VALUE_BYTES - 17
    while "%" in text[max(0, cut - 2):cut]:  # never split a %XX escape
        cut -= 1
    return f"{text[:cut]}~{hashlib.sha256(raw).hexdigest()[:16]}"


def _touches_dash_or_slash(raw: bytes, i: int) -> bool:
    return (i > 0 and raw[i - 1] in b"-/") or (i + 1 < len(raw) and raw[i + 1] in b"-/")


def decode_name(segment: str) -> str:
    """The model name back from :func:`encode_name`; ValueError for a cut name (it ends in ~HASH)."""
    if "~" in segment:
        raise ValueError(f"{segment!r} is a cut name: the full name is in the run's run.json and the tables")
    raw = _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), segment.replace(SEP, "/"))
    return raw.encode("latin-1").decode("utf-8", "surrogatepass")


def run_id(values: dict, dims: list[str]) -> str:
    """The run's id from its matrix values (``dims``: the optional matrix keys present)."""
    parts = []
    for key, folder in PATH_KEYS.items():
        if key in ALWAYS_IN_PATH or key in dims:
            value = values[key]
            text = encode_name(value) if key == "model" else fmt_value(value)
            parts.append(f"{folder}={text}")
    return "/".join(parts)
