"""Profile bundles: reading both formats, lookups, locating, and the errors bad bundles give."""

from __future__ import annotations

import pytest
import yaml
from conftest import shared_path

from tpsim.errors import InputError
from tpsim.perf.bundle import (
    EXTRAPOLATED,
    INTERPOLATED,
    MEASURED,
    SkewFit,
    Table1D,
    locate,
    read_bundle,
    variant_name,
    write_bundle,
)
from tpsim.perf.profile import find_bundle

SHARED_BUNDLE = ("profiles", "llmservingsim", "RTXPRO6000", "meta-llama", "Llama-3.1-8B", "bf16")


# --------------------------------------------------------------------------- synthetic bundles
def ours(tmp_path, tp=2, graph=True, **meta):
    """A small tpsim-format bundle with simple, known numbers (ns)."""
    out = tmp_path / "TESTGPU" / "meta-llama" / "Llama-3.2-1B" / "bf16" / f"tp{tp}"
    dense = []
    for layer in ("layernorm", "qkv_proj", "rotary_emb", "o_proj", "gate_up_proj", "act_fn", "down_proj",
                  "embedding", "final_layernorm"):
        for n in (1, 2, 4, 8, 16, 64, 256, 1024):
            t = 2000.0 + 10.0 * n
            dense.append((layer, n, t, (t - 1000.0) if graph and n <= 256 else None))
    per_seq = [(layer, n, 5000.0 + 100.0 * n, (4000.0 + 100.0 * n) if graph else None)
               for layer in ("lm_head", "sampler") for n in (1, 2, 4, 16, 64, 256)]
    attn = []
    for pc in (16, 64, 256, 1024):
        for kp in (0, 256, 1024):
            attn.append((pc, kp, 0, 0, 3000.0 + pc * (kp + pc) * 0.01, None))
    for nd in (1, 2, 4, 8, 32, 128):
        for kd in (16, 256, 1024, 4096):
            t = 3000.0 + nd * kd * 0.5
            attn.append((0, 0, nd, kd, t, (t - 1500.0) if graph else None))
    for pc in (64, 1024):
        for kp in (0, 1024):
            for nd in (1, 32):
                for kd in (256, 4096):
                    attn.append((pc, kp, nd, kd, 4000.0 + pc * (kp + pc) * 0.01 + nd * kd * 0.6, None))
    doc = {"tp": tp, "hardware": "TESTGPU", "model": "meta-llama/Llama-3.2-1B", "dtype": "bfloat16",
           "variant": "bf16", **meta}
    write_bundle(out, doc, dense, per_seq, attn)
    return out


def llmservingsim(tmp_path, tp=1, skew=True):
    """A small bundle in LLMServingSim's format (meta.yaml one level up, kernel times)."""
    variant = tmp_path / "perfroot" / "TESTGPU" / "meta-llama" / "Llama-3.2-1B" / "bf16"
    d = variant / f"tp{tp}"
    d.mkdir(parents=True)
    rows = ["layer,tokens,time_us"]
    for layer in ("layernorm", "qkv_proj", "rotary_emb", "o_proj", "gate_up_proj", "act_fn", "down_proj",
                  "embedding", "final_layernorm"):
        rows += [f"{layer},{n},{2 + 0.01 * n:.4f}" for n in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)]
    (d / "dense.csv").write_text("\n".join(rows) + "\n")
    rows = ["layer,sequences,time_us"] + [f"{layer},{n},{5 + 0.1 * n:.4f}" for layer in ("lm_head", "sampler")
                                          for n in (1, 2, 4, 8, 16, 64, 256)]
    (d / "per_sequence.csv").write_text("\n".join(rows) + "\n")
    rows = ["prefill_chunk,kv_prefill,n_decode,kv_decode,time_us"]
    kvs = (0, 16, 256, 1024, 4096, 16384)
    for pc in (16, 128, 1024, 2048):
        rows += [f"{pc},{kp},0,0,{3 + pc * (kp + pc) * 1e-5:.5f}" for kp in kvs]
    for nd in (1, 2, 4, 16, 64, 128, 256):
        rows += [f"0,0,{nd},{kd},{3 + nd * kd * 5e-4:.5f}" for kd in kvs[1:]]
    for pc in (16, 128, 1024, 2048):
        for nd in (1, 16, 128):
            rows += [f"{pc},{kp},{nd},{kd},{4 + pc * (kp + pc) * 1e-5 + nd * kd * 6e-4:.5f}"
                     for kp in (0, 1024, 16384) for kd in (16, 1024, 16384)]
    (d / "attention.csv").write_text("\n".join(rows) + "\n")
    meta = {"gpu": "Test GPU", "hardware": "TESTGPU", "model": "meta-llama/Llama-3.2-1B", "variant": "bf16",
            "tp_degrees": [tp], "profiled_at": "2026-01-01T00:00:00+00:00"}
    if skew:
        (d / "skew_fit.csv").write_text(
            "pc,n_label,skew_rate_label,kv_big_label,kp_label,alpha,n_samples\n"
            "0,n<=8,sr<=40%,kvB<=4k,kp=0,0.25,4\n")
        meta["skew_fit"] = {"enabled": True, "per_tp": {tp: {"alpha_default": 0.05,
                                                             "bucket_table": f"tp{tp}/skew_fit.csv"}}}
    (variant / "meta.yaml").write_text(yaml.safe_dump(meta))
    return d


