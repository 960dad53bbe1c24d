"""``tpsim validate`` and ``tpsim replay``: the arithmetic on hand-made data, bad inputs, and fidelity on
the shared measured case (vLLM 0.19 on an RTX PRO 6000, Llama-3.1-8B, TP=1) next to LLMServingSim's."""

from __future__ import annotations

import json
import os
import shutil
import sys

import pytest
from conftest import REPO, read_csv_rows, run_subprocess, run_tpsim, shared_path
from validation_cases import MEASURED, SIM, replay_dir, write_measured, write_sim

from tpsim.errors import InputError
from tpsim.io.results import HEADER
from tpsim.validation.accuracy import accuracy_rows, write_accuracy_table
from tpsim.validation.compare import compare
from tpsim.validation.measured import read_measured
from tpsim.validation.report import validate
from tpsim.validation.simulated import read_sim_csv, sim_timeline

CASE = "rtxpro6000-llama-3.1-8b-tp1"

@pytest.fixture
def case(tmp_path):
    return write_measured(tmp_path / "measured"), write_sim(tmp_path / "sim.csv")


def test_arithmetic_by_hand(case):
    measured_dir, sim_csv = case
    doc, _ = validate(measured_dir, sim_csv)
    p = doc["pairing"]
    assert (p["measured_requests"], p["sim_requests"], p["paired"]) == (4, 4, 3)
    assert (p["measured_only"], p["sim_only"], p["measured_only_ids"], p["sim_only_ids"]) == (1, 1, [3], [4])
    assert p["output_tokens_mismatch"] == 0 and p["input_tokens_mismatch"] == 0
    m = doc["metrics"]
    approx = pytest.approx
    # TTFT: measured [100, 200, 400, 1000]; sim [110, 250, 300, 500]
    assert m["ttft"]["measured"] == approx({"n": 4, "mean": 425.0, "p50": 300.0, "p90": 820.0, "p99": 982.0})
    assert m["ttft"]["sim"] == approx({"n": 4, "mean": 290.0, "p50": 275.0, "p90": 440.0, "p99": 494.0})
    assert m["ttft"]["diff_pct"]["mean"] == approx((290 - 425) / 425 * 100, abs=1e-5)
    assert m["ttft"]["diff_pct"]["p90"] == approx((440 - 820) / 820 * 100, abs=1e-5)
    assert m["ttft"]["paired"]["n"] == 3
    assert m["ttft"]["paired"]["mape_pct"] == approx((0.1 + 0.25 + 0.25) / 3 * 100, abs=1e-5)  # 20 %
    assert m["ttft"]["paired"]["mae_ms"] == approx((10 + 100 + 50) / 3, abs=1e-5)
    # TPOT: one-token requests skipped on both sides; measured [100, 200, 300], sim [90, 250, 100]
    assert m["tpot"]["measured"] == approx({"n": 3, "mean": 200.0, "p50": 200.0, "p90": 280.0, "p99": 298.0})
    assert m["tpot"]["sim"]["mean"] == approx(440 / 3)
    assert m["tpot"]["sim"]["p90"] == approx(100 + 0.8 * 150)
    assert m["tpot"]["paired"]["n"] == 2
    assert m["tpot"]["paired"]["mape_pct"] == approx((0.1 + 0.25) / 2 * 100, abs=1e-5)  # 17.5 %
    # latency: measured [200, 300, 1200, 1300], sim [250, 290, 600, 1300]
    assert m["latency"]["measured"] == approx({"n": 4, "mean": 750.0, "p50": 750.0, "p90": 1270.0, "p99": 1297.0})
    assert m["latency"]["diff_pct"]["mean"] == approx((610 - 750) / 750 * 100, abs=1e-5)
    assert m["latency"]["paired"]["mape_pct"] == approx((10 / 300 + 100 / 1200 + 50 / 200) / 3 * 100, abs=1e-5)
    # queuing delay: compared, but its MAPE is withheld (measured delays of ~0)
    assert m["queuing_delay"]["measured"]["mean"] == approx(175.0)
    assert m["queuing_delay"]["sim"]["mean"] == approx(75.0)
    assert m["queuing_delay"]["paired"]["mape_pct"] is None
    assert m["queuing_delay"]["paired"]["mae_ms"] == approx(100 / 3, abs=1e-5)


