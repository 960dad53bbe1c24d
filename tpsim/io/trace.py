"""LLMServingSim JSONL traces: one request (or one agentic session) per line.

Flat request::

    {"input_toks": 812, "output_toks": 230, "arrival_time_ns": 1250000,
     "input_tok_ids": [...], "output_tok_ids": [...]}     # ids optional

Agentic session (sub-request k+1 is released when k finishes plus its tool time)::

    {"session_id": "s0", "arrival_time_ns": 0,
     "sub_requests": [{"input_toks": .., "output_toks": .., "tool_duration_ns": ..}, ...]}

Request ids are assigned in file order (a session reserves one id per
sub-request); requests are then ordered by arrival.  Every problem is reported
with the file and line number.

Streaming: :class:`TraceReader` reads a trace as the simulation needs it, so memory does not grow
with its length.  Requests come out in (arrival, id) order through a reorder window of
:data:`REORDER_WINDOW` requests, fewer where their token ids pass :data:`REORDER_WINDOW_IDS`: a
trace out of order by less than the window (any trace shorter than it) is sorted exactly; a request
that would arrive before one already handed out is an error naming its line and the fix
(``tpsim sort-trace``).  The first window is read, and so checked, before the simulation starts;
later lines are checked as they are read, and an error there still ends the run with one line and
no output.

Parsing: a flat request line is decoded by msgspec straight into typed fields (C speed, token ids
included); any line it does not take as-is (a session, an integral float such as ``12.0``, a huge
token id, a bad value) is parsed again by the strict standard-library path, which either accepts
it or raises the one-line error naming the field.  The fast path accepts only lines the strict path
accepts, with the same result, so the errors and the accepted language are the strict path's.
"""

from __future__ import annotations

import hashlib
import heapq
from pathlib import Path

import msgspec

from tpsim.config import typed
from tpsim.config.typed import MAX_INT32, MAX_INT64
from tpsim.errors import InputError
from tpsim.io.files import MAX_TRACE_LINE_BYTES, parse_json, show_path

_FLAT_KEYS = {"input_toks", "output_toks", "arrival_time_ns", "input_tok_ids", "output_tok_ids"}
_SUB_KEYS = {"input_toks", "output_toks", "tool_duration_ns", "input_tok_ids", "output_tok_ids"}
_SESSION_KEYS = {"session_id", "arrival_time_ns", "sub_requests"}


class TraceRequest(msgspec.Struct):
    request_id: int
    input_toks: int
    output_toks: int
    arrival_ns: int  # for a session follow-up: None until released (0 here, see session fields)
    token_ids: list | None  # input ids followed by output ids, when the trace has them
    num_input_ids: int
    session: str | None = None
    next_in_session: TraceRequest | None = None
    tool_duration_ns: int = 0
    released: bool = True  # session follow-ups start unreleased


def _int_field(obj: dict, key: str, where: str, minimum: int, maximum: int = MAX_INT64) -> int:
    if key not in obj:
        raise InputError(f"{where}: missing field '{key}'")
    return typed.integer(obj[key], f"{where}: field '{key}'", minimum, maximum, integral_float=True)


def _ids(obj: dict, key: str, expected: int, where: str) -> list | None:
    ids = obj.get(key)
    if ids is None:
        return None
    if not isinstance(ids, list) or not set(map(type, ids)) <= {int}:  # bool is not int here
        raise InputError(f"{where}: field '{key}' must be a list of integer token ids")
    if len(ids) != expected:
        counted = key.replace("_tok_ids", "_toks")
        raise InputError(f"{where}: '{key}' has {len(ids)} ids but '{counted}' is {expected}; make them agree")
    return ids


