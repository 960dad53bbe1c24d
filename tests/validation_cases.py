"""Hand-made measured runs and simulations for the validation and replay tests: a four-request measured run
and its simulated twin worked out by hand, and a small measured directory that ``tpsim replay`` can run."""

from __future__ import annotations

import json

from conftest import REPO, write_cluster, write_trace

from tpsim.io.results import HEADER

# ---------------------------------------------------------------- a hand-made measured run and simulation
#
# measured (s)          queued  sched   first   last    out  -> TTFT  TPOT  latency  queue  (ms)
#   bench-0             100.0   100.0   100.1   100.3   3       100   100   300      0
#   bench-1             100.5   100.7   100.9   101.7   5       400   200   1200     200
#   bench-2             101.0   101.0   101.2   101.2   1       200   -     200      0
#   bench-3             102.0   102.5   103.0   103.3   2       1000  300   1300     500
# simulated (ms)        id 0: TTFT 110 TPOT 90 lat 290 q 0;  id 1: 300/250/1300/100;
#                       id 2: 250/-/250/0 (one token);       id 4: 500/100/600/200 (no measured twin)
MEASURED = [
    ("bench-0", 10, 3, 100.0, 100.0, 100.1, 100.3),
    ("bench-1", 20, 5, 100.5, 100.7, 100.9, 101.7),
    ("bench-2", 30, 1, 101.0, 101.0, 101.2, 101.2),
    ("bench-3", 40, 2, 102.0, 102.5, 103.0, 103.3),
]
SIM = [  # id, input, output, TTFT, TPOT, latency, queuing delay (ms)
    (0, 10, 3, 110, 90, 290, 0),
    (1, 20, 5, 300, 250, 1300, 100),
    (2, 30, 1, 250, 0, 250, 0),
    (4, 50, 2, 500, 100, 600, 200),
]
MS = 1_000_000


def write_measured(root, rows=MEASURED, timeseries=True, meta=None):
    (root / "vllm").mkdir(parents=True, exist_ok=True)
    lines = []
    for rid, inp, out, q, s, f, last in rows:
        lines.append(json.dumps({"request_id": rid, "input_toks": inp, "output_toks": out, "arrival_time": 1.7e9 + q,
                                 "queued_ts": q, "scheduled_ts": s, "first_token_ts": f, "last_token_ts": last}))
    (root / "vllm" / "requests.jsonl").write_text("\n".join(lines) + "\n")
    if timeseries:
        (root / "vllm" / "timeseries.csv").write_text(
            "t,prompt_throughput,gen_throughput,running,waiting,kv_cache_pct\n1.0,60.0,5.0,2,0,0.1\n"
            "2.0,40.0,6.0,1,0,0.1\n3.0,0.0,2.0,1,0,0.0\n")
    if meta is not None:
        (root / "vllm" / "meta.json").write_text(json.dumps(meta))
    return root


def write_sim(path, rows=SIM):
    out = [HEADER]
    for i, inp, o, ttft, tpot, lat, q in rows:
        gaps = [tpot * MS] * (o - 1)
        if gaps:
            gaps[-1] = lat * MS - ttft * MS - tpot * MS * (o - 2)
        arrival = i * 1_000 * MS
        out.append(f"0,{i},test/model,{inp},{o},{arrival},{arrival + lat * MS},{lat * MS},{q * MS},{ttft * MS},"
                   f"{tpot * MS},\"[{', '.join(map(str, gaps))}]\"\n")
    path.write_text("".join(out))
    return path


def replay_dir(root, test_configs, *, layers=None, meta=None):
    """A small measured directory for Qwen3-0.6B on the made-up TESTGPU."""
    root.mkdir()
    write_cluster(root / "config.json", model="Qwen/Qwen3-0.6B", hardware="TESTGPU", mem_util=0.9)
    write_trace(root / "trace.jsonl", [{"input_toks": 64 + 8 * i, "output_toks": 8, "arrival_time_ns": i * 10_000_000}
                                       for i in range(6)])
    model = json.loads((REPO / "configs" / "model" / "Qwen" / "Qwen3-0.6B.json").read_text())
    if layers is not None:
        model["num_hidden_layers"] = layers
    (root / "model_config.json").write_text(json.dumps(model))
    write_measured(root, [(f"bench-{i}", 64 + 8 * i, 8, 10.0 + i / 100, 10.0 + i / 100, 10.05 + i / 100,
                           10.3 + i / 100) for i in range(6)], timeseries=False, meta=meta)
    return root
