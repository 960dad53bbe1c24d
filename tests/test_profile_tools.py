"""``tpsim profile`` (on CPU, tiny shapes), ``tpsim calibrate``, and profile-driven runs end to end."""

from __future__ import annotations

import json
import shutil
import sys

import msgspec
import pytest
import yaml
from conftest import REPO, read_csv_rows, run_subprocess, run_tpsim, shared_path, write_cluster, write_trace

from tpsim.config.engine import DEFAULTS, resolve_engine
from tpsim.config.hardware import load_hardware
from tpsim.config.model import load_model
from tpsim.errors import InputError
from tpsim.perf import calibrate as cal
from tpsim.perf.analytical import AnalyticalModel
from tpsim.perf.bundle import read_bundle, write_bundle
from tpsim.perf.grids import GRIDS, attention_shapes

TINY = {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "head_dim": 16, "intermediate_size": 128, "vocab_size": 256,
        "max_position_embeddings": 4096, "torch_dtype": "bfloat16"}


def tiny_config(tmp_path, **changes):
    p = tmp_path / "tiny" / "config.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps({**TINY, **changes}))
    return p


# --------------------------------------------------------------------------- the profiler
@pytest.mark.parametrize("model_type,tp", [("llama", 2), ("qwen3", 1)])
def test_profile_on_cpu_end_to_end(tmp_path, capsys, test_configs, model_type, tp):
    pytest.importorskip("torch", reason="PyTorch is not installed (pip install 'tpsim[profile]')")
    cfg = tiny_config(tmp_path, model_type=model_type)
    out = tmp_path / "bundle" / f"tp{tp}"
    rc = run_tpsim(["profile", "--model", str(cfg), "--tp", str(tp), "--device", "cpu", "--grid", "tiny",
                    "--out", str(out), "--hardware", "TESTGPU"])
    assert rc == 0, capsys.readouterr().err
    assert "wrote" in capsys.readouterr().out
    b = read_bundle(out, tp=tp)
    assert b.format == "tpsim" and b.timing == "wall" and b.hardware == "TESTGPU"
    meta = b.meta
    for key in ("gpu", "torch", "date", "dtype", "tp", "model", "grid", "repeats", "warmup", "kernels", "device"):
        assert meta.get(key) is not None, key
    assert meta["device"] == "cpu" and meta["tp"] == tp and meta["dtype"] == "bfloat16"
    expected = {"layernorm", "qkv_proj", "rotary_emb", "o_proj", "gate_up_proj", "act_fn", "down_proj",
                "embedding", "final_layernorm"} | ({"qk_norm"} if model_type == "qwen3" else set())
    assert set(b.dense) == expected
    assert set(b.per_sequence) == {"lm_head", "sampler"}
    g = GRIDS["tiny"]
    assert all(t.keys == g["tokens"] for t in b.dense.values())
    assert b.attention.num_rows() == len(attention_shapes(g, TINY["max_position_embeddings"]))
    assert not b.dense_graph  # no CUDA graphs on CPU
    assert all(v > 0 for t in b.dense.values() for v in t.values)
    assert sum(f.stat().st_size for f in out.iterdir()) < 1 << 20
    # the bundle drives a step and a whole run
    rc = run_tpsim(["step", "--model", str(cfg), "--hardware", "TESTGPU", "--tp", str(tp), "--prefill", "20@10",
                    "--decode", "3@40", "--perf-model", "profile", "--profile-dir", str(out)])
    table = capsys.readouterr().out
    assert rc == 0 and "interpolated" in table and "perf model profile" in table
    cluster = write_cluster(tmp_path / "cluster.json", model=str(cfg), hardware="TESTGPU", tp=tp)
    trace = write_trace(tmp_path / "trace.jsonl", [
        {"input_toks": 40 + 7 * i, "output_toks": 5 + i, "arrival_time_ns": 1_000_000 * i} for i in range(6)])
    csv_out = tmp_path / "run.csv"
    rc = run_tpsim(["run", "--cluster-config", str(cluster), "--dataset", str(trace), "--output", str(csv_out),
                    "--perf-model", "profile", "--profile-dir", str(out), "--log-interval", "0"])
    assert rc == 0, capsys.readouterr().err
    assert len(read_csv_rows(csv_out)) == 6
    summary = json.loads(csv_out.with_suffix(".summary.json").read_text())
    lm = summary["instances"][0]["latency_model"]
    assert lm["name"] == "profile" and lm["format"] == "tpsim" and lm["source"] == str(out)