def _session(obj: dict, arrival: int, where: str, first_id: int, lines: int) -> tuple[TraceRequest, int]:
    """An agentic session: sub-request k+1 is released ``tool_duration_ns`` after k finishes.
    Returns its first request (the others chained from it) and how many requests it holds."""
    unknown = sorted(set(obj) - _SESSION_KEYS)
    if unknown:
        raise InputError(f"{where}: unknown field(s) {typed.show(unknown)} in an agentic session")
    subs = obj["sub_requests"]
    if not isinstance(subs, list) or not subs:
        raise InputError(f"{where}: 'sub_requests' must be a non-empty list")
    sid = obj.get("session_id", f"session_{lines - 1}")
    if not isinstance(sid, (str, int, float)) or isinstance(sid, bool):
        raise InputError(f"{where}: 'session_id' must be a string or a number, got {typed.show(sid)}")
    session = typed.show(sid) if isinstance(sid, int) and sid.bit_length() > 64 else str(sid)
    head = prev = None
    for k, sub in enumerate(subs):
        swhere = f"{where}: sub_requests[{k}]"
        if not isinstance(sub, dict):
            raise InputError(f"{swhere} must be an object")
        req = _request(sub, first_id + k, arrival if k == 0 else 0, swhere, _SUB_KEYS)
        req.session = session
        req.tool_duration_ns = (_int_field(sub, "tool_duration_ns", swhere, 0, MAX_INT64)
                                if "tool_duration_ns" in sub else 0)
        if prev is None:
            head = req
        else:
            prev.next_in_session = req
            req.released = False
        prev = req
    return head, len(subs)


def _request(obj: dict, rid: int, arrival: int, where: str, known: set) -> TraceRequest:
    unknown = sorted(set(obj) - known)
    if unknown:
        raise InputError(f"{where}: unknown field(s) {typed.show(unknown)}; expected {sorted(known)}")
    inp = _int_field(obj, "input_toks", where, 1, MAX_INT32)
    out = _int_field(obj, "output_toks", where, 1, MAX_INT32)
    in_ids = _ids(obj, "input_tok_ids", inp, where)
    out_ids = _ids(obj, "output_tok_ids", out, where) if in_ids is not None else None
    token_ids = None
    if in_ids is not None:
        token_ids = in_ids + out_ids if out_ids is not None else in_ids
    return TraceRequest(rid, inp, out, arrival, token_ids, inp if in_ids is not None else 0)


class _FlatLine(msgspec.Struct, forbid_unknown_fields=True):
    """A flat request line as msgspec decodes it (ints are JSON integers, never floats or booleans)."""

    input_toks: int
    output_toks: int
    arrival_time_ns: int
    input_tok_ids: list[int] | None = None
    output_tok_ids: list[int] | None = None


_decode_flat = msgspec.json.Decoder(_FlatLine).decode


def _fast_request(raw: bytes, rid: int) -> TraceRequest | None:
    """The request on a valid flat line, or None: the strict path then decides (and explains)."""
    try:
        line = _decode_flat(raw)
    except (msgspec.DecodeError, ValueError):
        return None
    inp, out = line.input_toks, line.output_toks
    if not (1 <= inp <= MAX_INT32 and 1 <= out <= MAX_INT32 and 0 <= line.arrival_time_ns <= MAX_INT64):
        return None
    in_ids, out_ids = line.input_tok_ids, line.output_tok_ids
    if in_ids is None:
        return TraceRequest(rid, inp, out, line.arrival_time_ns, None, 0)
    if len(in_ids) != inp or (out_ids is not None and len(out_ids) != out):
        return None
    if out_ids is not None:
        in_ids.extend(out_ids)  # the decoded list, ours: extended in place, the input ids not copied
    return TraceRequest(rid, inp, out, line.arrival_time_ns, in_ids, inp)


def _past_horizon(arrival: int, max_arrival_ns: int, where: str):
    raise InputError(f"{where}: arrival_time_ns {arrival:,} is past the simulated horizon ({max_arrival_ns:,} ns); "
                     "raise --max-sim-time if the trace really is that long")


