"""The campaign pipeline's scripts without Snakemake: derive_config, aggregate, figures.

Runs are made by the real `tpsim run` (in-process, through tpsim.cli.main) on small traces
in a temporary folder, laid out exactly as the pipeline lays them out.
"""

import hashlib
import json
from pathlib import Path

import pytest
from conftest import REPO

from tpsim.campaign import (
    aggregate,
    derive,
    figures,
    run_ids,
    spec,
    tables,
)
from tpsim.campaign.outputs import TABLE_FILES
from tpsim.campaign.provenance import git_dirty
from tpsim.campaign.runs import generate_flags
from tpsim.cli import main as tpsim_main

NUM_REQS = 20
CAMPAIGN = {
    "name": "unit",
    "cluster": "configs/cluster/single_node_single_instance.json",
    "workload": {"generate": {"preset": "sharegpt", "num_reqs": NUM_REQS, "rate": 4}},
    # Llama-3.1-70B needs ~141 GB of weights at TP=1: does not fit in one 96 GiB RTX PRO 6000
    "matrix": {"model": ["Qwen/Qwen3-8B", "meta-llama/Llama-3.1-70B"], "tp_size": [1, 2], "link_bw": [16, 450],
               "seed": [0, 1]},
}


def sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def build_runs(root: Path, doc: dict) -> tuple:
    """Every run of ``doc`` as the pipeline would leave it under root/results/<name>/runs/."""
    camp = spec.load_campaign(doc, source="unit.yaml", roots=[REPO])
    res = root / camp.results
    for (rate, seed), rel in camp.traces.items():
        assert tpsim_main(["trace", "--preset", "sharegpt", "--num-reqs", str(NUM_REQS), "--rate", rate, "--seed", seed,
                           "--output", str(root / rel)]) == 0
    dirs = []
    for run in camp.runs:
        d = res / "runs" / run.id
        args = ["--base", str(REPO / camp.cluster), "--params", json.dumps(run.params),
                "--cluster-out", str(d / "cluster.json"), "--run-out", str(d / "run.json")]
        if run.hardware_override:
            args += ["--hardware", str(REPO / run.hardware_override)]
        args += ["--record", f"dataset={root / run.trace}", "--record", f"model_config={REPO / run.model_config}",
                 "--record", f"hardware={REPO / run.hardware_config}"]
        assert derive.main(args) == 0
        assert tpsim_main(["run", "--cluster-config", str(d / "cluster.json"), "--dataset", str(root / run.trace),
                           "--output", str(d / "requests.csv"), "--record-infeasible", "--log-interval", "0",
                           "--perf-model", "analytical", "--seed", str(run.params["seed"]),
                           "--requests-format", "parquet"]) == 0
        dirs.append(d)
    return camp, dirs


def outputs_in(d: Path) -> dict:
    return {k: str(d / v) for k, v in TABLE_FILES.items()}


def run_aggregate(dirs, out_dir: Path, slo=None) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    return aggregate.aggregate([str(d / "run.json") for d in dirs], [str(d / "requests.parquet") for d in dirs],
                               [str(d / "requests.summary.json") for d in dirs], outputs_in(out_dir), slo=slo)


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    root = tmp_path_factory.mktemp("campaign")
    camp, dirs = build_runs(root, CAMPAIGN)
    out = root / "agg"
    info = run_aggregate(dirs, out)
    return {"root": root, "camp": camp, "dirs": dirs, "out": out, "info": info}


def query(path, sql, params=None):
    import duckdb

    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute(sql, params or {}).fetchall()


# ----------------------------------------------------------------------------- derive_config


def test_derived_config_follows_the_run(tmp_path):
    base = json.loads((REPO / "configs/cluster/single_node_tp2_pp2.json").read_text())
    params = {"model": "Qwen/Qwen3-8B", "tp_size": 4, "link_bw": 64, "link_latency": 5000, "hardware": "H100",
              "max_num_seqs": 32, "max_num_batched_tokens": None}
    doc = derive.derive_cluster_config(base, params, derive.hardware_memory(REPO / "configs/hardware/H100.yaml"))
    inst = doc["nodes"][0]["instances"][0]
    assert (doc["link_bw"], doc["link_latency"]) == (64, 5000)
    assert inst["model_name"] == "Qwen/Qwen3-8B" and inst["hardware"] == "H100"
    assert (inst["tp_size"], inst["pp_size"], inst["num_npus"]) == (4, 2, 8)  # num_npus = tp x the base's pp
    assert (inst["npu_mem"]["mem_size"], inst["npu_mem"]["mem_bw"]) == (79.65, 3350)  # from the catalog
    assert inst["max_num_seqs"] == 32 and "max_num_batched_tokens" not in inst
    assert doc["nodes"][0]["cpu_mem"] == base["nodes"][0]["cpu_mem"]  # the rest of the base is kept
    assert base["nodes"][0]["instances"][0]["tp_size"] == 2  # the base itself is untouched


