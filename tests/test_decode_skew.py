"""Decode attention over uneven contexts (tpsim/perf/decode_skew.py) in the kernel model: FlashAttention 2's
longest CTAs finish alone; uniform batches keep the table's time exactly."""

from __future__ import annotations

import csv
import io
import json
import math
from unittest import mock

import pytest
from conftest import REPO, run_subprocess, write_trace
from hypothesis import given, settings
from hypothesis import strategies as st

import tpsim.perf.kernels as kernels
from tpsim.build import standalone
from tpsim.perf.base import BatchShape
from tpsim.perf.decode_curve import DecodeCurve
from tpsim.perf.decode_skew import num_splits

QWEN_MOE = "Qwen/Qwen3-30B-A3B-Instruct-2507"
_MODELS: dict = {}


def model(name=QWEN_MOE, hw="RTXPRO6000"):
    key = (name, hw)
    if key not in _MODELS:
        _MODELS[key] = standalone(name, hw, tp=1, perf_model="kernels")[3]
    return _MODELS[key]


def step_ns(m, contexts: list[int]) -> int:
    n = len(contexts)
    return m.decode_iteration_ns(n, sum(contexts), max(contexts), sum(c * c for c in contexts))


def test_the_split_heuristic_is_flash_attention_2s():
    # flash_api.cpp's own example: batch x heads = 48 on 108 SMs -> 2 splits (efficiency 0.89 beats 3's 0.67);
    # the ported function is called with the real SM count and doubles it as vLLM's build does
    assert num_splits(48, 54, 64) == 2
    assert num_splits(512, 188, 32) == 1  # 128 sequences x 4 KV heads >= 0.8 x 376 resident CTAs: no split
    assert num_splits(300, 188, 32) > 1  # just under: split
    assert num_splits(4, 188, 1) == 1  # one KV block: nothing to split


def test_only_flash_attention_2_gets_the_term():
    assert model().skew is not None and model().needs_ctx_max
    assert model("meta-llama/Llama-3.1-8B", "A100").skew is not None  # FA2 on sm_80
    for hw in ("H100", "H200", "B200"):  # FA3 / FlashInfer schedule decode differently
        m = model("meta-llama/Llama-3.1-8B", hw)
        assert m.skew is None and not getattr(m, "needs_ctx_max", False)
        assert step_ns(m, [1024] * 127 + [4096]) == m.decode_iteration_ns(128, 127 * 1024 + 4096, 4096)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.integers(1, 400), st.integers(1, 20000), st.sampled_from(["RTXPRO6000", "A100"]))
def test_uniform_batches_keep_the_tables_time(n, ctx, hw):
    """A batch of one context length is priced exactly as without spread statistics (grid points stay exact)."""
    m = model(hw=hw)
    assert step_ns(m, [ctx] * n) == m.decode_iteration_ns(n, n * ctx, ctx)
    b = BatchShape((), n, n * ctx, ctx, n, n * ctx * ctx)
    assert m.attention_ns(b, True) == m.attention_ns(BatchShape((), n, n * ctx, ctx, n), True)


