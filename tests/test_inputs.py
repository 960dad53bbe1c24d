"""Every bad input gets one line naming the file/line/field and the fix, exit code 2, no traceback,
and no output file.  Good inputs are parsed as documented."""

import json

import pytest
from conftest import REPO, run_subprocess, write_trace

from tpsim.config.cluster import load_cluster, resolve_parallelism
from tpsim.errors import InputError
from tpsim.io.trace import load_trace

GOOD_TRACE = [{"input_toks": 20, "output_toks": 5, "arrival_time_ns": 0}]


def run_bad(tmp_path, argv, expect, env=None):
    out = tmp_path / "out" / "run.csv"
    proc = run_subprocess(["-m", "tpsim", "run", *argv, "--output", str(out)], env=env)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("tpsim: error: ")
    assert "Traceback" not in proc.stderr
    for fragment in expect:
        assert fragment in lines[0], lines[0]
    assert not out.exists() and not out.with_suffix(".summary.json").exists()
    return lines[0]


def cluster_doc(**inst_over):
    inst = {"model_name": "Qwen/Qwen3-0.6B", "hardware": "RTXPRO6000",
            "npu_mem": {"mem_size": 96, "mem_bw": 1597, "mem_latency": 0}, "num_npus": 1, "tp_size": 1, "pd_type": None}
    inst.update(inst_over)
    return {"num_nodes": 1, "link_bw": 16, "link_latency": 20000,
            "nodes": [{"num_instances": 1, "cpu_mem": {"mem_size": 64, "mem_bw": 100, "mem_latency": 0},
                       "instances": [inst]}]}


BAD_CLUSTERS = [
    ("missing link_bw", lambda d: d.pop("link_bw"), ["missing field 'link_bw'"]),
    ("negative link_bw", lambda d: d.update(link_bw=-5), ["link_bw", "positive"]),
    ("negative latency", lambda d: d.update(link_latency=-1), ["link_latency", ">= 0"]),
    ("num_nodes mismatch", lambda d: d.update(num_nodes=2), ["num_nodes is 2", "lists 1"]),
    ("num_instances mismatch", lambda d: d["nodes"][0].update(num_instances=3), ["num_instances is 3"]),
    ("missing model", lambda d: d["nodes"][0]["instances"][0].pop("model_name"), ["instances[0]", "'model_name'"]),
    ("unknown model", lambda d: d["nodes"][0]["instances"][0].update(model_name="acme/Nope-7B"),
     ["unknown model 'acme/Nope-7B'", "known models"]),
    ("unknown hardware", lambda d: d["nodes"][0]["instances"][0].update(hardware="TPUv9"),
     ["unknown hardware 'TPUv9'", "known:"]),
    ("npus != tp x pp", lambda d: d["nodes"][0]["instances"][0].update(num_npus=4, tp_size=2, pp_size=1),
     ["num_npus (4) != tp_size (2) x pp_size (1)"]),
    ("tp not dividing heads", lambda d: d["nodes"][0]["instances"][0].update(num_npus=3, tp_size=3),
     ["tp_size=3 does not divide"]),
    ("pp beyond layers", lambda d: d["nodes"][0]["instances"][0].update(num_npus=64, tp_size=1, pp_size=64),
     ["pp_size=64 exceeds"]),
    ("negative mem", lambda d: d["nodes"][0]["instances"][0]["npu_mem"].update(mem_size=-1),
     ["npu_mem.mem_size", "positive"]),
    ("mem_util > 1", lambda d: d["nodes"][0]["instances"][0]["npu_mem"].update(mem_util=1.5), ["mem_util", "(0, 1]"]),
    ("does not fit", lambda d: d["nodes"][0]["instances"][0].update(model_name="meta-llama/Llama-3.1-70B"),
     ["does not fit", "GB", "available"]),
    ("pd disaggregation", lambda d: d["nodes"][0]["instances"][0].update(pd_type="prefill"),
     ["prefill/decode disaggregation is not supported"]),
    ("bad pd_type", lambda d: d["nodes"][0]["instances"][0].update(pd_type="both"), ["pd_type must be null"]),
    ("power", lambda d: d["nodes"][0].update(power={"base_node_power": 100}), ["power modelling is not supported"]),
    ("pim", lambda d: d["nodes"][0]["cpu_mem"].update(pim_config="DDR4"), ["PIM is not supported"]),
    ("cxl", lambda d: d.update(cxl_mem={"mem_size": 1}), ["CXL", "not supported"]),
    ("offloading key", lambda d: d["nodes"][0]["instances"][0].update(enable_attn_offloading=True),
     ["attention offloading", "not supported"]),
    ("ep_size over tp without dp_group", lambda d: d["nodes"][0]["instances"][0].update(ep_size=2),
     ["instances[0].ep_size", "ep_size (2) > tp_size (1) needs a dp_group"]),
    ("bad engine key", lambda d: d["nodes"][0]["instances"][0].update(max_num_seqs=-3), ["max_num_seqs", ">= 0"]),
    ("moe experts not divisible", lambda d: d["nodes"][0]["instances"][0].update(
        model_name="mistralai/Mixtral-8x7B-v0.1", tp_size=3, num_npus=3),
     ["instances[0].ep_size: ep_size (3, by default tp_size) does not divide mistralai/Mixtral-8x7B-v0.1's 8 experts"]),
]


