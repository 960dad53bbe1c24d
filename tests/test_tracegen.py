"""``tpsim trace`` / :mod:`tpsim.tracegen`: seeded synthetic JSONL traces."""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from tpsim.errors import InputError
from tpsim.tracegen import (
    NS_PER_S,
    TraceSpec,
    TraceStats,
    dumps,
    generate,
    iter_requests,
    summarize,
    truncated_lognormal_stats,
    write_jsonl,
)

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "workloads" / "example_trace.jsonl"
#: the command documented in workloads/README.md that made EXAMPLE
EXAMPLE_ARGS = ["--preset", "sharegpt", "--num-reqs", "100", "--rate", "4", "--seed", "0",
                "--prefix-groups", "4", "--prefix-len", "256"]


def gaps_s(reqs):
    t = [r["arrival_time_ns"] for r in reqs]
    return [(b - a) / NS_PER_S for a, b in zip(t, t[1:])]


def cv(xs):
    return statistics.pstdev(xs) / statistics.fmean(xs)


def run_cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "tpsim", "trace", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120, **kw)


# --- determinism ---------------------------------------------------------------
def test_same_seed_same_bytes_different_seed_different(tmp_path):
    spec = TraceSpec(num_reqs=50, preset="sharegpt", rate=5, seed=7, prefix_groups=3, prefix_len=64)
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    write_jsonl(generate(spec), a)
    write_jsonl(generate(TraceSpec(num_reqs=50, preset="sharegpt", rate=5, seed=7, prefix_groups=3,
                                   prefix_len=64)), b)
    assert a.read_bytes() == b.read_bytes()
    c = tmp_path / "c.jsonl"
    write_jsonl(generate(dataclasses.replace(spec, seed=8)), c)
    assert c.read_bytes() != a.read_bytes()


def test_streams_are_independent_and_prefix_stable():
    base = TraceSpec(num_reqs=300, preset="sharegpt", rate=3, seed=1)
    plain = generate(base)
    with_ids = generate(dataclasses.replace(base, token_ids=True))
    strip = [{k: r[k] for k in ("input_toks", "output_toks", "arrival_time_ns")} for r in with_ids]
    assert strip == plain  # turning ids on does not move arrivals or lengths
    assert generate(dataclasses.replace(base, num_reqs=120)) == plain[:120]


def test_file_format_compact_ordered_sorted():
    reqs = generate(TraceSpec(num_reqs=20, rate=2, token_ids=True, vocab_size=1000))
    text = dumps(reqs)
    lines = text.splitlines()
    assert len(lines) == 20 and text.endswith("\n")
    for line in lines:
        assert " " not in line
        obj = json.loads(line)
        assert list(obj) == ["input_toks", "output_toks", "arrival_time_ns", "input_tok_ids", "output_tok_ids"]
        assert all(isinstance(obj[k], int) for k in ("input_toks", "output_toks", "arrival_time_ns"))


# --- arrivals ------------------------------------------------------------------
def test_poisson_mean_gap_and_cv():
    reqs = generate(TraceSpec(num_reqs=20_000, rate=8.0, seed=3))
    t = [r["arrival_time_ns"] for r in reqs]
    assert t == sorted(t) and t[0] == 0
    g = gaps_s(reqs)
    assert statistics.fmean(g) == pytest.approx(1 / 8.0, rel=0.03)
    assert cv(g) == pytest.approx(1.0, rel=0.05)


@pytest.mark.parametrize("target", [0.5, 2.0, 4.0])
def test_gamma_mean_and_cv(target):
    reqs = generate(TraceSpec(num_reqs=20_000, rate=5.0, arrival="gamma", cv=target, seed=11))
    g = gaps_s(reqs)
    assert all(x >= 0 for x in g)
    assert statistics.fmean(g) == pytest.approx(0.2, rel=0.03 * max(1.0, target))
    assert cv(g) == pytest.approx(target, rel=0.08)


def test_gamma_defaults_to_poisson_cv():
    spec = TraceSpec(num_reqs=10, arrival="gamma")
    assert spec.cv == 1.0


