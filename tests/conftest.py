"""Shared helpers for the test suite.

Simulations run in-process through the real command line (``tpsim.cli.main``)
so every test exercises the same path a user does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = (REPO.parent / "shared").resolve()
#: the campaign workflow's entry point
SNAKEFILE = REPO / "workflow" / "Snakefile"


def checkout_env(env: dict | None = None) -> dict:
    """The environment for a subprocess that must run this checkout's tpsim: Snakemake and its jobs
    import the installed ``tpsim``, which may be another checkout's (the README's setup installs it)."""
    e = dict(os.environ if env is None else env)
    e["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), e.get("PYTHONPATH")) if p)
    return e


def snakemake_cmd(*args: str) -> list[str]:
    """``python -m snakemake -s <the workflow> ARGS``."""
    return [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), *args]


def shared_path(*parts: str) -> Path:
    """A path under ../shared, or skip the test with the reason."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"{p} not found: the shared validation data lives in ../shared beside the repo (present in CI)")
    return p


def write_cluster(path: Path, *, model="Qwen/Qwen3-0.6B", hardware="TESTGPU", tp=1, pp=None, mem_size=24,
                  mem_bw=1000, link_bw=50, link_latency=5000, instances=1, extra=None, mem_util=None) -> Path:
    inst = {
        "model_name": model,
        "hardware": hardware,
        "npu_mem": {"mem_size": mem_size, "mem_bw": mem_bw, "mem_latency": 0},
        "num_npus": tp * (pp or 1),
        "tp_size": tp,
        "pd_type": None,
    }
    if pp is not None:
        inst["pp_size"] = pp
    if mem_util is not None:
        inst["npu_mem"]["mem_util"] = mem_util
    if extra:
        inst.update(extra)
    doc = {
        "num_nodes": 1,
        "link_bw": link_bw,
        "link_latency": link_latency,
        "nodes": [{"num_instances": instances, "cpu_mem": {"mem_size": 64, "mem_bw": 100, "mem_latency": 0},
                   "instances": [dict(inst) for _ in range(instances)]}],
    }
    path.write_text(json.dumps(doc, indent=1))
    return path


def write_trace(path: Path, requests: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in requests))
    return path


TEST_HARDWARE = """
name: TESTGPU
description: a made-up GPU for tests (round numbers, no reserve)
spec:
  memory_gib: 24
  memory_bw_gbps: 1000
  peak_tflops: {bfloat16: 100, float16: 100, fp8: 200, float32: 25}
  interconnect: {kind: test, link_bw_gbps: 50, link_latency_ns: 5000}
perf_model:
  gemm_efficiency: 0.8
  memory_efficiency: 0.8
  attention_compute_efficiency: 0.5
  attention_memory_efficiency: 0.7
  kernel_overhead_ns: 2000
  graph_kernel_overhead_ns: 1000
  iteration_overhead_ns: 500000
  per_sequence_overhead_ns: 2000
  activation_reserve_gib: 0
provenance: {}
"""


@pytest.fixture
def test_configs(tmp_path, monkeypatch):
    """A config dir holding the TESTGPU hardware entry (models come from the repo)."""
    root = tmp_path / "tcfg"
    (root / "hardware").mkdir(parents=True)
    (root / "hardware" / "TESTGPU.yaml").write_text(TEST_HARDWARE)
    monkeypatch.setenv("TPSIM_CONFIG_DIR", str(root))
    return root


def run_tpsim(argv: list[str], capsys=None) -> int:
    from tpsim.cli import main

    return main(argv)


def run_subprocess(argv: list[str], cwd: Path = REPO, env=None) -> subprocess.CompletedProcess:
    e = checkout_env()
    if env:
        e.update(env)
    return subprocess.run([sys.executable, *argv], cwd=cwd, capture_output=True, text=True, env=e, timeout=300)


def read_csv_rows(path: Path) -> list[dict]:
    import csv

    with open(path, newline="") as f:
        return list(csv.DictReader(f))
