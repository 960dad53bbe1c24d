"""Campaign freshness is keyed by content: an input edited while its modification time is kept
(a restored backup, `touch -d`, a copy that preserves times) still reruns the runs that read it.

Snakemake's mtime trigger cannot see such an edit; each run's key holds the SHA-256 of every input
the pipeline does not make (tpsim/campaign/batches.py), the simulate (batch) rule's params hold its
runs' keys, so Snakemake's params trigger reruns the batch, and the batch job simulates the runs
whose key changed (counted from the line the workflow prints when it loads).  Two runs (a model
given as a path, and a catalog model) over a given trace, a copied base config and a hardware entry
in the work folder's own configs/ (the catalog looks there first).
"""

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import yaml
from test_campaign_e2e import REPO, job_counts, ok, runs_to_simulate, snakemake

TARGET = "results/fresh/campaign.duckdb"  # runs and tables; the figures are not what is tested here


def sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def edit_keeping_mtime(path: Path, old: str, new: str) -> None:
    st = path.stat()
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_mtime_ns == st.st_mtime_ns


def dry_sims(wd, cfg) -> int:
    """Runs a dry run would simulate (0 also means no simulate job: checked)."""
    proc = ok(snakemake(wd, "-n", TARGET, config=cfg))
    n = runs_to_simulate(proc)
    assert job_counts(proc).get("simulate", 0) == (1 if n else 0)  # the campaign's one batch job, or none
    return n


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    wd = tmp_path_factory.mktemp("fresh")
    (wd / "t.jsonl").write_text("".join(
        json.dumps({"input_toks": 64 + 8 * i, "output_toks": 8, "arrival_time_ns": i * 50_000_000}) + "\n"
        for i in range(6)))
    shutil.copy(REPO / "configs/model/Qwen/Qwen3-0.6B.json", wd / "m.json")
    shutil.copy(REPO / "configs/cluster/single_node_single_instance.json", wd / "cluster.json")
    (wd / "configs/hardware").mkdir(parents=True)
    shutil.copy(REPO / "configs/hardware/RTXPRO6000.yaml", wd / "configs/hardware/RTXPRO6000.yaml")
    cfg = wd / "fresh.yaml"
    cfg.write_text(yaml.safe_dump({"name": "fresh", "cluster": "cluster.json", "workload": {"trace": "t.jsonl"},
                                   "matrix": {"model": ["m.json", "Qwen/Qwen3-0.6B"], "tp_size": [1],
                                              "link_bw": [16]}}))
    ok(snakemake(wd, "--cores", "2", TARGET, config=cfg))
    return wd, cfg


def run_jsons(wd) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((wd / "results/fresh/runs").rglob("run.json"))]


def test_a_trace_edited_with_its_mtime_kept_reruns_its_runs(fresh):
    wd, cfg = fresh
    old = sha(wd / "t.jsonl")
    assert {r["inputs"]["dataset"]["sha256"] for r in run_jsons(wd)} == {old}
    edit_keeping_mtime(wd / "t.jsonl", '"output_toks": 8', '"output_toks": 9')  # same size, same mtime
    assert dry_sims(wd, cfg) == 2
    ok(snakemake(wd, "--cores", "2", TARGET, config=cfg))
    new = sha(wd / "t.jsonl")
    assert new != old
    assert {r["inputs"]["dataset"]["sha256"] for r in run_jsons(wd)} == {new}
    for summary in (wd / "results/fresh/runs").rglob("requests.summary.json"):
        assert json.loads(summary.read_text())["provenance"]["inputs"]["dataset"]["sha256"] == new
    assert dry_sims(wd, cfg) == 0


@pytest.mark.parametrize("path, old, new, runs", [
    ("m.json", '"rms_norm_eps": 1e-06', '"rms_norm_eps": 2e-06', 1),  # only the run of the model given as a path
    ("configs/hardware/RTXPRO6000.yaml", "\n", "\n# edited\n", 2),
    ("cluster.json", '"cpu_mem"', '"cpu_mem" ', 2),
])
def test_an_input_edited_with_its_mtime_kept_reruns_the_runs_that_read_it(fresh, path, old, new, runs):
    wd, cfg = fresh
    original = (wd / path).read_text()
    assert dry_sims(wd, cfg) == 0
    edit_keeping_mtime(wd / path, old, new)
    try:
        assert dry_sims(wd, cfg) == runs
    finally:
        st = (wd / path).stat()
        (wd / path).write_text(original)
        os.utime(wd / path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert dry_sims(wd, cfg) == 0  # the content is what counts: back to what the runs read, nothing to do


def test_changed_kernel_tables_rerun_the_runs_that_use_them(fresh):
    """perf_model auto (the default) may read the GPU's kernel tables: their content is part of each
    run's cache key (issue 8), as the catalog entry is, and run.json records them."""
    wd, cfg = fresh
    tables = wd / "configs/kernels/RTXPRO6000"
    shutil.copytree(REPO / "configs/kernels/RTXPRO6000", tables)  # the work folder's catalog wins; same content
    try:
        # read from another folder: the runs rerun, so that run.json names the tables they read
        assert dry_sims(wd, cfg) == 2
        ok(snakemake(wd, "--cores", "2", TARGET, config=cfg))
        assert dry_sims(wd, cfg) == 0
        edit_keeping_mtime(tables / "provenance.json", "{", "{ ")
        assert dry_sims(wd, cfg) == 2
        ok(snakemake(wd, "--cores", "2", TARGET, config=cfg))
        for rec in run_jsons(wd):
            assert rec["perf_model"] == "auto"
            assert rec["inputs"]["kernel_tables"]["path"].endswith("configs/kernels/RTXPRO6000")
            assert len(rec["inputs"]["kernel_tables"]["sha256"]) == 64
        assert dry_sims(wd, cfg) == 0
    finally:
        shutil.rmtree(wd / "configs/kernels")
    assert dry_sims(wd, cfg) == 2  # the repository's tables again: not what the last runs read
    ok(snakemake(wd, "--cores", "2", TARGET, config=cfg))
    assert dry_sims(wd, cfg) == 0
