"""Writing output files: where tpsim may write, and writing so readers never see a partial file.

* :func:`check_output_path` refuses, before any work is done, an output that is a folder, a
  device, pipe or socket (the temp-and-rename write would replace it), or one of the run's
  inputs, and one whose folder cannot be created or written.
* :class:`AtomicFiles` writes several files as one step: each to a temporary file beside its
  target, then all renamed; a failure (or an exception in the ``with`` block) leaves none of
  them, and no temporary file, behind.  A CSV therefore never appears without its summary.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile

from tpsim.errors import InputError
from tpsim.io.files import show_path


def check_output_path(path: str, flag: str, inputs=()) -> None:
    """Refuse an output tpsim must not write (see the module docstring); ``flag`` names it in errors."""
    shown = show_path(path)
    if path.endswith(("/", "\\")) or os.path.isdir(path):
        raise InputError(f"{flag} {shown}: expected a file path, got a folder")
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        st = None
    except OSError as exc:
        raise InputError(f"{flag} {shown}: cannot use it ({exc.strerror or exc}); choose another path") from None
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise InputError(f"{flag} {shown}: not a regular file (a device, pipe or socket); tpsim writes only "
                         "regular files: choose a file path, or leave the flag out to write nothing")
    for source in inputs:
        if source and st is not None and _same_file(path, source):
            raise InputError(f"{flag} {shown} is also an input of this run ({show_path(str(source))}); "
                             "choose another output path")
    folder = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(folder):
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder):
        raise InputError(f"{flag} {shown}: {show_path(folder)} is a file, so the output folder cannot be created")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"{flag} {shown}: {show_path(folder)} is not writable; choose another {flag}")


def _same_file(a, b) -> bool:
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return False


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class AtomicFiles:
    """Several output files written as one step (see the module docstring).

    ``open(path)`` returns a text stream on a temporary file beside ``path``; leaving the ``with``
    block normally renames every one into place, an exception removes them all::

        with AtomicFiles() as out:
            out.open("a.csv").write(...)
            out.open("a.summary.json").write(...)
    """

    def __init__(self):
        self._files: list[tuple[str, str, object]] = []  # (tmp, target, stream)

    def open(self, path, binary: bool = False):
        path = os.fspath(path)
        folder = os.path.dirname(path) or "."
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give a normal file's mode
        stream = os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8", newline="")
        self._files.append((tmp, path, stream))
        return stream

    def reserve(self, path, suffix: str = "") -> str:
        """A temporary path beside ``path`` for a tool that writes the file itself (DuckDB, matplotlib),
        renamed into place with the others.  It does not exist yet; ``suffix`` ends its name (matplotlib
        picks the format from it)."""
        path = os.fspath(path)
        folder = os.path.dirname(path) or "."
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp" + suffix)
        os.close(fd)
        os.unlink(tmp)  # the name is ours (random, in the target's folder); the tool creates the file
        self._files.append((tmp, path, None))
        return tmp

    def temp_of(self, path) -> str:
        """The temporary file standing for ``path`` until the commit (to read back what was written)."""
        path = os.fspath(path)
        return next(tmp for tmp, target, _ in self._files if target == path)

    def commit(self) -> None:
        for _, _, stream in self._files:
            if stream is not None:
                stream.close()
        for tmp, path, _ in self._files:
            os.replace(tmp, path)
        self._files = []

    def abort(self) -> None:
        for tmp, _, stream in self._files:
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        self._files = []

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            try:
                self.commit()
            except BaseException:
                self.abort()
                raise
        else:
            self.abort()
        return False


def atomic_write_files(files: list[tuple[str, str | bytes]]) -> None:
    """Write ``(path, text or bytes)`` pairs as one step."""
    with AtomicFiles() as out:
        for path, data in files:
            out.open(path, binary=isinstance(data, bytes)).write(data)


def atomic_write_text(path, text: str | bytes) -> None:
    atomic_write_files([(path, text)])


def json_text(obj, indent: int = 2) -> str:
    """JSON as tpsim writes it: indented, no NaN/Infinity, a final newline."""
    return json.dumps(obj, indent=indent, allow_nan=False) + "\n"


def atomic_write_json(path, obj, indent: int = 2) -> None:
    atomic_write_text(path, json_text(obj, indent))
