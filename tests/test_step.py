"""`tpsim step`: one iteration explained."""

import json

import pytest
from conftest import run_subprocess


def step(*args):
    return run_subprocess(["-m", "tpsim", "step", *args])


def test_step_json_fields_and_consistency():
    proc = step("--model", "Qwen/Qwen3-32B", "--hardware", "RTXPRO6000", "--tp", "2", "--link-bw", "16",
                "--link-latency", "20000", "--prefill", "512@1024", "--decode", "32@2000", "--json",
                "--perf-model", "analytical")
    assert proc.returncode == 0, proc.stderr
    d = json.loads(proc.stdout)
    for key in ("total_ns", "per_layer_compute_ns", "per_layer_comm_ns", "num_layers"):
        assert key in d
    assert d["num_layers"] == 64
    assert abs(d["total_ns"] - d["iteration_ns"]) <= 1
    assert d["batch"]["num_tokens"] == 512 + 32
    layer = sum(op["time_ns"] for op in d["ops"] if op["component"] == "layer")
    comm = sum(op["time_ns"] for op in d["ops"] if op["component"] == "comm")
    assert d["per_layer_compute_ns"] == pytest.approx(layer, abs=0.01)
    assert d["per_layer_comm_ns"] == pytest.approx(comm, abs=0.01)
    assert sum(op["total_ns"] for op in d["ops"]) == pytest.approx(d["total_ns"], abs=1)
    assert {op["source"] for op in d["ops"]} == {"analytical"}


def test_step_comm_depends_on_link_only_with_tp():
    def total(tp, bw):
        proc = step("--model", "meta-llama/Llama-3.1-8B", "--hardware", "H100", "--tp", str(tp), "--link-bw", str(bw),
                    "--decode", "64@1000", "--json", "--perf-model", "analytical")
        d = json.loads(proc.stdout)
        return d["total_ns"], d["per_layer_comm_ns"]

    assert total(1, 10)[1] == 0 and total(1, 10) == total(1, 1000)
    slow, fast = total(2, 10), total(2, 1000)
    assert slow[1] > fast[1] > 0 and slow[0] > fast[0]


def test_step_table_lists_ops():
    proc = step("--model", "Qwen/Qwen3-8B", "--hardware", "A100", "--tp", "2", "--prefill", "2048", "--perf-model",
                "analytical")
    assert proc.returncode == 0, proc.stderr
    for name in ("qkv_proj", "attention", "all_reduce_attn", "all_reduce_mlp", "lm_head", "iteration total"):
        assert name in proc.stdout


@pytest.mark.parametrize("args,fragment", [
    (["--decode", "32"], "expected N@CTX"),
    (["--prefill", "abc"], "expected LEN[@CTX]"),
    (["--decode", "0@100"], "must be >= 1"),
    ([], "give a batch"),
    (["--decode", "4@100", "--tp", "3"], "does not divide"),
    (["--decode", "4@100", "--link-bw", "0"], "--link-bw"),
])
def test_step_errors(args, fragment):
    proc = step("--model", "Qwen/Qwen3-32B", "--hardware", "RTXPRO6000", *args)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and fragment in proc.stderr and "Traceback" not in proc.stderr
