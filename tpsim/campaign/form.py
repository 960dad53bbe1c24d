"""The campaign's form: JSON Schema (``campaign.schema.yaml`` beside this module) plus what a schema
cannot say about form -- finite numbers, no control characters, unique matrix values, the matrix
size limit -- each problem one line naming its key.

Values from the user are shown through :func:`show` (``repr``, cut to a readable length), so a
message stays one line whatever the campaign holds.
"""

from __future__ import annotations

import functools
import math
import unicodedata
from pathlib import Path

from tpsim.campaign.reading import CampaignError
from tpsim.campaign.run_ids import PATH_KEYS, match_key

#: package data: read beside the module, so it ships with a non-editable install
SCHEMA = Path(__file__).with_name("campaign.schema.yaml")
DEFAULT_MAX_RUNS = 10_000
SHOW_CHARS = 80
# Free text: the only strings that may hold tabs and line breaks.
FREE_TEXT = {("description",)}
#: what templates (the Slurm profile, examples) write where a value must be filled in
PLACEHOLDER = "CHANGE_ME"
_BAD_CATEGORIES = {"Cc", "Cs", "Zl", "Zp"}  # control characters, lone surrogates, line/paragraph separators
_CONTROL_NAMES = {"\t": "tab", "\n": "line feed", "\r": "carriage return", "\0": "NUL", "\x1b": "escape"}


def show(value) -> str:
    """``repr`` of a value the user wrote, cut to SHOW_CHARS characters (one line, always)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**SHOW_CHARS:
        return f"<int of {math.floor(math.log10(abs(value))) + 1} digits>"  # repr may refuse past 4,300 digits
    text = repr(value)
    return text if len(text) <= SHOW_CHARS else text[:SHOW_CHARS - 3] + "..."


def finite_number(value) -> bool:
    """A finite float, or an int a float could hold (below 1e300); not a bool."""
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, int) and not isinstance(value, bool) and abs(value) < 10**300


def where(path) -> str:
    """A key path as matrix.tp_size[1]; a key that is not plain printable text is shown quoted."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        part = str(part)
        if not part.isprintable() or len(part) > SHOW_CHARS or not part:
            part = show(part)
        out += f".{part}" if out else part
    return out or "(top level)"


@functools.lru_cache(maxsize=4)
def _validator(schema_path: Path):
    import jsonschema
    import yaml

    with open(schema_path, encoding="utf-8") as f:
        schema = yaml.safe_load(f)
    base = jsonschema.Draft202012Validator
    # NaN and infinities are not numbers here: a link of infinite bandwidth is a typo, not a run
    checker = base.TYPE_CHECKER.redefine("number", lambda _checker, value: finite_number(value))
    return jsonschema.validators.extend(base, type_checker=checker)(schema)


def _not_finite(value) -> bool:
    return isinstance(value, float) and not math.isfinite(value)


def _describe_type(err, at: str) -> str:
    want = err.validator_value
    want = " or ".join(want) if isinstance(want, list) else want
    if _not_finite(err.instance):
        return f"{at}: expected a finite {want}, got {show(err.instance)}"
    return f"{at}: expected {want}, got {show(err.instance)}"


def _describe_required(err, at: str) -> str:
    missing = err.message.split("'")[1] if "'" in err.message else err.message
    key = f"{at}.{missing}" if err.absolute_path else missing
    return f"{key}: missing (required)"


def _describe_unknown(err, at: str) -> str:
    allowed = sorted((err.schema.get("properties") or {}).keys())
    extra = sorted({str(k) for k in err.instance} - set(allowed)) if isinstance(err.instance, dict) else []
    keys = ", ".join(where([*err.absolute_path, k]) for k in extra[:5]) + (", ..." if len(extra) > 5 else "")
    return f"{keys}: unknown key (allowed here: {', '.join(allowed)})"


def _describe_workload(err, at: str) -> str:
    return "workload: give exactly one of 'trace' or 'generate'" if at == "workload" else f"{at}: {_cut(err.message)}"


_DESCRIBE = {
    "required": _describe_required,
    "additionalProperties": _describe_unknown,
    "type": _describe_type,
    "enum": lambda err, at: f"{at}: {show(err.instance)} is not one of {err.validator_value}",
    "minItems": lambda err, at: f"{at}: must not be empty",
    "minProperties": _describe_workload,
    "maxProperties": _describe_workload,
    "pattern": lambda err, at: f"{at}: {show(err.instance)} may only contain letters, digits, '.', '_' and '-'",
    "maxLength": lambda err, at: f"{at}: longer than {err.validator_value} characters",
    "minLength": lambda err, at: f"{at}: must not be empty",
    "anyOf": lambda err, at: f"{at}: expected a value or a list of values, got {show(err.instance)}",
    "maximum": lambda err, at: f"{at}: {show(err.instance)} is more than the maximum, {_num(err.validator_value)}",
    "minimum": lambda err, at: f"{at}: {show(err.instance)} is less than the minimum, {_num(err.validator_value)}",
    "exclusiveMinimum": lambda err, at: f"{at}: {show(err.instance)} must be more than {err.validator_value}",
}


def _num(value) -> str:
    return f"{int(value):,}" if float(value).is_integer() else str(value)


def _cut(message: str) -> str:
    line = " ".join(message.split())
    return line if len(line) <= 2 * SHOW_CHARS else line[:2 * SHOW_CHARS - 3] + "..."


