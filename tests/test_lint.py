"""Habits checked on every run of the suite: the public API type-checks, no module grows past 500 lines, and
ruff's lint (with the C901 complexity ratchet at 15) is clean.  Configuration lives in pyproject.toml."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: the ratchet: no module of the package or the workflow over this many lines
MAX_MODULE_LINES = 500


def _tool(name: str) -> list[str]:
    if shutil.which(name) is None:
        pytest.skip(f"{name} not installed (pip install -e '.[dev]')")
    return [name]


def test_public_api_type_checks():
    proc = subprocess.run(_tool("mypy"), cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def test_no_module_over_500_lines():
    long = {str(p.relative_to(REPO)): n for p in [*REPO.glob("tpsim/**/*.py"), *REPO.glob("workflow/**/*.py")]
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines (split them by concept): {long}"


def test_ruff_lint_is_clean():
    """ruff's rules in pyproject.toml, C901 (complexity over 15) among them: the ratchet only goes down."""
    proc = subprocess.run([*_tool("ruff"), "check", "--no-cache", "--output-format", "concise"], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