@pytest.mark.parametrize("label,mutate,expect", BAD_CLUSTERS, ids=[b[0] for b in BAD_CLUSTERS])
def test_bad_cluster_config(tmp_path, label, mutate, expect):
    doc = cluster_doc()
    mutate(doc)
    cfg = tmp_path / "cluster.json"
    cfg.write_text(json.dumps(doc))
    trace = write_trace(tmp_path / "t.jsonl", GOOD_TRACE)
    line = run_bad(tmp_path, ["--cluster-config", str(cfg), "--dataset", str(trace)], expect)
    if label not in ("does not fit", "unknown model", "unknown hardware", "moe", "tp not dividing heads",
                     "pp beyond layers"):
        assert str(cfg) in line


def test_malformed_cluster_json_names_line(tmp_path):
    cfg = tmp_path / "cluster.json"
    cfg.write_text('{\n "num_nodes": 1,\n "link_bw": 16,,\n}')
    trace = write_trace(tmp_path / "t.jsonl", GOOD_TRACE)
    run_bad(tmp_path, ["--cluster-config", str(cfg), "--dataset", str(trace)], [f"{cfg}:3:", "malformed JSON"])


def test_missing_files(tmp_path):
    trace = write_trace(tmp_path / "t.jsonl", GOOD_TRACE)
    run_bad(tmp_path, ["--cluster-config", str(tmp_path / "nope.json"), "--dataset", str(trace)], ["no such file"])
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(cluster_doc()))
    run_bad(tmp_path, ["--cluster-config", str(cfg), "--dataset", str(tmp_path / "none.jsonl")],
            ["no such file", "--dataset"])


BAD_TRACES = [
    ("not json", "{not json}\n", [":1:", "malformed JSON"]),
    ("missing field", '{"input_toks": 5, "arrival_time_ns": 0}\n', [":1:", "missing field 'output_toks'"]),
    ("negative", '{"input_toks": 5, "output_toks": 2, "arrival_time_ns": -4}\n', [":1:", "arrival_time_ns", ">= 0"]),
    ("zero output", '{"input_toks": 5, "output_toks": 0, "arrival_time_ns": 0}\n', [":1:", "output_toks", ">= 1"]),
    ("string", '{"input_toks": "5", "output_toks": 2, "arrival_time_ns": 0}\n', ["input_toks", "integer"]),
    ("second line", '{"input_toks": 5, "output_toks": 2, "arrival_time_ns": 0}\n[1, 2]\n', [":2:", "JSON object"]),
    ("ids length", '{"input_toks": 3, "output_toks": 2, "arrival_time_ns": 0, "input_tok_ids": [1, 2]}\n',
     ["'input_tok_ids' has 2 ids but 'input_toks' is 3"]),
    ("unknown field", '{"input_toks": 3, "output_toks": 2, "arrival_time_ns": 0, "prio": 1}\n',
     ["unknown field", "prio"]),
    ("empty", "\n\n", ["no requests"]),
]


@pytest.mark.parametrize("label,text,expect", BAD_TRACES, ids=[b[0] for b in BAD_TRACES])
def test_bad_trace(tmp_path, label, text, expect):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(cluster_doc()))
    trace = tmp_path / "t.jsonl"
    trace.write_text(text)
    line = run_bad(tmp_path, ["--cluster-config", str(cfg), "--dataset", str(trace)], expect)
    assert str(trace) in line


