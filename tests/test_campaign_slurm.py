"""A small campaign through a real Slurm: single node on localhost, Snakemake's slurm executor.

Starts munged/slurmctld/slurmd with .ci/slurm-up.sh (installing the Debian packages if needed),
runs 8 runs with --workflow-profile slurm-ci (workflow/profiles/slurm-ci) under `timeout -s KILL` (a hung status
query must never hang CI), checks that the runs really ran inside Slurm jobs, batched, and stops
the daemons with .ci/slurm-down.sh.  It installs system packages and starts daemons, so it runs
only when asked to: TPSIM_TEST_SLURM=1 (which .ci/run sets), as root with apt-get (as on CI: a
fresh Debian 12 machine) and the slurm executor plugin installed; otherwise it skips with the reason.
"""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import REPO, checkout_env, snakemake_cmd

KILL_AFTER_S = 420
pytestmark = pytest.mark.slurm


#: the opt-in: without it the test never installs packages or starts daemons (.ci/run sets it)
OPT_IN = "TPSIM_TEST_SLURM"


def skip_reason() -> str | None:
    if os.environ.get(OPT_IN) != "1":
        return (f"Slurm test installs Debian packages and starts munged/slurmctld/slurmd: it runs only when asked, "
                f"{OPT_IN}=1 (set by .ci/run)")
    if os.geteuid() != 0:
        return "Slurm test needs root: it starts munged, slurmctld and slurmd and writes /etc/slurm/slurm.conf"
    if shutil.which("apt-get") is None and shutil.which("slurmctld") is None:
        return "Slurm test needs apt-get (Debian/Ubuntu) to install slurmctld, slurmd and munge"
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        return "Slurm test needs snakemake-executor-plugin-slurm: pip install -e '.[hpc]'"
    if Path("/etc/slurm/slurm.conf").exists() and not Path("/etc/slurm/.tpsim-ci").exists():
        return "a Slurm configuration not written by .ci/slurm-up.sh exists (/etc/slurm/slurm.conf); not touching it"
    return None


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("slurm")
    env = dict(os.environ, SLURM_TEST_ROOT=str(root))
    try:
        up = subprocess.run(["bash", str(REPO / ".ci/slurm-up.sh")], env=env, capture_output=True, text=True,
                            timeout=600, check=False)
        assert up.returncode == 0, f"slurm-up failed:\n{up.stdout}\n{up.stderr}"
        yield root
    finally:
        subprocess.run(["bash", str(REPO / ".ci/slurm-down.sh")], env=env, capture_output=True, text=True, timeout=60,
                       check=False)


def test_campaign_runs_through_slurm(slurm, tmp_path):
    doc = {
        "name": "slurm_ci",
        "cluster": "configs/cluster/single_node_single_instance.json",
        "workload": {"generate": {"preset": "sharegpt", "num_reqs": 20, "rate": 4}},
        "matrix": {"model": ["Qwen/Qwen3-8B", "meta-llama/Llama-3.1-70B"], "tp_size": [1, 2], "link_bw": [16, 450]},
    }
    cfg = tmp_path / "slurm_ci.yaml"
    cfg.write_text(yaml.safe_dump(doc))
    cmd = ["timeout", "-s", "KILL", str(KILL_AFTER_S),
           *snakemake_cmd("--directory", str(tmp_path), "--config", f"campaign={cfg}",
                          "--workflow-profile", "slurm-ci")]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=KILL_AFTER_S + 30, check=False,
                          env=checkout_env())
    log = proc.stdout[-4000:] + proc.stderr[-8000:]
    assert proc.returncode != 137, f"killed after {KILL_AFTER_S} s (Slurm status queries hung?)\n{log}"
    assert proc.returncode == 0, log

    import duckdb

    res = tmp_path / "results/slurm_ci"
    with duckdb.connect(str(res / "campaign.duckdb"), read_only=True) as con:
        assert dict(con.execute("SELECT status, count(*) FROM runs GROUP BY ALL").fetchall()) == {
            "ok": 6, "infeasible": 2}
        assert con.execute("SELECT count(*) FROM requests").fetchall() == [(6 * 20,)]

    # every run ran inside a Slurm job; the 8 runs (about 1.4 s of estimated work) are one batch: one job
    job_ids = set()
    for run_log in res.glob("runs/**/tpsim.log"):
        m = re.match(r"host=\S+ slurm_job=(\S+)", run_log.read_text())
        assert m and m.group(1) != "none", f"{run_log} did not run under Slurm"
        job_ids.add(m.group(1))
    assert len(list(res.glob("runs/**/tpsim.log"))) == 8
    assert len(job_ids) == 1, job_ids
    job = job_ids.pop()
    batch = json.loads((res / "batches" / "1-of-1.json").read_text())
    assert batch["where"].endswith(f"slurm_job={job}") and batch["simulated"] == 8
    show = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True, timeout=30, check=False)
    assert "JobState=COMPLETED" in show.stdout, show.stdout + show.stderr
    assert list((tmp_path / ".snakemake" / "slurm_logs").rglob("*.log")), "no Slurm job logs"
    # the local rules ran here, not in Slurm: the figures exist
    for name in ("ttft_by_tp", "memory_by_tp"):
        assert (res / "figures" / f"{name}.pdf").exists()
    assert json.loads((res / "campaign.json").read_text())["name"] == "slurm_ci"


def test_the_slurm_test_runs_only_when_asked(monkeypatch):
    """Outside CI, pytest never installs system packages or starts daemons: the opt-in is explicit."""
    monkeypatch.delenv(OPT_IN, raising=False)
    assert skip_reason().startswith("Slurm test installs Debian packages")
    monkeypatch.setenv(OPT_IN, "0")
    assert OPT_IN in skip_reason()
    assert f"export {OPT_IN}=1" in (REPO / ".ci/run").read_text()