# --------------------------------------------------------------------------- 1-D tables
def test_table_exact_monotone_and_labelled():
    t = Table1D([1, 4, 16, 64], [10.0, 13.0, 40.0, 100.0])
    for k, v in zip(t.keys, t.values):
        assert t.lookup(k) == (v, MEASURED)
    prev = 10.0
    for x in range(1, 65):
        v, src = t.lookup(x)
        assert v >= prev - 1e-12  # monotone data -> monotone lookups
        prev = v
        assert src == (MEASURED if x in t.keys else INTERPOLATED)
    assert t.lookup(10)[0] == pytest.approx(13.0 + (40.0 - 13.0) * 6 / 12)
    # beyond the grid: the line through the top two points, labelled
    assert t.lookup(128) == (pytest.approx(100.0 + 60.0 / 48 * 64), EXTRAPOLATED)
    assert t.lookup(0.5) == (10.0, EXTRAPOLATED)
    # never extrapolate downwards
    flat = Table1D([1, 2], [5.0, 4.0])
    assert flat.lookup(10) == (4.0, EXTRAPOLATED)


def test_variant_names():
    assert variant_name("bfloat16", "bfloat16") == "bf16"
    assert variant_name("float16", "fp8") == "fp16-kvfp8"
    assert variant_name("fp8", "bfloat16") == "fp8"


# --------------------------------------------------------------------------- our format
def test_read_our_bundle(tmp_path):
    d = ours(tmp_path)
    b = read_bundle(d, tp=2)
    assert (b.format, b.tp, b.timing, b.hardware, b.variant) == ("tpsim", 2, "wall", "TESTGPU", "bf16")
    assert b.dense["qkv_proj"].lookup(16) == (pytest.approx(2160.0), MEASURED)
    assert b.dense_graph["qkv_proj"].max_key == 256
    assert b.per_sequence["sampler"].lookup(64)[0] == pytest.approx(11400.0)
    assert b.attention.lookup(64, 256, 0, 0) == (pytest.approx(3000.0 + 64 * 320 * 0.01), MEASURED)
    assert b.attention.lookup(0, 0, 32, 1024) == (pytest.approx(3000.0 + 32 * 1024 * 0.5), MEASURED)
    assert b.attention_graph is not None and b.attention_graph.lookup(0, 0, 8, 256)[0] == pytest.approx(
        3000.0 + 8 * 256 * 0.5 - 1500.0)
    d = b.describe()
    assert d["format"] == "tpsim" and d["graph_timings"] and d["source"] == str(b.path)
    meta = yaml.safe_load((b.path / "meta.yaml").read_text())
    assert meta["format"] == "tpsim" and meta["format_version"] == 1


