"""What a run prints: banner, throughput lines and the final summary on stdout; warnings on stderr.

The command line prints through a :class:`Console`; the Python API is silent unless given one.
"""

from __future__ import annotations

import os
import sys
import time


def silence_stdout() -> None:
    """The reader of stdout went away (``| head``): send the rest to /dev/null and carry on."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def exit_process(code: int):
    """End a simulation command's process at once, without the interpreter's teardown.

    Tearing down frees every object of the run one by one (modules, the trace's token ids, the
    latency model's caches): about a tenth of a short run's wall time.  A simulation command has
    written and closed its outputs by now and registers no exit handlers, so only the console's
    buffers need flushing.  A closed stdout (``| head``) is not an error, as in :func:`silence_stdout`;
    another failure to flush exits 120, as the interpreter would.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BrokenPipeError:
            pass
        except (OSError, ValueError):
            code = code or 120
    os._exit(code)


class Console:
    """``level``: WARNING (default) and INFO show warnings, ERROR hides them, DEBUG adds per-step lines."""

    def __init__(self, level: str = "WARNING", out=None, err=None):
        self.warn_enabled = level in ("WARNING", "INFO", "DEBUG")
        self.debug_enabled = level == "DEBUG"
        self.out = sys.stdout if out is None else out
        self.err = sys.stderr if err is None else err

    @classmethod
    def silent(cls) -> Console:
        console = cls("ERROR")
        console.out = None
        return console

    def line(self, text: str) -> None:
        if self.out is None:
            return
        try:
            self.out.write(text + "\n")
        except BrokenPipeError:
            # stdout's reader went away (| head): the run still finishes and writes its outputs
            silence_stdout()
            self.out = None
        except OSError as exc:
            # stdout on a full or failing device: the outputs are the run's product, so it goes on without
            # stdout and says so once on stderr
            silence_stdout()
            self.out = None
            try:
                self.err.write(f"tpsim: warning: cannot write to standard output ({exc.strerror or exc}); the run "
                               "goes on without it and writes its outputs (the summary is in <output>.summary.json)\n")
            except OSError:
                pass

    def debug(self, text: str) -> None:
        self.err.write(f"tpsim: debug: {text}\n")

    def warn(self, text: str) -> None:
        if self.warn_enabled:
            self.err.write(f"tpsim: warning: {text}\n")

    def progress(self, total: int):
        """A callback ``(finished) -> None`` printing progress on a terminal's stderr at most every 30 s of wall
        time (None where stderr is not a terminal: logs and tests stay as they are).  ``total`` may be approximate
        (a streamed trace's line count)."""
        isatty = getattr(self.err, "isatty", None)
        if not self.warn_enabled or isatty is None or not isatty():
            return None
        start = last = time.monotonic()

        def report(finished: int) -> None:
            nonlocal last
            now = time.monotonic()
            if now - last < 30.0:
                return
            last = now
            share = f" ({100 * finished / total:.0f} %)" if total else ""
            elapsed = int(now - start)
            self.err.write(f"tpsim: {finished:,} of about {total:,} requests finished{share}, "
                           f"{elapsed // 60}:{elapsed % 60:02d} elapsed\n")
            self.err.flush()

        return report