def test_percentiles_match_numpy(case):
    np = pytest.importorskip("numpy")
    measured_dir, sim_csv = case
    doc, _ = validate(measured_dir, sim_csv)
    ttft = [100, 400, 200, 1000]
    for q in (50, 90, 99):
        assert doc["metrics"]["ttft"]["measured"][f"p{q}"] == pytest.approx(float(np.percentile(ttft, q)))


def test_pairing_output_mismatch_and_unfinished(tmp_path):
    rows = MEASURED + [("bench-7", 5, 4, 104.0, None, None, None)]  # never produced a token
    measured_dir = write_measured(tmp_path / "m", rows)
    sim = [(0, 10, 4, 110, 90, 380, 0)] + SIM[1:]  # request 0 simulated with 4 output tokens instead of 3
    side_m = read_measured(measured_dir / "vllm" / "requests.jsonl")
    side_s = read_sim_csv(write_sim(tmp_path / "s.csv", sim))
    result = compare(side_m, side_s)
    assert result["pairing"]["measured_unfinished"] == 1
    assert result["pairing"]["output_tokens_mismatch"] == 1
    assert result["pairing"]["measured_only_ids"] == [3, 7]
    assert result["metrics"]["ttft"]["measured"]["n"] == 4  # the unfinished request has no TTFT


def test_no_common_requests(tmp_path):
    measured_dir = write_measured(tmp_path / "m")
    sim_csv = write_sim(tmp_path / "s.csv", [(10 + i, *row[1:]) for i, row in enumerate(SIM)])
    doc, _ = validate(measured_dir, sim_csv)
    assert doc["pairing"]["paired"] == 0
    assert doc["metrics"]["ttft"]["paired"] == {"n": 0, "mape_pct": None, "mae_ms": None}
    assert doc["metrics"]["ttft"]["diff_pct"]["mean"] is not None  # the distributions still compare


