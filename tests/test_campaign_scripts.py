"""The campaign pipeline's scripts without Snakemake: derive_config, aggregate, figures.

Runs are made by the real `tpsim run` (in-process, through tpsim.cli.main) on small traces
in a temporary folder, laid out exactly as the pipeline lays them out.
"""

import hashlib
import json
import math
from pathlib import Path

import pytest
from conftest import REPO

from tpsim.campaign import (
    aggregate,
    derive,
    figure_axes,
    figure_parts,
    figure_stats,
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
                           "--perf-model", "analytical", "--seed", str(run.params["seed"])]) == 0
        dirs.append(d)
    return camp, dirs


def outputs_in(d: Path) -> dict:
    return {k: str(d / v) for k, v in TABLE_FILES.items()}


def run_aggregate(dirs, out_dir: Path) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    return aggregate.aggregate([str(d / "run.json") for d in dirs], [str(d / "requests.csv") for d in dirs],
                               [str(d / "requests.summary.json") for d in dirs], outputs_in(out_dir))


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
    assert rec["inputs"]["base_cluster_config"]["sha256"] == sha(REPO / "configs/cluster/single_node_single_instance.json")
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


def test_infeasible_runs_are_flagged_with_the_reason(campaign):
    rows = query(campaign["out"] / "campaign.duckdb",
                 "SELECT model, tp_size, reason, ttft_p50_ms, weights_gb, finished FROM runs WHERE status = 'infeasible'")
    assert {(m, tp) for m, tp, *_ in rows} == {("meta-llama/Llama-3.1-70B", 1)}
    for _, _, reason, ttft, weights, finished in rows:
        assert "does not fit" in reason
        assert ttft is None and weights is None and finished is None


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
            assert con.execute("SELECT count(*) FROM read_parquet($p)", {"p": str(out / f"{table}.parquet")}).fetchall() == [(n,)]
            assert con.execute("SELECT count(*) FROM read_csv($p)", {"p": str(out / f"{table}.csv")}).fetchall() == [(n,)]
    again = tmp_path / "again"
    run_aggregate(campaign["dirs"], again)
    for name in ("runs.parquet", "runs.csv", "requests.parquet", "requests.csv"):
        assert sha(out / name) == sha(again / name), name
    assert not list(again.glob(".*.tmp"))  # temporary files renamed into place


def test_aggregate_rejects_a_truncated_csv(campaign, tmp_path):
    d = campaign["dirs"][0]
    broken = tmp_path / "run"
    broken.mkdir()
    for name in ("run.json", "requests.summary.json"):
        (broken / name).write_bytes((d / name).read_bytes())
    lines = (d / "requests.csv").read_text().splitlines(keepends=True)
    (broken / "requests.csv").write_text("".join(lines[:-1]))
    with pytest.raises(aggregate.AggregateError, match="summary 20, CSV 19"):
        run_aggregate([broken], tmp_path / "out")
    (broken / "requests.csv").write_text("id,latency\n1,2\n")
    with pytest.raises(aggregate.AggregateError, match="unexpected header"):
        run_aggregate([broken], tmp_path / "out")
    assert not (tmp_path / "out" / "campaign.duckdb").exists()


