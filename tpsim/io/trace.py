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
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tpsim.errors import InputError
from tpsim.hashing import sha256_file

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


def _int_field(obj: dict, key: str, where: str, minimum: int) -> int:
    if key not in obj:
        raise InputError(f"{where}: missing field '{key}'")
    value = obj[key]
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"{where}: field '{key}' must be an integer, got {value!r}")
    if value < minimum:
        raise InputError(f"{where}: field '{key}' must be >= {minimum}, got {value}")
    return value


def _ids(obj: dict, key: str, expected: int, where: str) -> list | None:
    ids = obj.get(key)
    if ids is None:
        return None
    if not isinstance(ids, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in ids):
        raise InputError(f"{where}: field '{key}' must be a list of integer token ids")
    if len(ids) != expected:
        counted = key.replace("_tok_ids", "_toks")
        raise InputError(f"{where}: '{key}' has {len(ids)} ids but '{counted}' is {expected}; make them agree")
    return ids


def _request(obj: dict, rid: int, arrival: int, where: str, known: set) -> TraceRequest:
    unknown = sorted(set(obj) - known)
    if unknown:
        raise InputError(f"{where}: unknown field(s) {unknown}; expected {sorted(known)}")
    inp = _int_field(obj, "input_toks", where, 1)
    out = _int_field(obj, "output_toks", where, 1)
    in_ids = _ids(obj, "input_tok_ids", inp, where)
    out_ids = _ids(obj, "output_tok_ids", out, where) if in_ids is not None else None
    token_ids = None
    if in_ids is not None:
        token_ids = in_ids + out_ids if out_ids is not None else in_ids
    return TraceRequest(rid, inp, out, arrival, token_ids, inp if in_ids is not None else 0)


def load_trace(path: str | Path, num_reqs: int = 0) -> Trace:
    """Read and validate a JSONL trace; ``num_reqs > 0`` keeps only the first lines."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"dataset {path}: no such file; pass --dataset PATH to a JSONL trace")
    requests: list[TraceRequest] = []
    initial: list[TraceRequest] = []
    lines = 0
    try:
        handle = open(p, encoding="utf-8")
    except OSError as exc:
        raise InputError(f"dataset {path}: cannot read ({exc.strerror})") from None
    with handle:
        for lineno, line in enumerate(handle, 1):
            if not line.strip():
                continue
            if num_reqs and lines >= num_reqs:
                break
            lines += 1
            where = f"{path}:{lineno}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{where}: malformed JSON ({exc.msg} at column {exc.colno})") from None
            except UnicodeDecodeError:
                raise InputError(f"{where}: not UTF-8 text") from None
            if not isinstance(obj, dict):
                raise InputError(f"{where}: expected a JSON object per line")
            arrival = _int_field(obj, "arrival_time_ns", where, 0)
            if "sub_requests" in obj:
                unknown = sorted(set(obj) - _SESSION_KEYS)
                if unknown:
                    raise InputError(f"{where}: unknown field(s) {unknown} in an agentic session")
                subs = obj["sub_requests"]
                if not isinstance(subs, list) or not subs:
                    raise InputError(f"{where}: 'sub_requests' must be a non-empty list")
                session = str(obj.get("session_id", f"session_{lines - 1}"))
                prev = None
                for k, sub in enumerate(subs):
                    swhere = f"{where}: sub_requests[{k}]"
                    if not isinstance(sub, dict):
                        raise InputError(f"{swhere} must be an object")
                    req = _request(sub, len(requests), arrival if k == 0 else 0, swhere, _SUB_KEYS)
                    req.session = session
                    req.tool_duration_ns = _int_field(sub, "tool_duration_ns", swhere, 0) if "tool_duration_ns" in sub else 0
                    if prev is None:
                        initial.append(req)
                    else:
                        prev.next_in_session = req
                        req.released = False
                    requests.append(req)
                    prev = req
            else:
                req = _request(obj, len(requests), arrival, where, _FLAT_KEYS)
                requests.append(req)
                initial.append(req)
    if not requests:
        raise InputError(f"dataset {path}: no requests; the file is empty")
    initial.sort(key=lambda r: (r.arrival_ns, r.request_id))
    return Trace(
        path=str(path),
        sha256=sha256_file(p),
        requests=requests,
        initial=initial,
        num_lines=lines,
        has_token_ids=any(r.token_ids is not None for r in requests),
    )
