"""The run path's value records are msgspec Structs (cheap to define at import, DEVELOPERS.md): they keep the
dataclass contract the code relies on: built by position or keyword, equal and hashed by value, immutable
where frozen, printed with their fields, mutable defaults fresh per instance."""

from __future__ import annotations

import copy
import pickle

import pytest

from tpsim.config.parallel import ParallelLayout
from tpsim.io.trace import TraceRequest
from tpsim.kernels.roofline import Roofline
from tpsim.memory import MemoryPlan
from tpsim.perf.base import BatchShape, Breakdown, OpTime


def test_frozen_records_are_values():
    a = BatchShape(((3, 4),), 2, 5, 3, 2, 9)
    b = BatchShape(prefill=((3, 4),), num_decode=2, decode_ctx_sum=5, decode_ctx_max=3, num_sampled=2,
                   decode_ctx_sq_sum=9)
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a != BatchShape(((3, 4),), 2, 5, 3, 2, 10)
    assert repr(a) == ("BatchShape(prefill=((3, 4),), num_decode=2, decode_ctx_sum=5, decode_ctx_max=3, "
                       "num_sampled=2, decode_ctx_sq_sum=9)")
    assert pickle.loads(pickle.dumps(a)) == a and copy.deepcopy(a) == a
    for record, name in ((a, "num_decode"), (Roofline(1.0), "compute_ns"), (OpTime("x", "layer", 1.0, 2), "count"),
                         (MemoryPlan(1, 2, 3, 4, 5, 16, 7), "num_blocks"),
                         (ParallelLayout(0, 1, 1, 1, 0, None, (0,), 1, 0), "tp_size")):
        with pytest.raises(AttributeError):
            setattr(record, name, 0)
    assert OpTime("x", "layer", 1.5, 4).total_ns == 6.0  # defaults and properties as before


def test_mutable_records_get_fresh_defaults_and_keep_their_fields():
    one, two = Breakdown(), Breakdown()
    one.ops.append(OpTime("x", "layer", 1.0, 1))
    assert two.ops == [] and one != two
    req = TraceRequest(0, 3, 2, 10, None, 0)
    req.tool_duration_ns = 5
    assert (req.released, req.session, req.tool_duration_ns) == (True, None, 5)
    with pytest.raises(AttributeError):
        req.not_a_field = 1  # slots: a typo cannot add a field
