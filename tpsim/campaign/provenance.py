"""What a campaign run records about where it came from, beyond tpsim's own summary: whether the
checkout had uncommitted changes, and the SHA-256 of each input (hashed once per process)."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

from tpsim.config.catalog import PACKAGE_ROOT
from tpsim.hashing import sha256_file


def git_dirty(repo: Path = PACKAGE_ROOT) -> bool | None:
    """Whether the checkout has uncommitted changes to tracked files (staged or not); None outside git.

    A run records the commit (tpsim's summary: ``git_commit``); this says whether that commit alone
    reproduces it.  Untracked files (results/, scratch files) do not count.
    """
    try:
        proc = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                              capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    return bool(proc.stdout.strip())


@functools.cache
def file_sha256(path: str) -> str:
    """SHA-256 of a file's content, hashed once per process (Snakemake asks once per run)."""
    return sha256_file(path)