def test_a_model_given_as_a_path_is_derived_as_the_file_the_campaign_found():
    """tpsim reads a model path from the working folder; the campaign also looks in the repository."""
    base = json.loads((REPO / "configs/cluster/single_node_single_instance.json").read_text())
    params = {"model": "configs/model/Qwen/Qwen3-8B.json", "tp_size": 1, "link_bw": 16}
    found = str(REPO / "configs/model/Qwen/Qwen3-8B.json")
    doc = derive.derive_cluster_config(base, params, None, found)
    assert doc["nodes"][0]["instances"][0]["model_name"] == found
    doc = derive.derive_cluster_config(base, dict(params, model="Qwen/Qwen3-8B"), None, found)
    assert doc["nodes"][0]["instances"][0]["model_name"] == "Qwen/Qwen3-8B"  # a catalog name stays a name


def test_same_hardware_keeps_the_base_memory():
    base = json.loads((REPO / "configs/cluster/single_node_single_instance.json").read_text())
    doc = derive.derive_cluster_config(base, {"model": "Qwen/Qwen3-32B", "tp_size": 1, "link_bw": 16,
                                                   "hardware": "RTXPRO6000"})
    inst = doc["nodes"][0]["instances"][0]
    assert inst["npu_mem"] == base["nodes"][0]["instances"][0]["npu_mem"]
    assert inst["num_npus"] == 1 and doc["link_latency"] == base["link_latency"]


def test_every_instance_of_a_multi_instance_base_is_derived():
    base = json.loads((REPO / "configs/cluster/single_node_two_instances.json").read_text())
    doc = derive.derive_cluster_config(base, {"model": "Qwen/Qwen3-8B", "tp_size": 4, "link_bw": 100})
    insts = doc["nodes"][0]["instances"]
    assert len(insts) == 2 and all(i["tp_size"] == 4 and i["num_npus"] == 4 for i in insts)


def test_run_json_records_inputs_and_hashes(campaign):
    d = campaign["dirs"][0]
    rec = json.loads((d / "run.json").read_text())
    assert rec["run_id"] == campaign["camp"].runs[0].id and rec["model"] == "Qwen/Qwen3-8B"
    assert rec["inputs"]["cluster_config"]["sha256"] == sha(d / "cluster.json")
    base = REPO / "configs/cluster/single_node_single_instance.json"
    assert rec["inputs"]["base_cluster_config"]["sha256"] == sha(base)
    assert rec["inputs"]["dataset"]["sha256"] == sha(campaign["root"] / campaign["camp"].runs[0].trace)
    assert rec["inputs"]["model_config"]["sha256"] == sha(REPO / "configs/model/Qwen/Qwen3-8B.json")


def test_infeasible_runs_keep_their_input_hashes(campaign):
    rows = query(campaign["out"] / "campaign.duckdb",
                 "SELECT dataset_sha256, model_config_sha256, hardware_sha256 FROM runs WHERE status = 'infeasible'")
    assert rows and all(all(v and len(v) == 64 for v in row) for row in rows)


def test_generate_flags_map_to_tpsim_trace():
    flags = generate_flags({"preset": "sharegpt", "num_reqs": 5, "rate": 3, "seed": 1, "first_gap": True,
                                        "token_ids": False, "input_len": 512.0})
    assert flags == ["--preset", "sharegpt", "--num-reqs", "5", "--first-gap", "--no-token-ids", "--input-len", "512"]


def test_model_names_round_trip_through_paths():
    for name in ("Qwen/Qwen3-32B", "meta-llama/Llama-3.1-70B"):
        enc = run_ids.encode_name(name)
        assert "/" not in enc and run_ids.decode_name(enc) == name
    assert run_ids.fmt_value(16.0) == "16" and run_ids.fmt_value(12.5) == "12.5"