def _parse_line(raw: bytes, where: str, first_id: int, lines: int, max_arrival_ns: int) -> tuple[TraceRequest, int]:
    """The request (or session) on one non-blank line: its first request and how many requests it holds."""
    if b'"sub_requests"' not in raw:
        req = _fast_request(raw, first_id)
        if req is not None:
            if req.arrival_ns > max_arrival_ns:
                _past_horizon(req.arrival_ns, max_arrival_ns, where)
            return req, 1
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{where}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at column {exc.start + 1}); "
                         "save the trace as UTF-8") from None
    obj = parse_json(line, where, one_line=True)
    if not isinstance(obj, dict):
        raise InputError(f"{where}: expected a JSON object per line")
    arrival = _int_field(obj, "arrival_time_ns", where, 0)
    if arrival > max_arrival_ns:
        _past_horizon(arrival, max_arrival_ns, where)
    if "sub_requests" in obj:
        return _session(obj, arrival, where, first_id, lines)
    return _request(obj, first_id, arrival, where, _FLAT_KEYS), 1


#: requests (lines) a trace may be out of arrival order by: fewer are sorted exactly while streaming
REORDER_WINDOW = 100_000
#: token ids the reorder window may hold (about 36 bytes each in memory) before it hands a request out
REORDER_WINDOW_IDS = 8_000_000


class TraceFile(msgspec.Struct, frozen=True):
    """What one pass over a trace's bytes tells before it is parsed (:func:`scan_trace`)."""

    path: str
    sha256: str
    size_bytes: int
    lines: int  # newline characters, an upper bound on its requests' lines (progress output)
    may_have_token_ids: bool  # some line may carry token ids (exact when False)


#: read buffer of a trace: lines of thousands of token ids span many of the default 8 KiB reads
_READ_BUFFER = 1 << 20


def _open(path: str | Path, shown: str):
    p = Path(path)
    try:
        if not p.is_file():
            raise InputError(f"dataset {shown}: no such file; pass --dataset PATH to a JSONL trace")
        return open(p, "rb", buffering=_READ_BUFFER)
    except OSError as exc:
        raise InputError(f"dataset {shown}: cannot read ({exc.strerror or exc}); "
                         "pass --dataset PATH to a JSONL trace") from None


def scan_trace(path: str | Path) -> TraceFile:
    """One pass over the file in 1 MiB chunks: its SHA-256, its newline count, whether token ids may be
    in it (the key's text, or a JSON escape that could spell it), and whether it has any content."""
    shown = show_path(str(path))
    digest = hashlib.sha256()
    size = lines = 0
    ids = content = False
    tail = b""
    with _open(path, shown) as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
            size += len(chunk)
            lines += chunk.count(b"\n")
            if not ids:
                window = tail + chunk  # a key split across two chunks is still seen
                ids = b"_tok_ids" in window or b"\\u" in window
            content = content or not chunk.isspace()
            tail = chunk[-16:]
    if not content:
        raise InputError(f"dataset {path}: no requests; the file is empty")
    return TraceFile(str(path), digest.hexdigest(), size, lines, ids)


