"""Where a run's numbers come from: the code (git commit) and the exact input files (SHA-256)."""

from __future__ import annotations

import hashlib
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


#: what a run's numbers depend on beside its input files: the package and the catalogs it reads
CODE_PATTERNS = ("tpsim/**/*.py", "tpsim/**/*.yaml", "tpsim/**/*.mplstyle", "configs/hardware/**/*",
                 "configs/kernels/**/*", "configs/model/**/*")


def code_digest(root=PACKAGE_ROOT) -> str:
    """SHA-256 over the relative path and bytes of every file :data:`CODE_PATTERNS` match under ``root``
    (sorted; bytecode caches are not matched).  A workflow passes it to the jobs whose outputs must follow
    the code (the validation replays: Snakemake reruns a job whose parameters changed), since a commit
    alone misses uncommitted edits."""
    digest = hashlib.sha256()
    files = sorted({f for pattern in CODE_PATTERNS for f in root.glob(pattern) if f.is_file()})
    for f in files:
        digest.update(f.relative_to(root).as_posix().encode() + b"\0")
        digest.update(f.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()