#: how much faster one more long sequence, or longer ones, may make a step: the spread term is the fluid
#: model's difference against the uniform batch, the uniform part is the table's, and where one more long
#: sequence makes the batch DRAM-bound to its end the term vanishes while the table grows a little less than
#: the fluid model did (worst seen on a grid of 2-300 decodes, contexts 256-3,000, 2-8x longer: 0.2 %)
SLACK = 0.005


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.integers(2, 300), st.integers(256, 3000), st.integers(2, 8), st.data())
def test_spread_never_speeds_a_step_and_is_bounded(n, short, factor, data):
    """More long sequences, or longer ones, never make a step faster (within SLACK); a skewed step is never
    cheaper than the uniform batch at its mean nor dearer than every sequence at the maximum (the larger of the
    two where the table itself is not monotone).  Contexts from 256: below, the table's L2-served replays are not
    monotone in the context, with or without spread."""
    m = model()
    k = data.draw(st.integers(1, n - 1))
    long = short * factor
    base = step_ns(m, [short] * (n - k) + [long] * k)
    assert step_ns(m, [short] * (n - k - 1) + [long] * (k + 1)) >= base * (1 - SLACK)
    assert step_ns(m, [short] * (n - k) + [long + 256] * k) >= base * (1 - SLACK)
    total = (n - k) * short + k * long
    mean_ns = m.decode_iteration_ns(n, total, -(-total // n))  # no spread statistics: the table at the mean
    assert base >= mean_ns
    assert base <= max(m.decode_iteration_ns(n, n * long, long), mean_ns)


def test_one_long_sequence_costs_its_tail():
    """128 decodes at 1,024 with one at 4,096 (LLMServingSim's measured RTX PRO 6000 bundle: +24 % of
    attention): the extra is the long CTAs' lone tail, tens of microseconds per layer, not zero."""
    m = model()
    skewed = BatchShape((), 128, 127 * 1024 + 4096, 4096, 128, 127 * 1024 ** 2 + 4096 ** 2)
    even = BatchShape((), 128, 127 * 1024 + 4096, 1048, 128)
    extra = m.attention_ns(skewed, True) - m.attention_ns(even, True)
    assert 20_000 < extra < 120_000
    assert {op.name: op.source for op in m.explain(skewed).ops}["attention"] == "modelled"


def test_fast_forward_and_the_reference_path_agree_and_conserve_tokens(tmp_path):
    """An uneven decode batch end to end (kernel model, RTX PRO 6000: the term applies): every output token
    is generated once, and fast-forwarded steps give the same bytes as the step-by-step reference path."""
    reqs = [{"input_toks": 64 + 977 * (i % 7), "output_toks": 20 + 13 * (i % 5), "arrival_time_ns": i * 2_000_000}
            for i in range(40)]
    trace = write_trace(tmp_path / "t.jsonl", reqs)
    outs = []
    cluster = str(REPO / "configs/cluster/rtxpro6000_llama8b_tp1.json")
    for flag in ("--fast-forward", "--no-fast-forward"):
        out = tmp_path / f"o{flag}.csv"
        p = run_subprocess(["-m", "tpsim", "run", "--cluster-config", cluster, "--dataset", str(trace),
                            "--output", str(out), "--log-interval", "0", flag])
        assert p.returncode == 0, p.stderr
        outs.append(out.read_text())
        summary = json.loads(out.with_suffix(".summary.json").read_text())
        assert summary["totals"]["output_tokens"] == sum(r["output_toks"] for r in reqs)
        rows = list(csv.DictReader(io.StringIO(outs[-1])))
        assert len(rows) == len(reqs)
    assert outs[0] == outs[1]


@pytest.mark.parametrize("hw", ["RTXPRO6000"])
def test_the_run_summary_states_where_the_term_applies(hw):
    desc = model(hw=hw).describe()
    assert desc["decode_skew"]["resident_ctas"] == 2 * 188
    assert model("meta-llama/Llama-3.1-8B", "H100").describe()["decode_skew"] is None


_COUNT = st.one_of(st.just(0.0), st.floats(-1.0, 3000.0, allow_nan=False))
_BYTES = st.one_of(st.just(0.0), st.floats(-1.0, 1e7, allow_nan=False))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_COUNT, _BYTES), min_size=3, max_size=3), st.sampled_from([1, 84, 188]),
       st.floats(1.0, 200.0), st.floats(100.0, 3000.0))
def test_the_fast_sharing_paths_are_the_general_ones_bit_for_bit(jobs, sms, per_sm, dram):
    """The decode path's two- and three-class sharing (no lists, no sort) and the cached uniform batch give
    exactly the general definition's floats: step times, and so every output, cannot move."""
    from tpsim.perf.decode_skew import DecodeSkew

    skew = DecodeSkew(4, 512.0, dram, per_sm, sms)
    (ca, wa), (cb, wb), (cc, wc) = jobs
    assert skew._pair(ca, wa, cb, wb) == together(skew, [(ca, wa), (cb, wb)])
    assert skew._triple(ca, wa, cb, wb, cc, wc) == together(skew, jobs)
    assert skew._pair(ca, wa, ca, wa) == together(skew, [(ca, wa), (ca, wa)])  # ties sort by count


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 400), st.floats(0.0, 200_000.0), st.floats(0.0, 1.0), st.sampled_from([1, 2, 5, 10, 64]))
def test_the_cached_uniform_batch_is_the_kernel_model_bit_for_bit(n, mean, share, splits):
    from tpsim.perf.decode_skew import DecodeSkew

    skew = DecodeSkew(4, 512.0, 1480.3, 22.02, 188)
    for _ in range(2):  # computed, then from the cache
        assert skew.uniform_kernel_ns(n, mean, splits) == skew.kernel_ns(n, 0.0, mean, mean, splits)
    # and the uneven batches, whose two- and three-class phases take the fast paths
    reference = _reference_kernel_ns(skew, n, share * n, mean / 3, mean, splits)
    assert skew.kernel_ns(n, share * n, mean / 3, mean, splits) == reference