def test_cli_writes_json_markdown_and_figures(case, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    measured_dir, sim_csv = case
    out = tmp_path / "val"
    assert run_tpsim(["validate", "--measured", str(measured_dir), "--sim", str(sim_csv), "--out", str(out),
                      "--label", "mysim"]) == 0
    printed = capsys.readouterr().out
    assert "| TTFT | mean | 425.00 | 290.00 | -31.8 |" in printed
    assert "| TTFT | 3 | 20.00 | 53.33 |" in printed
    doc = json.loads((out / "validation.json").read_text())
    assert doc["sim"]["label"] == "mysim"
    assert sorted(doc["figures"]) == ["cdf.pdf", "cdf.png", "throughput.pdf", "throughput.png"]
    assert (out / "validation.md").read_text().startswith("Validation of `mysim`")
    for name in doc["figures"]:
        assert (out / name).stat().st_size > 1000
    assert b"CreationDate" not in (out / "cdf.pdf").read_bytes()
    # deterministic: a second run writes the same bytes
    out2 = tmp_path / "val2"
    assert run_tpsim(["validate", "--measured", str(measured_dir), "--sim", str(sim_csv), "--out", str(out2),
                      "--label", "mysim"]) == 0
    for name in [*doc["figures"], "validation.json", "validation.md"]:
        assert (out / name).read_bytes() == (out2 / name).read_bytes(), name


def test_cli_json_to_stdout(case, capsys):
    measured_dir, sim_csv = case
    assert run_tpsim(["validate", "--measured", str(measured_dir), "--sim", str(sim_csv), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema_version"] == 1 and doc["pairing"]["paired"] == 3
    assert doc["sim"]["label"] == "sim"  # no run summary beside the CSV: the file's name


def test_sim_label_and_timeline_from_tpsim_summary(case, tmp_path):
    measured_dir, sim_csv = case
    (tmp_path / "sim.summary.json").write_text(json.dumps({
        "instances": [{"perf_model": "analytical"}],
        "timeline": [{"t_s": 1.0, "prompt_tokens_per_s": 50.0, "generation_tokens_per_s": 3.0}],
    }))
    doc, data = validate(measured_dir, sim_csv)
    assert doc["sim"]["label"] == "tpsim-analytical"
    series, source = sim_timeline(data["summary"], data["sim"])
    assert series == [{"t_s": 1.0, "prompt": 50.0, "generation": 3.0}] and source == "run summary timeline"


def test_generation_timeline_from_itl(case):
    _, sim_csv = case
    side = read_sim_csv(sim_csv, with_itl=True)
    series, _ = sim_timeline(None, side)
    assert sum(b["generation"] for b in series) == sum(row[2] for row in SIM)  # every token once (1 s bins)
    assert all(b["prompt"] is None for b in series)


# ---------------------------------------------------------------- bad inputs: one line, exit 2


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tpsim: error: "), err
    return lines[0]


def test_malformed_jsonl_names_file_and_line(case, capsys):
    measured_dir, sim_csv = case
    path = measured_dir / "vllm" / "requests.jsonl"
    lines = path.read_text().splitlines()
    lines[2] = lines[2][:-5]  # truncate line 3
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=r"requests\.jsonl:3: malformed JSON"):
        read_measured(path)
    assert run_tpsim(["validate", "--measured", str(measured_dir), "--sim", str(sim_csv)]) == 2
    assert "requests.jsonl:3: malformed JSON" in _one_error_line(capsys)


def test_measured_records_are_read_strictly(case):
    """NaN (which Python's json takes) and a non-UTF-8 byte are refused with the line, like every other input."""
    measured_dir, _ = case
    path = measured_dir / "vllm" / "requests.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:1] + [lines[1].replace('"queued_ts": ', '"queued_ts": NaN, "x": ')] + lines[2:]))
    with pytest.raises(InputError, match=r"requests\.jsonl:2: NaN is not a valid number"):
        read_measured(path)
    path.write_bytes(b"\n".join(line.encode() for line in lines[:3]) + b"\n\xff\n")
    with pytest.raises(InputError, match=r"requests\.jsonl:4: not UTF-8"):
        read_measured(path)


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.pop("queued_ts"), r"requests\.jsonl:2: missing field 'queued_ts'"),
    (lambda d: d.update(request_id="req-x"), r"requests\.jsonl:2: request_id 'req-x' is not of the form 'bench-<i>'"),
    (lambda d: d.update(output_toks="many"), r"requests\.jsonl:2: field 'output_toks' must be a number"),
    (lambda d: d.update(request_id="bench-0"), r"requests\.jsonl:2: duplicate request_id 'bench-0'"),
    (lambda d: d.update(last_token_ts=50.0), r"requests\.jsonl:2: last_token_ts 50.0 is before first_token_ts"),
])
def test_bad_measured_fields(tmp_path, mutate, message):
    measured_dir = write_measured(tmp_path / "m")
    path = measured_dir / "vllm" / "requests.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    mutate(rows[1])
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(InputError, match=message):
        read_measured(path)


def test_missing_inputs(case, tmp_path, capsys):
    measured_dir, sim_csv = case
    assert run_tpsim(["validate", "--measured", str(tmp_path / "nope"), "--sim", str(sim_csv)]) == 2
    assert "nope: no such folder" in _one_error_line(capsys)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_tpsim(["validate", "--measured", str(empty), "--sim", str(sim_csv)]) == 2
    assert "vllm/requests.jsonl: no such file" in _one_error_line(capsys)
    assert run_tpsim(["validate", "--measured", str(measured_dir), "--sim", str(tmp_path / "none.csv")]) == 2
    assert "none.csv: no such file" in _one_error_line(capsys)


@pytest.mark.parametrize("text, message", [
    ("", r"empty file"),
    (HEADER, r"no request rows \(header only"),
    ("a,b,c\n1,2,3\n", r"sim\.csv:1: expected the 12-column header"),
    (HEADER + "0,0,m,10,3,0,1,1,0,1,1,\"[1, 1]\"\n0,1,m,10,x,0,1,1,0,1,1,\"[]\"\n",
     r"sim\.csv:3: column 'output' must be an integer"),
    (HEADER + "0,0,m,10,3,0,1,1,0,1\n", r"sim\.csv:2: expected 12 columns, got 10"),
    (HEADER + "0,0,m,10,3,0,1,1,0,1,1,\"[1, 1]\"\n1,0,m,10,3,0,1,1,0,1,1,\"[1, 1]\"\n",
     r"sim\.csv:3: duplicate request id 0"),
])
def test_bad_sim_csv(case, tmp_path, capsys, text, message):
    measured_dir, _ = case
    bad = tmp_path / "sim.csv"
    bad.write_text(text)
    with pytest.raises(InputError, match=message):
        read_sim_csv(bad)
    assert run_tpsim(["validate", "--measured", str(measured_dir), "--sim", str(bad)]) == 2
    _one_error_line(capsys)


