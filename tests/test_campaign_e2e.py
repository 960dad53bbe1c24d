"""A small campaign end to end through Snakemake, and the pipeline's rerun behaviour.

8 runs (Qwen3-8B and Llama-3.1-70B x TP 1/2 x link_bw 16/450 GB/s on RTX PRO 6000, 30
requests each); Llama-3.1-70B at TP=1 does not fit and must be recorded as infeasible.
Snakemake runs as `python -m snakemake -s <the workflow> --directory <tmp> --config campaign=FILE`,
with this checkout on PYTHONPATH, so the repository's results/ is never touched.
"""

import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO, checkout_env, snakemake_cmd

from tpsim.campaign.provenance import git_dirty

NUM_REQS = 30
SMALL = {
    "name": "small",
    "description": "test campaign",
    "cluster": "configs/cluster/single_node_single_instance.json",
    "workload": {"generate": {"preset": "sharegpt", "num_reqs": NUM_REQS, "rate": 4, "seed": 3}},
    "matrix": {"model": ["Qwen/Qwen3-8B", "meta-llama/Llama-3.1-70B"], "tp_size": [1, 2], "link_bw": [16, 450]},
}
FIGURES = ("ttft_by_tp", "ttft_vs_link_bw", "tpot_vs_link_bw", "throughput_vs_link_bw", "memory_by_tp",
           "ttft_tpot_cdf")


def snakemake(workdir: Path, *args, config: Path | None = None, configfile: Path | None = None,
              timeout=600) -> subprocess.CompletedProcess:
    """Snakemake on a campaign chosen with ``--config campaign=`` (``configfile``: the compatible way)."""
    cmd = snakemake_cmd("--directory", str(workdir))
    if config is not None:
        cmd += ["--config", f"campaign={config}"]
    if configfile is not None:
        cmd += ["--configfile", str(configfile)]
    return subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=timeout, cwd=REPO, check=False,
                          env=checkout_env())


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-6000:]
    return proc


def job_counts(proc) -> dict:
    """rule -> count from the 'Job stats' table of a (dry) run."""
    text = proc.stdout + proc.stderr
    if "Job stats:" not in text:
        return {}
    table = text.split("Job stats:", 1)[1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.MULTILINE)
            if m.group(1) != "total"}


def runs_to_simulate(proc) -> int:
    """How many runs the invocation will simulate, from the line the workflow prints when it loads
    ("N runs in B batch job(s); K to simulate, D done")."""
    m = re.search(r"tpsim: campaign \S+: (\d+) runs in (\d+) batch job\(s\); (\d+) to simulate",
                  proc.stdout + proc.stderr)
    assert m, proc.stdout[-2000:] + proc.stderr[-2000:]
    return int(m.group(3))


def tree_state(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.stat().st_size)
            for p in root.rglob("*") if p.is_file()}


def sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def query(db, sql):
    """``sql`` on a DuckDB database, or (a .parquet path) on an in-memory one."""
    import duckdb

    with duckdb.connect(str(db) if str(db).endswith(".duckdb") else ":memory:", read_only=str(db).endswith(".duckdb")) \
            as con:
        return con.execute(sql).fetchall()


def write_campaign(path: Path, doc: dict) -> Path:
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    """The small campaign, run once to completion."""
    wd = tmp_path_factory.mktemp("e2e")
    cfg = write_campaign(wd / "small.yaml", SMALL)
    ok(snakemake(wd, "--cores", "2", config=cfg))
    return wd, cfg


def test_tables_count_every_run_and_request(done):
    wd, _ = done
    db = wd / "results/small/campaign.duckdb"
    assert query(db, "SELECT count(*) FROM runs") == [(2 * 2 * 2,)]
    assert dict(query(db, "SELECT status, count(*) FROM runs GROUP BY ALL")) == {"ok": 6, "infeasible": 2}
    assert query(db, "SELECT count(*) FROM requests") == [(6 * NUM_REQS,)]
    assert query(db, "SELECT count(DISTINCT run_id) FROM requests") == [(6,)]
    for name in ("runs.parquet", "runs.csv", "requests.parquet"):
        assert (wd / f"results/small/{name}").stat().st_size > 0
    assert not (wd / "results/small/requests.csv").exists()  # only with requests_csv: true (2 MB per run)


