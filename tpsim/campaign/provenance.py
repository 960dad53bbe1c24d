"""What a campaign run records about where it came from, beyond tpsim's own summary: whether the
checkout had uncommitted changes, the SHA-256 of each input (hashed once per process), and the
files behind the latency model a run's ``--perf-model`` may choose (kernel tables, profile bundles),
so that changed tables rerun the runs that use them."""

from __future__ import annotations

import functools
import hashlib
import subprocess
from pathlib import Path

from tpsim.config import catalog
from tpsim.config.catalog import PACKAGE_ROOT
from tpsim.hashing import sha256_file

#: --perf-model values that may read a GPU's kernel tables / a model's measured profile bundle
USES_TABLES = ("kernels", "auto")
USES_BUNDLES = ("profile", "auto")


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
    """SHA-256 of a file's content, or of a folder's files (their relative paths and contents, in
    sorted order), hashed once per process (Snakemake asks once per run)."""
    p = Path(path)
    if not p.is_dir():
        return sha256_file(p)
    h = hashlib.sha256()
    for f in sorted(q for q in p.rglob("*") if q.is_file()):
        h.update(f.relative_to(p).as_posix().encode("utf-8") + b"\0" + sha256_file(f).encode("ascii") + b"\n")
    return h.hexdigest()


def latency_inputs(perf_model: str, hardware: str, model: str) -> dict[str, str]:
    """The folders a run's latency model may read, by name: the GPU's kernel tables
    (``configs/kernels/<GPU>/``, for ``kernels`` and ``auto``) and the model's measured profile
    bundles on that GPU (``profiles/<GPU>/<model>/``, for ``profile`` and ``auto``), where they
    exist.  Each is the folder tpsim's own search finds first."""
    found = {}
    if perf_model in USES_TABLES:
        tables = catalog.find("kernels", f"{hardware}/provenance.json")
        if tables is not None:
            found["kernel_tables"] = str(tables.parent)
    if perf_model in USES_BUNDLES and not model.endswith(".json"):
        for root in catalog.profile_roots():
            for base in (root, root / "perf"):
                if (base / hardware / model).is_dir():
                    found["profile_bundles"] = str(base / hardware / model)
                    return found
    return found