def test_subprocess_error_is_one_line(case, tmp_path):
    measured_dir, _ = case
    (measured_dir / "vllm" / "requests.jsonl").write_text('{"request_id": "bench-0"}\n{oops\n')
    proc = run_subprocess(["-m", "tpsim", "validate", "--measured", str(measured_dir), "--sim",
                           str(tmp_path / "sim.csv")])
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert proc.stderr.startswith("tpsim: error: ") and "requests.jsonl:1: missing field 'output_toks'" in proc.stderr


def test_commands_keep_plotting_off_the_import_path():
    code = ("import sys; from tpsim.cli import build_parser; build_parser(); import tpsim.validation; "
            "import tpsim.validation.report, tpsim.validation.accuracy, tpsim.validation.cases; "
            "print(sorted(m for m in ('matplotlib', 'pandas', 'numpy') if m in sys.modules))")
    proc = run_subprocess(["-c", code])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


# ---------------------------------------------------------------- accuracy table


def test_accuracy_table(case, tmp_path):
    measured_dir, sim_csv = case
    doc, _ = validate(measured_dir, sim_csv)
    entries = []
    for sim in ("LLMServingSim", "tpsim-analytical"):
        p = tmp_path / "c1" / sim / "validation.json"
        p.parent.mkdir(parents=True)
        p.write_text(json.dumps(doc))
        entries.append(("c1", sim, p))
    rows = accuracy_rows(entries)
    assert [r["simulator"] for r in rows] == ["tpsim-analytical", "LLMServingSim"]
    assert rows[0]["ttft_mape_pct"] == pytest.approx(20.0)
    assert rows[0]["tpot_mean_diff_pct"] == pytest.approx((440 / 3 - 200) / 200 * 100, abs=1e-5)
    write_accuracy_table(rows, tmp_path / "acc.csv", tmp_path / "acc.md")
    csv_rows = read_csv_rows(tmp_path / "acc.csv")
    assert csv_rows[0]["simulator"] == "tpsim-analytical" and csv_rows[0]["ttft_mape_pct"] == "20.00"
    md = (tmp_path / "acc.md").read_text()
    assert "| c1 | tpsim-analytical | 3/4 | -31.8 |" in md


# ---------------------------------------------------------------- replay: engine settings from meta.json


def test_engine_from_meta():
    from tpsim.commands.replay import engine_from_meta

    meta = {"vllm_version": "0.19.0",
            "engine_kwargs": {"max_num_seqs": 64, "max_num_batched_tokens": 4096, "dtype": "float16",
                              "kv_cache_dtype": "fp8_e4m3", "seed": 7, "max_model_len": 8192},
            "kv_cache": {"block_size": 32, "enable_prefix_caching": False, "gpu_memory_utilization": 0.8}}
    values, source, notes = engine_from_meta(meta, "meta.json")
    assert values == {"max_num_seqs": 64, "max_num_batched_tokens": 4096, "dtype": "float16", "kv_cache_dtype": "fp8",
                      "seed": 7, "block_size": 32, "enable_prefix_caching": False, "npu_memory_utilization": 0.8,
                      "async_scheduling": True, "max_model_len": 8192}
    assert source["block_size"] == "kv_cache.block_size"
    assert source["max_model_len"] == "engine_kwargs.max_model_len" and notes == []
    assert engine_from_meta({"vllm_version": "0.10.1"}, "m")[0] == {"async_scheduling": False}
    rc = {"vllm_version": "0.19.0", "resolved_config": {"scheduler_config": {"async_scheduling": False,
                                                                             "enable_chunked_prefill": False}}}
    assert engine_from_meta(rc, "m")[0] == {"async_scheduling": False, "enable_chunked_prefill": False}
    assert engine_from_meta({"engine_kwargs": {"dtype": "auto"}}, "m")[0] == {"dtype": None}
    with pytest.raises(InputError, match="meta.json: engine_kwargs.max_num_seqs must be a non-negative integer"):
        engine_from_meta({"engine_kwargs": {"max_num_seqs": "lots"}}, "meta.json")