def test_profile_without_torch_says_how_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
    rc = run_tpsim(["profile", "--model", str(tiny_config(tmp_path)), "--device", "cpu", "--grid", "tiny",
                    "--out", str(tmp_path / "b" / "tp1")])
    err = capsys.readouterr().err
    assert rc == 2 and "pip install 'tpsim[profile]'" in err and "\n" not in err.strip()


def test_profile_bad_arguments(tmp_path, capsys):
    pytest.importorskip("torch", reason="PyTorch is not installed (pip install 'tpsim[profile]')")
    cfg = str(tiny_config(tmp_path))
    assert run_tpsim(["profile", "--model", cfg, "--tp", "3", "--device", "cpu", "--out", str(tmp_path / "x")]) == 2
    assert "tp" in capsys.readouterr().err
    assert run_tpsim(["profile", "--model", cfg, "--device", "tpu", "--out", str(tmp_path / "x")]) == 2
    assert run_tpsim(["profile", "--model", cfg, "--device", "cpu"]) == 2  # no --out and no --hardware
    assert "--hardware" in capsys.readouterr().err


# --------------------------------------------------------------------------- calibrate
TRUE = dict(gemm_efficiency=0.71, memory_efficiency=0.77, attention_compute_efficiency=0.43,
            attention_memory_efficiency=0.58, kernel_overhead_ns=4200.0, graph_kernel_overhead_ns=1300.0)


def synthetic_bundle(path, hw_name, model_name="meta-llama/Llama-3.2-1B", tp=2, params=TRUE):
    """What a perfect profiler would measure on a GPU that behaves exactly like the analytical model."""
    m = load_model(model_name)
    h = load_hardware(hw_name)
    h = msgspec.structs.replace(h, perf=msgspec.structs.replace(h.perf, **params))
    e = resolve_engine(dict(DEFAULTS), {}, m.torch_dtype, m.max_position_embeddings, None, "test")
    am = AnalyticalModel(m, h, e, tp, 1, h.memory_bw_gbps, h.link_bw_gbps, h.link_latency_ns)
    g = GRIDS["small"]
    dense, per_seq, attn = cal.synthetic_rows(am, g["tokens"], g["sequences"],
                                              attention_shapes(g, m.max_position_embeddings))
    return write_bundle(path, {"tp": tp, "model": model_name, "dtype": "bfloat16", "hardware": hw_name},
                        dense, per_seq, attn)