def together(skew, jobs: list[tuple[float, float]]) -> float:
    """The sharing rule's general definition: CTAs started together, ``(count, bytes each)``, all finish under
    equal sharing; while ``k`` CTAs are resident each progresses at ``min(R, r x min(k, SMs)) / k`` bytes per ns
    (the simulator runs its two- and three-class cases, ``_pair`` and ``_triple``)."""
    jobs = sorted([(w, c) for c, w in jobs if c > 0.0 and w > 0.0])
    k = sum([c for _, c in jobs])
    t = x = 0.0
    for w, c in jobs:
        if k > 0.0:
            rate = skew.per_sm * (k if k < skew.sms else skew.sms)
            t += (w - x) * (k / (rate if rate < skew.dram else skew.dram))
        x = w
        k -= c
    return t


def _reference_kernel_ns(skew, n, n_long, short, long, splits):
    """kernel_ns as written before its fast paths: every phase through the general ``together``."""
    per = skew.kv_heads * splits
    total = n * per
    ws, wl = short * skew.head_bytes / splits, long * skew.head_bytes / splits
    cs, cl = (n - n_long) * per, n_long * per
    if total <= skew.slots:
        return together(skew, [(cs, ws), (cl, wl)])
    first = skew.slots / total
    s1, l1 = cs * first, cl * first
    sq, lq = cs - s1, cl - l1
    t1 = together(skew, [(s1, ws), (l1, ws)])
    if not lq:
        return t1 + together(skew, [(l1, wl - ws), (sq, ws)])
    without = together(skew, [(l1, wl - ws), (sq, ws)])
    with_late = together(skew, [(l1, wl - ws), (sq, ws), (lq, wl)])
    weight = lq if lq < 1.0 else 1.0
    return t1 + without + weight * (with_late - without)


def _reference_extra_ns(skew, n: int, ctx_sum: int, ctx_sq: int, ctx_max: int, splits: int) -> float:
    """extra_ns as written before its flat path: the batch as two classes, every phase through ``together``."""
    var_n2 = n * ctx_sq - ctx_sum * ctx_sum
    if n < 2 or var_n2 <= 0 or ctx_max * n <= ctx_sum:
        return 0.0
    mean = ctx_sum / n
    gap = ctx_max - mean
    var = var_n2 / (n * n)
    p = var / (var + gap * gap)
    n_long = p * n
    if n_long >= n:
        return 0.0
    short = (mean - p * ctx_max) / (1.0 - p)
    extra = (_reference_kernel_ns(skew, n, n_long, short, ctx_max, splits)
             - _reference_kernel_ns(skew, n, 0.0, mean, mean, splits))
    return extra if extra > 0.0 else 0.0


#: (KV heads, KV bytes per token and head, SMs, per-SM rate, DRAM rate): Llama-3.1-8B bf16 and fp8 on an RTX PRO
#: 6000 and an A100, a many-head model on a small GPU, one head on one SM (every CTA count below or above SMs)
_SKEWS = [(8, 512.0, 188, 22.02, 1480.3), (8, 256.0, 108, 19.5, 1555.0), (32, 256.0, 84, 30.0, 900.0),
          (4, 512.0, 1, 150.0, 100.0), (1, 1024.0, 188, 8.0, 3000.0)]