def test_a_failed_aggregation_leaves_no_file_behind(campaign, tmp_path):
    """The five outputs appear together or not at all: a failure inside DuckDB (after the database
    and some exports were written to their temporary names) leaves the folder as it was."""
    d = campaign["dirs"][0]
    broken = tmp_path / "run"
    broken.mkdir()
    for name in ("run.json", "requests.summary.json"):
        (broken / name).write_bytes((d / name).read_bytes())
    (broken / "requests.csv").write_text("".join((d / "requests.csv").read_text().splitlines(keepends=True)[:-1]))
    out = tmp_path / "out"
    out.mkdir()
    (out / "runs.csv").write_text("an older table\n")
    with pytest.raises(aggregate.AggregateError, match="summary 20, CSV 19"):
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
        (c / "requests.csv").write_bytes((d / "requests.csv").read_bytes())
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
        assert table_rows(tmp_path / "out/campaign.duckdb", table) == table_rows(campaign["out"] / "campaign.duckdb", table)
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
    aggregate.aggregate([str(d / "run.json") for d in dirs], [str(d / "requests.csv") for d in dirs],
                        [str(d / "requests.summary.json") for d in dirs], outputs_in(tmp_path / "out"), log=log)
    row = query(tmp_path / "out/campaign.duckdb",
                """SELECT max_num_seqs, engine_max_num_batched_tokens, block_size, peak_kv_utilization, throughput_rps
                   FROM runs WHERE run_dir = $d""", {"d": str(dirs[0])})
    assert row == [(10**11, 2**40, None, None, None)]
    assert query(tmp_path / "out/campaign.duckdb", "SELECT count(*) FROM runs") == [(len(dirs),)]
    warnings = [line for line in log.getvalue().splitlines() if line.startswith("aggregate: warning:")]
    assert len(warnings) == 3 and all(str(dirs[0]) in w and "stored as NULL" in w for w in warnings), warnings
    assert "block_size: 1180591620717411303424 does not fit a BIGINT column" in log.getvalue()


# ----------------------------------------------------------------------------- figures


@pytest.fixture(scope="module")
def figs(campaign):
    outs = {}
    for tag in ("a", "b"):
        d = campaign["root"] / f"fig_{tag}"
        outs[tag] = {n: {e: str(d / f"{n}.{e}") for e in ("pdf", "png", "csv")} for n in figures.FIGURES}
        figures.make_figures(str(campaign["out"] / "runs.parquet"), str(campaign["out"] / "requests.parquet"),
                             outs[tag], processes=2 if tag == "b" else 1)
    return outs


def test_figures_are_byte_identical_on_rerun(figs):
    for name in figures.FIGURES:
        for ext in ("pdf", "png", "csv"):
            a, b = figs["a"][name][ext], figs["b"][name][ext]
            assert Path(a).stat().st_size > 0
            assert sha(a) == sha(b), f"{name}.{ext}"


