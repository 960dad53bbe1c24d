"""Sort a JSONL trace by arrival with bounded memory (``tpsim sort-trace``).

A run streams its trace and sorts it only within a window (:data:`tpsim.io.trace.REORDER_WINDOW`
requests); a longer trace out of order is sorted here first.  The external merge sort reads the
file once into sorted runs of at most ``chunk_bytes`` (temporary files beside the output), then
merges them: memory stays near ``chunk_bytes`` whatever the trace's length.  Equal arrivals keep
their file order, and blank lines are dropped, so the sorted file's line order -- which is what
request ids follow -- is the order a run would have handed the requests out in.

Only ``arrival_time_ns`` is read from each line (and checked as a run checks it); the rest of the
line is copied byte for byte and checked by the run that reads the sorted file.
"""

from __future__ import annotations

import heapq
import os
import tempfile

import msgspec

from tpsim.config.typed import MAX_INT64
from tpsim.errors import InputError
from tpsim.io.files import MAX_TRACE_LINE_BYTES, parse_json, show_path
from tpsim.io.trace import _int_field
from tpsim.io.writing import AtomicFiles, check_output_path

#: default bytes of trace lines sorted in memory at once
DEFAULT_CHUNK_BYTES = 256 << 20
_KEY_DIGITS = 20  # arrival_time_ns < 2**63 has at most 19 digits; line numbers below 10**20


class _Arrival(msgspec.Struct):
    arrival_time_ns: int


_decode_arrival = msgspec.json.Decoder(_Arrival).decode


def _arrival(raw: bytes, where: str) -> int:
    try:
        value = _decode_arrival(raw).arrival_time_ns
        if 0 <= value <= MAX_INT64:
            return value
    except (msgspec.DecodeError, ValueError):
        pass
    try:  # the strict path names the problem
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{where}: not UTF-8 text (byte 0x{raw[exc.start]:02x}); save the trace as UTF-8") from None
    obj = parse_json(text, where, one_line=True)
    if not isinstance(obj, dict):
        raise InputError(f"{where}: expected a JSON object per line")
    return _int_field(obj, "arrival_time_ns", where, 0)


def _key(arrival: int, lineno: int) -> bytes:
    return b"%0*d%0*d" % (_KEY_DIGITS, arrival, _KEY_DIGITS, lineno)


def sort_trace(source: str, output: str, chunk_bytes: int = DEFAULT_CHUNK_BYTES, progress=None) -> dict:
    """Write ``source``'s lines sorted by (arrival_time_ns, line) to ``output`` (atomically); returns counts."""
    shown = show_path(source)
    if not os.path.isfile(source):
        raise InputError(f"{shown}: no such file; give the JSONL trace to sort")
    check_output_path(output, "--output", [source])
    folder = os.path.dirname(os.path.abspath(output))
    os.makedirs(folder, exist_ok=True)
    runs: list = []
    lines = moved = 0
    try:
        with open(source, "rb") as handle:
            chunk: list[bytes] = []
            size = 0
            last = -1
            for lineno, raw in enumerate(iter(lambda: handle.readline(MAX_TRACE_LINE_BYTES + 1), b""), 1):
                if len(raw) > MAX_TRACE_LINE_BYTES:
                    raise InputError(f"{shown}:{lineno}: line longer than {MAX_TRACE_LINE_BYTES:,} bytes; "
                                     "one request per line")
                if not raw.strip():
                    continue
                arrival = _arrival(raw, f"{shown}:{lineno}")
                lines += 1
                moved += arrival < last
                last = max(last, arrival)
                chunk.append(_key(arrival, lineno) + raw.rstrip(b"\r\n") + b"\n")
                size += len(raw) + 2 * _KEY_DIGITS
                if size >= chunk_bytes:
                    runs.append(_write_run(chunk, folder))
                    chunk, size = [], 0
                    if progress is not None:
                        progress(f"sorted {lines:,} lines into {len(runs)} run(s)")
            if chunk or not runs:
                runs.append(_write_run(chunk, folder))
        if not lines:
            raise InputError(f"{shown}: no requests; the file is empty")
        with AtomicFiles() as out:
            stream = out.open(output, binary=True)
            for line in heapq.merge(*runs):
                stream.write(line[2 * _KEY_DIGITS:])
    except OSError as exc:  # a full disk, too many sorted runs open at once
        raise InputError(f"--output {show_path(output)}: cannot sort into it ({exc.strerror or exc}); check the "
                         "free space beside it, or give a larger --chunk-mb (fewer runs to merge)") from None
    finally:
        for run in runs:
            run.close()
    return {"lines": lines, "out_of_order": moved, "runs": len(runs)}


def _write_run(chunk: list[bytes], folder: str):
    """One sorted run in a temporary file beside the output (deleted when closed), rewound for the merge."""
    chunk.sort()
    run = tempfile.TemporaryFile("w+b", dir=folder)
    run.writelines(chunk)
    run.seek(0)
    return run