def test_attention_lookup_between_grid_points(tmp_path):
    a = read_bundle(ours(tmp_path)).attention
    # decode: linear in kv_decode and n_decode between grid points (the synthetic data is bilinear)
    v, src = a.lookup(0, 0, 16, 640)
    lo = 3000.0 + 8 * 640 * 0.5
    hi = 3000.0 + 32 * 640 * 0.5
    assert src == INTERPOLATED and v == pytest.approx(lo + (hi - lo) * 8 / 24)
    # monotone along every axis between grid points
    for axis in range(4):
        prev = None
        for step in range(0, 50):
            q = [512, 256, 0, 0] if axis < 2 else [0, 0, 8, 1024]
            q[axis] += step * 10 if axis != 2 else step
            v = a.lookup(*q)[0]
            if prev is not None:
                assert v >= prev - 1e-9
            prev = v
    # beyond the largest context: extrapolated, still growing
    v, src = a.lookup(0, 0, 32, 8192)
    assert src == EXTRAPOLATED and v > a.lookup(0, 0, 32, 4096)[0]
    # a prefill chunk smaller than the smallest profiled one reads the smallest (0 is its own regime)
    assert a.lookup(8, 0, 0, 0) == (a.lookup(16, 0, 0, 0)[0], EXTRAPOLATED)
    # mixed batches are bracketed on the mixed grid (64, 1024), not on the prefill-only one (.., 256, 1024)
    v, src = a.lookup(512, 0, 1, 256)
    lo, hi = a.lookup(64, 0, 1, 256)[0], a.lookup(1024, 0, 1, 256)[0]
    assert src == INTERPOLATED and v == pytest.approx(lo + (hi - lo) * (512 - 64) / (1024 - 64))
    # mixed batch at a profiled mixed point
    assert a.lookup(64, 1024, 32, 4096) == (pytest.approx(4000.0 + 64 * 1088 * 0.01 + 32 * 4096 * 0.6), MEASURED)


# --------------------------------------------------------------------------- LLMServingSim format
def test_read_llmservingsim_bundle(tmp_path):
    d = llmservingsim(tmp_path)
    b = read_bundle(d, tp=1)
    assert (b.format, b.timing, b.tp, b.model) == ("llmservingsim", "kernel", 1, "meta-llama/Llama-3.2-1B")
    assert b.dense["qkv_proj"].lookup(64)[0] == pytest.approx((2 + 0.64) * 1000)
    assert b.attention.lookup(0, 0, 16, 1024)[0] == pytest.approx((3 + 16 * 1024 * 5e-4) * 1000)
    assert isinstance(b.skew, SkewFit)
    # the bucket in skew_fit.csv, and the per-tp default elsewhere
    assert b.skew.alpha(0, 8, 0.3, 3000, 0) == 0.25
    assert b.skew.alpha(0, 8, 0.9, 3000, 0) == 0.05
    assert b.skew.alpha(128, 8, 0.3, 3000, 0) == 0.05


