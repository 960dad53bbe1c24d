"""Where a run's numbers come from: the code (git commit) and the exact input files (SHA-256)."""

from __future__ import annotations

import os

from tpsim.config.catalog import PACKAGE_ROOT
from tpsim.hashing import sha256_file


def git_commit() -> str | None:
    """The checkout's HEAD commit, read from .git directly (no subprocess on the hot path)."""
    git = PACKAGE_ROOT / ".git"
    try:
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head or None
        ref = head[5:]
        ref_file = git / ref
        if ref_file.is_file():
            return ref_file.read_text().strip() or None
        packed = git / "packed-refs"
        if packed.is_file():
            for line in packed.read_text().splitlines():
                if line.endswith(" " + ref):
                    return line.split(" ", 1)[0]
    except OSError:
        return None
    return None


def file_ref(path: str, sha256: str | None = None) -> dict:
    """``{"path", "sha256"}`` of an input file (hashed here unless the reader already did)."""
    return {"path": path, "sha256": sha256 if sha256 is not None else sha256_file(path)}


def existing_inputs(cluster_config: str, dataset: str | None) -> dict:
    """Hashes of the files an infeasible run was given (it stopped before loading them all)."""
    inputs = {"cluster_config": file_ref(cluster_config)} if os.path.isfile(cluster_config) else {}
    if dataset and os.path.isfile(dataset):
        inputs["dataset"] = file_ref(dataset)
    return inputs
