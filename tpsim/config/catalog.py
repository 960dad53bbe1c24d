"""Where model configs and hardware entries are found.

Names in a cluster config (``model_name: Qwen/Qwen3-32B``, ``hardware: H100``)
are looked up under a ``configs/`` folder.  The search order is:

1. ``$TPSIM_CONFIG_DIR`` if set,
2. ``./configs`` in the working directory (LLMServingSim resolves paths from
   the repository root, so its users keep working),
3. the ``configs/`` folder of the tpsim checkout this package was imported from
   (a clone, or an editable install),
4. the catalog shipped inside the installed package, ``tpsim/_configs/``: the
   build copies the repository's ``configs/`` there (``force-include`` in
   pyproject.toml), so ``pip install .`` works from any folder.

The first root holding the file wins, file by file: a user's folder may hold one
changed entry and still find the rest in the shipped catalog.

Measured profile bundles (``--perf-model profile``) are found the same way
under ``profiles/`` (:func:`profile_roots`), after any ``--profile-dir``; none
ship in the package.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from tpsim.errors import InputError

#: the folder holding the ``tpsim`` package: a checkout's root, or ``site-packages`` once installed
PACKAGE_ROOT = Path(__file__).resolve().parents[2]

#: the catalog copy a wheel ships.  Found from the module path rather than
#: ``importlib.resources``: importing that costs ~8 ms on a bare interpreter (as much as all of
#: ``tpsim run``'s own imports), and every reader needs a real file anyway (``gzip.open``, SHA-256,
#: the paths the run summary records); a wheel installed by pip is always unpacked on disk.
PACKAGED_CONFIGS = Path(__file__).resolve().parents[1] / "_configs"


def config_roots() -> list[Path]:
    return _roots("TPSIM_CONFIG_DIR", "configs", packaged=PACKAGED_CONFIGS)


def profile_roots() -> list[Path]:
    """``$TPSIM_PROFILE_DIR``, ``./profiles``, then the checkout's ``profiles/`` (bundle layout
    ``<hardware>/<org>/<model>/<variant>/tp<N>/``)."""
    return _roots("TPSIM_PROFILE_DIR", "profiles")


def _checkout_root() -> Path | None:
    """:data:`PACKAGE_ROOT` when it is a source checkout; ``None`` for ``site-packages``, whose
    ``configs/`` (if any) belongs to some other distribution."""
    return PACKAGE_ROOT if (PACKAGE_ROOT / "pyproject.toml").is_file() else None


def _roots(env_var: str, folder: str, packaged: Path | None = None) -> list[Path]:
    roots: list[Path] = []
    env = os.environ.get(env_var)
    if env:
        roots.append(Path(env))
    roots.append(Path.cwd() / folder)
    checkout = _checkout_root()
    if checkout is not None:
        roots.append(checkout / folder)
    if packaged is not None and packaged.is_dir():
        roots.append(packaged)
    seen: set[Path] = set()
    unique = []
    for root in roots:
        key = root.resolve() if root.exists() else root
        if key not in seen:
            seen.add(key)
            unique.append(root)
    return unique


#: a catalog name: path components of letters, digits and ._+- not starting with '.', so a name can
#: never climb out of its folder ('..') or be absolute
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+-]{0,127}(/[A-Za-z0-9_][A-Za-z0-9._+-]{0,127}){0,3}")


def check_name(kind: str, name: str) -> None:
    """Refuse a catalog name that could resolve outside ``configs/<kind>/`` (``../x``, ``/etc/x``)."""
    if not _NAME.fullmatch(name):
        shown = name if len(name) <= 80 and name.isprintable() else repr(name[:80]) + "..."
        raise InputError(f"{kind} name {shown!s} is not a catalog name (letters, digits, '._+-', "
                         f"'/' between parts, no '..'); give a name under configs/{kind}/"
                         + (" or a path to a .json file" if kind == "model" else ""))


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