def test_start_offset_and_first_gap():
    plain = generate(TraceSpec(num_reqs=50, rate=2, start_s=3.5))
    assert plain[0]["arrival_time_ns"] == 3_500_000_000
    gapped = generate(TraceSpec(num_reqs=50, rate=2, start_s=3.5, first_gap=True))
    assert gapped[0]["arrival_time_ns"] > 3_500_000_000


@pytest.mark.parametrize("kw", [{"rate": 0.0}, {"arrival": "burst", "rate": 9.0}])
def test_burst_all_at_start(kw):
    reqs = generate(TraceSpec(num_reqs=30, start_s=1.25, **kw))
    assert {r["arrival_time_ns"] for r in reqs} == {1_250_000_000}


def test_duration_bounds_and_count():
    reqs = generate(TraceSpec(duration_s=100.0, rate=50.0, start_s=2.0, seed=5))
    t = [r["arrival_time_ns"] for r in reqs]
    assert t[0] == 2 * NS_PER_S and t[-1] < 102 * NS_PER_S and t == sorted(t)
    assert len(reqs) == pytest.approx(5000, rel=0.05)


# --- lengths -------------------------------------------------------------------
def test_fixed_lengths_exact_and_defaults():
    reqs = generate(TraceSpec(num_reqs=100, input_len=333, output_len=44))
    assert {(r["input_toks"], r["output_toks"]) for r in reqs} == {(333, 44)}
    spec = TraceSpec(num_reqs=1)
    assert (spec.input_dist, spec.input_len, spec.output_dist, spec.output_len) == ("fixed", 128, "fixed", 512)


def test_uniform_within_bounds_and_covers_them():
    reqs = generate(TraceSpec(num_reqs=5000, input_dist="uniform", input_min=10, input_max=20,
                              output_dist="uniform", output_min=1, output_max=3))
    ins = [r["input_toks"] for r in reqs]
    outs = [r["output_toks"] for r in reqs]
    assert set(ins) == set(range(10, 21)) and set(outs) == {1, 2, 3}
    assert statistics.fmean(ins) == pytest.approx(15, rel=0.02)


def test_lognormal_median_and_mean():
    sigma, mean = 0.6, 1000.0
    reqs = generate(TraceSpec(num_reqs=40_000, input_dist="lognormal", input_len=mean, input_sigma=sigma,
                              output_dist="lognormal", output_len=200, output_sigma=0.3, seed=2))
    ins = [r["input_toks"] for r in reqs]
    assert statistics.fmean(ins) == pytest.approx(mean, rel=0.03)
    assert statistics.median(ins) == pytest.approx(mean * 2.718281828 ** (-sigma ** 2 / 2), rel=0.03)
    outs = [r["output_toks"] for r in reqs]
    assert statistics.fmean(outs) == pytest.approx(200, rel=0.03)
    assert min(ins) >= 1 and min(outs) >= 1


def test_lognormal_bounds_truncate_not_clamp():
    lo, hi = 800, 1500
    reqs = generate(TraceSpec(num_reqs=30_000, input_dist="lognormal", input_len=1000, input_sigma=0.5,
                              input_min=lo, input_max=hi, seed=4))
    ins = [r["input_toks"] for r in reqs]
    assert lo <= min(ins) and max(ins) <= hi
    # no pile-up at the bounds (a clamp would put ~30 % of draws on 800)
    assert ins.count(lo) < 0.01 * len(ins)
    median, mean = truncated_lognormal_stats(1000, 0.5, lo, hi)
    assert statistics.median(ins) == pytest.approx(median, rel=0.02)
    assert statistics.fmean(ins) == pytest.approx(mean, rel=0.02)


def test_max_total_shortens_output():
    reqs = generate(TraceSpec(num_reqs=500, input_dist="uniform", input_min=7000, input_max=12000,
                              output_len=8000))
    assert all(r["input_toks"] + r["output_toks"] <= 16384 for r in reqs)
    assert all(r["output_toks"] == min(8000, 16384 - r["input_toks"]) for r in reqs)
    assert {r["output_toks"] == 8000 for r in reqs} == {True, False}  # both cases occur


# --- ShareGPT preset -----------------------------------------------------------
# LLMServingSim 2.0 workloads/sharegpt-llama-3.1-8b-300-sps10.jsonl (see workloads/README.md)
PUBLISHED = {"input": (857, 732, 262, 3998), "output": (653, 632, 512, 1021)}