def test_calibrate_recovers_known_parameters(tmp_path, capsys, test_configs):
    d = synthetic_bundle(tmp_path / "b" / "tp2", "TESTGPU")
    rc = run_tpsim(["calibrate", "--hardware", "TESTGPU", "--bundle", str(d), "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    for k, v in TRUE.items():
        assert out["fitted"][k] == pytest.approx(v, rel=0.01), k
    assert all(e["after"] < 0.5 for e in out["mean_abs_error_pct"].values())
    assert any(e["before"] > 5 for e in out["mean_abs_error_pct"].values())  # the catalog's values differ
    assert out["written"] is None


def test_calibrate_write_keeps_comments(tmp_path, capsys, test_configs):
    src = REPO / "configs" / "hardware" / "RTXPRO6000.yaml"
    entry = test_configs / "hardware" / "CALGPU.yaml"
    shutil.copy(src, entry)
    original = entry.read_text()
    d = synthetic_bundle(tmp_path / "b" / "tp2", "CALGPU")
    rc = run_tpsim(["calibrate", "--hardware", "CALGPU", "--bundle", str(d), "--write"])
    text = capsys.readouterr().out
    assert rc == 0 and "wrote" in text
    new = entry.read_text()
    hw = load_hardware("CALGPU")
    for k, v in TRUE.items():
        assert getattr(hw.perf, k) == pytest.approx(v, rel=0.01), k
        assert hw.provenance[k].startswith(f"fitted from {d}")
    # everything else is untouched, comments included
    kept = [line for line in original.splitlines() if not any(line.strip().startswith(k + ":") for k in TRUE)]
    assert [line for line in new.splitlines() if not any(line.strip().startswith(k + ":") for k in TRUE)] == kept
    fitted_lines = [line for line in new.splitlines() if line.strip().startswith("gemm_efficiency:")]
    assert any("# fitted from" in line for line in fitted_lines)
    doc = yaml.safe_load(new)
    assert doc["spec"] == yaml.safe_load(original)["spec"]


def test_calibrate_refuses_another_gpus_bundle(tmp_path, capsys, test_configs):
    d = synthetic_bundle(tmp_path / "b" / "tp2", "RTXPRO6000")
    assert run_tpsim(["calibrate", "--hardware", "TESTGPU", "--bundle", str(d)]) == 2
    assert "measured on hardware 'RTXPRO6000'" in capsys.readouterr().err


def test_calibrate_reads_the_shared_llmservingsim_bundle(capsys):
    variant = shared_path("profiles", "llmservingsim", "RTXPRO6000", "meta-llama", "Llama-3.1-8B", "bf16")
    rc = run_tpsim(["calibrate", "--hardware", "RTXPRO6000", "--bundle", str(variant / "tp2"), "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["timing"] == "kernel" and "kernel_fixed_ns" in out["fitted"]
    assert "kernel_overhead_ns" not in out["fitted"]  # launch overheads cannot be fitted from kernel times
    assert "attention/decode" in out["mean_abs_error_pct"]


# --------------------------------------------------------------------------- runs
def test_run_with_the_shared_bundle_on_the_validation_case(tmp_path, capsys):
    case = shared_path("validation", "rtxpro6000-llama-3.1-8b-tp1")
    profiles = shared_path("profiles", "llmservingsim")
    out = tmp_path / "sim.csv"
    rc = run_tpsim(["run", "--cluster-config", str(case / "config.json"), "--dataset", str(case / "trace.jsonl"),
                    "--output", str(out), "--perf-model", "profile", "--profile-dir", str(profiles),
                    "--log-interval", "0"])
    assert rc == 0, capsys.readouterr().err
    rows = read_csv_rows(out)
    assert len(rows) == 300 and all(int(r["TTFT"]) > 0 for r in rows)
    lm = json.loads(out.with_suffix(".summary.json").read_text())["instances"][0]["latency_model"]
    assert lm["name"] == "profile" and lm["format"] == "llmservingsim" and lm["tp"] == 1


def test_simulator_imports_no_heavy_packages():
    code = ("import sys, tpsim.cli, tpsim.perf.profile, tpsim.perf.bundle, tpsim.perf.calibrate, tpsim.perf.grids;"
            "tpsim.cli.build_parser();"
            "bad = {'numpy', 'pandas', 'torch'} & set(sys.modules); assert not bad, bad")
    r = run_subprocess(["-c", code])
    assert r.returncode == 0, r.stderr


def test_profile_model_error_for_missing_bundle(tmp_path, capsys, test_configs):
    rc = run_tpsim(["step", "--model", "meta-llama/Llama-3.2-1B", "--hardware", "TESTGPU", "--decode", "4@100",
                    "--perf-model", "profile", "--profile-dir", str(tmp_path)])
    assert rc == 2 and "no measured profile bundle" in capsys.readouterr().err
    with pytest.raises(InputError, match="no such folder"):
        from tpsim.perf.profile import find_bundle

        find_bundle("TESTGPU", "m/x", "bfloat16", "bfloat16", 1, str(tmp_path / "nope"))