class TraceReader:
    """The requests of a trace in (arrival, id) order, read and checked as they are taken (see the module
    docstring).  Iterate it once; session follow-ups hang off their first request (``next_in_session``).

    ``requests`` counts every request read so far (a session's sub-requests included), ``lines`` the
    request lines, ``has_token_ids`` whether any had token ids; all final once the iteration ends.
    """

    def __init__(self, file: TraceFile, num_reqs: int = 0, max_arrival_ns: int = MAX_INT64):
        self.file = file
        self.num_reqs = num_reqs
        self.max_arrival_ns = max_arrival_ns
        self.requests = 0
        self.lines = 0
        self.has_token_ids = False
        self._shown = show_path(file.path)
        self._handle = _open(file.path, self._shown)
        self._lineno = 0
        self._window: list[tuple[int, int, TraceRequest, int]] = []  # heap by (arrival, id); its ids
        self._window_ids = 0
        self._handed_out = -1  # arrival of the last request handed out
        self._eof = False

    def fill(self) -> None:
        """Read lines until the reorder window is full or the file ends (done before the run starts, so
        the first window's errors come before any output)."""
        window = self._window
        while not self._eof and len(window) < REORDER_WINDOW and self._window_ids < REORDER_WINDOW_IDS:
            self._read_one()

    def _window_reach(self) -> str:
        """What bounds the reorder window now: its request count, or the token ids its requests hold."""
        if len(self._window) + 1 < REORDER_WINDOW:  # refilled below its line count: the ids held it back
            return f"{len(self._window) + 1:,} requests here, held to {REORDER_WINDOW_IDS:,} token ids"
        return f"{REORDER_WINDOW:,} lines"

    def _read_one(self) -> None:
        handle = self._handle
        while True:
            raw = handle.readline(MAX_TRACE_LINE_BYTES + 1)
            if not raw or (self.num_reqs and self.lines >= self.num_reqs):
                self._eof = True
                handle.close()
                return
            self._lineno += 1
            if len(raw) > MAX_TRACE_LINE_BYTES:
                raise InputError(f"{self._shown}:{self._lineno}: line longer than {MAX_TRACE_LINE_BYTES:,} bytes; "
                                 "one request per line")
            if not raw.isspace():  # a blank line (ASCII whitespace only) is skipped
                break
        self.lines += 1
        where = f"{self._shown}:{self._lineno}"
        head, count = _parse_line(raw, where, self.requests, self.lines, self.max_arrival_ns)
        self.requests += count
        if head.arrival_ns < self._handed_out:
            raise InputError(f"{where}: arrival_time_ns {head.arrival_ns:,} is before that of a request already "
                             f"started ({self._handed_out:,} ns): a trace is streamed and may be out of arrival order "
                             f"by less than its reorder window ({self._window_reach()}); sort it with tpsim sort-trace "
                             f"{self._shown} --output SORTED.jsonl")
        n_ids = 0
        req = head
        while req is not None:
            if req.token_ids is not None:
                n_ids += len(req.token_ids)
            req = req.next_in_session
        if n_ids:
            self.has_token_ids = True
            self._window_ids += n_ids
        heapq.heappush(self._window, (head.arrival_ns, head.request_id, head, n_ids))

    @property
    def exhausted(self) -> bool:
        """Every line has been read (the window may still hold requests)."""
        return self._eof

    @property
    def started(self) -> bool:
        """A request has been handed out."""
        return self._handed_out >= 0

    def __iter__(self):
        return self

    def __next__(self) -> TraceRequest:
        self.fill()
        if not self._window:
            raise StopIteration
        arrival, _, head, n_ids = heapq.heappop(self._window)
        self._window_ids -= n_ids
        self._handed_out = arrival
        return head

    def close(self) -> None:
        if not self._handle.closed:
            self._handle.close()


class Trace(msgspec.Struct):
    """A whole trace in memory (tools and tests; a run streams it with :class:`TraceReader`)."""

    path: str
    sha256: str
    requests: list[TraceRequest]  # every request, by id
    initial: list[TraceRequest]  # requests released at load time, sorted by (arrival, id)
    num_lines: int
    has_token_ids: bool


def load_trace(path: str | Path, num_reqs: int = 0, max_arrival_ns: int = MAX_INT64) -> Trace:
    """Read and validate a whole JSONL trace; ``num_reqs > 0`` keeps only the first lines.

    ``max_arrival_ns`` is the simulated horizon: a later arrival is an error naming its line.
    """
    reader = TraceReader(scan_trace(path), num_reqs, max_arrival_ns)
    initial = list(reader)
    requests = []
    for head in initial:
        req = head
        while req is not None:
            requests.append(req)
            req = req.next_in_session
    requests.sort(key=lambda r: r.request_id)
    return Trace(str(path), reader.file.sha256, requests, initial, reader.lines, reader.has_token_ids)
