"""A run streams: the trace is read as the clock reaches it, rows leave as requests finish, and memory follows
the requests in flight (tpsim/io/trace.py TraceReader, tpsim/sim/arrivals.py, tpsim/sim/recorder.py)."""

from __future__ import annotations

import argparse
import gc
import json
import random

import pytest
from conftest import run_tpsim, write_cluster, write_trace
from test_simulation import mem_size_for_blocks  # a KV cache small enough to preempt

from tpsim.api import run
from tpsim.commands.run import add_run_arguments, config_from_args
from tpsim.config.run import RunConfig
from tpsim.errors import InputError
from tpsim.io import trace as trace_mod
from tpsim.io.results import ListSink
from tpsim.io.trace import TraceReader, load_trace, scan_trace
from tpsim.sim import waiting
from tpsim.sim.request import Request
from tpsim.sim.waiting import WaitingQueue

MODEL = "Qwen/Qwen3-0.6B"


def _trace(n: int, seed: int = 0, shuffle_within: int = 0) -> list[dict]:
    rng = random.Random(seed)
    t = 0
    reqs = []
    for _ in range(n):
        t += rng.randint(0, 3_000_000)
        reqs.append({"input_toks": rng.randint(1, 300), "output_toks": rng.randint(1, 60), "arrival_time_ns": t})
    if shuffle_within:  # out of order, but never by more than `shuffle_within` lines
        for start in range(0, n, shuffle_within):
            chunk = reqs[start:start + shuffle_within]
            rng.shuffle(chunk)
            reqs[start:start + shuffle_within] = chunk
    return reqs


def test_memory_follows_the_requests_in_flight(tmp_path, test_configs):
    """3,000 requests through the run API: once it returns, none of them is still held (the event loop hands
    finished requests to the recorder and keeps nothing; the decode cohort's lazy heaps are compacted)."""
    cfg = write_cluster(tmp_path / "c.json", model=MODEL)
    t = write_trace(tmp_path / "t.jsonl", _trace(3000))
    gc.collect()
    before = sum(1 for o in gc.get_objects() if type(o) is Request)
    result = run(RunConfig(cluster_config=str(cfg), dataset=str(t), perf_model="analytical", log_interval=0),
                 sink=ListSink())
    assert result.summary.totals["finished"] == 3000
    gc.collect()
    alive = sum(1 for o in gc.get_objects() if type(o) is Request) - before
    assert alive <= 64 + 2 * 64, f"{alive} requests still referenced after the run"  # stale heap entries at most


@pytest.mark.parametrize("window", [7, 64, 10_000])
def test_a_trace_out_of_order_within_the_window_runs_as_if_sorted(tmp_path, test_configs, monkeypatch, window):
    """Lines shuffled within blocks of 5: the reorder window sorts them exactly (ids stay the file's line order)."""
    monkeypatch.setattr(trace_mod, "REORDER_WINDOW", window)
    cfg = write_cluster(tmp_path / "c.json", model=MODEL)
    reqs = _trace(400, seed=1, shuffle_within=5)
    shuffled = write_trace(tmp_path / "shuffled.jsonl", reqs)
    # the same requests in arrival order, each keeping its id: run both, compare rows by request id
    out = {}
    for name, path in (("shuffled", shuffled),):
        sink = ListSink()
        run(RunConfig(cluster_config=str(cfg), dataset=str(path), perf_model="analytical", log_interval=0), sink=sink)
        out[name] = sink.rows
    order = sorted(range(len(reqs)), key=lambda i: (reqs[i]["arrival_time_ns"], i))
    ids_in_arrival_order = [row.request_id for row in sorted(out["shuffled"], key=lambda r: (r.arrival, r.request_id))]
    assert ids_in_arrival_order == order
    assert all(row.arrival == reqs[row.request_id]["arrival_time_ns"] for row in out["shuffled"])
    # and the reader hands them out sorted by (arrival, id)
    handed = [(r.arrival_ns, r.request_id) for r in TraceReader(scan_trace(shuffled))]
    assert handed == sorted(handed) and len(handed) == 400


