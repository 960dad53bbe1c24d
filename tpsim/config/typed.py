"""Typed reading of one field of a config or trace: the right JSON type, finite, in range.

Every number and flag tpsim takes from a cluster config, a model config, a hardware entry or a
trace is read through these functions, so that ``NaN``, ``"false"`` (a string), ``1e308`` or a
list where a number belongs is one line naming the field, never a traceback or a silently
wrong run.  Ranges are wide enough for any real deployment; the limits are stated in the
error so a user who really needs more knows what they hit.
"""

from __future__ import annotations

import math

from tpsim.errors import InputError

#: counts (GPUs, sequences, tokens) fit a signed 32-bit integer, as in vLLM and DuckDB's INTEGER
MAX_INT32 = (1 << 31) - 1
#: times in ns fit a signed 64-bit integer (292 years)
MAX_INT64 = (1 << 63) - 1


def show(value, limit: int = 60) -> str:
    """``repr`` of a value for an error message, shortened if huge."""
    try:
        text = repr(value)
    except ValueError:  # an int past Python's str() digit limit
        return f"an integer of about {value.bit_length() * 0.30103:.0f} digits"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def integer(value, where: str, minimum: int = 0, maximum: int = MAX_INT32, integral_float: bool = False) -> int:
    """An integer in ``[minimum, maximum]``; booleans are not integers.

    ``integral_float`` accepts ``12.0`` for ``12`` (traces written by tools that emit floats).
    """
    if integral_float and isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"{where} must be an integer, got {show(value)}")
    if value < minimum:
        raise InputError(f"{where} must be >= {minimum}, got {show(value)}")
    if value > maximum:
        raise InputError(f"{where} must be <= {maximum:,}, got {show(value)}")
    return value


def number(value, where: str, minimum: float = 0.0, maximum: float = 1e18, allow_minimum: bool = True) -> float:
    """A finite number in ``[minimum, maximum]`` (``(minimum, maximum]`` without ``allow_minimum``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{where} must be a number, got {show(value)}")
    try:
        f = float(value)
    except OverflowError:
        raise InputError(f"{where} must be <= {maximum:g}, got {show(value)}") from None
    if math.isnan(f):
        raise InputError(f"{where} must be a number, got NaN")
    if f < minimum or (f == minimum and not allow_minimum):
        bound = f">= {minimum:g}" if allow_minimum else ("positive" if minimum == 0 else f"> {minimum:g}")
        raise InputError(f"{where} must be {bound}, got {show(value)}")
    if f > maximum:
        raise InputError(f"{where} must be <= {maximum:g}, got {show(value)}")
    return f


def positive(value, where: str, maximum: float) -> float:
    """A finite number in ``(0, maximum]``."""
    return number(value, where, 0.0, maximum, allow_minimum=False)


def fraction(value, where: str) -> float:
    """A number in ``(0, 1]`` (memory utilisation, efficiencies)."""
    if not _plain_number(value) or not 0 < value <= 1:  # NaN fails the comparison too
        raise InputError(f"{where} must be in (0, 1], got {show(value)}")
    return float(value)


def _plain_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def boolean(value, where: str) -> bool:
    """``true`` or ``false`` only: the string ``"false"`` is an error, not a truthy value."""
    if not isinstance(value, bool):
        raise InputError(f"{where} must be true or false, got {show(value)}")
    return value


def text(value, where: str, max_len: int = 256) -> str:
    """A non-empty string of printable characters, at most ``max_len`` long."""
    if not isinstance(value, str) or not value:
        raise InputError(f"{where} must be a non-empty string, got {show(value)}")
    if len(value) > max_len:
        raise InputError(f"{where} is {len(value):,} characters long; the limit is {max_len}")
    if not value.isprintable():
        raise InputError(f"{where} contains control characters: {show(value)}")
    return value


def choice(value, where: str, choices) -> str:
    """One of ``choices`` (strings)."""
    if not isinstance(value, str) or value not in choices:
        raise InputError(f"{where} must be one of {', '.join(choices)}; got {show(value)}")
    return value


def mapping(value, where: str, what: str = "an object") -> dict:
    if not isinstance(value, dict):
        raise InputError(f"{where} must be {what}, got {show(value)}")
    return value
