"""The run path's value records are msgspec Structs (cheap to define at import, DEVELOPERS.md): they keep the
dataclass contract the code relies on: built by position or keyword, equal and hashed by value, immutable
where frozen, printed with their fields, mutable defaults fresh per instance."""

from __future__ import annotations

import copy
import pickle

import msgspec
import pytest
from conftest import run_subprocess

from tpsim.config.hardware import load_hardware
from tpsim.config.model import load_model
from tpsim.config.parallel import ParallelLayout
from tpsim.io.summary import RunSummary
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


def test_parsed_configs_are_frozen_values():
    moe = load_model("Qwen/Qwen3-30B-A3B")
    assert moe.moe is not None and moe.source.endswith("Qwen3-30B-A3B.json") and len(moe.sha256) == 64
    smaller = msgspec.structs.replace(moe, num_layers=2)
    assert (smaller.num_layers, moe.num_layers, smaller.moe) == (2, 48, moe.moe) and smaller != moe
    assert msgspec.structs.replace(smaller, num_layers=48) == moe
    assert hash(msgspec.structs.replace(smaller, num_layers=48)) == hash(moe)
    assert pickle.loads(pickle.dumps(moe)) == moe and repr(moe).startswith("ModelSpec(name='Qwen/Qwen3-30B-A3B', ")
    hw = load_hardware("H100")
    assert hw.perf.max_graph_batch == 512 and hw.source.endswith("H100.yaml")  # a default, and the path added
    for record, name in ((moe, "num_layers"), (moe.moe, "top_k"), (hw, "memory_gib"), (hw.perf, "num_sms")):
        with pytest.raises(AttributeError):
            setattr(record, name, 0)


def test_summaries_get_fresh_defaults_and_hand_out_copies():
    one, two = RunSummary("ok", "0", {"seed": 1}), RunSummary("ok", "0", {"seed": 1})
    one.warnings.append("w")
    assert two.warnings == [] and one != two
    doc = two.to_dict()
    doc["provenance"]["seed"] = 2  # the dict is the summary's copy, as dataclasses.asdict made it
    assert two.provenance == {"seed": 1} and RunSummary.from_dict(two.to_dict()) == two


def test_the_run_path_defines_only_the_cli_dataclasses():
    """Each dataclass costs its import about 0.7 ms (one exec per generated method); the run settings stay
    dataclasses because the command line is generated from their fields' metadata."""
    probe = ("import dataclasses\n"
             "made = []\n"
             "real = dataclasses._process_class\n"
             "def spy(cls, *args):\n"
             "    made.append(cls.__qualname__)\n"
             "    return real(cls, *args)\n"
             "dataclasses._process_class = spy\n"
             "import tpsim.api, tpsim.commands.run, tpsim.sim.engine, tpsim.perf.kernels, tpsim.io.trace\n"
             "import tpsim.report\n"
             "print(' '.join(sorted(made)))\n")
    proc = run_subprocess(["-c", probe])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["EngineOptions", "LLMServingSimFlags", "RunConfig"]