def _one_error_line(tmp_path, cfg, trace, capsys) -> list[str]:
    """Run ``trace``: exit 2, one line on stderr (returned as a list), no output written."""
    out = tmp_path / "o.csv"
    code = run_tpsim(["run", "--cluster-config", str(cfg), "--dataset", str(trace), "--output", str(out),
                      "--perf-model", "analytical", "--log-interval", "0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert not out.exists() and not out.with_suffix(".summary.json").exists()
    return err


def test_a_trace_out_of_order_beyond_the_window_is_one_error_naming_the_line_and_the_fix(
        tmp_path, test_configs, monkeypatch, capsys):
    monkeypatch.setattr(trace_mod, "REORDER_WINDOW", 10)
    cfg = write_cluster(tmp_path / "c.json", model=MODEL)
    reqs = _trace(200, seed=2)
    reqs[150]["arrival_time_ns"] = 0  # 150 lines late: past a 10-line window
    t = write_trace(tmp_path / "t.jsonl", reqs)
    err = _one_error_line(tmp_path, cfg, t, capsys)
    assert f"{t}:151: arrival_time_ns 0 is before that of a request already started" in err[0]
    assert "reorder window (10 lines)" in err[0] and "tpsim sort-trace" in err[0]
    assert list(tmp_path.glob(".o.csv*")) == []  # no temporary file left either


def test_a_bad_line_past_the_first_window_ends_the_run_with_one_line_and_no_output(
        tmp_path, test_configs, monkeypatch, capsys):
    """Lines past the first window are checked as they are read: the error still names the line, and nothing is
    written (the run had started: the banner is on stdout)."""
    monkeypatch.setattr(trace_mod, "REORDER_WINDOW", 10)
    cfg = write_cluster(tmp_path / "c.json", model=MODEL)
    t = tmp_path / "t.jsonl"
    lines = [json.dumps(r) for r in _trace(100, seed=3)]
    lines[80] = '{"input_toks": 5, "output_toks": 1, "arrival_time_ns": NaN}'
    t.write_text("\n".join(lines) + "\n")
    out = tmp_path / "o.csv"
    code = run_tpsim(["run", "--cluster-config", str(cfg), "--dataset", str(t), "--output", str(out),
                      "--perf-model", "analytical", "--log-interval", "0"])
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert code == 2 and len(err) == 1 and f"{t}:81: NaN is not a valid number" in err[0], err
    assert "streamed" in captured.out  # the banner says the trace is streamed
    assert not out.exists() and not out.with_suffix(".summary.json").exists()


def test_a_streamed_run_equals_a_run_that_read_the_whole_trace(tmp_path, test_configs, monkeypatch):
    """Rows, summary and request count are the same whether the trace fits in the reader's window or not."""
    cfg = write_cluster(tmp_path / "c.json", model=MODEL, instances=2)
    t = write_trace(tmp_path / "t.jsonl", _trace(500, seed=4))
    results = []
    for window in (100_000, 3):
        monkeypatch.setattr(trace_mod, "REORDER_WINDOW", window)
        sink = ListSink()
        r = run(RunConfig(cluster_config=str(cfg), dataset=str(t), perf_model="analytical", log_interval=0.5),
                sink=sink)
        doc = json.loads(sink.summary_json)
        results.append((sink.csv_text(), {k: v for k, v in doc.items() if k not in ("timing",)}))
        assert r.summary.totals["requests"] == 500
    assert results[0] == results[1]
    # two instances: rows grouped by instance (0 first), each in completion order
    ids = [int(line.split(",")[0]) for line in results[0][0].splitlines()[1:]]
    assert ids == sorted(ids) and set(ids) == {0, 1}


def test_scan_trace_and_num_reqs(tmp_path):
    reqs = _trace(30, seed=5)
    t = write_trace(tmp_path / "t.jsonl", reqs)
    f = scan_trace(t)
    assert f.lines == 30 and not f.may_have_token_ids and f.size_bytes == t.stat().st_size
    reader = TraceReader(f, num_reqs=12)
    assert len(list(reader)) == 12 and reader.requests == 12 and reader.lines == 12
    (tmp_path / "blank.jsonl").write_text("\n  \n")
    with pytest.raises(InputError, match="no requests; the file is empty"):
        scan_trace(tmp_path / "blank.jsonl")
    ids = dict(reqs[0], input_tok_ids=list(range(reqs[0]["input_toks"])))
    write_trace(tmp_path / "ids.jsonl", [ids])
    assert scan_trace(tmp_path / "ids.jsonl").may_have_token_ids and load_trace(tmp_path / "ids.jsonl").has_token_ids


@pytest.mark.parametrize("chunk_bytes", [1, 300, 1 << 20])
def test_sort_trace_sorts_stably_in_bounded_runs(tmp_path, chunk_bytes):
    """Any chunk size (one line a run included) gives the same file: lines by (arrival, line), blank lines
    dropped, each line's bytes unchanged."""
    from tpsim.io.trace_sort import sort_trace

    rng = random.Random(6)
    lines = [json.dumps({"input_toks": 1 + i, "output_toks": 1, "arrival_time_ns": rng.randint(0, 20)})
             for i in range(120)]
    lines.insert(7, "   ")
    lines.append('{"session_id": "s", "arrival_time_ns": 3, "sub_requests": [{"input_toks": 1, "output_toks": 1}]}')
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(lines) + "\n")
    out = tmp_path / "sorted.jsonl"
    counts = sort_trace(str(src), str(out), chunk_bytes)
    real = [ln for ln in lines if ln.strip()]
    expected = [ln for _, _, ln in sorted((json.loads(ln)["arrival_time_ns"], i, ln) for i, ln in enumerate(real))]
    assert out.read_text().splitlines() == expected
    assert counts["lines"] == 121 and counts["out_of_order"] > 0
    assert (counts["runs"] == 121) == (chunk_bytes == 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "sorted.jsonl"]  # no run file left


def test_sort_trace_is_the_fix_the_run_names(tmp_path, test_configs, monkeypatch, capsys):
    monkeypatch.setattr(trace_mod, "REORDER_WINDOW", 10)
    cfg = write_cluster(tmp_path / "c.json", model=MODEL)
    reqs = _trace(60, seed=7)
    reqs.reverse()  # entirely out of order
    t = write_trace(tmp_path / "t.jsonl", reqs)
    args = ["--cluster-config", str(cfg), "--perf-model", "analytical", "--log-interval", "0"]
    assert run_tpsim(["run", "--dataset", str(t), "--output", str(tmp_path / "a.csv"), *args]) == 2
    assert "sort-trace" in capsys.readouterr().err
    assert run_tpsim(["sort-trace", str(t), "--output", str(tmp_path / "s.jsonl")]) == 0
    assert "60 requests (59 out of order)" in capsys.readouterr().out
    assert run_tpsim(["run", "--dataset", str(tmp_path / "s.jsonl"), "--output", str(tmp_path / "b.csv"), *args]) == 0
    arrivals = [json.loads(line)["arrival_time_ns"] for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert arrivals == sorted(r["arrival_time_ns"] for r in reqs)
    assert run_tpsim(["sort-trace", str(t), "--output", str(t)]) == 2
    assert "is also an input" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"input_toks": 1, "output_toks": 1, "arrival_time_ns": -4}\n')
    assert run_tpsim(["sort-trace", str(bad), "--output", str(tmp_path / "x.jsonl")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{bad}:1: field 'arrival_time_ns'" in err[0]
    assert not (tmp_path / "x.jsonl").exists()


def test_itl_format_none_keeps_every_other_column_and_the_exact_itl_percentiles(tmp_path, test_configs):
    cfg = write_cluster(tmp_path / "c.json", model=MODEL, instances=2)
    t = write_trace(tmp_path / "t.jsonl", _trace(120, seed=8))
    sinks = {}
    for fmt in ("list", "none"):
        sink = ListSink()
        run(RunConfig(cluster_config=str(cfg), dataset=str(t), perf_model="analytical", log_interval=0,
                      itl_format=fmt), sink=sink)
        sinks[fmt] = sink
    full, bare = sinks["list"], sinks["none"]
    assert [r.itl_text for r in bare.rows] == ["[]"] * 120
    assert [r.as_list()[:-1] for r in bare.rows] == [r.as_list()[:-1] for r in full.rows]
    assert json.loads(bare.summary_json)["metrics_ms"] == json.loads(full.summary_json)["metrics_ms"]


@pytest.mark.parametrize("flags", [[], ["--no-fast-forward"]])
def test_packed_waiting_requests_change_nothing(tmp_path, test_configs, monkeypatch, flags):
    """Waiting requests packed into arrays (tpsim/sim/waiting.py) from the first one on: identical rows and summary
    to a plain queue, with token ids, a session and preemptions in the run."""
    rng = random.Random(9)
    reqs = _trace(150, seed=9)
    for r in reqs[::3]:
        r["input_tok_ids"] = [rng.randrange(50) for _ in range(r["input_toks"])]
    reqs.append({"session_id": "s", "arrival_time_ns": reqs[-1]["arrival_time_ns"],
                 "sub_requests": [{"input_toks": 9, "output_toks": 3}, {"input_toks": 12, "output_toks": 4,
                                                                         "tool_duration_ns": 1000}]})
    cfg = write_cluster(tmp_path / "c.json", model=MODEL, mem_size=mem_size_for_blocks(60, 16))
    t = write_trace(tmp_path / "t.jsonl", reqs)
    outs = []
    for pack_after in (10**9, 0):
        monkeypatch.setattr(waiting, "PACK_AFTER", pack_after)
        sink = ListSink()
        argv = ["--cluster-config", str(cfg), "--dataset", str(t), "--perf-model", "analytical", *flags]
        parser = argparse.ArgumentParser()
        add_run_arguments(parser)
        run(config_from_args(parser.parse_args(argv)), sink=sink)
        doc = json.loads(sink.summary_json)
        outs.append((sink.csv_text(), {k: v for k, v in doc.items() if k != "timing"}))
    assert outs[0] == outs[1]
    assert outs[0][1]["totals"]["preemptions"] > 0 and outs[0][1]["totals"]["finished"] == 152


def test_waiting_queue_order():
    q = WaitingQueue(instance=3)
    reqs = [Request(i, 10 * i, 5, 2, None, 0) for i in range(6)]
    old, waiting.PACK_AFTER = waiting.PACK_AFTER, 2
    try:
        for r in reqs:
            q.append(r)
        preempted = Request(99, 0, 1, 1, None, 0)
        q.appendleft(preempted)
        assert len(q) == 7 and q.head() is preempted
        out = [q.popleft() for _ in range(7)]
    finally:
        waiting.PACK_AFTER = old
    assert [r.rid for r in out] == [99, 0, 1, 2, 3, 4, 5]
    assert out[0] is preempted and out[1] is reqs[0] and out[3] is not reqs[2]  # the third and later were packed
    assert (out[3].arrival, out[3].prompt, out[3].output, out[3].instance) == (20, 5, 2, 3) and len(q) == 0


def test_progress_lines_only_on_a_terminal(monkeypatch):
    """Long runs print progress to a terminal's stderr (at most every 30 s); never into a log or a pipe."""
    import io

    from tpsim import console as console_mod
    from tpsim.console import Console

    class Tty(io.StringIO):
        def isatty(self):
            return True

    assert Console(err=io.StringIO()).progress(100) is None
    err = Tty()
    clock = iter([0.0, 10.0, 31.0, 40.0, 75.0])
    monkeypatch.setattr(console_mod.time, "monotonic", lambda: next(clock))
    report = Console(err=err).progress(1_000_000)
    for finished in (10_000, 20_000, 30_000, 40_000):
        report(finished)
    assert err.getvalue().splitlines() == [
        "tpsim: 20,000 of about 1,000,000 requests finished (2 %), 0:31 elapsed",
        "tpsim: 40,000 of about 1,000,000 requests finished (4 %), 1:15 elapsed"]
    assert Console("ERROR", err=Tty()).progress(5) is None


def test_a_window_held_back_by_token_ids_says_so(tmp_path, test_configs, monkeypatch, capsys):
    """Token ids bound the window too: the error says how many requests it held and why, not a line count the
    trace never had."""
    monkeypatch.setattr(trace_mod, "REORDER_WINDOW_IDS", 40)  # five requests of 8 ids
    cfg = write_cluster(tmp_path / "c.json", model=MODEL)
    reqs = [{"input_toks": 8, "output_toks": 2, "arrival_time_ns": 1_000_000 * (i + 1),
             "input_tok_ids": list(range(i, i + 8))} for i in range(30)]
    reqs[20]["arrival_time_ns"] = 0  # within 100,000 lines, but not within five requests
    t = write_trace(tmp_path / "t.jsonl", reqs)
    err = _one_error_line(tmp_path, cfg, t, capsys)
    assert f"{t}:21:" in err[0] and "held to 40 token ids" in err[0], err[0]


@pytest.mark.parametrize("fast_forward", [True, False])
def test_trimming_the_gap_text_window_changes_no_row(tmp_path, test_configs, monkeypatch, fast_forward):
    """The recorder drops gap texts no unfinished request can still need (past 65,536 steps in a real run):
    trimming at every chance gives the same CSV and summary, preemptions and two instances included."""
    from tpsim.sim import recorder

    cfg = write_cluster(tmp_path / "c.json", model=MODEL, instances=2, mem_size=mem_size_for_blocks(60, 16))
    t = write_trace(tmp_path / "t.jsonl", _trace(300, seed=8))
    results = []
    for window in (1 << 16, 1):
        monkeypatch.setattr(recorder, "_GAP_WINDOW", window)
        sink = ListSink()
        run(RunConfig(cluster_config=str(cfg), dataset=str(t), perf_model="analytical", log_interval=0,
                      fast_forward=fast_forward), sink=sink)
        doc = json.loads(sink.summary_json)
        doc.pop("timing")
        results.append((sink.csv_text(), doc))
    assert results[0] == results[1]
    assert sum(v for k, v in results[0][1]["totals"].items() if "preempt" in k) > 0  # the hard case ran


def test_the_summary_metrics_are_those_of_the_rows(tmp_path, test_configs):
    """Rows and metrics are recorded apart as requests finish: the summary's percentiles are still exactly
    those of the CSV's own columns and inter-token gaps."""
    import csv
    import io
    from collections import Counter

    from tpsim.stats import describe, describe_weighted

    cfg = write_cluster(tmp_path / "c.json", model=MODEL, instances=2, mem_size=mem_size_for_blocks(60, 16))
    t = write_trace(tmp_path / "t.jsonl", _trace(300, seed=9))
    sink = ListSink()
    run(RunConfig(cluster_config=str(cfg), dataset=str(t), perf_model="analytical", log_interval=0), sink=sink)
    rows = list(csv.DictReader(io.StringIO(sink.csv_text())))
    metrics = json.loads(sink.summary_json)["metrics_ms"]
    for name, column in (("ttft", "TTFT"), ("latency", "latency"), ("queuing_delay", "queuing_delay")):
        assert metrics[name] == describe([int(r[column]) for r in rows], 1e-6), name
    gaps = Counter(int(g) for r in rows for g in json.loads(r["ITL"]))
    assert metrics["itl"] == describe_weighted(gaps, 1e-6)