def test_tp2_weights_are_half_of_tp1(done):
    wd, _ = done
    rows = query(wd / "results/small/campaign.duckdb",
                 """SELECT tp_size, any_value(weights_gb), any_value(kv_capacity_gb) FROM runs
                    WHERE model = 'Qwen/Qwen3-8B' GROUP BY tp_size ORDER BY tp_size""")
    (tp1, w1, kv1), (tp2, w2, kv2) = rows
    assert (tp1, tp2) == (1, 2)
    assert w2 == pytest.approx(w1 / 2, rel=0.01)
    assert kv2 > kv1  # the freed memory goes to the KV cache


def test_infeasible_runs_are_recorded_not_failed(done):
    wd, _ = done
    rows = query(wd / "results/small/campaign.duckdb",
                 "SELECT model, tp_size, link_bw, reason FROM runs WHERE status = 'infeasible' ORDER BY link_bw")
    assert [(m, tp, bw) for m, tp, bw, _ in rows] == [("meta-llama/Llama-3.1-70B", 1, 16.0),
                                                     ("meta-llama/Llama-3.1-70B", 1, 450.0)]
    assert all("does not fit" in r for *_, r in rows)
    run = wd / "results/small/runs/model=meta-llama--Llama-3.1-70B/tp=1/link_bw=16"
    parquet = run / "requests.parquet"
    assert query(parquet, "SELECT count(*) FROM read_parquet('" + str(parquet) + "')") == [(0,)]  # no rows
    assert not (run / "requests.csv").exists()  # the CSV only when the campaign asks for it
    assert json.loads((run / "requests.summary.json").read_text())["status"] == "infeasible"
    figure_rows = (wd / "results/small/figures/ttft_by_tp.csv").read_text()
    assert "meta-llama/Llama-3.1-70B,1,infeasible" in figure_rows


def test_each_run_folder_is_hive_style_and_self_describing(done):
    wd, _ = done
    runs = wd / "results/small/runs"
    dirs = sorted(p.parent for p in runs.rglob("requests.parquet"))
    assert len(dirs) == 8
    for d in dirs:
        rel = d.relative_to(runs).parts
        assert [p.split("=")[0] for p in rel] == ["model", "tp", "link_bw"]
        cluster = json.loads((d / "cluster.json").read_text())
        inst = cluster["nodes"][0]["instances"][0]
        tp = int(rel[1].split("=")[1])
        assert inst["tp_size"] == tp and inst["num_npus"] == tp
        assert cluster["link_bw"] == float(rel[2].split("=")[1])
        summary = json.loads((d / "requests.summary.json").read_text())
        prov = summary["provenance"]
        assert summary["tpsim_version"] == "0.1.0"
        assert prov["inputs"]["cluster_config"]["sha256"] == sha(d / "cluster.json")
        trace = wd / "results/small/workloads/rate=4/seed=3/trace.jsonl"
        if summary["status"] == "ok":  # an infeasible run stops before reading the trace
            assert prov["inputs"]["dataset"]["sha256"] == sha(trace)
        assert "--record-infeasible" in prov["argv"]
        rec = json.loads((d / "run.json").read_text())
        assert rec["model"] == inst["model_name"]
        assert rec["inputs"]["dataset"]["sha256"] == sha(trace)
        assert rec["inputs"]["model_config"]["sha256"] == sha(REPO / f"configs/model/{inst['model_name']}.json")
        assert (d / "tpsim.log").read_text().startswith("host=")
        assert rec["git_dirty"] == git_dirty()  # the checkout did not change during the test
    # provenance in the runs table, for every run
    rows = query(wd / "results/small/campaign.duckdb",
                 """SELECT count(*) FROM runs WHERE tpsim_version = '0.1.0' AND cluster_config_sha256 IS NOT NULL
                    AND dataset_sha256 IS NOT NULL AND model_config_sha256 IS NOT NULL
                    AND hardware_sha256 IS NOT NULL""")
    assert rows == [(8,)]
    assert query(wd / "results/small/campaign.duckdb", "SELECT DISTINCT git_dirty FROM runs") == [(git_dirty(),)]


def test_figures_exist_as_pdf_png_and_csv(done):
    wd, _ = done
    for name in FIGURES:
        for ext in ("pdf", "png", "csv"):
            assert (wd / f"results/small/figures/{name}.{ext}").stat().st_size > 0, (name, ext)