BAD_FLAGS = [
    (["--block-size", "0"], ["--block-size", ">= 1"]),
    (["--max-num-seqs", "-1"], ["--max-num-seqs"]),
    (["--npu-memory-utilization", "1.5"], ["--npu-memory-utilization", "(0, 1]"]),
    (["--log-interval", "-1"], ["--log-interval"]),
    (["--enable-attn-offloading"], ["attention offloading", "not supported"]),
    (["--enable-sub-batch-interleaving"], ["sub-batch interleaving", "not supported"]),
    (["--enable-prefix-sharing"], ["prefix sharing", "not supported"]),
    (["--prefix-storage", "CXL"], ["--prefix-storage CXL", "not supported"]),
    (["--network-backend", "ns3"], ["--network-backend ns3 is not supported", "remove the flag"]),
    (["--request-routing-policy", "CUSTOM"], ["CUSTOM is not supported"]),
    (["--dtype", "int8"], ["int8 is not supported"]),
    (["--perf-model", "profile", "--profile-dir", "/nonexistent"], ["--profile-dir /nonexistent", "no such folder"]),
    (["--perf-model", "profile", "--profile-dir", "."], ["no measured profile bundle"]),
]


@pytest.mark.parametrize("flags,expect", BAD_FLAGS, ids=[" ".join(f) for f, _ in BAD_FLAGS])
def test_bad_flags(tmp_path, flags, expect):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(cluster_doc()))
    trace = write_trace(tmp_path / "t.jsonl", GOOD_TRACE)
    run_bad(tmp_path, ["--cluster-config", str(cfg), "--dataset", str(trace), *flags], expect)


@pytest.mark.parametrize("argv,expect", [
    (["-m", "tpsim", "run", "--max-num-seqs", "many"], "invalid int value"),
    (["-m", "tpsim", "run", "--dtype", "foo"], "invalid choice: 'foo'"),
    (["-m", "serving", "--dtype", "foo"], "invalid choice: 'foo'"),
    (["-m", "tpsim", "run", "--enable-pim"], "unrecognized arguments: --enable-pim"),
])
def test_usage_error_is_one_line_exit_2(argv, expect):
    proc = run_subprocess(argv)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert expect in lines[0] and lines[0].endswith("--help)") and "Traceback" not in proc.stderr


@pytest.mark.parametrize("flag", ["--out", "--data", "--cluster", "--max-num-seq"])
def test_abbreviated_flags_are_refused(tmp_path, flag):
    """An abbreviation must never silently stand for another flag (campaigns reserve some flags)."""
    proc = run_subprocess(["-m", "tpsim", "run", flag, str(tmp_path / "x"), "--output", str(tmp_path / "o.csv")])
    assert proc.returncode == 2 and f"unrecognized arguments: {flag}" in proc.stderr
    assert not (tmp_path / "o.csv").exists()


def test_bad_output_paths(tmp_path):
    """Checked before simulating; one line, exit 2, nothing written."""
    trace = write_trace(tmp_path / "t.jsonl", GOOD_TRACE)
    base = ["-m", "tpsim", "run", "--dataset", str(trace), "--log-interval", "0", "--output"]
    (tmp_path / "folder").mkdir()
    (tmp_path / "afile").write_text("")
    (tmp_path / "r.summary.json").mkdir()
    cases = [(tmp_path / "folder", "got a folder"),
             (tmp_path / "afile" / "x.csv", "is a file"),
             (tmp_path / "r.csv", "summary path"),
             (f"{tmp_path}/new/", "got a folder")]
    for out, expect in cases:
        proc = run_subprocess(base + [str(out)])
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and expect in lines[0], proc.stderr
        assert "Traceback" not in proc.stderr
    assert not (tmp_path / "r.csv").exists() and not (tmp_path / "new").exists()
    assert list((tmp_path / "folder").iterdir()) == []