def test_read_shared_llmservingsim_bundle():
    variant = shared_path(*SHARED_BUNDLE)
    for tp in (1, 2):
        b = read_bundle(variant / f"tp{tp}", tp=tp)
        assert b.format == "llmservingsim" and b.tp == tp and b.skew is not None
        assert {"layernorm", "qkv_proj", "o_proj", "gate_up_proj", "down_proj"} <= set(b.dense)
        assert {"lm_head", "sampler"} <= set(b.per_sequence)
        assert b.attention.has_mixed
        # exact at every grid point of the CSV (read here, not copied)
        import csv

        with open(variant / f"tp{tp}" / "attention.csv") as f:
            rows = list(csv.DictReader(f))
        for r in rows[:: max(1, len(rows) // 300)]:
            v, src = b.attention.lookup(int(r["prefill_chunk"]), int(r["kv_prefill"]), int(r["n_decode"]),
                                        int(r["kv_decode"]))
            assert src == MEASURED
            assert v == pytest.approx(float(r["time_us"]) * 1000)


# --------------------------------------------------------------------------- locating
def test_find_bundle_layouts(tmp_path, monkeypatch):
    d = ours(tmp_path, tp=2)
    kw = dict(hardware="TESTGPU", model="meta-llama/Llama-3.2-1B", dtype="bfloat16", kv_cache_dtype="bfloat16")
    assert find_bundle(**kw, tp=2, profile_dir=str(tmp_path)).path == d
    assert find_bundle(**kw, tp=2, profile_dir=str(d)).path == d  # the tp folder itself
    assert find_bundle(**kw, tp=2, profile_dir=str(d.parent)).path == d  # the variant folder
    assert find_bundle(**kw, tp=4, profile_dir=str(tmp_path)) is None
    assert find_bundle(**{**kw, "kv_cache_dtype": "fp8"}, tp=2, profile_dir=str(tmp_path)) is None
    assert find_bundle(**{**kw, "hardware": "OTHER"}, tp=2, profile_dir=str(tmp_path)) is None
    monkeypatch.setenv("TPSIM_PROFILE_DIR", str(tmp_path))
    assert find_bundle(**kw, tp=2).path == d
    # LLMServingSim keeps bundles under profiler/perf
    s = llmservingsim(tmp_path / "x")
    assert locate([tmp_path / "x"], "TESTGPU", "meta-llama/Llama-3.2-1B", "bfloat16", "bfloat16", 1) is None
    assert locate([tmp_path / "x" / "perfroot"], "TESTGPU", "meta-llama/Llama-3.2-1B", "bfloat16",
                  "bfloat16", 1) == s


def test_find_shared_bundle():
    root = shared_path("profiles", "llmservingsim")
    b = find_bundle("RTXPRO6000", "meta-llama/Llama-3.1-8B", "bfloat16", "bfloat16", 2, str(root))
    assert b is not None and b.tp == 2 and b.format == "llmservingsim"


# --------------------------------------------------------------------------- bad bundles
def test_bundle_for_another_tp(tmp_path):
    d = ours(tmp_path, tp=2)
    with pytest.raises(InputError, match="tp=2, not tp=4"):
        read_bundle(d, tp=4)
    kw = dict(hardware="TESTGPU", model="meta-llama/Llama-3.2-1B", dtype="bfloat16", kv_cache_dtype="bfloat16")
    with pytest.raises(InputError, match="tp=2, not tp=1"):
        find_bundle(**kw, tp=1, profile_dir=str(d))  # a tp folder given directly
    # a tp2 meta.yaml inside a tp1 folder
    wrong = tmp_path / "wrong" / "tp1"
    wrong.mkdir(parents=True)
    for f in d.iterdir():
        (wrong / f.name).write_text(f.read_text())
    with pytest.raises(InputError, match="meta.yaml"):
        read_bundle(wrong)


def test_bundle_for_another_model(tmp_path):
    d = ours(tmp_path)
    with pytest.raises(InputError, match="model 'meta-llama/Llama-3.2-1B', not 'Qwen/Qwen3-0.6B'"):
        find_bundle("TESTGPU", "Qwen/Qwen3-0.6B", "bfloat16", "bfloat16", 2, str(d))


@pytest.mark.parametrize("fname,edit,match", [
    ("dense.csv", lambda t: t.replace("qkv_proj,16,", "qkv_proj,16x,", 1), r"dense.csv:\d+: column tokens"),
    ("dense.csv", lambda t: t.replace("qkv_proj,16,2.1600", "qkv_proj,16,fast"), r"dense.csv:\d+: column time_us"),
    ("per_sequence.csv", lambda t: t.replace("lm_head,2,5.2000", "lm_head,2,-1"), r"per_sequence.csv:\d+:.*>= 0"),
    ("attention.csv", lambda t: t.replace("prefill_chunk,", "chunk,", 1), r"attention.csv:1: header lacks"),
    ("attention.csv", lambda t: t + "0,0,0,0,1.0,\n", r"attention.csv:\d+: .*no work"),
    ("meta.yaml", lambda t: t.replace("format_version: 1", "format_version: 9"), r"meta.yaml: format_version"),
    ("meta.yaml", lambda t: t + "  bad: [\n", r"meta.yaml:\d+: malformed YAML"),
])
def test_malformed_bundle_files(tmp_path, fname, edit, match):
    d = ours(tmp_path)
    p = d / fname
    new = edit(p.read_text())
    assert new != p.read_text()
    p.write_text(new)
    with pytest.raises(InputError, match=match):
        read_bundle(d)


def test_missing_csv(tmp_path):
    d = ours(tmp_path)
    (d / "per_sequence.csv").unlink()
    with pytest.raises(InputError, match=r"per_sequence.csv: missing"):
        read_bundle(d)
    s = llmservingsim(tmp_path)
    (s / "attention.csv").unlink()
    with pytest.raises(InputError, match=r"attention.csv: missing"):
        read_bundle(s)


def test_error_messages_are_one_line(tmp_path):
    d = ours(tmp_path)
    (d / "dense.csv").write_text("layer,tokens,time_us\nqkv_proj,1,nan\n")
    with pytest.raises(InputError) as exc:
        read_bundle(d)
    assert "\n" not in str(exc.value) and "dense.csv:2" in str(exc.value)