# ----------------------------------------------------------------------------- aggregate


def test_tables_have_one_row_per_run_and_per_request(campaign):
    db = campaign["out"] / "campaign.duckdb"
    n_runs = 2 * 2 * 2 * 2
    assert query(db, "SELECT count(*) FROM runs") == [(n_runs,)]
    statuses = dict(query(db, "SELECT status, count(*) FROM runs GROUP BY ALL"))
    assert statuses == {"ok": 12, "infeasible": 4}
    assert query(db, "SELECT count(*) FROM requests") == [(12 * NUM_REQS,)]
    # every request carries its run's parameters, with the real model name
    assert set(query(db, "SELECT DISTINCT model FROM requests")) == {("Qwen/Qwen3-8B",), ("meta-llama/Llama-3.1-70B",)}
    assert query(db, """SELECT count(*) FROM requests q JOIN runs r USING (run_id)
                        WHERE q.tp_size != r.tp_size OR q.link_bw != r.link_bw OR q.seed != r.seed""") == [(0,)]


def test_infeasible_runs_are_flagged_with_the_reason_and_keep_their_memory_needs(campaign):
    rows = query(campaign["out"] / "campaign.duckdb",
                 """SELECT model, tp_size, reason, ttft_p50_ms, finished, weights_gb, activation_peak_gb, reserve_gb,
                           budget_gb, memory_needed_gb, kv_capacity_gb, run_dir
                    FROM runs WHERE status = 'infeasible'""")
    assert {(m, tp) for m, tp, *_ in rows} == {("meta-llama/Llama-3.1-70B", 1)}
    for _, _, reason, ttft, finished, weights, act, reserve, budget, needed, kv, run_dir in rows:
        assert "does not fit" in reason
        assert ttft is None and finished is None and kv is None
        # the numbers the reason gives as text, as numbers: needs = weights + activations + reserve + one block
        summary = json.loads((Path(run_dir) / "requests.summary.json").read_text())["memory_needed"]
        assert weights == pytest.approx(summary["weights_gb"]) and weights > 140  # 70.6 B parameters, bf16
        assert needed == pytest.approx(summary["needed_gb"])
        assert weights + act + reserve < needed < weights + act + reserve + 0.1
        assert needed > budget
        assert f"needs {needed:.1f} GB per GPU" in reason and f"but {budget:.1f} GB are available" in reason


def test_tp2_holds_half_the_weights_of_tp1(campaign):
    (w1,), (w2,) = query(campaign["out"] / "campaign.duckdb",
                         """SELECT DISTINCT weights_gb FROM runs WHERE model = 'Qwen/Qwen3-8B' AND status = 'ok'
                            ORDER BY tp_size""")
    assert w2 == pytest.approx(w1 / 2, rel=0.01)
    (k1,), (k2,) = query(campaign["out"] / "campaign.duckdb",
                         "SELECT DISTINCT kv_capacity_gb FROM runs WHERE model = 'Qwen/Qwen3-8B' ORDER BY tp_size")
    assert k2 > k1


def test_run_statistics_equal_tpsims_summary(campaign):
    rows = query(campaign["out"] / "campaign.duckdb", "SELECT * FROM runs WHERE status = 'ok'")
    import duckdb

    with duckdb.connect(str(campaign["out"] / "campaign.duckdb"), read_only=True) as con:
        cols = [d[0] for d in con.execute("SELECT * FROM runs LIMIT 0").description]
    for row in rows:
        r = dict(zip(cols, row))
        s = json.loads((Path(r["run_dir"]) / "requests.summary.json").read_text())
        for metric in ("ttft", "tpot", "itl", "latency", "queuing_delay"):
            for stat in ("mean", "p50", "p90", "p99"):
                assert r[f"{metric}_{stat}_ms"] == pytest.approx(s["metrics_ms"][metric][stat], rel=1e-6, abs=1e-6)
        assert r["throughput_rps"] == s["throughput"]["requests_per_s"]
        assert r["tpsim_version"] == s["tpsim_version"]
        assert r["dataset_sha256"] == s["provenance"]["inputs"]["dataset"]["sha256"]
        assert r["cluster_config_sha256"] == sha(Path(r["run_dir"]) / "cluster.json")


