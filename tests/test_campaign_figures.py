"""Campaign figures a reviewer accepts without an edit (tpsim/campaign/figures.py and its parts).

Four campaigns are simulated for real (tpsim run in-process, aggregated with DuckDB) and drawn:
faceted and seeded (two models, TP in the YAML order 2, 1, rates 8 and 2 req/s as rows, three
seeds, an SLO, a measured run beside the simulated ones), single-model (one column, 3.5 in), all
infeasible (nothing to draw) and a capacity search.  For every figure they check, from its CSV and
from the saved image and the figure's own bounding boxes: intervals within the data's support, one
y scale and range per figure, panel / row / legend order from the YAML, units in every label,
nothing outside the 3.5 in or 7.16 in page width, legends listing only what is drawn.  Synthetic
tables check the cases no small run produces (the issue's 3970 / 229 / 234 ms seeds).
"""

import csv
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
from test_campaign_links import measured_dir
from test_campaign_scripts import build_runs, query, run_aggregate

from tpsim.campaign import (
    capacity_job,
    capacity_tables,
    figure_axes,
    figure_parts,
    figure_stats,
    figures,
)
from tpsim.campaign.figure_context import context
from tpsim.campaign.outputs import CAPACITY_TABLE_FILES, figures_of

DPI = 150  # savefig.dpi of the style sheet
WIDTHS_PX = {round(figure_parts.SINGLE_COLUMN_IN * DPI), round(figure_parts.DOUBLE_COLUMN_IN * DPI)}
UNIT = re.compile(r"\((ms|GB|GB/s per direction|req/s|% of requests|us|GPUs per instance)\)|per GPU|fraction of "
                  r"requests|^GPU$|max batched tokens|max running requests")
SLO = {"ttft_ms": 300, "tpot_ms": 30, "attainment": 0.9}


def sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read_csv(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def render(root: Path, doc: dict, tables: dict, processes: int = 1, tag: str = "fig") -> dict:
    """Draw every figure of ``doc`` from ``tables``; returns {name: {"out": paths, "fig": the Figure}}."""
    import matplotlib.pyplot as plt

    camp_json = root / "campaign.json"
    camp_json.write_text(json.dumps(doc))
    names = figures_of(doc)
    outs = {n: {e: str(root / tag / f"{n}.{e}") for e in ("pdf", "png", "csv")} for n in names}
    kept = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(plt.rcParams, "figure.max_open_warning", 0)  # the figures are kept open to be checked
        if processes == 1:
            mp.setattr(plt, "close", lambda fig=None: kept.append(fig))
        figures.make_figures(tables, str(camp_json), outs, processes=processes)
    return {n: {"out": outs[n], "fig": kept[i] if kept else None} for i, n in enumerate(names)}


def matrix_campaign(root: Path, doc: dict, slo=None) -> dict:
    camp, dirs = build_runs(root, doc)
    run_aggregate(dirs, root / "agg", slo=slo)
    tables = {"runs": str(root / "agg/runs.parquet"), "requests": str(root / "agg/requests.parquet")}
    return {"doc": camp.doc, "db": root / "agg/campaign.duckdb", "figs": render(root, camp.doc, tables)}


@pytest.fixture(scope="module")
def faceted(tmp_path_factory):
    root = tmp_path_factory.mktemp("faceted")
    measured = measured_dir(root, tp=1, link_bw=16)
    doc = {"name": "faceted", "cluster": "configs/cluster/single_node_single_instance.json",
           "workload": {"generate": {"preset": "sharegpt", "num_reqs": 20, "rate": 4}},
           "matrix": {"model": ["Qwen/Qwen3-8B", "meta-llama/Llama-3.1-70B"], "tp_size": [2, 1], "link_bw": [16, 450],
                      "rate": [8, 2], "seed": [0, 1, 2]},
           "slo": SLO, "measured": [{"path": measured, "rate": 2, "label": "vLLM (made up)"}]}
    return matrix_campaign(root, doc, slo=SLO)


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    root = tmp_path_factory.mktemp("single")
    doc = {"name": "single", "cluster": "configs/cluster/h100_tp2_nvlink.json",
           "workload": {"generate": {"preset": "sharegpt", "num_reqs": 20, "rate": 2}},
           "matrix": {"model": ["meta-llama/Llama-3.1-70B"], "tp_size": [1, 2, 4, 8], "link_bw": [50, 100, 450],
                      "seed": [0, 1]}}
    return matrix_campaign(root, doc)


@pytest.fixture(scope="module")
def infeasible(tmp_path_factory):
    root = tmp_path_factory.mktemp("infeasible")
    doc = {"name": "none", "cluster": "configs/cluster/single_node_single_instance.json",
           "workload": {"generate": {"preset": "sharegpt", "num_reqs": 20, "rate": 2}},
           "matrix": {"model": ["meta-llama/Llama-3.1-70B"], "tp_size": [1, 3], "link_bw": [16, 450]}}
    return matrix_campaign(root, doc)


@pytest.fixture(scope="module")
def capacity(tmp_path_factory):
    from test_campaign_capacity import derive_config, job_args

    root = tmp_path_factory.mktemp("capacity")
    results = []
    for model, tp in (("Qwen/Qwen3-8B", 1), ("Qwen/Qwen3-8B", 2), ("meta-llama/Llama-3.1-70B", 1)):
        d = root / f"{model.replace('/', '--')}-{tp}"
        derive_config(d, model=model, tp=tp)
        assert capacity_job.main(job_args(d)) == 0
        results.append(str(d / "capacity.json"))
    capacity_tables.capacity_tables(results, {k: str(root / v) for k, v in CAPACITY_TABLE_FILES.items()})
    doc = {"name": "cap", "matrix": {"model": ["Qwen/Qwen3-8B", "meta-llama/Llama-3.1-70B"], "tp_size": [1, 2],
                                     "link_bw": [16]}, "slo": {"ttft_ms": 500, "tpot_ms": 40}, "capacity": {}}
    tables = {"capacity": str(root / "capacity.parquet"), "probes": str(root / "probes.parquet")}
    return {"doc": doc, "figs": render(root, doc, tables)}


CAMPAIGNS = ("faceted", "single", "infeasible", "capacity")


@pytest.fixture(params=CAMPAIGNS)
def drawn(request):
    return request.getfixturevalue(request.param)


# ----------------------------------------------------------------------------- every figure of every campaign


def visible_axes(fig):
    return [ax for ax in fig.get_axes() if ax.axison]


def test_every_figure_is_one_or_two_columns_wide_and_nothing_leaves_it(drawn):
    from matplotlib import image

    for name, f in drawn["figs"].items():
        png = image.imread(f["out"]["png"])
        assert png.shape[1] in WIDTHS_PX, (name, png.shape)
        border = np.concatenate([png[:2].reshape(-1, png.shape[2]), png[-2:].reshape(-1, png.shape[2]),
                                 png[:, :2].reshape(-1, png.shape[2]), png[:, -2:].reshape(-1, png.shape[2])])
        assert (border[:, :3] > 0.99).all(), f"{name}: something touches the image's edge (clipped)"
        fig = f["fig"]
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        inches = fig.get_tightbbox(renderer)  # every drawn artist: titles, tick labels, notes, legends, markers
        width, height = fig.get_size_inches()
        assert -0.01 <= inches.x0 and inches.x1 <= width + 0.01 and -0.01 <= inches.y0 and inches.y1 <= height + 0.01, \
            (name, inches, (width, height))
        for sub in fig.subfigs:  # a row of panels: its title, panels and notes (display units)
            ext = sub.get_tightbbox(renderer)
            assert fig.bbox.x0 - 1 <= ext.x0 and ext.x1 <= fig.bbox.x1 + 1 and fig.bbox.y0 - 1 <= ext.y0 \
                and ext.y1 <= fig.bbox.y1 + 1, (name, ext, fig.bbox)
        for leg in fig.legends:
            ext = leg.get_window_extent(renderer)
            assert 0 <= ext.x0 and ext.x1 <= fig.bbox.x1 and ext.y1 <= fig.bbox.y1, (name, ext)


def test_every_label_carries_its_unit(drawn):
    for name, f in drawn["figs"].items():
        for ax in visible_axes(f["fig"]):
            for label in (ax.get_xlabel(), ax.get_ylabel()):
                assert not label or UNIT.search(label.replace("\n", " ")), (name, label)
            title = ax.get_title()
            assert "link_bw" not in title and "=" not in title.replace("TP=", ""), (name, title)


def test_one_y_scale_and_range_per_figure(drawn):
    for name, f in drawn["figs"].items():
        axes = visible_axes(f["fig"])
        if name == "ttft_tpot_cdf":  # one x scale per column (TTFT, TPOT); y is a fraction everywhere
            assert len({ax.get_ylim() for ax in axes}) <= 1
            continue
        assert len({(ax.get_yscale(), ax.get_ylim()) for ax in axes}) <= 1, name


def test_legends_list_only_what_is_drawn(drawn):
    for name, f in drawn["figs"].items():
        fig = f["fig"]
        labels = [t.get_text() for leg in fig.legends for t in leg.get_texts() if t.get_text().strip()]
        rows = read_csv(f["out"]["csv"])
        for label in labels:
            m = re.fullmatch(r"TP=(\d+)", label)
            if m and name != "pareto_throughput_latency":
                drawn_rows = [r for r in rows
                              if r.get("tp_size") == m.group(1) and r.get("status") in ("ok", "overloaded")]
                assert drawn_rows, f"{name}: legend lists {label}, which no point of the figure has"
        if any(r.get("status") == "overloaded" or r.get("overloaded_runs", "0") not in ("0", "") for r in rows):
            assert any(label.startswith("overloaded") for label in labels), name
        assert len(labels) == len(set(labels)), (name, labels)


def test_intervals_never_leave_the_seeds_range(drawn):
    for name, f in drawn["figs"].items():
        for r in read_csv(f["out"]["csv"]):
            if r.get("interval") == "bootstrap95":
                value = float(r[next(k for k in r if k.endswith(("_ms", "_gpu", "attainment")) and r[k])])
                assert 0 <= float(r["ci_low"]) <= value <= float(r["ci_high"]), (name, r)


def test_figures_are_byte_identical_when_redrawn_in_parallel(single, tmp_path):
    doc = single["doc"]
    tables = {t: str(Path(single["db"]).parent / f"{t}.parquet") for t in ("runs", "requests")}
    again = render(tmp_path, doc, tables, processes=2, tag="again")
    for name, f in single["figs"].items():
        for ext in ("pdf", "png", "csv"):
            assert sha(f["out"][ext]) == sha(again[name]["out"][ext]), f"{name}.{ext}"
        pdf = Path(f["out"]["pdf"]).read_bytes()
        assert b"/FontFile2" in pdf and b"/Type3" not in pdf and b"/CreationDate" not in pdf


# ----------------------------------------------------------------------------- what each campaign shows


def row_titles(fig) -> list[str]:
    return [sf.get_suptitle() for sf in fig.subfigs] if fig.subfigs else []


def legend_labels(fig) -> list[str]:
    return [t.get_text() for leg in fig.legends for t in leg.get_texts() if t.get_text().strip()]


def test_rows_panels_and_legends_follow_the_yaml_order(faceted):
    figs = faceted["figs"]
    fig = figs["ttft_vs_link_bw"]["fig"]
    assert row_titles(fig) == ["8 req/s", "2 req/s"]  # as written, not sorted
    assert [ax.get_title() for ax in fig.get_axes()] == ["Qwen3-8B", "Llama-3.1-70B"] * 2
    assert legend_labels(fig)[:2] == ["TP=2", "TP=1"]
    rows = read_csv(figs["ttft_vs_link_bw"]["out"]["csv"])
    sim = [(r["rate"], r["model"], r["tp_size"]) for r in rows if r["source"] == "simulated"]
    assert list(dict.fromkeys(sim)) == [(rate, m, tp) for rate in ("8", "2")
                                        for m in ("Qwen/Qwen3-8B", "meta-llama/Llama-3.1-70B") for tp in ("2", "1")]
    mem = figs["memory_by_tp"]["fig"]
    assert [t.get_text() for t in mem.get_axes()[0].get_xticklabels()] == ["TP=2", "TP=1"]


def test_seed_means_carry_bootstrap_intervals_of_the_runs(faceted):
    rows = read_csv(faceted["figs"]["ttft_by_tp"]["out"]["csv"])
    checked = 0
    for r in rows:
        if r["status"] != "ok":
            assert r["model"] == "meta-llama/Llama-3.1-70B" and r["tp_size"] == "1"
            continue
        vals = [v for (v,) in query(faceted["db"], """SELECT ttft_p50_ms FROM runs WHERE model = $m AND tp_size = $tp
                AND link_bw = $bw AND rate = $rate ORDER BY seed""", {"m": r["model"], "tp": int(r["tp_size"]),
                                                   "bw": float(r["link_bw"]), "rate": float(r["rate"])})]
        assert len(vals) == 3 and int(r["n_runs"]) == 3
        assert float(r["ttft_p50_ms"]) == pytest.approx(np.mean(vals))
        lo, hi = figure_stats.mean_ci(vals)[1:3]
        assert (float(r["ci_low"]), float(r["ci_high"])) == pytest.approx((lo, hi))
        assert min(vals) <= lo <= hi <= max(vals)
        checked += 1
    assert checked == 2 * 2 * 2 + 2 * 2  # Qwen: 2 rates x 2 links x 2 TP; Llama TP=2: 2 x 2


def test_the_measured_run_is_drawn_beside_its_simulated_panel(faceted):
    figs = faceted["figs"]
    rows = [r for r in read_csv(figs["ttft_vs_link_bw"]["out"]["csv"]) if r["source"] == "measured"]
    assert [(r["model"], r["tp_size"], r["link_bw"], r["rate"], r["label"]) for r in rows] == [
        ("Qwen/Qwen3-8B", "1", "16", "2", "vLLM (made up)")]
    assert float(rows[0]["ttft_p50_ms"]) == pytest.approx(55.5, abs=0.01)
    fig = figs["ttft_vs_link_bw"]["fig"]
    stars = [ax for ax in fig.get_axes() if any(line.get_marker() == "*" for line in ax.lines)]
    assert [(ax.get_title(), ax.get_figure(root=False).get_suptitle()) for ax in stars] == [("Qwen3-8B", "2 req/s")]
    assert "vLLM (made up)" in legend_labels(fig)
    cdf = [r for r in read_csv(figs["ttft_tpot_cdf"]["out"]["csv"]) if r["status"] == "measured"]
    assert {r["metric"] for r in cdf} == {"ttft", "tpot"} and len(cdf) == 2 * 12


def test_slo_figures_show_attainment_against_the_requirement(faceted):
    figs = faceted["figs"]
    assert {"slo_attainment_vs_link_bw", "goodput_vs_link_bw"} <= set(figs)
    rows = read_csv(figs["slo_attainment_vs_link_bw"]["out"]["csv"])
    ok = [float(r["slo_attainment"]) for r in rows if r["status"] == "ok"]
    assert ok and all(0 <= v <= 100 for v in ok)
    fig = figs["slo_attainment_vs_link_bw"]["fig"]
    assert visible_axes(fig)[0].get_ylim() == (0, 105)
    assert any(label.startswith("required: 90 %") for label in legend_labels(fig))


def test_a_single_model_campaign_is_one_column_wide(single):
    for name in ("ttft_vs_link_bw", "tpot_vs_link_bw", "memory_by_tp"):
        assert single["figs"][name]["fig"].get_figwidth() == figure_parts.SINGLE_COLUMN_IN
    assert single["figs"]["ttft_by_tp"]["fig"].get_figwidth() == figure_parts.DOUBLE_COLUMN_IN  # two link columns
    mem = read_csv(single["figs"]["memory_by_tp"]["out"]["csv"])
    tp1 = next(r for r in mem if r["tp_size"] == "1")
    assert tp1["status"] == "infeasible"
    assert float(tp1["memory_needed_gb"]) > float(tp1["budget_gb"])  # its needs, as numbers


def test_an_all_infeasible_campaign_draws_notes_and_no_series(infeasible):
    for name, f in infeasible["figs"].items():
        rows = read_csv(f["out"]["csv"])
        assert rows and {r["status"] for r in rows} == {"infeasible"}, name
        labels = legend_labels(f["fig"])
        assert not any(re.fullmatch(r"TP=\d+", label) for label in labels), (name, labels)
    bars = legend_labels(infeasible["figs"]["ttft_by_tp"]["fig"])
    assert bars == ["TP=1: does not fit", "TP=3: infeasible"]  # crosses in the TP's colour, not bar swatches
    texts = [t.get_text() for ax in infeasible["figs"]["ttft_vs_link_bw"]["fig"].get_axes() for t in ax.texts]
    assert texts == ["TP=1: does not fit\nTP=3: infeasible"]


def test_capacity_figures_show_goodput_at_capacity_and_the_front(capacity):
    figs = capacity["figs"]
    rows = read_csv(figs["capacity_by_tp"]["out"]["csv"])
    by = {(r["model"], r["tp_size"]): r for r in rows}
    assert by[("meta-llama/Llama-3.1-70B", "1")]["status"] == "infeasible"
    assert float(by[("Qwen/Qwen3-8B", "1")]["cap_goodput_output_tokens_per_s_per_gpu"]) > 0
    front = [r for r in read_csv(figs["pareto_throughput_latency"]["out"]["csv"]) if r["on_front"] == "True"]
    assert front
    xs = [float(r["tpot_p50_ms"]) for r in front]
    ys = [float(r["output_tokens_per_s_per_gpu"]) for r in front]
    pts = read_csv(figs["pareto_throughput_latency"]["out"]["csv"])
    for p in pts:  # no point beats a front point on both
        for x, y in zip(xs, ys):
            assert not (float(p["tpot_p50_ms"]) < x and float(p["output_tokens_per_s_per_gpu"]) > y)
    assert all(p["load"] != "overloaded" for p in pts) if "load" in pts[0] else True


# ----------------------------------------------------------------------------- the cases small runs do not produce


def test_the_issues_seeds_give_an_interval_inside_their_range():
    """Seeds of 3970, 229 and 234 ms: Student-t gave [-3885, 6840]; the bootstrap stays within the data."""
    mean, lo, hi, n = figure_stats.mean_ci([3970.0, 229.0, 234.0])
    assert n == 3 and mean == pytest.approx(1477.67, abs=0.01)
    assert 229 <= lo < mean < hi <= 3970
    many = [float(x) for x in range(1, 21)]  # 20 seeds: a fixed-seed resample, the same every time
    assert figure_stats.mean_ci(many) == figure_stats.mean_ci(many)
    assert 1 <= figure_stats.mean_ci(many)[1] < 10.5 < figure_stats.mean_ci(many)[2] <= 20


@pytest.mark.parametrize("values, log", [([20, 25, 3970, 4000], True), ([229, 234, 3970, 4000], False)])
def test_a_figure_gets_one_scale_and_never_a_negative_axis(values, log):
    """Over 30 times between the smallest and largest value: one log axis for every panel; else one
    linear axis from 0 (never below: intervals stay within the data)."""
    import matplotlib.pyplot as plt

    fig, axes = figure_parts.grid(["a", "b"], 2)
    for row in axes:
        for ax in row:
            ax.plot([1, 2], values[:2])
    axes[1][1].plot([1, 2], values[2:])
    assert figure_axes.figure_scale(axes[0][0], values) is log
    fig.canvas.draw()
    scales = {(ax.get_yscale(), ax.get_ylim()) for row in axes for ax in row}
    assert len(scales) == 1
    scale, (bottom, top) = next(iter(scales))
    assert scale == ("log" if log else "linear") and (bottom > 0 if log else bottom == 0) and top >= 4000
    plt.close(fig)


def test_legend_rows_read_in_the_given_order():
    import matplotlib.pyplot as plt

    handles = [plt.Line2D([], [], label=f"h{i}") for i in range(5)]
    ordered = figure_parts.row_major(handles, 3)  # matplotlib fills columns: h0 h3 | h1 h4 | h2 _
    assert [h.get_label() for h in ordered] == ["h0", "h3", "h1", "h4", "h2", " "]


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


def test_infeasible_label_follows_the_reason():
    import pandas as pd

    runs = pd.DataFrame({"status": ["ok", "infeasible", "infeasible"],
                         "reason": [None, "Qwen/Qwen3-32B does not fit: needs 70.1 GB per GPU",
                                    "tp_size=3 does not divide the model's 32 attention heads"]})
    assert figure_parts.infeasible_label(runs.iloc[[0, 1]]) == "does not fit"
    assert figure_parts.infeasible_label(runs.iloc[[0, 2]]) == "infeasible"
    assert figure_parts.infeasible_label(runs) == "does not fit / infeasible"


def test_the_x_axis_is_the_first_key_the_matrix_varies():
    import pandas as pd

    runs = pd.DataFrame({"model": ["m"] * 4, "tp_size": [1] * 4, "hardware": ["B", "A", "B", "A"],
                         "link_bw": [900, 300, 900, 300], "rate": [2, 2, 8, 8], "link_latency": [1, 1, 1, 1],
                         "max_num_seqs": [1] * 4, "max_num_batched_tokens": [1] * 4})
    ctx = context({"matrix": {"model": ["m"], "tp_size": [1], "hardware": ["B", "A"], "rate": [8, 2]}}, runs)
    assert (ctx.x_key, ctx.x_values, ctx.row_keys, ctx.rows) == ("hardware", ["B", "A"], ["rate"], [(8,), (2,)])
    assert ctx.row_label((8,)) == "8 req/s"
    assert figures_of({"matrix": {"hardware": ["B", "A"]}})[1] == "ttft_vs_hardware"