def test_sharegpt_preset_parameters_reproduce_published_stats():
    spec = TraceSpec(num_reqs=1, preset="sharegpt")
    for side in ("input", "output"):
        mean, median, _, _ = PUBLISHED[side]
        got_median, got_mean = truncated_lognormal_stats(
            getattr(spec, f"{side}_len"), getattr(spec, f"{side}_sigma"),
            getattr(spec, f"{side}_min"), getattr(spec, f"{side}_max"))
        assert got_median == pytest.approx(median, rel=0.005)
        assert got_mean == pytest.approx(mean, rel=0.005)
    assert spec.input_max + spec.output_max <= 16384


def test_sharegpt_preset_samples():
    reqs = generate(TraceSpec(num_reqs=50_000, preset="sharegpt", rate=10, seed=9))
    for side in ("input", "output"):
        xs = [r[f"{side}_toks"] for r in reqs]
        mean, median, lo, _ = PUBLISHED[side]
        assert statistics.fmean(xs) == pytest.approx(mean, rel=0.02)
        assert statistics.median(xs) == pytest.approx(median, rel=0.02)
        assert min(xs) >= (256 if side == "input" else 512)
    assert all(r["input_toks"] + r["output_toks"] <= 16384 for r in reqs)


def test_preset_values_can_be_overridden():
    spec = TraceSpec(num_reqs=1, preset="sharegpt", input_max=2048, output_dist="fixed", output_len=100)
    assert (spec.input_dist, spec.input_max, spec.input_min) == ("lognormal", 2048, 256)
    assert (spec.output_dist, spec.output_len, spec.output_min, spec.output_sigma) == ("fixed", 100, None, None)


# --- token ids and shared prefixes ---------------------------------------------
def test_token_id_lengths_match_counts():
    reqs = generate(TraceSpec(num_reqs=40, preset="sharegpt", token_ids=True, vocab_size=5000))
    for r in reqs:
        assert len(r["input_tok_ids"]) == r["input_toks"]
        assert len(r["output_tok_ids"]) == r["output_toks"]
        assert all(0 <= t < 5000 for t in r["input_tok_ids"] + r["output_tok_ids"])
    assert "input_tok_ids" not in generate(TraceSpec(num_reqs=3))[0]


def common_prefix(a, b):
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def test_prefix_groups_share_exactly_prefix_len():
    P, G = 200, 4
    reqs = generate(TraceSpec(num_reqs=60, prefix_groups=G, prefix_len=P, input_dist="uniform",
                              input_min=10, input_max=600, output_len=8, vocab_size=1 << 30, seed=6))
    assert all("input_tok_ids" in r for r in reqs)  # ids on automatically
    assert min(r["input_toks"] for r in reqs) == P + 1  # short draws raised to prefix + 1
    groups: dict[tuple, list] = {}
    for r in reqs:
        groups.setdefault(tuple(r["input_tok_ids"][:P]), []).append(r["input_tok_ids"])
    assert len(groups) == G
    members = list(groups.values())
    for ids in members:
        for a in ids:
            for b in ids:
                if a is not b:
                    assert common_prefix(a, b) == P
    for i in range(G):
        for j in range(i + 1, G):
            assert common_prefix(members[i][0], members[j][0]) < min(P, 16)


def test_prefix_groups_distinct_blocks_with_default_vocab():
    P = 256
    reqs = generate(TraceSpec(num_reqs=400, preset="sharegpt", prefix_groups=8, prefix_len=P, seed=0))
    firsts = {tuple(r["input_tok_ids"][:16]) for r in reqs}
    assert len(firsts) == 8
    # the unique part never repeats a whole 16-token block of another request
    blocks = [tuple(r["input_tok_ids"][P:P + 16]) for r in reqs]
    assert len(set(blocks)) == len(blocks)