def test_exports_match_the_tables_and_are_stable(campaign, tmp_path):
    out = campaign["out"]
    import duckdb

    for table in ("runs", "requests"):
        n = query(out / "campaign.duckdb", f"SELECT count(*) FROM {table}")[0][0]
        with duckdb.connect() as con:
            for reader, suffix in (("read_parquet", "parquet"), ("read_csv", "csv")):
                rows = con.execute(f"SELECT count(*) FROM {reader}($p)", {"p": str(out / f"{table}.{suffix}")})
                assert rows.fetchall() == [(n,)], (table, suffix)
    again = tmp_path / "again"
    run_aggregate(campaign["dirs"], again)
    for name in ("runs.parquet", "runs.csv", "requests.parquet", "requests.csv"):
        assert sha(out / name) == sha(again / name), name
    assert not list(again.glob(".*.tmp"))  # temporary files renamed into place


def _copy_parquet(src: Path, dst: Path, sql: str = "SELECT * FROM read_parquet($src)") -> None:
    import duckdb

    with duckdb.connect() as con:
        con.execute(f"COPY ({sql.replace('$src', repr(str(src)))}) TO '{dst}' (FORMAT parquet)")


def _broken_run(d: Path, root: Path, sql: str) -> Path:
    broken = root / "run"
    broken.mkdir()
    for name in ("run.json", "requests.summary.json"):
        (broken / name).write_bytes((d / name).read_bytes())
    _copy_parquet(d / "requests.parquet", broken / "requests.parquet", sql)
    return broken


def test_aggregate_rejects_truncated_or_foreign_request_files(campaign, tmp_path):
    d = campaign["dirs"][0]
    broken = _broken_run(d, tmp_path, "SELECT * FROM read_parquet($src) ORDER BY request_id LIMIT 19")
    with pytest.raises(aggregate.AggregateError, match="summary 20 finished, 19 rows"):
        run_aggregate([broken], tmp_path / "out")
    _copy_parquet(d / "requests.parquet", broken / "requests.parquet", "SELECT 1 AS id, 2 AS latency")
    with pytest.raises(aggregate.AggregateError, match="not tpsim's per-request Parquet"):
        run_aggregate([broken], tmp_path / "out")
    (broken / "requests.parquet").write_text("id,latency\n1,2\n")
    with pytest.raises(aggregate.AggregateError, match="per-request files"):
        run_aggregate([broken], tmp_path / "out")
    assert not (tmp_path / "out" / "campaign.duckdb").exists()


def test_a_failed_aggregation_leaves_no_file_behind(campaign, tmp_path):
    """The outputs appear together or not at all: a failure inside DuckDB (after the database
    and some exports were written to their temporary names) leaves the folder as it was."""
    broken = _broken_run(campaign["dirs"][0], tmp_path, "SELECT * FROM read_parquet($src) LIMIT 19")
    out = tmp_path / "out"
    out.mkdir()
    (out / "runs.csv").write_text("an older table\n")
    with pytest.raises(aggregate.AggregateError, match="summary 20 finished, 19 rows"):
        run_aggregate([broken], out)
    assert sorted(p.name for p in out.iterdir()) == ["runs.csv"]
    assert (out / "runs.csv").read_text() == "an older table\n"


def copy_runs(dirs, root: Path, edit) -> list[Path]:
    """Copies of the run folders, each summary passed through ``edit(index, summary, params)``."""
    out = []
    for i, d in enumerate(dirs):
        c = root / f"run{i}"
        c.mkdir(parents=True)
        summary = json.loads((d / "requests.summary.json").read_text())
        params = json.loads((d / "run.json").read_text())
        edit(i, summary, params)
        (c / "requests.summary.json").write_text(json.dumps(summary))
        (c / "run.json").write_text(json.dumps(params))
        (c / "requests.parquet").write_bytes((d / "requests.parquet").read_bytes())
        out.append(c)
    return out


def table_rows(db: Path, table: str) -> list:
    return query(db, f"SELECT * EXCLUDE (run_dir) FROM {table} ORDER BY ALL" if table == "runs"
                 else f"SELECT * FROM {table} ORDER BY ALL")


