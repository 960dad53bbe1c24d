"""Property-based fuzzing of ``tpsim run``'s inputs: cluster configs, traces, model configs, flags.

Each example mutates a valid input (a value replaced by a hostile one, raw bytes spliced in) and
asserts the contract of DEVELOPERS.md: exit 0 with complete outputs, or exit 2 with one
``tpsim: error:`` line and no outputs; inputs never modified.  Runs in-process, so an uncaught
exception fails the example; the budget keeps the whole file to a few tens of seconds.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
from pathlib import Path

from hostile import GOOD_TRACE, assert_contract, cluster_doc, model_doc, run_inprocess, write_inputs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

#: a fixed, derandomised budget in the test command; TPSIM_FUZZ_EXAMPLES=5000 for a long random hunt
_EXAMPLES = int(os.environ.get("TPSIM_FUZZ_EXAMPLES", "0"))
FUZZ = settings(max_examples=_EXAMPLES or 120, deadline=None, suppress_health_check=list(HealthCheck),
                derandomize=not _EXAMPLES)

#: values that break naive parsers: huge and tiny numbers, NaN/Inf, wrong types, hostile text
HOSTILE = st.one_of(
    st.integers(min_value=-(2 ** 70), max_value=2 ** 70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, 1, 2 ** 31, 2 ** 63, 10 ** 30, 1e-300, 1e308, True, False, None, "", "0", "false",
                     "NaN", "a" * 3000, "../../etc/passwd", "x\ty", "\x00", "é", [], {}, [1], {"a": 1}]),
    st.text(max_size=20),
    st.lists(st.integers(), max_size=3),
)


def _paths(doc, prefix=()):
    """Every (path, value) in a JSON document."""
    yield prefix, doc
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _paths(v, prefix + (i,))


@st.composite
def mutated(draw, doc: dict):
    """``doc`` with one to three values replaced, keys added or removed."""
    doc = json.loads(json.dumps(doc))
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p, _ in _paths(doc) if p]
        path = draw(st.sampled_from(paths))
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
        if action == "replace":
            parent[path[-1]] = copy.deepcopy(draw(HOSTILE))  # never mutate the strategy's own literals
        elif action == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=12))] = copy.deepcopy(draw(HOSTILE))
        if not paths:
            break
    return doc


@st.composite
def spliced(draw, text: str) -> bytes:
    """Raw bytes spliced into a valid file: truncation, junk, invalid UTF-8."""
    raw = text.encode()
    at = draw(st.integers(0, len(raw)))
    junk = draw(st.sampled_from([b"", b"\xff\xfe", b"{", b"]]]", b"NaN", b"1e999", b"\x00", b'"', b"\n\n"]))
    cut = draw(st.integers(0, 20))
    return raw[:at] + junk + raw[at + cut:]


def _run(cluster, trace=GOOD_TRACE, model=None, flags=()) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = write_inputs(tmp / "in", cluster, trace, model)
        out = tmp / "out" / "r.csv"
        inputs = {p: p.read_bytes() for p in paths.values()}
        code, _, err = run_inprocess(["run", "--cluster-config", str(paths["cluster"]), "--dataset",
                                      str(paths["trace"]), "--output", str(out), "--log-interval", "0", *flags])
        return assert_contract(code, err, [out, out.with_suffix(".summary.json")], inputs)


@FUZZ
@given(mutated(cluster_doc()))
def test_fuzz_cluster_config(doc):
    _run(doc)


@FUZZ
@given(spliced(json.dumps(cluster_doc(), indent=1)))
def test_fuzz_cluster_config_bytes(raw):
    _run(raw)


TRACE_LINES = [
    {"input_toks": 20, "output_toks": 5, "arrival_time_ns": 0},
    {"input_toks": 4, "output_toks": 2, "arrival_time_ns": 1000, "input_tok_ids": [1, 2, 3, 4],
     "output_tok_ids": [5, 6]},
    {"session_id": "s", "arrival_time_ns": 10, "sub_requests": [{"input_toks": 3, "output_toks": 2,
                                                                  "tool_duration_ns": 5}, {"input_toks": 2,
                                                                                           "output_toks": 1}]},
]


@FUZZ
@given(st.lists(st.one_of(*(mutated(line) for line in TRACE_LINES), st.sampled_from(TRACE_LINES)),
                min_size=1, max_size=4))
def test_fuzz_trace(lines):
    _run(cluster_doc(), "".join(json.dumps(line) + "\n" for line in lines))


@FUZZ
@given(spliced("".join(json.dumps(line) + "\n" for line in TRACE_LINES)))
def test_fuzz_trace_bytes(raw):
    _run(cluster_doc(), raw)


@FUZZ
@given(mutated(model_doc()))
def test_fuzz_model_config(doc):
    _run(cluster_doc(), GOOD_TRACE, doc)


FLAGS = ["--block-size", "--max-num-seqs", "--max-num-batched-tokens", "--long-prefill-token-threshold",
         "--npu-memory-utilization", "--num-reqs", "--seed", "--log-interval", "--max-sim-time", "--dtype",
         "--kv-cache-dtype", "--request-routing-policy", "--perf-model", "--run-id"]
FLAG_VALUES = st.one_of(st.sampled_from(["0", "-1", "1", "nan", "inf", "-inf", "1e-12", "1e400", "9" * 400, "",
                                         "fp8", "auto", "RAND", "x", "0.5", "2147483648"]),
                        st.integers(-10, 10 ** 12).map(str), st.floats().map(repr))


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(FLAGS), FLAG_VALUES), max_size=3))
def test_fuzz_flags(pairs):
    _run(cluster_doc(), GOOD_TRACE, None, [x for pair in pairs for x in pair])
