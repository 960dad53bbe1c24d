"""Where model configs and hardware entries are found.

Names in a cluster config (``model_name: Qwen/Qwen3-32B``, ``hardware: H100``)
are looked up under a ``configs/`` folder.  The search order is:

1. ``$TPSIM_CONFIG_DIR`` if set,
2. ``./configs`` in the working directory (LLMServingSim resolves paths from
   the repository root, so its users keep working),
3. the ``configs/`` folder of the tpsim checkout this package was imported from.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[2]


def config_roots() -> list[Path]:
    roots: list[Path] = []
    env = os.environ.get("TPSIM_CONFIG_DIR")
    if env:
        roots.append(Path(env))
    roots.append(Path.cwd() / "configs")
    roots.append(PACKAGE_ROOT / "configs")
    seen: set[Path] = set()
    unique = []
    for root in roots:
        key = root.resolve() if root.exists() else root
        if key not in seen:
            seen.add(key)
            unique.append(root)
    return unique


def find(kind: str, relative: str) -> Path | None:
    """First existing ``<root>/<kind>/<relative>`` over :func:`config_roots`."""
    for root in config_roots():
        candidate = root / kind / relative
        if candidate.is_file():
            return candidate
    return None


def available(kind: str, suffix: str) -> list[str]:
    """Names available under ``<root>/<kind>`` (relative, without ``suffix``)."""
    names: set[str] = set()
    for root in config_roots():
        base = root / kind
        if base.is_dir():
            for path in base.rglob(f"*{suffix}"):
                names.add(path.relative_to(base).as_posix()[: -len(suffix)])
    return sorted(names)