def test_replay_uses_the_directory(tmp_path, test_configs, capsys):
    meta = {"vllm_version": "0.19.0", "model": "Qwen/Qwen3-0.6B",
            "engine_kwargs": {"max_num_seqs": 4, "max_num_batched_tokens": 256, "dtype": "bfloat16",
                              "kv_cache_dtype": "auto", "seed": 3},
            "kv_cache": {"block_size": 32, "enable_prefix_caching": False}}
    d = replay_dir(tmp_path / "case", test_configs, layers=4, meta=meta)
    out = tmp_path / "out" / "replay.csv"
    before = os.environ.get("TPSIM_CONFIG_DIR")
    assert run_tpsim(["replay", "--measured", str(d), "--output", str(out), "--perf-model", "analytical",
                      "--max-num-batched-tokens", "128", "--log-interval", "0"]) == 0
    assert os.environ.get("TPSIM_CONFIG_DIR") == before  # the model overlay is undone
    rows = read_csv_rows(out)
    assert len(rows) == 6 and {r["model"] for r in rows} == {"Qwen/Qwen3-0.6B"}  # the name is kept
    s = json.loads((tmp_path / "out" / "replay.summary.json").read_text())
    eng = s["instances"][0]["engine"]
    assert (eng["max_num_seqs"], eng["block_size"], eng["enable_prefix_caching"], eng["async_scheduling"]) == \
        (4, 32, False, True)
    assert eng["max_num_batched_tokens"] == 128  # an explicit flag wins over meta.json
    assert s["replay"]["settings"]["max_num_batched_tokens"]["source"] == "command line"
    assert s["replay"]["settings"]["seed"]["value"] == 3
    assert s["provenance"]["inputs"]["models"]["Qwen/Qwen3-0.6B"]["path"] == str(d / "model_config.json")
    # the directory's model config (4 layers, not 28) is what ran: far less weight memory than the catalog's
    assert run_tpsim(["run", "--cluster-config", str(d / "config.json"), "--dataset", str(d / "trace.jsonl"),
                      "--output", str(tmp_path / "cat.csv"), "--perf-model", "analytical", "--log-interval", "0"]) == 0
    catalog = json.loads((tmp_path / "cat.summary.json").read_text())
    assert s["instances"][0]["memory"]["weights_gb"] < catalog["instances"][0]["memory"]["weights_gb"]
    capsys.readouterr()
    # and validate reads the replay back
    assert run_tpsim(["validate", "--measured", str(d), "--sim", str(out), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["pairing"]["paired"] == 6 and doc["sim"]["label"] == "tpsim-analytical"


def test_replay_errors(tmp_path, test_configs, capsys):
    d = replay_dir(tmp_path / "case", test_configs)
    assert run_tpsim(["replay", "--measured", str(d)]) == 2
    assert "--output is required" in _one_error_line(capsys)
    (d / "model_config.json").write_text('{"model_type": "llama"}')
    assert run_tpsim(["replay", "--measured", str(d), "--output", str(tmp_path / "r.csv")]) == 2
    assert f"{d / 'model_config.json'}: missing field 'hidden_size'" in _one_error_line(capsys)
    (d / "trace.jsonl").unlink()
    assert run_tpsim(["replay", "--measured", str(d), "--output", str(tmp_path / "r.csv")]) == 2
    assert "trace.jsonl: no such file" in _one_error_line(capsys)


# ---------------------------------------------------------------- fidelity on the shared measured case

#: the project's accuracy target: mean TTFT, TPOT and latency within 10 % of vLLM's
TARGET_PCT = 10.0


@pytest.fixture(scope="module")
def analytical_replay(tmp_path_factory):
    case = shared_path("validation", CASE)
    out = tmp_path_factory.mktemp("replay") / "tpsim-analytical.csv"
    proc = run_subprocess(["-m", "tpsim", "replay", "--measured", str(case), "--output", str(out),
                           "--perf-model", "analytical"])
    assert proc.returncode == 0, proc.stderr
    return case, out


def test_replay_shared_case_finishes_every_request(analytical_replay):
    case, out = analytical_replay
    summary = json.loads(out.with_name("tpsim-analytical.summary.json").read_text())
    n = sum(1 for line in (case / "trace.jsonl").read_text().splitlines() if line.strip())
    assert summary["totals"]["finished"] == n == 300 and summary["totals"]["rejected"] == 0
    doc, _ = validate(case, out)
    assert doc["pairing"]["paired"] == 300 and doc["pairing"]["output_tokens_mismatch"] == 0
    assert doc["pairing"]["input_tokens_mismatch"] == 0


def test_analytical_model_accuracy_targets(analytical_replay):
    """Mean TTFT, TPOT and latency of the analytical model within 10 % of the measured vLLM run.

    Met since the roofline was calibrated to NVIDIA's kernel tables (tpsim calibrate --tables: wave-quantised
    GEMMs, attention efficiencies) and charges L2 re-reads of FlashAttention-2's mixed steps; before that it
    missed by -22 % (TTFT), -8 % (TPOT), -12 % (latency)."""
    case, out = analytical_replay
    doc, _ = validate(case, out)
    diffs = {k: doc["metrics"][k]["diff_pct"]["mean"] for k in ("ttft", "tpot", "latency")}
    misses = {k: round(v, 1) for k, v in diffs.items() if abs(v) > TARGET_PCT}
    assert not misses, f"mean differences vs vLLM outside ±{TARGET_PCT:g} %: {misses} (all: " \
                       f"{ {k: round(v, 1) for k, v in diffs.items()} })"


def test_kernels_model_accuracy_targets(tmp_path_factory):
    """The default model, kernel tables for the case's GPU (RTX PRO 6000): means within 5 % of vLLM and paired TTFT
    MAPE below LLMServingSim's 10.8 % (vLLM's queued_ts definition, which tpsim replay models: 4.8 %; 13.5 % when
    the simulated TTFT started at the arrival); fitted to kernel data only."""
    case = shared_path("validation", CASE)
    out = tmp_path_factory.mktemp("replay") / "tpsim-kernels.csv"
    proc = run_subprocess(["-m", "tpsim", "replay", "--measured", str(case), "--output", str(out),
                           "--perf-model", "kernels"])
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(out.with_name("tpsim-kernels.summary.json").read_text())
    assert summary["instances"][0]["perf_model"] == "kernels"
    doc, _ = validate(case, out)
    diffs = {k: round(doc["metrics"][k]["diff_pct"]["mean"], 1) for k in ("ttft", "tpot", "latency")}
    assert all(abs(v) <= 5.0 for v in diffs.values()), diffs
    assert doc["metrics"]["ttft"]["paired"]["mape_pct"] < 10.8


@pytest.fixture(scope="module")
def profile_replay(tmp_path_factory):
    case = shared_path("validation", CASE)
    bundles = shared_path("profiles", "llmservingsim")
    out = tmp_path_factory.mktemp("replay") / "tpsim-profile.csv"
    proc = run_subprocess(["-m", "tpsim", "replay", "--measured", str(case), "--output", str(out),
                           "--perf-model", "profile", "--profile-dir", str(bundles)])
    assert proc.returncode == 0, proc.stderr
    return case, out


def test_profile_model_accuracy_targets(profile_replay):
    """Fed the peer's measured bundle: means within 3 % of vLLM, paired TTFT MAPE below LLMServingSim's 10.8 %."""
    case, out = profile_replay
    summary = json.loads(out.with_name("tpsim-profile.summary.json").read_text())
    assert summary["instances"][0]["perf_model"] == "profile"
    doc, _ = validate(case, out)
    diffs = {k: doc["metrics"][k]["diff_pct"]["mean"] for k in ("ttft", "tpot", "latency")}
    assert all(abs(v) <= 3.0 for v in diffs.values()), diffs
    assert doc["metrics"]["ttft"]["paired"]["mape_pct"] < 10.8


def test_llmservingsim_paired_ttft_mape():
    """The peer's own simulation of the case, scored the same way: paired TTFT MAPE about 10.8 %."""
    case = shared_path("validation", CASE)
    doc, _ = validate(case, case / "llmservingsim" / "sim.csv", label="LLMServingSim")
    assert doc["pairing"]["paired"] == 300
    assert doc["metrics"]["ttft"]["paired"]["mape_pct"] == pytest.approx(10.79, abs=0.01)
    # its summary.txt's table (vLLM vs Sim), reproduced with the publishers' definitions
    assert doc["metrics"]["ttft"]["measured"]["mean"] == pytest.approx(7097.2, abs=0.05)
    assert doc["metrics"]["ttft"]["sim"]["mean"] == pytest.approx(6815.7, abs=0.05)
    assert doc["metrics"]["tpot"]["measured"]["p99"] == pytest.approx(37.3, abs=0.05)
    assert doc["metrics"]["latency"]["diff_pct"]["mean"] == pytest.approx(-1.8, abs=0.05)


def test_from_arrival_adds_each_requests_pickup_delay(tmp_path):
    """vLLM's queued_ts is when its engine loop takes the request (between steps): 'from arrival' adds that wait,
    aligning the wall-clock arrival_time with the monotonic stamps at the fastest pickup."""
    from tpsim.validation.measured import read_measured

    reqs = [{"request_id": "bench-0", "input_toks": 5, "output_toks": 3, "arrival_time": 1000.0, "queued_ts": 10.001,
             "scheduled_ts": 10.001, "first_token_ts": 10.051, "last_token_ts": 10.151},
            {"request_id": "bench-1", "input_toks": 5, "output_toks": 3, "arrival_time": 1000.5, "queued_ts": 10.531,
             "scheduled_ts": 10.531, "first_token_ts": 10.561, "last_token_ts": 10.661}]
    path = tmp_path / "requests.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in reqs))
    side = read_measured(path)
    assert side.values["ttft"][1] == pytest.approx(30.0)
    assert side.values["ttft_from_arrival"][0] == pytest.approx(50.0)  # the fastest pickup defines the clock offset
    assert side.values["ttft_from_arrival"][1] == pytest.approx(30.0 + 30.0)  # waited 30 ms for the engine loop
    assert side.pickup_delay_ms[1] == pytest.approx(30.0)


def test_replay_starts_ttft_at_the_pickup_and_validate_adds_the_wait_back(tmp_path, test_configs, capsys):
    """tpsim replay measures TTFT and latency from its modelled pickup (vLLM's queued_ts, the measured runs'
    definition); validate's 'from arrival' rows of that CSV are exactly the TTFT and latency of the same replay run
    with --ttft-origin arrival."""
    d = replay_dir(tmp_path / "case", test_configs, layers=4)
    from conftest import write_trace

    write_trace(d / "trace.jsonl", [{"input_toks": 64 + 8 * i, "output_toks": 8, "arrival_time_ns": i * 10_000}
                                    for i in range(6)])  # arrivals during the first steps: some wait for pickup
    sides = {}
    for origin in ("pickup", "arrival"):
        out = tmp_path / origin / "replay.csv"
        flags = [] if origin == "pickup" else ["--ttft-origin", "arrival"]
        assert run_tpsim(["replay", "--measured", str(d), "--output", str(out), "--perf-model", "analytical",
                          "--log-interval", "0", *flags]) == 0
        s = json.loads(out.with_name("replay.summary.json").read_text())
        assert s["provenance"]["flags"]["ttft_origin"] == origin
        assert s["replay"]["settings"]["ttft_origin"]["source"].startswith(
            "tpsim replay default" if origin == "pickup" else "command line")
        doc, data = validate(d, out)
        assert doc["sim"]["ttft_origin"] == origin
        sides[origin] = (doc, data["sim"])
    (doc_p, pick), (doc_a, arr) = sides["pickup"], sides["arrival"]
    assert pick.values["ttft_from_arrival"] == arr.values["ttft"] == arr.values["ttft_from_arrival"]
    assert pick.values["latency_from_arrival"] == arr.values["latency"]
    assert all(pick.values["ttft"][i] <= arr.values["ttft"][i] for i in arr.values["ttft"])
    assert any(pick.values["ttft"][i] < arr.values["ttft"][i] for i in arr.values["ttft"])
    assert doc_p["sim_pickup_delay_ms"]["n"] == 6 and doc_a["sim_pickup_delay_ms"] is None
    assert "engine's modelled pickup" in doc_p["definitions"]["sim"]["ttft"]
    capsys.readouterr()


def test_a_pickup_csv_whose_rows_contradict_it_is_one_error(case, tmp_path, capsys):
    """A CSV whose summary says TTFT starts at the pickup must have end_time - arrival - latency >= 0 (the wait)."""
    measured_dir, _ = case
    bad = tmp_path / "bad.csv"
    bad.write_text(HEADER + "0,0,m,10,3,100,150,60,0,10,25,\"[25, 25]\"\n")
    (tmp_path / "bad.summary.json").write_text(json.dumps({"provenance": {"flags": {"ttft_origin": "pickup"}}}))
    with pytest.raises(InputError, match=r"bad\.csv:2: end_time - arrival - latency is negative"):
        validate(measured_dir, bad)
    assert run_tpsim(["validate", "--measured", str(measured_dir), "--sim", str(bad)]) == 2
    _one_error_line(capsys)


def test_snakemake_validate_target(tmp_path):
    """``snakemake validate`` through workflow/rules/validate.smk alone, on a copy of the shared case."""
    if shutil.which("snakemake") is None:
        pytest.skip("snakemake not installed (pip install 'tpsim[workflow]')")
    pytest.importorskip("matplotlib")
    case = shared_path("validation", CASE)
    root = tmp_path / "validation"
    shutil.copytree(case, root / CASE)
    (tmp_path / "Snakefile").write_text(f'include: "{REPO / "workflow" / "rules" / "validate.smk"}"\n')
    proc = run_subprocess(["-m", "snakemake", "-s", str(tmp_path / "Snakefile"), "--directory", str(tmp_path),
                           "--workflow-profile", "none", "--cores", "2", "validate", "--config",
                           f"validation_root={root}", f"validation_profiles={tmp_path / 'no-profiles'}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_csv_rows(tmp_path / "results" / "validation" / "accuracy.csv")
    assert [(r["case"], r["simulator"]) for r in rows] == [(CASE, "tpsim-kernels"), (CASE, "tpsim-analytical"),
                                                           (CASE, "LLMServingSim")]
    assert float(rows[2]["ttft_mape_pct"]) == pytest.approx(10.79, abs=0.01)  # the peer's published result
    # measured from arrival, the peer's CSV (also arrival-based) misses more: vLLM's pickup delay is left out
    assert float(rows[2]["ttft_from_arrival_mape_pct"]) == pytest.approx(15.0, abs=0.1)
    assert (tmp_path / "results" / "validation" / CASE / "tpsim-analytical" / "cdf.pdf").is_file()
    # the replays carry tpsim's code digest as a parameter: the same code again is nothing to do
    again = run_subprocess(["-m", "snakemake", "-s", str(tmp_path / "Snakefile"), "--directory", str(tmp_path),
                            "--workflow-profile", "none", "--cores", "2", "validate", "-n", "--config",
                            f"validation_root={root}", f"validation_profiles={tmp_path / 'no-profiles'}"])
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr, again.stdout[-2000:]


def test_code_digest_follows_code_and_catalogs_only(tmp_path):
    """tpsim.provenance.code_digest: any edit, rename or new file of the package or its catalogs changes it;
    bytecode caches and other files do not; the order files are found in does not."""
    from tpsim.provenance import code_digest

    (tmp_path / "tpsim" / "sub").mkdir(parents=True)
    (tmp_path / "configs" / "hardware").mkdir(parents=True)
    (tmp_path / "tpsim" / "a.py").write_text("x = 1\n")
    (tmp_path / "tpsim" / "sub" / "b.py").write_text("y = 2\n")
    (tmp_path / "configs" / "hardware" / "G.yaml").write_text("memory_gib: 1\n")
    first = code_digest(tmp_path)
    (tmp_path / "tpsim" / "__pycache__").mkdir()
    (tmp_path / "tpsim" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"\0")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "r.csv").write_text("1\n")
    assert code_digest(tmp_path) == first
    changes = [
        lambda: (tmp_path / "tpsim" / "a.py").write_text("x = 2\n"),
        lambda: (tmp_path / "configs" / "hardware" / "G.yaml").write_text("memory_gib: 2\n"),
        lambda: (tmp_path / "tpsim" / "sub" / "b.py").rename(tmp_path / "tpsim" / "sub" / "c.py"),
        lambda: (tmp_path / "tpsim" / "new.yaml").write_text("k: v\n"),
    ]
    seen = {first}
    for change in changes:
        change()
        digest = code_digest(tmp_path)
        assert digest not in seen
        seen.add(digest)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-v"]))
