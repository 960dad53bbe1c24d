"""The scheduler's parts on their own: the lazy heap, the decode cohort's derived block counts, the
KV pool's counter methods.  (The whole scheduler is checked end to end in test_simulation.py.)"""

from __future__ import annotations

import heapq

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tpsim.sim.cohort import DecodeCohort
from tpsim.sim.kv_cache import BlockCounter, PrefixCachingPool
from tpsim.sim.lazy_heap import LazyHeap
from tpsim.sim.request import Request


class Item:
    def __init__(self):
        self.epoch = 0


# one operation: push item i with key k, invalidate item i, pop every live entry with key <= k, peek
ops = st.lists(st.tuples(st.sampled_from(["push", "stale", "pop", "peek"]), st.integers(0, 5), st.integers(0, 20)),
               max_size=60)


@settings(max_examples=300, deadline=None)
@given(ops)
def test_lazy_heap_behaves_like_a_heap_of_live_entries(program):
    heap = LazyHeap()
    items = [Item() for _ in range(6)]
    live: list[tuple] = []  # the model: a plain heap of entries still valid
    seq = 0
    for op, i, key in program:
        if op == "push":
            entry = (key, seq, items[i].epoch, items[i])
            seq += 1
            heap.push(entry)
            heapq.heappush(live, entry)
        elif op == "stale":
            items[i].epoch += 1
            live = [e for e in live if e[-1] is not items[i]]
            heapq.heapify(live)
        elif op == "pop":
            expect = []
            while live and live[0][0] <= key:
                expect.append(heapq.heappop(live))
            assert heap.pop_through(key) == expect
        else:
            assert heap.peek() == (live[0] if live else None)
        assert sorted(heap.live(), key=lambda e: e[:2]) == sorted(live, key=lambda e: e[:2])
    heap.clear()
    assert heap.peek() is None and heap.live() == []


def test_block_counter_take_is_all_or_nothing_and_tracks_the_peak():
    kv = BlockCounter(10, 16)
    assert kv.take(7) and kv.num_free == 3 and kv.peak_used == 7
    assert not kv.take(4) and kv.num_free == 3 and kv.peak_used == 7  # nothing taken
    r = Request(0, 0, 16, 1, None, 0)
    r.nblocks = 5
    kv.free(r)  # give back more than a request of the cohort would: the peak stays
    assert kv.num_free == 8 and kv.peak_used == 7
    assert kv.take(8) and kv.num_free == 0 and kv.peak_used == 10
    assert kv.take(0)
    kv.record_lookup(100, 32)
    kv.record_lookup(50, 0)
    assert (kv.queried_tokens, kv.hit_tokens) == (150, 32)


def test_prefix_caching_pool_refuses_blocks_without_ids():
    with pytest.raises(TypeError, match="allocate"):
        PrefixCachingPool(10, 16).take(1)


def decoder(rid: int, computed: int, generated: int, output: int) -> Request:
    r = Request(rid, 0, computed - generated + 1, output, None, 0)
    r.num_computed = computed
    r.num_tokens = computed + 1
    r.generated = generated
    r.admit_seq = rid
    return r


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([1, 4, 16]), st.integers(0, 50),
       st.lists(st.tuples(st.integers(1, 300), st.integers(1, 40)), min_size=1, max_size=12))
def test_cohort_counts_the_blocks_explicit_requests_would_need(bs, s0, reqs):
    """Counting pool: the blocks reserved step by step, and their sum over a run of steps, are the
    blocks the members would allocate one by one; materialised counters match explicit decoding."""
    cohort = DecodeCohort(bs, counting=True, track_ctx_max=True)
    members = [decoder(i, c, 1, 1 + g) for i, (c, g) in enumerate(reqs)]
    for r in members:
        cohort.join(r, s0)
    steps = min(r.output - r.generated for r in members)  # until the first finisher's last step
    assert cohort.next_finish_step() == s0 + steps - 1
    assert cohort.newest_seq() == len(members) - 1
    kv = BlockCounter(10**6, bs)
    per_step = []
    for t in range(s0, s0 + steps):
        before = kv.num_free
        assert cohort.reserve_blocks(t, kv)
        per_step.append(before - kv.num_free)
        # the step's token of each member sits at position num_computed: a new block when it is a multiple of bs
        assert per_step[-1] == sum(1 for r in members if (r.num_computed + t - s0) % bs == 0)
        assert cohort.ctx_max(t) == max(r.num_computed + t - s0 + 1 for r in members)
    assert cohort.blocks_for_steps(s0 - 1, steps) == sum(per_step)
    finished = cohort.finish_through(s0 + steps - 1)
    assert finished and all(r.generated == r.output for r in finished)
    end = s0 + steps
    for r, (c, _) in zip(members, reqs):
        if r in finished:
            continue
        cohort.materialize(r, end)
        assert (r.num_computed, r.generated, r.num_tokens) == (c + steps, 1 + steps, c + steps + 1)
        assert r.nblocks == -(-(c + steps) // bs)
        assert r.emissions == [s0, steps]
    assert cohort.n == 0 and cohort.off_sum == 0 and not any(cohort.bucket)
    assert cohort.next_finish_step() == float("inf") and cohort.newest_seq() == -1 and cohort.ctx_max(end) == 0