@st.composite
def _batches(draw):
    """A decode batch's spread statistics: up to four context lengths with their counts (a real batch), or
    free integers in the statistics' range (whatever a caller passes)."""
    n = draw(st.integers(2, 1024))
    if draw(st.booleans()):
        ctxs = draw(st.lists(st.integers(1, 131072), min_size=1, max_size=4))
        if draw(st.booleans()):  # contexts c and 2c: the long CTAs' remainder ties the short ones (ordered by count)
            ctxs = [-(-ctxs[0] // 2), 2 * -(-ctxs[0] // 2)]
        cuts = sorted(draw(st.lists(st.integers(0, n), min_size=len(ctxs) - 1, max_size=len(ctxs) - 1)))
        counts = [b - a for a, b in zip([0, *cuts], [*cuts, n])]
        return n, sum(c * x for c, x in zip(counts, ctxs)), sum(c * x * x for c, x in zip(counts, ctxs)), \
            max(x for c, x in zip(counts, ctxs) if c) if any(counts) else 1
    ctx_max = draw(st.integers(1, 131072))
    ctx_sum = draw(st.integers(n, n * ctx_max))
    lo, hi = ctx_sum * ctx_sum // n - 1, ctx_max * ctx_sum + 1  # past a real batch's bounds on either side
    return n, ctx_sum, draw(st.one_of(st.sampled_from([lo, lo + 1, lo + 2, hi - 1, hi]), st.integers(lo, hi))), ctx_max


@settings(max_examples=600, deadline=None)
@given(_batches(), st.integers(1, 128), st.sampled_from(_SKEWS))
def test_the_flat_decode_path_is_the_readable_model_bit_for_bit(batch, splits, config):
    """extra_ns (every decode step's term, written out flat) equals the model's readable definition exactly, for
    the drawn splits and on both sides of the one-wave boundary (the most splits whose CTAs fit one wave, one
    more); twice each, so the cached shape is checked as well as the freshly computed one."""
    from tpsim.perf.decode_skew import DecodeSkew

    kv_heads, head_bytes, sms, per_sm, dram = config
    skew = DecodeSkew(kv_heads, head_bytes, dram, per_sm, sms)
    n, ctx_sum, ctx_sq, ctx_max = batch
    edge = skew.slots // (n * kv_heads)
    for s in {splits, max(edge, 1), edge + 1}:
        expected = _reference_extra_ns(skew, n, ctx_sum, ctx_sq, ctx_max, s)
        for _ in range(2):
            assert skew.extra_ns(n, ctx_sum, ctx_sq, ctx_max, s) == expected


@settings(max_examples=100, deadline=None, derandomize=True)
@given(st.one_of(st.integers(2, 128), st.integers(1, 600)), st.integers(1, 40000), st.integers(0, 30000),
       st.integers(1, 12), st.booleans())
def test_fast_forwarded_decode_steps_are_the_step_by_step_ones(n, short, spread, steps, stats):
    """The fast-forward loop (a CUDA graph cohort's curve, KV floor and splits hoisted, the curve's bracket read
    inline; piecewise and eager above the graphs' 128 decodes; no spread statistics) gives exactly the step-by-step
    decode_iteration_ns times, stops at the bound, and its inline curve reads are the curve's floats."""
    m = model("meta-llama/Llama-3.1-8B")
    k = max(n // 3, 1)  # a third of the batch longer by ``spread``
    ctx_sum, ctx_max = n * short + k * spread, short + spread
    ctx_sq = (n - k) * short * short + k * ctx_max * ctx_max if stats else 0
    start = (n, ctx_sum, ctx_max, 1000)
    fast: list[int] = []
    curve, reads = m._curve_of(n), []  # the loop's inline reads of the curve's bracket: (log's kv, exp's argument)
    with mock.patch.object(kernels, "log", lambda x: reads.append([x]) or math.log(x)), \
            mock.patch.object(kernels, "exp", lambda x: reads[-1].append(x) or math.exp(x)):
        m.decode_steps(*start, steps, float("inf"), fast, ctx_sq)
    for kv, arg in reads:  # each the curve's own float (a fresh one searches for the bracket)
        assert math.exp(arg) == DecodeCurve(curve.nodes, curve.log_kv, n).time_ns(kv)
    assert reads or not (stats and spread and n <= 128 and steps >= 4 and short >= 1024)
    cut: list[int] = []
    m.decode_steps(*start, steps, fast[0], cut, ctx_sq)  # the first step already reaches the bound
    slow, t = [], 1000
    for _ in range(steps):
        ctx_sq += 2 * ctx_sum + n if stats else 0
        ctx_sum += n
        ctx_max += 1
        t += m.decode_iteration_ns(n, ctx_sum, ctx_max, ctx_sq)
        slow.append(t)
    assert fast == slow and cut == slow[:1]


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.integers(1, 128), st.floats(0.5, 300_000.0), st.lists(st.floats(-50.0, 400.0), min_size=1, max_size=40))
def test_the_decode_curves_bracket_is_its_search(d, start, steps):
    """A curve answers a query inside its last bracket without searching (the fast-forward loop reads the same
    bracket inline): the same floats as a fresh curve's search, along a cohort's drifting mean context, on grid
    nodes and beyond the grid too."""
    m = model("meta-llama/Llama-3.1-8B")
    curve = m._curve_of(d)
    kv = start
    for step in steps:
        kv = max(kv + step, 0.5)
        for x in (kv, float(round(kv))):
            assert curve.time_ns(x) == DecodeCurve(curve.nodes, curve.log_kv, d).time_ns(x)