def test_outputs_written_when_stdout_closes_early(tmp_path):
    """`tpsim run ... | head` must still write the CSV and the summary."""
    import subprocess
    import sys

    out = tmp_path / "o.csv"
    cmd = [sys.executable, "-m", "tpsim", "run", "--dataset", str(REPO / "workloads/example_trace.jsonl"),
           "--output", str(out), "--log-interval", "0.1"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.readline()
    proc.stdout.close()  # the reader goes away after one line
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert out.read_text().count("\n") == 101 and out.with_suffix(".summary.json").exists()


def test_num_reqs_applies_to_built_in_requests(tmp_path):
    out = tmp_path / "o.csv"
    proc = run_subprocess(["-m", "tpsim", "run", "--num-reqs", "5", "--output", str(out), "--log-interval", "0"])
    assert proc.returncode == 0, proc.stderr
    assert out.read_text().count("\n") == 6


def test_unknown_model_or_hardware_names_the_instance(tmp_path):
    trace = write_trace(tmp_path / "t.jsonl", GOOD_TRACE)
    for over, expect in (({"model_name": str(tmp_path / "none.json")}, "none.json: no such file"),
                         ({"hardware": "RTX9999"}, "unknown hardware 'RTX9999'")):
        cfg = tmp_path / "c.json"
        cfg.write_text(json.dumps(cluster_doc(**over)))
        line = run_bad(tmp_path, ["--cluster-config", str(cfg), "--dataset", str(trace)], [expect])
        assert line.startswith(f"tpsim: error: {cfg}: instance 0")


def test_parallelism_inference():
    assert resolve_parallelism({"num_npus": 4, "tp_size": 2}, "x") == (4, 2, 2)
    assert resolve_parallelism({"num_npus": 4}, "x") == (4, 4, 1)
    assert resolve_parallelism({"tp_size": 2, "pp_size": 2}, "x") == (4, 2, 2)
    assert resolve_parallelism({}, "x") == (1, 1, 1)
    with pytest.raises(InputError, match="not a multiple"):
        resolve_parallelism({"num_npus": 3, "tp_size": 2}, "x")


def test_unknown_keys_warned_and_recorded(tmp_path):
    doc = cluster_doc(color="blue")
    doc["topology"] = "ring"
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(doc))
    c = load_cluster(cfg)
    assert "topology" in c.unknown_keys and "nodes[0].instances[0].color" in c.unknown_keys
    trace = write_trace(tmp_path / "t.jsonl", GOOD_TRACE)
    out = tmp_path / "r.csv"
    proc = run_subprocess(["-m", "tpsim", "run", "--cluster-config", str(cfg), "--dataset", str(trace),
                           "--output", str(out)])
    assert proc.returncode == 0, proc.stderr
    assert "unknown keys ignored" in proc.stderr and "color" in proc.stderr
    summary = json.loads(out.with_suffix(".summary.json").read_text())
    assert any("topology" in w for w in summary["warnings"])


def test_ignored_flags_are_listed(tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(cluster_doc(enable_block_copy=True)))
    trace = write_trace(tmp_path / "t.jsonl", GOOD_TRACE)
    out = tmp_path / "r.csv"
    proc = run_subprocess(["-m", "tpsim", "run", "--cluster-config", str(cfg), "--dataset", str(trace),
                           "--output", str(out), "--no-cleanup-inputs", "--inputs-root", "/tmp/x"])
    assert proc.returncode == 0, proc.stderr
    ignored = json.loads(out.with_suffix(".summary.json").read_text())["ignored"]
    assert any("--inputs-root" in i for i in ignored) and any("--cleanup-inputs" in i for i in ignored)
    assert any("enable_block_copy" in i for i in ignored)


def test_trace_sessions_and_num_reqs(tmp_path):
    lines = [
        {"input_toks": 10, "output_toks": 3, "arrival_time_ns": 500},
        {"session_id": "s", "arrival_time_ns": 100, "sub_requests": [
            {"input_toks": 8, "output_toks": 2, "tool_duration_ns": 1000}, {"input_toks": 30, "output_toks": 4}]},
        {"input_toks": 7, "output_toks": 1, "arrival_time_ns": 0},
    ]
    t = write_trace(tmp_path / "t.jsonl", lines)
    tr = load_trace(t)
    assert [r.request_id for r in tr.requests] == [0, 1, 2, 3]
    assert [r.request_id for r in tr.initial] == [3, 1, 0]  # by arrival; the follow-up is not released yet
    assert tr.requests[1].next_in_session is tr.requests[2] and not tr.requests[2].released
    assert len(load_trace(t, num_reqs=1).requests) == 1
    assert len(load_trace(t, num_reqs=2).requests) == 3  # a session counts as one line