def test_report_has_every_figure(done):
    wd, cfg = done
    ok(snakemake(wd, "--report", "results/small/report.html", config=cfg))
    html = (wd / "results/small/report.html").read_text(errors="replace")
    for name in FIGURES:
        assert f"{name}.png" in html, name


def test_report_names_its_campaign_and_refuses_another_campaigns_folder(done):
    wd, cfg = done
    html = (wd / "results/small/report.html").read_text(errors="replace")
    desc = html[html.index("var workflow_desc"):][:3000]
    assert 'tpsim campaign <strong>small</strong>' in desc  # the campaign it reports, and where it came from
    assert cfg.name in desc and "matrix, 8 runs" in desc
    (wd / "results/other").mkdir(exist_ok=True)
    proc = snakemake(wd, "--report", "results/other/report.html", config=cfg)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "--report results/other/report.html: that is campaign other's folder, but this invocation reports " \
           "campaign small" in out, out[-3000:]
    assert not (wd / "results/other/report.html").exists()


def test_unchanged_campaign_reruns_nothing(done):
    wd, cfg = done
    before = tree_state(wd / "results")
    dry = ok(snakemake(wd, "-n", config=cfg))
    assert "Nothing to be done" in dry.stdout + dry.stderr
    ok(snakemake(wd, "--cores", "2", config=cfg))
    assert tree_state(wd / "results") == before


def test_adding_a_link_bw_runs_only_the_new_runs(done, tmp_path):
    wd0, _ = done
    wd = tmp_path / "copy"
    shutil.copytree(wd0, wd, symlinks=True)  # keeps mtimes and Snakemake's records
    doc = json.loads(json.dumps(SMALL))
    doc["matrix"]["link_bw"] = [16, 64, 450]
    cfg = write_campaign(wd / "small.yaml", doc)
    before = tree_state(wd / "results/small/runs")
    dry = ok(snakemake(wd, "-n", config=cfg))
    counts = job_counts(dry)
    assert counts.get("simulate") == 1, counts  # the one batch of this small campaign
    assert runs_to_simulate(dry) == 4  # only the new runs
    assert "trace" not in counts
    ok(snakemake(wd, "--cores", "2", config=cfg))
    after = tree_state(wd / "results/small/runs")
    assert {k: after[k] for k in before} == before  # old runs untouched
    new = {k for k in after if k not in before}
    assert {Path(k).parts[2] for k in new} == {"link_bw=64"}
    assert query(wd / "results/small/campaign.duckdb", "SELECT count(*) FROM runs") == [(12,)]


def test_figures_are_byte_identical_when_redrawn(done, tmp_path):
    wd0, _ = done
    wd = tmp_path / "copy"
    shutil.copytree(wd0, wd, symlinks=True)
    figs = wd / "results/small/figures"
    before = {p.name: sha(p) for p in figs.iterdir()}
    before_mtime = {p.name: p.stat().st_mtime_ns for p in figs.iterdir()}
    ok(snakemake(wd, "--cores", "2", "--forcerun", "figures", config=wd / "small.yaml"))
    assert {p.name: p.stat().st_mtime_ns for p in figs.iterdir()} != before_mtime  # really redrawn
    assert {p.name: sha(p) for p in figs.iterdir()} == before


def test_a_run_that_fails_for_another_reason_fails_loudly(tmp_path):
    doc = json.loads(json.dumps(SMALL))
    doc["name"] = "broken"
    doc["matrix"] = {"model": ["Qwen/Qwen3-8B"], "tp_size": [1], "link_bw": [16]}
    doc["tpsim_args"] = ["--block-size", "0"]
    cfg = write_campaign(tmp_path / "broken.yaml", doc)
    proc = snakemake(tmp_path, "--cores", "2", config=cfg)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "tpsim: error:" in out and "--block-size" in out
    run = tmp_path / "results/broken/runs/model=Qwen--Qwen3-8B/tp=1/link_bw=16"
    assert not (run / "requests.parquet").exists()  # no half-written outputs
    assert "tpsim: error:" in (run / "tpsim.log").read_text()
    assert not (tmp_path / "results/broken/campaign.duckdb").exists()


