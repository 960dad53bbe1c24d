"""The CSV reading and the 1-D tables that every measured profile table shares (a bundle's
``dense.csv`` and ``per_sequence.csv``, LLMServingSim's ``moe.csv``): one row per line, every bad cell
an error naming the file and line, and where each looked-up number came from."""

from __future__ import annotations

import csv
import math
from bisect import bisect_left
from dataclasses import dataclass
from pathlib import Path

from tpsim.errors import InputError

#: where a number came from, best first
MEASURED, INTERPOLATED, EXTRAPOLATED = "measured", "interpolated", "extrapolated"
_RANK = {MEASURED: 0, INTERPOLATED: 1, EXTRAPOLATED: 2}


def worst(*sources: str) -> str:
    """The least exact of several sources (measured < interpolated < extrapolated)."""
    return max(sources, key=_RANK.__getitem__)


# --------------------------------------------------------------------------- tables
@dataclass
class Table1D:
    """A piecewise-linear function on sorted integer keys (values in ns).

    Exact at the keys, linear between neighbours, the first value below the
    smallest key, and beyond the largest key a line through the top two
    points (slope clamped at >= 0: more work never takes less time).
    """

    keys: list[int]
    values: list[float]

    def value(self, x: float) -> float:
        keys = self.keys
        i = bisect_left(keys, x)
        n = len(keys)
        if i < n and keys[i] == x:
            return self.values[i]
        if i == 0 or n == 1:
            return self.values[0]  # below the grid (or a single point): clamp
        if i == n:
            x0, x1 = keys[-2], keys[-1]
            y0, y1 = self.values[-2], self.values[-1]
            slope = (y1 - y0) / (x1 - x0)
            return y1 + (slope if slope > 0 else 0.0) * (x - x1)
        x0 = keys[i - 1]
        y0 = self.values[i - 1]
        return y0 + (self.values[i] - y0) * (x - x0) / (keys[i] - x0)

    def source(self, x: float) -> str:
        keys = self.keys
        i = bisect_left(keys, x)
        if i < len(keys) and keys[i] == x:
            return MEASURED
        return INTERPOLATED if 0 < i < len(keys) else EXTRAPOLATED

    def lookup(self, x: float) -> tuple[float, str]:
        return self.value(x), self.source(x)

    @property
    def max_key(self) -> int:
        return self.keys[-1]


def _read_csv(path: Path, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> list[tuple[int, dict]]:
    """Rows of a CSV as (line number, {column: text}); checks the header."""
    if not path.is_file():
        raise InputError(f"{path}: missing; a profile bundle needs it (re-run `tpsim profile` or copy the whole "
                         f"tp<N>/ folder)")
    try:
        with open(path, newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                raise InputError(f"{path}:1: empty file; expected header {','.join(required)}")
            header = [h.strip() for h in header]
            missing = [c for c in required if c not in header]
            if missing:
                raise InputError(f"{path}:1: header lacks column(s) {', '.join(missing)}; expected "
                                 f"{','.join(required + optional)}")
            idx = {c: header.index(c) for c in required + optional if c in header}
            rows = []
            for line_no, row in enumerate(reader, start=2):
                if not row or all(not cell.strip() for cell in row):
                    continue
                if len(row) < len(header):
                    row = row + [""] * (len(header) - len(row))
                rows.append((line_no, {c: row[i].strip() for c, i in idx.items()}))
            return rows
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a text CSV file") from None
    except csv.Error as exc:
        raise InputError(f"{path}: malformed CSV ({exc})") from None


def _int_cell(path: Path, line: int, col: str, text: str) -> int:
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"{path}:{line}: column {col} must be a non-negative integer, got {text!r}; fix or delete "
                         f"the row") from None
    if not math.isfinite(value) or value < 0 or value != int(value):
        raise InputError(f"{path}:{line}: column {col} must be a non-negative integer, got {text!r}; fix or delete "
                         f"the row")
    return int(value)


def _time_cell(path: Path, line: int, col: str, text: str, allow_empty: bool) -> float | None:
    if text == "" and allow_empty:
        return None
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"{path}:{line}: column {col} must be a time in microseconds, got {text!r}; fix or delete "
                         f"the row") from None
    if not math.isfinite(value) or value < 0:
        raise InputError(f"{path}:{line}: column {col} must be a finite time >= 0 us, got {text!r}; fix or delete "
                         f"the row")
    return value * 1000.0
