"""Reading input files (JSON, JSON Lines, YAML) with errors that name the file, line and fix.

Every input file tpsim reads goes through here, so hostile bytes meet one set of rules:

* size: a file larger than its limit is refused before it is read (configs are kilobytes);
* encoding: UTF-8, or an error naming the line of the first bad byte;
* JSON is strict: ``NaN`` / ``Infinity`` and numbers that overflow a float are errors (Python's
  ``json`` accepts them silently), as are integers past Python's digit limit and nesting deeper
  than :data:`MAX_DEPTH`;
* YAML is parsed safely, with a budget on aliases so an alias bomb cannot expand.

Value checks (types, ranges, finiteness of each field) live in :mod:`tpsim.config.typed`.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from tpsim.errors import InputError

#: nesting deeper than this is refused (no real config nests more than a handful of levels)
MAX_DEPTH = 64
#: default size limit for a config file (cluster, model, hardware, campaign)
MAX_CONFIG_BYTES = 16 << 20
#: one trace line (a request with token ids: a 128k-token prompt is about 1 MB of JSON)
MAX_TRACE_LINE_BYTES = 64 << 20
#: YAML: aliases allowed in one document (an alias bomb needs many; real configs use none or few)
MAX_YAML_ALIASES = 100


def _bad_constant(name: str):
    raise ValueError(f"{name} is not a valid number; use a finite number")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"{text} overflows a 64-bit float; use a smaller number")
    return value


def _depth_ok(text: str) -> bool:
    """Cheap pre-check: bracket depth never exceeds MAX_DEPTH (brackets inside strings may over-count,
    which only matters for pathological strings, and then the error is still a clean one)."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return True
    depth = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return False
        elif ch in "]}":
            depth -= 1
    return True


def parse_json(text: str, where: str, one_line: bool = False):
    """Strict JSON: one line of error naming ``where`` and the position.

    ``where`` is a path, or ``path:line`` for one line of a JSON Lines file (``one_line``).
    """
    if not _depth_ok(text):
        raise InputError(f"{where}: JSON nested deeper than {MAX_DEPTH} levels; flatten the file")
    try:
        return json.loads(text, parse_constant=_bad_constant, parse_float=_finite_float)
    except json.JSONDecodeError as exc:
        if one_line:
            raise InputError(f"{where}: malformed JSON ({exc.msg} at column {exc.colno})") from None
        raise InputError(f"{where}:{exc.lineno}:{exc.colno}: malformed JSON ({exc.msg})") from None
    except ValueError as exc:  # NaN/Infinity, float overflow, integer past the digit limit
        msg = str(exc).split(";")[0] if "digits" in str(exc) else str(exc)
        if "digits" in msg:
            msg = "an integer has too many digits; use a number below 1e18"
        raise InputError(f"{where}: {msg}") from None
    except RecursionError:
        raise InputError(f"{where}: JSON nested too deeply; flatten the file") from None


def read_bytes(path: str | Path, what: str, flag: str, limit: int = MAX_CONFIG_BYTES) -> bytes:
    """The file's bytes; a missing, unreadable, special or oversized file is an :class:`InputError`.

    ``what`` names the file's role ("cluster config") and ``flag`` how to pass another one.
    """
    p = os.fspath(path)
    try:
        st = os.stat(p)
    except (OSError, ValueError) as exc:
        reason = "no such file" if isinstance(exc, FileNotFoundError) else _reason(exc)
        raise InputError(f"{what} {_show(p)}: {reason}; pass {flag} an existing file") from None
    import stat

    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{what} {_show(p)}: not a regular file; pass {flag} a file")
    if st.st_size > limit:
        raise InputError(f"{what} {_show(p)}: {st.st_size:,} bytes, more than the {limit:,}-byte limit for a "
                         f"{what}; is it the right file?")
    try:
        with open(p, "rb") as f:
            return f.read(limit + 1)
    except OSError as exc:
        raise InputError(f"{what} {_show(p)}: cannot read it ({_reason(exc)})") from None


def decode_utf8(raw: bytes, where: str) -> str:
    """UTF-8 text, or an error naming the line of the first invalid byte."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise InputError(f"{where}:{line}: not UTF-8 text (byte 0x{raw[exc.start]:02x}); "
                         "save the file as UTF-8") from None


def read_json_file(path: str | Path, what: str, flag: str, limit: int = MAX_CONFIG_BYTES) -> tuple[object, bytes]:
    """Parse a JSON file strictly; returns the document and the raw bytes (for hashing)."""
    raw = read_bytes(path, what, flag, limit)
    where = _show(os.fspath(path))
    return parse_json(decode_utf8(raw, where), where), raw


def parse_yaml(text: str, where: str):
    """Safe YAML with an alias budget (no alias bombs), errors with the line."""
    import yaml

    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    if text.count("*") > MAX_YAML_ALIASES:
        # only count real aliases (a '*' in a string is harmless): walk the events
        aliases = 0
        try:
            for event in yaml.parse(text, Loader=base):
                if isinstance(event, yaml.AliasEvent):
                    aliases += 1
                    if aliases > MAX_YAML_ALIASES:
                        raise InputError(f"{where}: more than {MAX_YAML_ALIASES} YAML aliases (*name); "
                                         "write the values out")
        except yaml.YAMLError:
            pass  # reported with its line by the load below
    try:
        return yaml.load(text, Loader=base)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise InputError(f"{where}{line}: malformed YAML ({getattr(exc, 'problem', None) or exc})") from None
    except RecursionError:
        raise InputError(f"{where}: YAML nested too deeply; flatten the file") from None


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def _show(path: str, limit: int = 200) -> str:
    """A path as it appears in one-line errors: control characters escaped, very long ones shortened."""
    text = path.encode("unicode_escape", "backslashreplace").decode("ascii") if not path.isprintable() else path
    return text if len(text) <= limit else text[: limit // 2] + "..." + text[-limit // 2:]


show_path = _show
