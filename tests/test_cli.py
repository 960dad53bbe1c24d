"""The documented command, end to end, and the properties of a run's outputs."""

import hashlib
import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import REPO, checkout_env, read_csv_rows, run_subprocess

from tpsim.io.results import HEADER

DOCUMENTED = ["-m", "serving", "--cluster-config", "configs/cluster/single_node_single_instance.json", "--dtype",
              "bfloat16", "--block-size", "16", "--dataset", "workloads/example_trace.jsonl", "--output",
              "outputs/tp2_run.csv", "--log-interval", "1.0"]


@pytest.fixture(scope="module")
def documented_run(tmp_path_factory):
    """The README's command, verbatim, from a copy of the repository root."""
    root = tmp_path_factory.mktemp("repo")
    for name in ("configs", "workloads", "tpsim", "serving"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    proc = run_subprocess(DOCUMENTED, cwd=root)
    assert proc.returncode == 0, proc.stderr
    return root, proc


def test_documented_command(documented_run):
    root, proc = documented_run
    csv_path = root / "outputs" / "tp2_run.csv"  # the output folder did not exist before
    text = csv_path.read_text()
    assert text.startswith(HEADER)
    assert HEADER == "instance id,request id,model,input,output,arrival,end_time,latency,queuing_delay,TTFT,TPOT,ITL\n"
    rows = read_csv_rows(csv_path)
    trace = [json.loads(line) for line in (root / "workloads" / "example_trace.jsonl").read_text().splitlines()]
    assert len(rows) == len(trace)
    assert {r["model"] for r in rows} == {"Qwen/Qwen3-32B"}
    for r in rows:
        src = trace[int(r["request id"])]
        assert int(r["input"]) == src["input_toks"] and int(r["output"]) == src["output_toks"]
        itl = json.loads(r["ITL"])
        assert len(itl) == int(r["output"]) - 1
        assert int(r["TTFT"]) + sum(itl) == int(r["latency"])
    summary = json.loads((root / "outputs" / "tp2_run.summary.json").read_text())
    assert summary["status"] == "ok"
    inst = summary["instances"][0]
    assert (inst["tp_size"], inst["num_npus"], inst["hardware"]) == (2, 2, "RTXPRO6000")
    assert 32 < inst["memory"]["weights_gb"] < 33.5  # about 32 GB of Qwen3-32B per GPU at TP=2
    assert summary["totals"]["prefix_hit_tokens"] > 0  # the example trace has shared prefixes
    prov = summary["provenance"]
    assert prov["inputs"]["dataset"]["sha256"] and prov["inputs"]["cluster_config"]["sha256"]
    assert prov["flags"]["block_size"] == 16 and prov["flags"]["dtype"] == "bfloat16"
    out = proc.stdout
    assert "KV cache:" in out and "weights" in out  # banner
    assert "[INFO] step=" in out  # throughput lines
    assert "---- summary ----" in out and "wrote outputs/tp2_run.csv" in out


def test_readme_quotes_the_documented_output(documented_run):
    """Every line the README quotes from the documented command's output is what the command prints."""
    _, proc = documented_run
    readme = (REPO / "README.md").read_text()
    block = readme.split("GPUs (TP=2) over a 16 GB/s, 20 µs link, and prints:\n\n```\n", 1)[1].split("```", 1)[0]
    quoted = [line for line in block.splitlines()
              if line and not line.startswith("...") and not line.startswith("wall time")]
    printed = set(proc.stdout.splitlines())
    assert len(quoted) >= 12
    assert [line for line in quoted if line not in printed] == []


def test_rerun_is_byte_identical(documented_run, tmp_path):
    root, _ = documented_run
    first_csv = (root / "outputs" / "tp2_run.csv").read_bytes()
    first_summary = json.loads((root / "outputs" / "tp2_run.summary.json").read_text())
    proc = run_subprocess(DOCUMENTED[:-4] + ["--output", "outputs/again.csv", "--log-interval", "1.0"], cwd=root)
    assert proc.returncode == 0, proc.stderr
    assert (root / "outputs" / "again.csv").read_bytes() == first_csv
    again = json.loads((root / "outputs" / "again.summary.json").read_text())
    for s in (first_summary, again):
        s.pop("timing")
        s["provenance"].pop("argv")
        s["provenance"]["flags"].pop("output")
    assert again == first_summary


def test_tpsim_run_equals_serving_alias(documented_run):
    root, _ = documented_run
    args = DOCUMENTED[2:-4] + ["--output", "outputs/via_tpsim.csv", "--log-interval", "1.0"]
    proc = run_subprocess(["-m", "tpsim", "run", *args], cwd=root)
    assert proc.returncode == 0, proc.stderr
    assert (root / "outputs" / "via_tpsim.csv").read_bytes() == (root / "outputs" / "tp2_run.csv").read_bytes()


def test_record_infeasible(tmp_path):
    cfg = json.loads((REPO / "configs/cluster/single_node_single_instance.json").read_text())
    cfg["nodes"][0]["instances"][0].update(model_name="meta-llama/Llama-3.1-70B", num_npus=1, tp_size=1)
    path = tmp_path / "c.json"
    path.write_text(json.dumps(cfg))
    out = tmp_path / "runs" / "x.csv"
    base = ["-m", "tpsim", "run", "--cluster-config", str(path), "--dataset", "workloads/example_trace.jsonl",
            "--output", str(out)]
    proc = run_subprocess(base)
    assert proc.returncode == 2 and "does not fit" in proc.stderr and not out.exists()
    proc = run_subprocess(base + ["--record-infeasible"])
    assert proc.returncode == 0, proc.stderr
    assert out.read_text() == HEADER
    summary = json.loads(out.with_suffix(".summary.json").read_text())
    assert summary["status"] == "infeasible" and "does not fit" in summary["reason"]
    inputs = summary["provenance"]["inputs"]
    assert inputs["cluster_config"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    trace_bytes = (REPO / "workloads/example_trace.jsonl").read_bytes()
    assert inputs["dataset"]["sha256"] == hashlib.sha256(trace_bytes).hexdigest()


def test_default_workload_without_dataset(tmp_path):
    out = tmp_path / "d.csv"
    proc = run_subprocess(["-m", "tpsim", "run", "--output", str(out), "--log-interval", "0"])
    assert proc.returncode == 0, proc.stderr
    rows = read_csv_rows(out)
    assert len(rows) == 16 and all(r["input"] == "64" and r["output"] == "64" for r in rows)


def test_run_id_substitution(tmp_path):
    proc = run_subprocess(["-m", "tpsim", "run", "--num-reqs", "2", "--dataset", "workloads/example_trace.jsonl",
                           "--output", str(tmp_path / "{run_id}.csv"), "--run-id", "exp7"])
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "exp7.csv").exists() and (tmp_path / "exp7.summary.json").exists()


def test_version_and_help():
    proc = run_subprocess(["-m", "tpsim", "--version"])
    assert proc.returncode == 0 and proc.stdout.startswith("tpsim ")
    proc = run_subprocess(["-m", "tpsim", "--help"])
    for cmd in ("run", "trace", "step"):
        assert cmd in proc.stdout


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_stdout_on_a_full_device_or_a_closed_pipe_keeps_the_run(tmp_path):
    """stdout is the console, not the run's product: on a full device the run goes on, says so once on stderr and
    writes complete outputs (it ended in a traceback before); a reader that goes away (| head) is silent."""
    args = [sys.executable, "-m", "serving", "--dataset", "workloads/example_trace.jsonl"]
    with open("/dev/full", "w") as full:
        proc = subprocess.run([*args, "--output", str(tmp_path / "full.csv")], cwd=REPO, stdout=full,
                              stderr=subprocess.PIPE, text=True, env=checkout_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == [
        "tpsim: warning: cannot write to standard output (No space left on device); the run goes on without it "
        "and writes its outputs (the summary is in <output>.summary.json)"]
    assert len(read_csv_rows(tmp_path / "full.csv")) == 100
    assert json.loads((tmp_path / "full.summary.json").read_text())["status"] == "ok"
    head = subprocess.Popen([*args, "--output", str(tmp_path / "pipe.csv")], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=checkout_env())
    head.stdout.readline()
    head.stdout.close()  # the reader goes away after one line
    err = head.stderr.read().decode()
    assert head.wait(timeout=300) == 0 and err == ""
    assert len(read_csv_rows(tmp_path / "pipe.csv")) == 100