def describe(err) -> str:
    """One readable line for a jsonschema error, naming the key."""
    at = where(err.absolute_path)
    fmt = _DESCRIBE.get(err.validator)
    return fmt(err, at) if fmt else f"{at}: {_cut(err.message)}"


def schema_problems(doc: dict, schema_path: Path = SCHEMA) -> list[tuple[tuple, str]]:
    """(path, message) of every schema error, sorted by path; the path is where the error sits
    (a missing or unknown key: the object holding it)."""
    errors = sorted(_validator(Path(schema_path)).iter_errors(doc),
                    key=lambda e: (list(map(str, e.absolute_path)), e.validator))
    return [(tuple(e.absolute_path), describe(e)) for e in errors]


def text_problems(doc) -> list[tuple[tuple, str]]:
    """Control characters (tabs, line breaks, ...) in any key or string but free text: they are
    never part of a name, a path or a flag, and they would break a log line or a shell word; and a
    leftover ``CHANGE_ME`` placeholder."""
    problems = []
    stack = [((), doc)]
    while stack:
        path, node = stack.pop()
        if path in FREE_TEXT:
            continue
        if isinstance(node, dict):
            for key, value in node.items():
                problems += _bad_text((*path, key), key, "key")
                stack.append(((*path, key), value))
        elif isinstance(node, list):
            stack.extend(((*path, i), v) for i, v in enumerate(node))
        else:
            problems += _bad_text(path, node, "value")
    return sorted(problems, key=lambda p: list(map(str, p[0])))


def _bad_text(path, text, what) -> list[tuple[tuple, str]]:
    if not isinstance(text, str):
        return []
    if PLACEHOLDER in text:
        return [(path, (f"{where(path)}: the {what} {show(text)} holds the placeholder {PLACEHOLDER}; "
                       "replace it with the real value"))]
    for i, ch in enumerate(text):
        if unicodedata.category(ch) in _BAD_CATEGORIES:
            name = _CONTROL_NAMES.get(ch) or unicodedata.name(ch, f"U+{ord(ch):04X}").lower()
            return [(path, (f"{where(path)}: the {what} {show(text)} contains a control character ({name}, at "
                           f"{i}); names, paths and flags may not"))]
    return []


def duplicate_problems(matrix, accepted) -> list[tuple[tuple, str]]:
    """Matrix values that repeat (by kind and canonical value: 16 and 16.0 repeat, '1' and 1 do not),
    over the values ``accepted(path)`` says the schema took; linear in the values."""
    problems = []
    for key, values in (matrix.items() if isinstance(matrix, dict) else []):
        if key not in PATH_KEYS or not isinstance(values, list):
            continue
        seen = set()
        for i, value in enumerate(values):
            if not accepted(("matrix", key, i)):
                continue
            mk = match_key(value)
            if mk in seen:
                problems.append((("matrix", key), f"matrix.{key}: values must be unique, got {show(values)}"))
                break
            seen.add(mk)
    return problems


def huge_number_problems(doc) -> list[tuple[tuple, str]]:
    """Integers no float could hold (1e300 and beyond) are refused and set to None in ``doc`` (a
    private copy): JSON Schema's own messages cannot even print one past 4,300 digits."""
    problems = []
    stack = [((), doc)]
    while stack:
        path, node = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, value in items:
            if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**300:
                problems.append(((*path, key), (f"{where((*path, key))}: {show(value)} is too large "
                                               "(numbers must be below 1e300)")))
                node[key] = None
            else:
                stack.append(((*path, key), value))
    return problems


def form_problems(doc: dict, schema_path: Path = SCHEMA) -> list[tuple[tuple, str]]:
    """(path, message) of every problem of form -- numbers too large, schema, control characters,
    repeated matrix values -- sorted by path.  (Sets numbers too large to None in ``doc``.)"""
    huge = huge_number_problems(doc)
    problems = huge + [p for p in schema_problems(doc, schema_path) if p[0] not in {path for path, _ in huge}]
    problems += text_problems(doc)
    bad = [path for path, _ in problems]
    problems += duplicate_problems(doc.get("matrix"), lambda path: not any(b[:len(path)] == path for b in bad))
    return sorted(problems, key=lambda p: list(map(str, p[0])))


def max_runs(doc: dict) -> int:
    limits = doc.get("limits")
    value = limits.get("max_runs") if isinstance(limits, dict) else None
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
    return value if ok else DEFAULT_MAX_RUNS


def check_matrix_size(doc: dict, prefix: str) -> None:
    """Refuse a matrix with more combinations than limits.max_runs, before anything expands or
    validates its lists (the product of their lengths, exclude rules not counted)."""
    matrix = doc.get("matrix")
    if not isinstance(matrix, dict):
        return
    lengths = {k: len(v) for k, v in matrix.items() if k in PATH_KEYS and isinstance(v, list) and v}
    total = math.prod(lengths.values())
    limit = max_runs(doc)
    if total > limit:
        sizes = " x ".join(f"{k} {n:,}" for k, n in lengths.items())
        raise CampaignError(f"{prefix}: matrix: {total:,} runs ({sizes}), more than limits.max_runs = {limit:,}; "
                            "make the matrix smaller, or raise the limit in the campaign: limits: {max_runs: N}")