def test_dry_run_of_the_default_campaign(tmp_path):
    proc = ok(subprocess.run([sys.executable, "-m", "snakemake", "-n", "--directory", str(tmp_path)],
                             capture_output=True, text=True, cwd=REPO, timeout=300, check=False, env=checkout_env()))
    counts = job_counts(proc)
    assert runs_to_simulate(proc) == 2 * 3 * 5
    # 30 runs of about 0.3 estimated seconds each fit one batch of limits.batch_seconds (120 s)
    assert counts["simulate"] == 1 and counts["aggregate"] == 1 and counts["figures"] == 1
    assert not (tmp_path / "results").exists()


def test_lint_and_format_are_clean():
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--lint"], capture_output=True, text=True, cwd=REPO,
                          timeout=300, check=False, env=checkout_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Congratulations" in proc.stdout + proc.stderr
    snakefmt = shutil.which("snakefmt")
    if snakefmt is None:
        pytest.skip("snakefmt not installed (pip install snakefmt)")
    files = ["workflow/Snakefile", *sorted(str(p.relative_to(REPO)) for p in (REPO / "workflow/rules").glob("*.smk"))]
    proc = subprocess.run([snakefmt, "--check", *files], capture_output=True, text=True, cwd=REPO, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def folder_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def test_a_300_request_run_takes_under_0_3_mb_and_csv_only_on_request(tmp_path):
    """Per-request rows as Parquet (tpsim run --requests-format parquet), the ITL lists only in
    requests.parquet: the whole results folder, figures and database included, stays under 0.3 MB per
    300-request run.  With requests_csv: true each run keeps its CSV too, and the campaign its requests.csv."""
    doc = {"name": "store", "cluster": "configs/cluster/single_node_single_instance.json",
           "workload": {"generate": {"preset": "sharegpt", "num_reqs": 300, "rate": 4}},
           "matrix": {"model": ["Qwen/Qwen3-8B", "meta-llama/Llama-3.1-70B"], "tp_size": [1, 2], "link_bw": [16, 450]}}
    ok(snakemake(tmp_path, "--cores", "2", config=write_campaign(tmp_path / "store.yaml", doc)))
    res = tmp_path / "results/store"
    per_run = folder_bytes(res) / 8
    assert per_run < 0.3e6, f"{per_run / 1e6:.3f} MB per run"
    assert not list(res.rglob("requests.csv"))
    assert query(res / "campaign.duckdb", "SELECT count(*) FROM requests") == [(6 * 300,)]
    cols = [c for (c,) in query(res / "campaign.duckdb", "SELECT column_name FROM information_schema.columns "
                                                         "WHERE table_name = 'requests'")]
    assert "itl_ns" not in cols and "ttft_ns" in cols  # the lists are in requests.parquet
    assert query(res / "requests.parquet", f"SELECT count(*), sum(len(itl_ns)) > 0 FROM '{res}/requests.parquet'") \
        == [(6 * 300, True)]

    doc = dict(doc, name="withcsv", requests_csv=True,
               matrix={"model": ["Qwen/Qwen3-8B"], "tp_size": [1], "link_bw": [16]},
               workload={"generate": {"preset": "sharegpt", "num_reqs": 10, "rate": 4}})
    ok(snakemake(tmp_path, "--cores", "2", config=write_campaign(tmp_path / "withcsv.yaml", doc)))
    res = tmp_path / "results/withcsv"
    run = res / "runs/model=Qwen--Qwen3-8B/tp=1/link_bw=16"
    assert (run / "requests.csv").read_text().count("\n") == 11 and (run / "requests.parquet").exists()
    assert (res / "requests.csv").read_text().count("\n") == 11


def test_the_shipped_moe_campaign_runs_end_to_end(tmp_path):
    """configs/campaigns/moe_dp_ep.yaml (both Qwen3-30B-A3B models, DP 2 x EP 2, lockstep), at 20 requests and
    two links: every run ok, both DP ranks' requests in the tables."""
    doc = yaml.safe_load((REPO / "configs" / "campaigns" / "moe_dp_ep.yaml").read_text())
    doc["workload"]["generate"]["num_reqs"] = 20
    doc["matrix"]["link_bw"] = [16, 128]
    cfg = write_campaign(tmp_path / "moe.yaml", doc)
    ok(snakemake(tmp_path, "--cores", "2", config=cfg))
    db = tmp_path / "results/moe_dp_ep/campaign.duckdb"
    assert query(db, "SELECT status, num_instances, count(*) FROM runs GROUP BY ALL") == [("ok", 2, 4)]
    assert query(db, "SELECT count(*), count(DISTINCT instance_id) FROM requests") == [(4 * 20, 2)]
