"""The analytical latency model and the ring all-reduce formula."""

import random

import pytest

from tpsim.config.engine import DEFAULTS, resolve_engine
from tpsim.config.hardware import load_hardware
from tpsim.config.model import load_model
from tpsim.perf.analytical import AnalyticalModel
from tpsim.perf.base import BatchShape
from tpsim.perf.collectives import ring_allreduce_ns


def test_ring_allreduce_formula_by_hand():
    # 2(n-1) * latency + 2(n-1)/n * S / bw ; bw in GB/s = bytes per ns
    assert ring_allreduce_ns(1_000_000, 2, 16, 20000) == pytest.approx(2 * 20000 + 1 * 1_000_000 / 16)
    assert ring_allreduce_ns(8_000_000, 4, 100, 1000) == pytest.approx(6 * 1000 + 1.5 * 8_000_000 / 100)
    assert ring_allreduce_ns(1_000_000, 1, 16, 20000) == 0.0


def test_llmservingsim_worked_example_order_of_magnitude():
    # reference note: one TP=2 all-reduce of a 128-token Qwen3-32B decode batch (1.31 MB)
    # over link_bw 16 / 20 us costs about 0.1 ms
    size = 128 * 5120 * 2
    t = ring_allreduce_ns(size, 2, 16, 20000)
    assert 0.08e6 < t < 0.13e6


def make(model="Qwen/Qwen3-32B", hw="RTXPRO6000", tp=2, link_bw=16.0, link_lat=20000.0, pp=1, **engine):
    m = load_model(model)
    h = load_hardware(hw)
    e = resolve_engine(dict(DEFAULTS, **engine), {}, m.torch_dtype, m.max_position_embeddings, None, "t")
    return AnalyticalModel(m, h, e, tp, pp, h.memory_bw_gbps, link_bw, link_lat)


def random_batch(rng):
    prefill = tuple((rng.randint(1, 2048), rng.randint(0, 8000)) for _ in range(rng.randint(0, 3)))
    n = rng.randint(0 if prefill else 1, 200)
    ctxs = [rng.randint(1, 9000) for _ in range(n)]
    return BatchShape(prefill, n, sum(ctxs), max(ctxs, default=0), n + len(prefill))


def test_explain_agrees_with_hot_paths():
    rng = random.Random(7)
    model = make()
    for _ in range(300):
        b = random_batch(rng)
        bd = model.explain(b)
        assert abs(bd.total_ns - model.iteration_ns(b)) <= 1
        if not b.prefill:
            assert abs(model.decode_iteration_ns(b.num_decode, b.decode_ctx_sum, b.decode_ctx_max) - bd.total_ns) <= 1
        comp = bd.by_component()
        assert sum(comp.values()) == pytest.approx(bd.total_ns, abs=1)


def test_two_allreduces_per_layer_only_with_tp():
    b = BatchShape((), 64, 64 * 1000, 1000, 64)
    bd1 = make(tp=1).explain(b)
    bd2 = make(tp=2).explain(b)
    assert [op.name for op in bd1.ops if op.component == "comm"] == []
    comm = [op for op in bd2.ops if op.component == "comm"]
    assert [op.name for op in comm] == ["all_reduce_attn", "all_reduce_mlp"]
    assert all(op.count == 64 for op in comm)  # once per decoder layer, 64 layers
    size = 64 * 5120 * 2
    assert comm[0].time_ns == pytest.approx(ring_allreduce_ns(size, 2, 16, 20000))


@pytest.mark.parametrize("tp", [2, 4, 8])
def test_higher_link_bw_is_never_slower(tp):
    rng = random.Random(tp)
    bws = [1, 4, 16, 64, 450, 900]
    for _ in range(100):
        b = random_batch(rng)
        times = [make(tp=tp, link_bw=bw).iteration_ns(b) for bw in bws]
        assert times == sorted(times, reverse=True)
        lats = [make(tp=tp, link_lat=lat).iteration_ns(b) for lat in (0, 1000, 20000)]
        assert lats == sorted(lats)


def test_tp_shrinks_per_gpu_compute():
    b = BatchShape(((2048, 0),), 0, 0, 0, 1)
    c = [make(tp=tp).explain(b).per_layer_compute_ns for tp in (1, 2, 4, 8)]
    assert c == sorted(c, reverse=True)
    assert c[0] / c[1] == pytest.approx(2, rel=0.15)  # compute-bound prefill: about half per doubling


def test_time_grows_with_work():
    model = make()
    short = model.iteration_ns(BatchShape(((512, 0),), 0, 0, 0, 1))
    assert short < model.iteration_ns(BatchShape(((2048, 0),), 0, 0, 0, 1))
    assert short < model.iteration_ns(BatchShape(((512, 8000),), 0, 0, 0, 1))
    assert model.decode_iteration_ns(32, 32 * 100, 100) < model.decode_iteration_ns(32, 32 * 8000, 8000)
    assert model.decode_iteration_ns(8, 8000, 1000) < model.decode_iteration_ns(128, 128000, 1000)


def test_small_decode_is_memory_bound_big_prefill_compute_bound():
    model = make(tp=1)
    dec = {op.name: op for op in model.explain(BatchShape((), 1, 100, 100, 1)).ops}
    pre = {op.name: op for op in model.explain(BatchShape(((2048, 0),), 0, 0, 0, 1)).ops}
    assert dec["gate_up_proj"].bound == "memory"
    assert pre["gate_up_proj"].bound == "compute"


def test_pipeline_parallel_adds_transfers_and_interval():
    b = BatchShape((), 64, 64000, 1000, 64)
    m1, m2 = make(tp=1), make(tp=1, pp=2)
    assert m2.iteration_ns(b) > m1.iteration_ns(b)  # same layers plus a stage-to-stage transfer
    assert m2.stage_interval_ns(b) < m2.iteration_ns(b)
