"""A generated trace as JSONL: its text, the atomic streamed file, and the statistics ``tpsim trace`` prints."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from tpsim.errors import InputError
from tpsim.tracegen.spec import NS_PER_S

_compact = json.JSONEncoder(separators=(",", ":")).encode


def dumps(requests: Iterable[dict]) -> str:
    """The JSONL text of ``requests`` (compact, one request per line, trailing newline)."""
    return "".join(_compact(r) + "\n" for r in requests)


def write_jsonl(requests: Iterable[dict], path: str | os.PathLike) -> int:
    """Write ``requests`` to ``path`` as they come (a temporary file renamed at the end: no partial
    file, whatever fails); return bytes written.

    Creates the parent directory when missing.  Problems become :class:`InputError` naming ``--output``.
    """
    from tpsim.io.writing import AtomicFiles, check_output_path

    p = Path(path)
    if p.is_dir():
        raise InputError(f"--output {path} is a directory; give a file path such as {p / 'trace.jsonl'}")
    check_output_path(str(p), "--output")
    nbytes = 0
    try:
        with AtomicFiles() as out:
            stream = out.open(p, binary=True)
            batch: list[str] = []
            for r in requests:
                batch.append(_compact(r))
                if len(batch) >= 4096:  # one write per few thousand lines
                    nbytes += stream.write(("\n".join(batch) + "\n").encode("utf-8"))
                    batch.clear()
            if batch:
                nbytes += stream.write(("\n".join(batch) + "\n").encode("utf-8"))
    except OSError as exc:
        raise InputError(f"--output {path}: cannot write ({exc.strerror or exc}); "
                         "choose a writable path") from None
    return nbytes


class TraceStats:
    """Count, arrival span and mean lengths, gathered while the requests stream past (:meth:`observe`)."""

    def __init__(self) -> None:
        self.requests = 0
        self.first_arrival_ns: int | None = None
        self.last_arrival_ns = 0
        self.input_toks = 0
        self.output_toks = 0

    def observe(self, requests: Iterable[dict]) -> Iterator[dict]:
        """Pass ``requests`` through, counting them."""
        for r in requests:
            self.add(r)
            yield r

    def add(self, r: dict) -> None:
        if self.first_arrival_ns is None:
            self.first_arrival_ns = r["arrival_time_ns"]
        self.requests += 1
        self.last_arrival_ns = r["arrival_time_ns"]
        self.input_toks += r["input_toks"]
        self.output_toks += r["output_toks"]

    def summary(self) -> dict:
        n, first, last = self.requests, self.first_arrival_ns or 0, self.last_arrival_ns
        return {
            "requests": n,
            "first_arrival_s": first / NS_PER_S,
            "last_arrival_s": last / NS_PER_S,
            "span_s": (last - first) / NS_PER_S,
            "mean_input_toks": self.input_toks / n if n else 0.0,
            "mean_output_toks": self.output_toks / n if n else 0.0,
        }


def summarize(requests: Iterable[dict]) -> dict:
    """Count, arrival span (s) and mean lengths of a generated trace."""
    stats = TraceStats()
    for r in requests:
        stats.add(r)
    return stats.summary()
