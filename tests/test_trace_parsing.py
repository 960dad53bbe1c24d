"""The trace reader's two paths agree: msgspec's fast path takes only lines the strict path accepts, with the
same request, so errors and the accepted language stay the strict path's (tpsim/io/trace.py)."""

from __future__ import annotations

import hashlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tpsim.errors import InputError
from tpsim.io import trace
from tpsim.io.trace import _FLAT_KEYS, _fast_request, _request, load_trace

_INT_LIKE = st.one_of(
    st.integers(-5, 40),
    st.integers(min_value=2**31 - 2, max_value=2**31 + 2),
    st.integers(min_value=2**63 - 2, max_value=2**64 + 2),
    st.sampled_from([0.0, 1.0, 2.5, 3.0, True, False, None, "3", 10**30]),
)
_IDS = st.one_of(st.none(), st.lists(st.one_of(st.integers(0, 2**20), st.integers(2**64, 2**70), st.booleans(),
                                               st.just(1.0)), max_size=8))


@st.composite
def flat_lines(draw) -> dict:
    obj = {}
    for key in ("input_toks", "output_toks", "arrival_time_ns"):
        if draw(st.integers(0, 20)):  # mostly present
            obj[key] = draw(_INT_LIKE)
    for key in ("input_tok_ids", "output_tok_ids"):
        if draw(st.booleans()):
            obj[key] = draw(_IDS)
    if draw(st.integers(0, 15)) == 0:
        obj["prompt"] = "x"
    return obj


def _strict(raw: bytes):
    obj = json.loads(raw)
    try:
        req = _request(obj, 0, trace._int_field(obj, "arrival_time_ns", "t", 0), "t", _FLAT_KEYS)
    except InputError:
        return None
    return req


@settings(max_examples=400, deadline=None)
@given(flat_lines())
def test_fast_path_accepts_only_what_the_strict_path_accepts(obj):
    raw = (json.dumps(obj) + "\n").encode()
    fast = _fast_request(raw, 0)
    strict = _strict(raw)
    if fast is not None:
        assert strict is not None, f"fast path accepted a line the strict path refuses: {raw!r}"
        assert fast == strict


def test_fast_path_takes_the_common_lines():
    """Plain integer lines (with or without ids) never fall back to the slow path."""
    assert _fast_request(b'{"input_toks": 2, "output_toks": 1, "arrival_time_ns": 5}\n', 7) is not None
    req = _fast_request(b'{"input_toks": 2, "output_toks": 1, "arrival_time_ns": 5, "input_tok_ids": [4, 5], '
                        b'"output_tok_ids": [6]}', 3)
    assert (req.request_id, req.token_ids, req.num_input_ids) == (3, [4, 5, 6], 2)
    # what only the strict path takes (an integral float) or explains (a 5,000-digit id) falls back
    assert _fast_request(b'{"input_toks": 2.0, "output_toks": 1, "arrival_time_ns": 5}', 0) is None
    assert _fast_request(b'{"input_toks": 1, "output_toks": 1, "arrival_time_ns": 5, "input_tok_ids": [1%s]}'
                         % (b"0" * 5000), 0) is None


def test_fallback_lines_load_like_before(tmp_path):
    """A trace mixing fast, fallback and session lines: ids in file order, arrivals sorted, one hash of the file."""
    lines = ['{"input_toks": 3, "output_toks": 2, "arrival_time_ns": 50}',
             '{"input_toks": 2.0, "output_toks": 1, "arrival_time_ns": 10}',
             '',
             '{"session_id": "s", "arrival_time_ns": 0, "sub_requests": [{"input_toks": 1, "output_toks": 1}, '
             '{"input_toks": 1, "output_toks": 1, "tool_duration_ns": 5}]}',
             '{"input_toks": 1, "output_toks": 1, "arrival_time_ns": 20, "input_tok_ids": [' + str(2**70) + "]}"]
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(lines) + "\n")
    t = load_trace(path)
    assert [r.input_toks for r in t.requests] == [3, 2, 1, 1, 1]
    assert [r.request_id for r in t.initial] == [2, 1, 4, 0]  # by arrival: 0, 10, 20, 50
    assert t.requests[4].token_ids == [2**70]
    assert t.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    # --num-reqs stops reading but still hashes the whole file
    t2 = load_trace(path, num_reqs=2)
    assert len(t2.requests) == 2 and t2.num_lines == 2 and t2.sha256 == t.sha256


@pytest.mark.parametrize("line, message", [
    ('{"input_toks": 0, "output_toks": 1, "arrival_time_ns": 0}', "field 'input_toks'"),
    ('{"input_toks": 1, "output_toks": 1, "arrival_time_ns": 0, "input_tok_ids": [1, 2]}',
     "'input_tok_ids' has 2 ids but 'input_toks' is 1"),
    ('{"input_toks": 1, "output_toks": 1, "arrival_time_ns": 0, "extra": 1}', "unknown field(s)"),
])
def test_fast_path_refusals_keep_the_strict_errors(tmp_path, line, message):
    path = tmp_path / "t.jsonl"
    path.write_text('{"input_toks": 1, "output_toks": 1, "arrival_time_ns": 0}\n' + line + "\n")
    with pytest.raises(InputError) as err:
        load_trace(path)
    assert f"{path}:2: " in str(err.value) and message in str(err.value)