def test_pdfs_embed_truetype_fonts_and_carry_no_timestamp(figs):
    for name in figures.FIGURES:
        pdf = Path(figs["a"][name]["pdf"]).read_bytes()
        assert pdf.startswith(b"%PDF")
        assert b"/FontFile2" in pdf  # embedded TrueType (pdf.fonttype 42)
        assert b"/Type3" not in pdf
        assert b"/CreationDate" not in pdf
        assert Path(figs["a"][name]["png"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def read_csv(path):
    import csv

    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_ttft_by_tp_data_are_seed_means_with_confidence_intervals(campaign, figs):
    db = campaign["out"] / "campaign.duckdb"
    rows = read_csv(figs["a"]["ttft_by_tp"]["csv"])
    assert {float(r["link_bw"]) for r in rows} == {16.0, 450.0}
    assert len(rows) == 2 * 2 * 2  # link_bw x model x tp
    for r in rows:
        vals = [v for (v,) in query(db, """SELECT ttft_p50_ms FROM runs WHERE model = $m AND tp_size = $tp
                                          AND link_bw = $bw AND status = 'ok' ORDER BY seed""",
                                     {"m": r["model"], "tp": int(r["tp_size"]), "bw": float(r["link_bw"])})]
        if r["model"] == "meta-llama/Llama-3.1-70B" and r["tp_size"] == "1":
            assert r["status"] == "infeasible" and r["ttft_p50_ms"] == "" and vals == []
            continue
        assert r["status"] == "ok" and int(r["n_runs"]) == 2
        mean = sum(vals) / 2
        half = figure_stats.t975(1) * (abs(vals[0] - vals[1]) / math.sqrt(2)) / math.sqrt(2)  # t * sd / sqrt(n)
        assert float(r["ttft_p50_ms"]) == pytest.approx(mean, rel=1e-9)
        assert float(r["ci_high_ms"]) - float(r["ci_low_ms"]) == pytest.approx(2 * half, rel=1e-6, abs=1e-9)


def test_link_bw_figures_have_every_point(figs):
    for name, col in (("ttft_vs_link_bw", "ttft_p50_ms"), ("tpot_vs_link_bw", "tpot_p50_ms")):
        rows = read_csv(figs["a"][name]["csv"])
        assert len(rows) == 2 * 2 * 2  # model x tp x link_bw
        ok = [r for r in rows if r["status"] == "ok"]
        assert len(ok) == 6 and all(float(r[col]) > 0 for r in ok)


def test_memory_figure_data(figs):
    rows = {(r["model"], r["tp_size"]): r for r in read_csv(figs["a"]["memory_by_tp"]["csv"])}
    assert len(rows) == 4
    q1, q2 = rows[("Qwen/Qwen3-8B", "1")], rows[("Qwen/Qwen3-8B", "2")]
    assert float(q2["weights_gb"]) == pytest.approx(float(q1["weights_gb"]) / 2, rel=0.01)
    total = float(q1["weights_gb"]) + float(q1["activation_reserve_gb"]) + float(q1["kv_capacity_gb"])
    assert total == pytest.approx(float(q1["budget_gb"]), abs=0.01)  # the stacked bar fills the budget
    assert rows[("meta-llama/Llama-3.1-70B", "1")]["status"] == "infeasible"


def test_cdf_data_are_proper_cdfs(figs):
    rows = read_csv(figs["a"]["ttft_tpot_cdf"]["csv"])
    bad = [r for r in rows if r["status"] == "infeasible"]
    # Llama-3.1-70B at TP=1 does not fit: one row per link_bw and metric, no values
    assert {(r["model"], r["tp_size"], r["link_bw"], r["metric"]) for r in bad} == {
        ("meta-llama/Llama-3.1-70B", "1", bw, m) for bw in ("16", "450") for m in ("ttft", "tpot")}
    assert len(bad) == 4 and all(r["value_ms"] == "" and r["cdf"] == "" for r in bad)
    groups = {}
    for r in (r for r in rows if r["status"] == "ok"):
        groups.setdefault((r["model"], r["tp_size"], r["link_bw"], r["metric"]), []).append(
            (float(r["value_ms"]), float(r["cdf"])))
    assert len(groups) == 3 * 2 * 2  # 3 feasible (model, tp) x 2 link_bw x {ttft, tpot}
    for key, pts in groups.items():
        xs, ys = zip(*pts)
        assert list(xs) == sorted(xs) and list(ys) == sorted(ys) and ys[-1] == pytest.approx(1.0), key
        if key[3] == "ttft":
            assert len(pts) == 2 * NUM_REQS  # two seeds pooled


def test_infeasible_label_follows_the_reason():
    import pandas as pd

    runs = pd.DataFrame({"status": ["ok", "infeasible", "infeasible"],
                         "reason": [None, "Qwen/Qwen3-32B does not fit: needs 70.1 GB per GPU",
                                    "tp_size=3 does not divide the model's 32 attention heads"]})
    assert figure_parts.infeasible_label(runs.iloc[[0, 1]]) == "does not fit"
    assert figure_parts.infeasible_label(runs.iloc[[0, 2]]) == "infeasible"
    assert figure_parts.infeasible_label(runs) == "does not fit / infeasible"


@pytest.mark.parametrize("lo, hi", [
    (5.0, 9.5),  # TPOT of a small model
    (9.43, 17.93),  # Qwen3-8B TPOT in the default campaign: 1..9 x 10^k labelled only "10"
    (13.84, 15.146),  # a tenth of a decade: no ragged end labels ("13.8401")
    (29.1, 118.9),  # Qwen3-32B TPOT in the default campaign
    (17.0, 235.0),  # one to two decades: 1-2-5
])
def test_log_axes_label_several_ticks_across_the_data(lo, hi):
    """A log axis labels at least three round values inside the data, in both axes."""
    import matplotlib.pyplot as plt

    for which in ("x", "y"):
        fig, ax = plt.subplots(figsize=(3.4, 1.8))
        xs = [lo, (lo + hi) / 2, hi]
        ax.plot(xs, [0, 0.5, 1]) if which == "x" else ax.plot([0, 0.5, 1], xs)
        figure_axes.log_axis(ax, which)
        fig.canvas.draw()
        axis = ax.xaxis if which == "x" else ax.yaxis
        shown = [(t.get_loc(), t.label1.get_text()) for t in axis.get_major_ticks()
                 if t.label1.get_visible() and t.label1.get_text() and lo <= t.get_loc() <= hi]
        plt.close(fig)
        labels = [text for _, text in shown]
        assert len(shown) >= 3, (which, labels)
        assert len(set(labels)) == len(labels) and all(len(text) <= 4 for text in labels), labels
        assert all(float(text) == pytest.approx(loc) for loc, text in shown), shown


def _synthetic_tables():
    """Model org/A runs at TP 1 and 2 but not 3 (3 does not divide its heads); org/B runs nowhere
    (TP 1 and 2: does not fit; TP 3: heads).  link_bw 16 and 450, 20 requests per feasible run."""
    import pandas as pd

    heads = "tp_size=3 does not divide {m}'s 32 attention heads; choose tp_size in [1, 2, 4, 8, 16, 32]"
    memory = "{m} does not fit: needs 143.0 GB per GPU (weights 141.1 GB + ...) but 92.8 GB are available"
    runs, reqs = [], []
    for m in ("org/A", "org/B"):
        for tp in (1, 2, 3):
            for bw in (16.0, 450.0):
                ok = m == "org/A" and tp != 3
                rid = f"model={m.replace('/', '--')}/tp={tp}/link_bw={bw:g}"
                reason = None if ok else (heads if tp == 3 else memory).format(m=m)
                runs.append({"run_id": rid, "model": m, "tp_size": tp, "link_bw": bw, "seed": 0,
                             "hardware": "RTXPRO6000", "link_latency": 20000.0, "rate": 2.0, "max_num_seqs": 128,
                             "max_num_batched_tokens": 2048, "status": "ok" if ok else "infeasible", "reason": reason,
                             "ttft_p50_ms": 50.0 / tp if ok else None, "tpot_p50_ms": 10.0 / tp if ok else None})
                for i in range(20 if ok else 0):
                    reqs.append({"run_id": rid, "model": m, "tp_size": tp, "link_bw": bw, "seed": 0,
                                 "output_tokens": 10, "ttft_ns": int((40 + i) * 1e6 / tp),
                                 "tpot_ns": int((9 + i / 10) * 1e6 / tp)})
    return pd.DataFrame(runs), pd.DataFrame(reqs)


def _draw(monkeypatch, tmp_path, name):
    """Draw one figure from the synthetic tables; return the matplotlib figure and the CSV rows."""
    drawn = []
    save = figures.save
    monkeypatch.setattr(figures, "save", lambda fig, pdf, png: (drawn.append(fig), save(fig, pdf, png)))
    runs, reqs = _synthetic_tables()
    out = {e: str(tmp_path / f"{name}.{e}") for e in ("pdf", "png", "csv")}
    figures.DRAW[name](runs, reqs, out)
    return drawn[0], read_csv(out["csv"])


def _panel_notes(ax) -> str:
    return "\n".join(t.get_text() for t in ax.texts)


def test_cdf_figure_marks_infeasible_runs(monkeypatch, tmp_path):
    fig, rows = _draw(monkeypatch, tmp_path, "ttft_tpot_cdf")
    # the CSV keeps every infeasible run, once per link_bw and metric, with its status
    bad = {(r["model"], r["tp_size"], r["link_bw"], r["metric"]) for r in rows if r["status"] == "infeasible"}
    assert bad == {(m, tp, bw, metric) for m, tps in (("org/A", "3"), ("org/B", "123")) for tp in tps
                   for bw in ("16", "450") for metric in ("ttft", "tpot")}
    assert {r["status"] for r in rows} == {"ok", "infeasible"}
    (a_ttft, a_tpot), (b_ttft, b_tpot) = fig.axes[0:2], fig.axes[2:4]
    for ax in (a_ttft, a_tpot):  # drawn lines, and a note for the TP that cannot run
        assert ax.lines and _panel_notes(ax) == "TP=3: infeasible"
    for ax in (b_ttft, b_tpot):  # nothing drawn: the notes alone, no dummy axis
        assert not ax.lines
        assert _panel_notes(ax) == "TP=1: does not fit\nTP=2: does not fit\nTP=3: infeasible"
        assert list(ax.get_xticks()) == [] and list(ax.get_yticks()) == []
    # the legend names only what is drawn: no TP=3
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["TP=1", "TP=2", "450 GB/s", "16 GB/s"]


def test_link_bw_figure_marks_infeasible_runs(monkeypatch, tmp_path):
    fig, rows = _draw(monkeypatch, tmp_path, "ttft_vs_link_bw")
    assert {(r["model"], r["tp_size"]) for r in rows if r["status"] == "infeasible"} == {
        ("org/A", "3"), ("org/B", "1"), ("org/B", "2"), ("org/B", "3")}
    a, b = fig.axes
    assert len(a.lines) == 2 and _panel_notes(a) == "TP=3: infeasible"
    assert not b.lines and _panel_notes(b) == "TP=1: does not fit\nTP=2: does not fit\nTP=3: infeasible"
    assert list(b.get_xticks()) == [] and list(b.get_yticks()) == []
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["TP=1", "TP=2"]


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
                 "SELECT data_type FROM information_schema.columns WHERE table_name = 'runs' AND column_name = 'git_dirty'"
                 ) == [("BOOLEAN",)]


def test_mean_ci():
    m, _lo, hi, n = figure_stats.mean_ci([1.0, 2.0, 3.0])
    assert (m, n) == (2.0, 3)
    assert hi - m == pytest.approx(4.303 / math.sqrt(3))
    assert math.isnan(figure_stats.mean_ci([5.0])[1])
    assert figure_stats.mean_ci([])[3] == 0


def test_other_matrix_keys_become_rows_of_panels(tmp_path):
    """hardware x rate (and a single tp / link_bw) still give every figure, one panel row per combination."""
    doc = {"name": "facets", "cluster": "configs/cluster/single_node_single_instance.json",
           "workload": {"generate": {"preset": "sharegpt", "num_reqs": 10}},
           "matrix": {"model": ["Qwen/Qwen3-8B"], "tp_size": [1], "link_bw": [16], "hardware": ["RTXPRO6000", "H100"],
                      "rate": [2, 4]}}
    _, dirs = build_runs(tmp_path, doc)
    assert len(dirs) == 4
    run_aggregate(dirs, tmp_path / "agg")
    outs = {n: {e: str(tmp_path / "fig" / f"{n}.{e}") for e in ("pdf", "png", "csv")} for n in figures.FIGURES}
    figures.make_figures(str(tmp_path / "agg/runs.parquet"), str(tmp_path / "agg/requests.parquet"), outs)
    facets = {r["facet"] for r in read_csv(outs["ttft_by_tp"]["csv"])}
    assert facets == {"hardware=RTXPRO6000, rate=2", "hardware=RTXPRO6000, rate=4", "hardware=H100, rate=2",
                      "hardware=H100, rate=4"}
    mem = read_csv(outs["memory_by_tp"]["csv"])  # memory depends on the hardware, not on the rate
    assert {r["facet"] for r in mem} == {"hardware=RTXPRO6000", "hardware=H100"}
    budgets = {r["facet"]: float(r["budget_gb"]) for r in mem}
    assert budgets["hardware=H100"] < budgets["hardware=RTXPRO6000"]  # 79.65 GiB vs 96 GiB
    for out in outs.values():
        assert all(Path(p).stat().st_size > 0 for p in out.values())
