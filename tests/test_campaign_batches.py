"""A matrix campaign's runs in batches (tpsim/campaign/batches.py, tpsim/campaign/batch_job.py), tested
in-process without Snakemake: which batch a run falls in, what a batch job simulates again, a failing
run inside a batch, and outputs byte-identical to the one-run-per-job commands they replace.

Four runs (a model given as a path and a catalog model x link_bw 16/64) over a given six-request
trace, in a temporary working folder (the campaign's paths are relative to it).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, checkout_env
from hypothesis import given, settings
from hypothesis import strategies as st

from tpsim import __version__
from tpsim.campaign import batches
from tpsim.campaign.batch_job import BatchFailed, argv_of, run_batch
from tpsim.campaign.spec import load_campaign

DOC = {"name": "bat", "cluster": "cluster.json", "workload": {"trace": "t.jsonl"},
       "matrix": {"model": ["m.json", "Qwen/Qwen3-0.6B"], "tp_size": [1], "link_bw": [16, 64]}}


@pytest.fixture
def work(tmp_path, monkeypatch):
    """A working folder holding the campaign's inputs, made the current folder."""
    (tmp_path / "t.jsonl").write_text("".join(
        json.dumps({"input_toks": 64 + 8 * i, "output_toks": 8, "arrival_time_ns": i * 50_000_000}) + "\n"
        for i in range(6)))
    shutil.copy(REPO / "configs/model/Qwen/Qwen3-0.6B.json", tmp_path / "m.json")
    shutil.copy(REPO / "configs/cluster/single_node_single_instance.json", tmp_path / "cluster.json")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def plan(doc=DOC, batch_seconds=batches.BATCH_SECONDS) -> list[dict]:
    """The campaign's run specs (all batches), as the workflow would plan them now."""
    camp = load_campaign(json.loads(json.dumps(doc)), roots=[Path("."), REPO])
    batches.file_sha256.cache_clear()  # the workflow hashes once per invocation: each call here is one
    return [spec for specs in batches.plan(camp, __version__, batch_seconds).values() for spec in specs]


def snapshot(specs) -> dict:
    """Every file of every run folder -> (mtime, bytes)."""
    out = {}
    for spec in specs:
        for p in sorted(Path(spec["folder"]).iterdir()):
            out[str(p)] = (p.stat().st_mtime_ns, p.read_bytes())
    return out


def done_runs(before: dict, after: dict) -> set[str]:
    """The run folders whose done.json was written again between two snapshots."""
    return {str(Path(k).parent) for k in after if k.endswith("/done.json") and before.get(k) != after[k]}


# -- batch assignment ------------------------------------------------------------------------------

@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=40), st.integers(0, 10))
def test_a_runs_batch_depends_on_its_id_and_the_count_only_and_doubling_splits(run_id, k):
    count = 1 << k
    name = batches.batch_of(run_id, count)
    assert name == batches.batch_of(run_id, count)
    i, n = map(int, name.split("-of-"))
    assert n == count and 1 <= i <= count
    # twice as many batches: each batch splits in two (its runs go to i or i + count, nowhere else)
    j = int(batches.batch_of(run_id, 2 * count).split("-of-")[0])
    assert j in (i, i + count)