# --- validation ----------------------------------------------------------------
BAD = [
    ({"num_reqs": 5, "rate": -1.0}, "--rate"),
    ({"num_reqs": 5, "rate": float("inf")}, "--rate"),
    ({"num_reqs": 0}, "--num-reqs"),
    ({}, "--num-reqs"),
    ({"num_reqs": 5, "duration_s": 10.0}, "--num-reqs"),
    ({"duration_s": 0.0}, "--duration-s"),
    ({"duration_s": 5.0, "arrival": "burst"}, "--duration-s"),
    ({"duration_s": 1e9, "rate": 1.0}, "--duration-s"),  # would be 1e9 requests
    ({"duration_s": 0.001, "rate": 0.001, "first_gap": True}, "--duration-s"),  # nothing arrives
    ({"num_reqs": 5, "arrival": "weibull"}, "--arrival"),
    ({"num_reqs": 5, "cv": 2.0}, "--cv"),
    ({"num_reqs": 5, "arrival": "gamma", "cv": 0.0}, "--cv"),
    ({"num_reqs": 5, "start_s": -1.0}, "--start-s"),
    ({"num_reqs": 5, "input_dist": "uniform", "input_min": 500, "input_max": 100}, "--input-min"),
    ({"num_reqs": 5, "output_dist": "uniform", "output_min": 0, "output_max": 100}, "--output-min"),
    ({"num_reqs": 5, "input_dist": "uniform", "input_min": 5}, "--input-max"),
    ({"num_reqs": 5, "input_dist": "zipf"}, "--input-dist"),
    ({"num_reqs": 5, "output_dist": "zipf"}, "--output-dist"),
    ({"num_reqs": 5, "input_len": 10.5}, "--input-len"),
    ({"num_reqs": 5, "input_len": 0}, "--input-len"),
    ({"num_reqs": 5, "input_min": 3}, "--input-min"),
    ({"num_reqs": 5, "output_sigma": 0.5}, "--output-sigma"),
    ({"num_reqs": 5, "input_dist": "lognormal"}, "--input-len"),
    ({"num_reqs": 5, "input_dist": "lognormal", "input_len": 100, "input_sigma": -1}, "--input-sigma"),
    ({"num_reqs": 5, "input_dist": "lognormal", "input_len": 10, "input_sigma": 0.1, "input_min": 5000},
     "--input-min"),
    ({"num_reqs": 5, "input_len": 16384}, "--input-len"),
    ({"num_reqs": 5, "input_dist": "uniform", "input_min": 1, "input_max": 20000}, "--input-max"),
    ({"num_reqs": 5, "input_len": 10000, "output_len": 10000}, "--max-total-toks"),
    ({"num_reqs": 5, "prefix_groups": 2, "prefix_len": 128}, "--prefix-len"),  # input fixed 128
    ({"num_reqs": 5, "prefix_groups": 2, "prefix_len": 4096, "preset": "sharegpt", "input_max": 4096},
     "--prefix-len"),
    ({"num_reqs": 5, "prefix_groups": 2}, "--prefix-len"),
    ({"num_reqs": 5, "prefix_len": 16}, "--prefix-groups"),
    ({"num_reqs": 5, "prefix_groups": -1}, "--prefix-groups"),
    ({"num_reqs": 5, "prefix_groups": 2, "prefix_len": 16, "token_ids": False}, "--no-token-ids"),
    ({"num_reqs": 5, "vocab_size": 1}, "--vocab-size"),
    ({"num_reqs": 5, "preset": "alpaca"}, "--preset"),
]


@pytest.mark.parametrize("kw,flag", BAD, ids=[f"{i}:{f}" for i, (_, f) in enumerate(BAD)])
def test_bad_inputs_name_the_flag(kw, flag):
    with pytest.raises(InputError) as exc:
        generate(TraceSpec(**kw))
    assert flag in str(exc.value)
    assert "\n" not in str(exc.value)


