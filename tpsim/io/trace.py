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

Parsing: a flat request line is decoded by msgspec straight into typed fields (C speed, token ids
included); any line it does not take as-is (a session, an integral float such as ``12.0``, a huge
token id, a bad value) is parsed again by the strict standard-library path, which either accepts
it or raises the one-line error naming the field.  The fast path accepts only lines the strict path
accepts, with the same result, so the errors and the accepted language are the strict path's.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import msgspec

from tpsim.config import typed
from tpsim.config.typed import MAX_INT32, MAX_INT64
from tpsim.errors import InputError
from tpsim.io.files import MAX_TRACE_LINE_BYTES, parse_json, show_path

_FLAT_KEYS = {"input_toks", "output_toks", "arrival_time_ns", "input_tok_ids", "output_tok_ids"}
_SUB_KEYS = {"input_toks", "output_toks", "tool_duration_ns", "input_tok_ids", "output_tok_ids"}
_SESSION_KEYS = {"session_id", "arrival_time_ns", "sub_requests"}


@dataclass(slots=True)
class TraceRequest:
    request_id: int
    input_toks: int
    output_toks: int
    arrival_ns: int  # for a session follow-up: None until released (0 here, see session fields)
    token_ids: list | None  # input ids followed by output ids, when the trace has them
    num_input_ids: int
    session: str | None = None
    next_in_session: "TraceRequest | None" = None
    tool_duration_ns: int = 0
    released: bool = True  # session follow-ups start unreleased


@dataclass
class Trace:
    path: str
    sha256: str
    requests: list[TraceRequest]  # every request, by id
    initial: list[TraceRequest]  # requests released at load time, sorted by (arrival, id)
    num_lines: int
    has_token_ids: bool


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


def _session(obj: dict, arrival: int, where: str, requests: list, initial: list, lines: int) -> None:
    """An agentic session: sub-request k+1 is released ``tool_duration_ns`` after k finishes."""
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
    prev = None
    for k, sub in enumerate(subs):
        swhere = f"{where}: sub_requests[{k}]"
        if not isinstance(sub, dict):
            raise InputError(f"{swhere} must be an object")
        req = _request(sub, len(requests), arrival if k == 0 else 0, swhere, _SUB_KEYS)
        req.session = session
        req.tool_duration_ns = _int_field(sub, "tool_duration_ns", swhere, 0, MAX_INT64) if "tool_duration_ns" in sub else 0
        if prev is None:
            initial.append(req)
        else:
            prev.next_in_session = req
            req.released = False
        requests.append(req)
        prev = req


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
    return TraceRequest(rid, inp, out, line.arrival_time_ns, in_ids + out_ids if out_ids is not None else in_ids, inp)


def _past_horizon(arrival: int, max_arrival_ns: int, where: str):
    raise InputError(f"{where}: arrival_time_ns {arrival:,} is past the simulated horizon ({max_arrival_ns:,} ns); "
                     "raise --max-sim-time if the trace really is that long")


def load_trace(path: str | Path, num_reqs: int = 0, max_arrival_ns: int = MAX_INT64) -> Trace:
    """Read and validate a JSONL trace; ``num_reqs > 0`` keeps only the first lines.

    ``max_arrival_ns`` is the simulated horizon: a later arrival is an error naming its line.
    """
    p = Path(path)
    shown = show_path(str(path))
    try:
        if not p.is_file():
            raise InputError(f"dataset {shown}: no such file; pass --dataset PATH to a JSONL trace")
        handle = open(p, "rb")
    except OSError as exc:
        raise InputError(f"dataset {shown}: cannot read ({exc.strerror or exc}); pass --dataset PATH to a JSONL trace") from None
    requests: list[TraceRequest] = []
    initial: list[TraceRequest] = []
    lines = 0
    digest = hashlib.sha256()  # the whole file, read once
    with handle:
        for lineno, raw in enumerate(iter(lambda: handle.readline(MAX_TRACE_LINE_BYTES + 1), b""), 1):
            digest.update(raw)
            if len(raw) > MAX_TRACE_LINE_BYTES:
                raise InputError(f"{shown}:{lineno}: line longer than {MAX_TRACE_LINE_BYTES:,} bytes; "
                                 "one request per line")
            if num_reqs and lines >= num_reqs:
                if raw.strip():
                    for chunk in iter(lambda: handle.read(1 << 20), b""):  # hash the rest unread
                        digest.update(chunk)
                    break
                continue
            if b'"sub_requests"' not in raw:
                req = _fast_request(raw, len(requests))
                if req is not None:
                    if req.arrival_ns > max_arrival_ns:
                        _past_horizon(req.arrival_ns, max_arrival_ns, f"{shown}:{lineno}")
                    lines += 1
                    requests.append(req)
                    initial.append(req)
                    continue
            if not raw.strip():
                continue
            where = f"{shown}:{lineno}"
            lines += 1
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
                _session(obj, arrival, where, requests, initial, lines)
            else:
                req = _request(obj, len(requests), arrival, where, _FLAT_KEYS)
                requests.append(req)
                initial.append(req)
    if not requests:
        raise InputError(f"dataset {path}: no requests; the file is empty")
    initial.sort(key=lambda r: (r.arrival_ns, r.request_id))
    return Trace(
        path=str(path),
        sha256=digest.hexdigest(),
        requests=requests,
        initial=initial,
        num_lines=lines,
        has_token_ids=any(r.token_ids is not None for r in requests),
    )
