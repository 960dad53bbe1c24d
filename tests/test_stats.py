"""Exact percentiles of compact samples (tpsim/stats.py describe_samples) equal the in-memory definitions
(describe, describe_weighted) whatever path they take: one sort, or histogram narrowing."""

from __future__ import annotations

from array import array
from contextlib import contextmanager
from itertools import accumulate

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tpsim.stats as stats
from tpsim.stats import StepGaps, Values, describe, describe_samples, describe_weighted

INTS = st.one_of(st.integers(0, 50), st.integers(0, 10**9), st.integers(-10**12, 10**12))


@settings(max_examples=300, deadline=None)
@given(st.lists(INTS, min_size=1, max_size=400), st.sampled_from([1, 2, 7, 100, 1 << 20]), st.integers(0, 400))
def test_unweighted_samples_match_describe(values, limit, split):
    old = stats.SORT_LIMIT
    stats.SORT_LIMIT = limit  # 1: every level narrows by histogram; 1 << 20: one sort
    try:
        a = array("q", values)
        assert describe_samples([Values(a)]) == describe(values)
        assert describe_samples([Values(a[:split]), Values(a[split:])]) == describe(values)
    finally:
        stats.SORT_LIMIT = old


@contextmanager
def _sort_limit(limit: int):
    """describe_samples sorts at most ``limit`` entries at once (1: every level narrows by histogram)."""
    old = stats.SORT_LIMIT
    stats.SORT_LIMIT = limit
    try:
        yield
    finally:
        stats.SORT_LIMIT = old


def _gap_counts(ends, weights) -> dict:
    """The weighted step durations as an in-memory {value: weight} (describe_weighted's input)."""
    counts: dict = {}
    for i in range(1, len(ends)):
        if weights[i]:
            counts[ends[i] - ends[i - 1]] = counts.get(ends[i] - ends[i - 1], 0) + weights[i]
    return counts


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 4)), min_size=2, max_size=300),
       st.lists(st.integers(0, 10**6), max_size=6), st.sampled_from([1, 3, 50, 1 << 20]))
def test_step_gaps_match_describe_weighted(steps, pauses, limit):
    """Step durations weighted by the requests sampling in them, plus gaps across pauses: the ITL sample."""
    ends = array("q", sorted(t for t, _ in steps))
    weights = array("i", [w for _, w in steps])
    counts = _gap_counts(ends, weights)
    for g in pauses:
        counts[g] = counts.get(g, 0) + 1
    with _sort_limit(limit):
        got = describe_samples([StepGaps(ends, weights), Values(array("q", pauses))])
    assert got == describe_weighted(counts)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.one_of(st.integers(0, 40), st.integers(0, 10**12)), st.integers(0, 200)), min_size=2,
                max_size=300), st.sampled_from([1, 2, 5, 1 << 20]))
def test_wide_step_gaps_narrow_over_several_levels(steps, limit):
    """Gaps from a few ns to 1e12 ns, many equal: buckets of 2^26 and more, narrowed level after level, and
    the buckets small enough gathered in one pass, give the same percentiles as sorting everything."""
    ends = array("q", accumulate(g for g, _ in steps))
    weights = array("i", [w for _, w in steps])
    with _sort_limit(limit):
        got = describe_samples([StepGaps(ends, weights)])
    assert got == describe_weighted(_gap_counts(ends, weights))


def test_no_samples_is_none():
    assert describe_samples([Values(array("q"))]) is None
    assert describe_samples([StepGaps(array("q", [5, 9]), array("i", [0, 0]))]) is None


def test_known_total_is_used_for_the_mean():
    assert describe_samples([Values(array("q", [1, 2, 3]))], total=60)["mean"] == pytest.approx(20.0)


def test_many_equal_samples_are_not_sorted(monkeypatch):
    """Past SORT_LIMIT, a narrowing that reaches one value answers it without sorting the samples that hold
    it (3 M equal queuing delays used to be sorted whole: memory beyond the array itself)."""
    values = array("q", [5] * 50_000 + [1, 9])
    want = describe(list(values))
    monkeypatch.setattr(stats, "SORT_LIMIT", 1000)
    real_sorted = sorted

    def small_sorts_only(items, *args, **kwargs):
        out = real_sorted(items, *args, **kwargs)
        assert len(out) <= 1000, f"sorted {len(out)} samples"
        return out

    monkeypatch.setattr(stats, "sorted", small_sorts_only, raising=False)
    got = describe_samples([Values(values)])
    assert got == want and got["p50"] == 5