def test_tables_do_not_depend_on_the_summary_timeline(campaign, tmp_path):
    """Campaigns run tpsim with --log-interval 0 (no timeline): the tables never read it."""
    def drop_timeline(i, summary, _params):
        if i % 2:
            summary.pop("timeline", None)
        else:
            summary["timeline"] = []

    dirs = copy_runs(campaign["dirs"], tmp_path / "runs", drop_timeline)
    run_aggregate(dirs, tmp_path / "out")
    for table in ("runs", "requests"):
        again = table_rows(tmp_path / "out/campaign.duckdb", table)
        assert again == table_rows(campaign["out"] / "campaign.duckdb", table), table
    assert "timeline" not in "".join(Path(m.__file__).read_text() for m in (aggregate, tables, figures))


def test_an_odd_number_in_one_run_does_not_cost_the_campaign_its_tables(campaign, tmp_path):
    """Integers past 32 bits go into BIGINT columns; values that fit no column become NULL with a
    warning, and every run still has its row."""
    def odd(i, summary, params):
        if i == 0:
            params["max_num_seqs"] = 10**11  # from a base config: past INT32
            summary["instances"][0]["engine"]["max_num_batched_tokens"] = 2**40
            summary["instances"][0]["memory"]["block_size"] = 2**70  # past BIGINT
            summary["instances"][0]["peak_kv_utilization"] = "high"  # not a number
            summary["throughput"]["requests_per_s"] = 10**400  # past a double

    import io

    dirs = copy_runs(campaign["dirs"], tmp_path / "runs", odd)
    log = io.StringIO()
    aggregate.aggregate([str(d / "run.json") for d in dirs], [str(d / "requests.parquet") for d in dirs],
                        [str(d / "requests.summary.json") for d in dirs], outputs_in(tmp_path / "out"), log=log)
    row = query(tmp_path / "out/campaign.duckdb",
                """SELECT max_num_seqs, engine_max_num_batched_tokens, block_size, peak_kv_utilization, throughput_rps
                   FROM runs WHERE run_dir = $d""", {"d": str(dirs[0])})
    assert row == [(10**11, 2**40, None, None, None)]
    assert query(tmp_path / "out/campaign.duckdb", "SELECT count(*) FROM runs") == [(len(dirs),)]
    warnings = [line for line in log.getvalue().splitlines() if line.startswith("aggregate: warning:")]
    assert len(warnings) == 3 and all(str(dirs[0]) in w and "stored as NULL" in w for w in warnings), warnings
    assert "block_size: 1180591620717411303424 does not fit a BIGINT column" in log.getvalue()


def test_git_dirty_tracks_uncommitted_changes_to_tracked_files(tmp_path):
    import subprocess

    assert git_dirty(tmp_path) is None  # not a git checkout
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@e"]
    subprocess.run(git + ["init", "-q"], check=True)
    for rel in ("tpsim/a.py", "configs/b.json", "workflow/c.py"):
        (tmp_path / rel).parent.mkdir(exist_ok=True)
        (tmp_path / rel).write_text("x\n")
    subprocess.run(git + ["add", "."], check=True)
    subprocess.run(git + ["commit", "-qm", "init"], check=True)
    assert git_dirty(tmp_path) is False
    (tmp_path / "tpsim/new.py").write_text("untracked\n")  # untracked files (results/, scratch) do not count
    assert git_dirty(tmp_path) is False
    (tmp_path / "workflow/c.py").write_text("changed\n")  # any tracked file, not only tpsim/ and configs/
    assert git_dirty(tmp_path) is True
    subprocess.run(git + ["add", "workflow/c.py"], check=True)  # staged but not committed: still dirty
    assert git_dirty(tmp_path) is True
    subprocess.run(git + ["commit", "-qm", "c"], check=True)
    assert git_dirty(tmp_path) is False


def test_runs_record_git_dirty(campaign):
    """run.json and the runs table carry git_dirty: a boolean, the checkout's state when the run was made."""
    dirty = git_dirty()
    assert isinstance(dirty, bool)  # the tests run in a git checkout
    for d in campaign["dirs"]:
        assert json.loads((d / "run.json").read_text())["git_dirty"] is dirty
    assert query(campaign["out"] / "campaign.duckdb", "SELECT DISTINCT git_dirty FROM runs") == [(dirty,)]
    assert query(campaign["out"] / "campaign.duckdb",
                 "SELECT data_type FROM information_schema.columns "
                 "WHERE table_name = 'runs' AND column_name = 'git_dirty'"
                 ) == [("BOOLEAN",)]