@settings(max_examples=300, deadline=None)
@given(st.floats(0, 1e6), st.integers(1, 100_000), st.floats(1, 86400))
def test_the_batch_count_is_the_smallest_power_of_two_that_keeps_batches_short(total_s, runs, batch_seconds):
    n = batches.batch_count(total_s, runs, batch_seconds)
    assert n & (n - 1) == 0 and 1 <= n <= runs
    if n < 1 << (runs.bit_length() - 1):  # not capped by the run count: the average batch is short enough
        assert total_s / n <= batch_seconds * (1 + 1e-9)
    if n > 1:  # and half as many would not be
        assert total_s / (n // 2) > batch_seconds


def _placement(doc, batch_seconds) -> dict[str, tuple[int, int]]:
    """run id -> (batch index, batch count) as the workflow would plan the campaign."""
    camp = load_campaign(json.loads(json.dumps(doc)), roots=[Path("."), REPO])
    planned = batches.plan(camp, __version__, batch_seconds)
    assert list(planned) == sorted(planned, key=lambda n: int(n.split("-")[0]))
    return {s["id"]: tuple(map(int, name.split("-of-"))) for name, specs in planned.items() for s in specs}


def test_a_growing_campaign_splits_its_batches_and_moves_no_run_elsewhere(work):
    """Twice the runs at the same batch length: twice the batches, and each existing run stays in its batch
    or goes to that batch's other half (i -> i or i + n), so a rerun touches no unrelated batch record."""
    doc = json.loads(json.dumps(DOC))
    per_run = plan(doc)[0]["cost_s"]
    old = _placement(doc, per_run)  # one run's length per batch: 4 runs -> 4 batches
    doc["matrix"]["link_bw"] = [16, 64, 128, 450]
    new = _placement(doc, per_run)  # 8 runs -> 8 batches
    (n,) = {count for _, count in old.values()}
    assert n == 4 and {count for _, count in new.values()} == {2 * n}
    for rid, (i, _) in old.items():
        assert new[rid][0] in (i, i + n), rid


# -- what a batch job simulates --------------------------------------------------------------------

def test_a_batch_simulates_only_the_runs_whose_key_changed(work):
    specs = plan()
    record = run_batch(specs, "b.json", "b.log")
    assert (record["simulated"], record["failed"], record["done"]) == (4, 0, 0)
    first = snapshot(specs)

    again = run_batch(plan(), "b.json", "b.log")  # nothing changed: nothing simulated, nothing touched
    assert (again["simulated"], again["done"]) == (0, 4)
    assert snapshot(specs) == first

    # the model given as a path changes: its two runs rerun, the catalog model's two are untouched
    text = (work / "m.json").read_text()
    (work / "m.json").write_text(text.replace('"rms_norm_eps": 1e-06', '"rms_norm_eps": 2e-06', 1))
    specs2 = plan()
    changed = {s["folder"] for s in specs2 if s["key"] != {t["id"]: t["key"] for t in specs}[s["id"]]}
    assert len(changed) == 2 and all("model=m" in f for f in changed)
    third = run_batch(specs2, "b.json", "b.log")
    assert (third["simulated"], third["done"]) == (2, 2)
    after = snapshot(specs2)
    assert done_runs(first, after) == changed
    untouched = {k: v for k, v in first.items() if str(Path(k).parent) not in changed}
    assert {k: after[k] for k in untouched} == untouched
    for folder in changed:
        rec = json.loads(Path(folder, "run.json").read_text())
        assert rec["inputs"]["model_config"]["sha256"] == batches.file_sha256("m.json")


def test_a_run_missing_an_output_is_simulated_again(work):
    specs = plan()
    run_batch(specs, "b.json", "b.log")
    Path(specs[1]["folder"], "requests.parquet").unlink()
    assert batches.done_problem(specs[1]) == "requests.parquet missing"
    record = run_batch(specs, "b.json", "b.log")
    assert record["simulated"] == 1 and record["runs"][specs[1]["id"]]["reason"] == "requests.parquet missing"
    assert Path(specs[1]["folder"], "requests.parquet").is_file()


def test_a_failing_run_does_not_stop_the_batch_and_the_job_names_it(work):
    specs = plan()
    (work / "m.json").write_text("{ not json")  # after planning: the two runs of m.json fail when derived
    with pytest.raises(BatchFailed) as info:
        run_batch(specs, "b.json", "b.log")
    message = str(info.value)
    assert message.startswith("2 run(s) of this batch failed")
    bad = [s for s in specs if "model=m" in s["id"]]
    for spec in bad:
        assert f"end of {spec['folder']}/tpsim.log" in message
        assert not Path(spec["folder"], "done.json").exists()
        assert not Path(spec["folder"], "requests.parquet").exists()
    assert "m.json" in message  # the error names the file
    record = json.loads(Path("b.json").read_text())  # written before the job fails
    assert (record["simulated"], record["failed"]) == (2, 2)
    for spec in specs:
        assert Path(spec["folder"], "done.json").exists() == (spec not in bad)
        assert record["runs"][spec["id"]]["outcome"] == ("failed" if spec in bad else "simulated")


def test_a_run_whose_config_cannot_be_derived_fails_alone(work):
    specs = plan()
    (work / "cluster.json").write_text("{ not json")  # the base config, after planning: every derive fails
    with pytest.raises(BatchFailed) as info:
        run_batch(specs[:2], "b.json", "b.log")
    assert str(info.value).startswith("2 run(s) of this batch failed")
    assert "derive: error:" in str(info.value) and "cluster.json" in str(info.value)


def test_an_unexpected_error_in_one_run_does_not_lose_the_others(work, monkeypatch):
    """In this process (one worker, as every Slurm job runs): a bug in one run's derivation is that run's
    failure, with its traceback in its log; the other runs are simulated and the record written."""
    from tpsim.campaign import batch_job

    specs = plan()
    real = batch_job.derive_run

    def derive(base, params, *args):
        if params["link_bw"] == 64:
            raise RuntimeError("a bug")
        return real(base, params, *args)

    monkeypatch.setattr(batch_job, "derive_run", derive)
    with pytest.raises(BatchFailed) as info:
        run_batch(specs, "b.json", "b.log", threads=1)
    assert str(info.value).startswith("2 run(s) of this batch failed") and "RuntimeError: a bug" in str(info.value)
    record = json.loads(Path("b.json").read_text())
    assert (record["simulated"], record["failed"]) == (2, 2)
    for spec in specs:
        assert Path(spec["folder"], "done.json").exists() == (spec["params"]["link_bw"] != 64)


# -- byte-identical to one run per job ----------------------------------------------------------------

def _without_timing(path: Path) -> dict:
    doc = json.loads(path.read_text())
    doc.pop("timing")
    return doc


def test_batch_outputs_are_byte_identical_to_derive_and_tpsim_run(work):
    """The commands the one-run-per-job rule ran (``python -m tpsim.campaign.derive`` and ``python -m tpsim
    run``), on one run's folder: cluster.json, run.json and requests.parquet byte for byte, the summary
    but for its timing."""
    specs = plan()
    run_batch(specs, "b.json", "b.log")
    spec = next(s for s in specs if s["id"].startswith("model=m"))
    folder = Path(spec["folder"])
    names = ("cluster.json", "run.json", "requests.parquet")
    batch = {name: (folder / name).read_bytes() for name in names}
    batch_summary = _without_timing(folder / "requests.summary.json")
    for name in (*names, "requests.summary.json", "done.json"):
        (folder / name).unlink()

    derive = [sys.executable, "-m", "tpsim.campaign.derive", f"--base={spec['base']}", "--params",
              json.dumps(spec["params"])]
    for name, path in spec["records"].items():
        derive += ["--record", f"{name}={path}"]
    derive += [f"--cluster-out={folder}/cluster.json", f"--run-out={folder}/run.json"]
    for cmd in (derive, [sys.executable, "-m", "tpsim", *argv_of(spec)]):
        proc = subprocess.run(cmd, cwd=work, env=checkout_env(), capture_output=True, text=True, check=False,
                              timeout=120)
        assert proc.returncode == 0, proc.stderr
    for name in names:
        assert (folder / name).read_bytes() == batch[name], name
    assert _without_timing(folder / "requests.summary.json") == batch_summary


def test_the_status_line_counts_runs_and_names_lost_outputs_of_finished_batches(work):
    camp = load_campaign(json.loads(json.dumps(DOC)), roots=[Path("."), REPO])
    planned = batches.plan(camp, __version__)
    assert list(planned) == ["1-of-1"]  # four tiny runs: one batch
    records = {"1-of-1": "batches/1-of-1.json"}
    assert batches.status_lines(camp, planned, records) == [
        "tpsim: campaign bat: 4 runs in 1 batch job(s); 4 to simulate, 0 done"]
    Path("batches").mkdir()
    run_batch(planned["1-of-1"], records["1-of-1"], "batches/1-of-1.log")
    assert batches.status_lines(camp, planned, records) == [
        "tpsim: campaign bat: 4 runs in 1 batch job(s); 0 to simulate, 4 done"]
    lost = planned["1-of-1"][2]
    Path(lost["folder"], "done.json").unlink()  # the record says done; Snakemake would not rerun the batch
    head, warning = batches.status_lines(camp, planned, records)
    assert head.endswith("1 to simulate, 3 done")
    assert warning == (f"tpsim: warning: 1 run(s) of finished batches lack outputs (first: {lost['folder']}: not run); "
                       "re-simulate them (only them) with: snakemake --forcerun batches/1-of-1.json")