def test_spec_is_frozen():
    spec = TraceSpec(num_reqs=3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.rate = 2.0


# --- writing -------------------------------------------------------------------
def test_write_jsonl_creates_parent_and_replaces_atomically(tmp_path):
    out = tmp_path / "new" / "dir" / "t.jsonl"
    reqs = generate(TraceSpec(num_reqs=10, rate=1))
    n = write_jsonl(reqs, out)
    assert out.read_bytes() == dumps(reqs).encode() and n == out.stat().st_size
    write_jsonl(reqs[:3], out)
    assert len(out.read_text().splitlines()) == 3
    assert sorted(p.name for p in out.parent.iterdir()) == ["t.jsonl"]  # no temp files left
    assert out.stat().st_mode & 0o044  # readable by others as a normal file (umask permitting)


def test_streamed_write_equals_the_list_and_a_failure_leaves_nothing(tmp_path):
    """Generation streams (iter_requests -> write_jsonl, 4,096 lines a write): the same bytes as the list, and an
    error part-way (here a generator failing after 5,000 requests) leaves neither the file nor a temporary one."""
    spec = TraceSpec(num_reqs=5000, preset="sharegpt", rate=5, seed=3)
    out = tmp_path / "t.jsonl"
    stats = TraceStats()
    n = write_jsonl(stats.observe(iter_requests(spec)), out)
    assert out.read_bytes() == dumps(generate(spec)).encode() and n == out.stat().st_size
    assert stats.summary() == summarize(generate(spec))

    def failing():
        yield from iter_requests(spec)
        raise InputError("boom")

    with pytest.raises(InputError, match="boom"):
        write_jsonl(failing(), tmp_path / "u.jsonl")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.jsonl"]


def test_write_jsonl_to_directory_is_input_error(tmp_path):
    with pytest.raises(InputError, match="--output"):
        write_jsonl([{"input_toks": 1, "output_toks": 1, "arrival_time_ns": 0}], tmp_path)


def test_summarize():
    reqs = generate(TraceSpec(num_reqs=4, rate=0, start_s=2, input_len=10, output_len=20))
    s = summarize(reqs)
    assert s["requests"] == 4 and s["span_s"] == 0 and s["first_arrival_s"] == 2.0
    assert (s["mean_input_toks"], s["mean_output_toks"]) == (10, 20)


# --- CLI -----------------------------------------------------------------------
def test_cli_writes_trace_loadable_by_simulator(tmp_path):
    out = tmp_path / "sub" / "t.jsonl"
    res = run_cli(*EXAMPLE_ARGS[:-4], "--output", str(out), "--prefix-groups", "2", "--prefix-len", "64")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 1 and "100 requests" in lines[0] and str(out) in lines[0]
    assert res.stderr == ""
    from tpsim.io.trace import load_trace

    trace = load_trace(out)
    assert len(trace.requests) == 100 and trace.has_token_ids


def test_cli_same_bytes_across_processes(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    args = ["--num-reqs", "200", "--arrival", "gamma", "--cv", "3", "--rate", "20", "--input-dist", "uniform",
            "--input-min", "32", "--input-max", "512", "--prefix-groups", "3", "--prefix-len", "16"]
    env = dict(os.environ)
    assert run_cli(*args, "--output", str(a), env={**env, "PYTHONHASHSEED": "1"}).returncode == 0
    assert run_cli(*args, "--output", str(b), env={**env, "PYTHONHASHSEED": "2"}).returncode == 0
    assert a.read_bytes() == b.read_bytes()


@pytest.mark.parametrize("args,flag", [
    (["--num-reqs", "10", "--rate", "-2"], "--rate"),
    (["--num-reqs", "0"], "--num-reqs"),
    (["--num-reqs", "10", "--input-dist", "uniform", "--input-min", "9", "--input-max", "3"], "--input-min"),
    (["--num-reqs", "10", "--prefix-groups", "2", "--prefix-len", "500"], "--prefix-len"),
])
def test_cli_bad_flag_one_line_exit_2_no_file(tmp_path, args, flag):
    out = tmp_path / "never" / "t.jsonl"
    res = run_cli(*args, "--output", str(out))
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tpsim: error:") and flag in lines[0], res.stderr
    assert "Traceback" not in res.stderr and res.stdout == ""
    assert not out.exists() and not out.parent.exists()


# --- the committed example -----------------------------------------------------
def test_example_trace_is_reproducible_and_small(tmp_path):
    assert EXAMPLE.stat().st_size < 1_500_000
    out = tmp_path / "example.jsonl"
    res = run_cli(*EXAMPLE_ARGS, "--output", str(out))
    assert res.returncode == 0, res.stderr
    assert out.read_bytes() == EXAMPLE.read_bytes(), "regenerate with the command in workloads/README.md"
    readme = (REPO / "workloads" / "README.md").read_text()
    assert " ".join(EXAMPLE_ARGS) in readme
