"""The shipped catalog: hardware entries and Hugging Face model configs.

Expected numbers come from /work/shared/reference/hardware-and-models.md (spec sheets
and the "Params (derived)" column), not from the files under test.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from tpsim.config import catalog
from tpsim.config.hardware import PerfModelParams, available_hardware, load_hardware
from tpsim.config.model import load_model
from tpsim.errors import InputError

REPO = Path(__file__).resolve().parents[1]
HW_DIR = REPO / "configs" / "hardware"
MODEL_DIR = REPO / "configs" / "model"

HARDWARE = ["A100", "B200", "H100", "H200", "L40S", "RTX4090", "RTXPRO6000"]
PERF_KEYS = list(PerfModelParams.__struct_fields__)


@pytest.fixture
def repo_catalog(monkeypatch):
    """Resolve names against this checkout's configs/, whatever the working directory."""
    monkeypatch.setenv("TPSIM_CONFIG_DIR", str(REPO / "configs"))


def _raw(name: str) -> dict:
    return yaml.safe_load((HW_DIR / f"{name}.yaml").read_text())


# ----------------------------------------------------------------------------- hardware
def test_every_expected_entry_is_shipped(repo_catalog):
    assert set(HARDWARE) <= set(available_hardware())
    shipped = sorted(p.stem for p in HW_DIR.glob("*.yaml"))
    assert shipped == sorted(HARDWARE), "add new entries to HARDWARE in this test"


@pytest.mark.parametrize("name", HARDWARE)
def test_hardware_loads_with_sane_values(repo_catalog, name):
    hw = load_hardware(name)
    assert hw.name == name
    assert Path(hw.source).resolve() == (HW_DIR / f"{name}.yaml").resolve()
    assert len(hw.sha256) == 64
    p = hw.perf
    for key in ("gemm_efficiency", "memory_efficiency", "attention_compute_efficiency",
                "attention_memory_efficiency"):
        assert 0 < getattr(p, key) <= 1, key
    assert 0 < p.graph_kernel_overhead_ns <= p.kernel_overhead_ns < 100_000
    assert 0 < p.iteration_overhead_ns < 50_000_000
    assert 0 <= p.per_sequence_overhead_ns < 1_000_000
    assert 0 <= p.activation_reserve_gib < hw.memory_gib / 4
    assert p.max_graph_batch >= 1
    assert 0 < hw.memory_gib < 1024 and 0 < hw.memory_bw_gbps < 100_000
    assert hw.link_bw_gbps > 0 and hw.link_latency_ns >= 0
    assert set(hw.peak_tflops) == {"bfloat16", "float16", "fp8", "float32"}
    # the flops hook the latency model calls must work for every engine dtype
    for dtype in ("bfloat16", "float16", "fp8", "float32"):
        assert hw.peak_flops_per_ns(dtype) > 0


@pytest.mark.parametrize("name", HARDWARE)
def test_hardware_file_is_fully_sourced(name):
    text = (HW_DIR / f"{name}.yaml").read_text()
    assert "placeholder" not in text.lower()
    doc = yaml.safe_load(text)
    assert doc["name"] == name
    prov = doc.get("provenance") or {}
    missing = [k for k in doc["perf_model"] if not str(prov.get(k, "")).strip()]
    assert not missing, f"{name}: perf_model keys without provenance: {missing}"
    assert set(PERF_KEYS) <= set(doc["perf_model"]), "ship every perf_model key explicitly"
    sources = doc.get("sources") or {}
    assert sources and all(str(v).strip() for v in sources.values())
    # every [n] cited in comments or provenance is in the numbered list
    cited = {int(n) for n in re.findall(r"\[(\d+)\]", text)}
    assert cited <= set(sources), f"{name}: cited but not listed: {sorted(cited - set(sources))}"
    # every spec and perf_model value line carries a comment naming its source
    section = None
    for line in text.splitlines():
        if re.match(r"^\S", line):
            section = line.split(":")[0]
        if section in ("spec", "perf_model") and re.match(r"^\s+\w+:\s*[-\d.]", line):
            assert "#" in line, f"{name}: value without a source comment: {line.strip()}"


def test_key_spec_values_match_the_reference(repo_catalog):
    h100 = load_hardware("H100")
    assert h100.peak_tflops["bfloat16"] == 989.4
    assert h100.peak_tflops["fp8"] == 1978.9
    assert h100.memory_bw_gbps == 3350
    h200 = load_hardware("H200")
    assert h200.memory_bw_gbps == 4800 and h200.peak_tflops["bfloat16"] == 989.5
    a100 = load_hardware("A100")
    assert a100.peak_tflops["bfloat16"] == 312 and a100.memory_bw_gbps == 2039
    assert a100.peak_tflops["fp8"] is None  # Ampere has no FP8 tensor cores
    b200 = load_hardware("B200")
    assert b200.peak_tflops["bfloat16"] == 2250 and b200.peak_tflops["fp8"] == 4500
    l40s = load_hardware("L40S")
    assert l40s.peak_tflops["bfloat16"] == 362.05 and l40s.memory_bw_gbps == 864
    rtx4090 = load_hardware("RTX4090")
    assert rtx4090.memory_bw_gbps == 1008 and rtx4090.peak_tflops["bfloat16"] == 165.2
    pro = load_hardware("RTXPRO6000")
    assert pro.memory_bw_gbps == 1597 and pro.peak_tflops["bfloat16"] == 500
    assert pro.memory_gib == pytest.approx(97887 / 1024, abs=0.01)


def test_interconnect_values_are_the_links_a_cluster_config_names(repo_catalog):
    # the link a cluster config for the GPU names (NVLink: the per-direction spec rate and half the measured
    # 512 B 2-GPU all-reduce; RTX PRO 6000: LLMServingSim's configs; L40S scaled from it by measured NCCL);
    # collectives are costed from measured curves at this link (tpsim.perf.comm), so a cluster config that
    # names the GPU's own link gets the measured collectives
    expected = {"H100": (450, 3100), "H200": (450, 3050), "B200": (900, 5150), "A100": (300, 5000),
                "L40S": (8.3, 24400), "RTXPRO6000": (16, 20000)}
    for name, (bw, lat) in expected.items():
        hw = load_hardware(name)
        assert hw.link_bw_gbps == pytest.approx(bw), name
        assert hw.link_latency_ns == pytest.approx(lat), name


def test_fp8_on_a100_falls_back_to_16_bit(repo_catalog):
    a100 = load_hardware("A100")
    assert a100.peak_flops_per_ns("fp8") == a100.peak_flops_per_ns("bfloat16") == 312e3


# ----------------------------------------------------------------------------- bad hardware files
def _config_dir(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "cfg"
    (root / "hardware").mkdir(parents=True)
    monkeypatch.setenv("TPSIM_CONFIG_DIR", str(root))
    return root


def test_malformed_hardware_yaml_names_the_file(tmp_path, monkeypatch):
    root = _config_dir(tmp_path, monkeypatch)
    bad = root / "hardware" / "BROKEN.yaml"
    bad.write_text("spec:\n  memory_gib: 24\n  peak_tflops: {bfloat16: 100\nperf_model: [\n")
    with pytest.raises(InputError) as exc:
        load_hardware("BROKEN")
    msg = str(exc.value)
    assert "BROKEN.yaml" in msg and "malformed YAML" in msg


def test_hardware_missing_a_perf_model_key_names_the_field(tmp_path, monkeypatch):
    root = _config_dir(tmp_path, monkeypatch)
    doc = _raw("H100")
    del doc["perf_model"]["gemm_efficiency"]
    (root / "hardware" / "NOGEMM.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(InputError) as exc:
        load_hardware("NOGEMM")
    msg = str(exc.value)
    assert "NOGEMM.yaml" in msg and "perf_model.gemm_efficiency" in msg


def test_hardware_efficiency_above_one_is_rejected(tmp_path, monkeypatch):
    root = _config_dir(tmp_path, monkeypatch)
    doc = _raw("H100")
    doc["perf_model"]["memory_efficiency"] = 1.2
    (root / "hardware" / "FAST.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(InputError, match=r"perf_model\.memory_efficiency"):
        load_hardware("FAST")


def test_unknown_hardware_lists_the_catalog(tmp_path, monkeypatch):
    _config_dir(tmp_path, monkeypatch)
    with pytest.raises(InputError, match="unknown hardware 'NOPE'.*H100"):
        load_hardware("NOPE")


# ----------------------------------------------------------------------------- models
# "Params (derived)" column of the reference table (tied embeddings counted once, no biases)
DENSE_PARAMS = {
    "Qwen/Qwen3-0.6B": 596_049_920,
    "Qwen/Qwen3-1.7B": 1.721e9,
    "Qwen/Qwen3-4B": 4.022e9,
    "Qwen/Qwen3-8B": 8.191e9,
    "Qwen/Qwen3-14B": 14.768e9,
    "Qwen/Qwen3-32B": 32.762e9,
    "meta-llama/Llama-3.1-8B": 8_030_261_248,
    "meta-llama/Llama-3.1-70B": 70.554e9,
    "meta-llama/Llama-3.2-1B": 1.236e9,
    "meta-llama/Llama-3.2-3B": 3.213e9,
    "mistralai/Mistral-7B-v0.3": 7.248e9,
}
# "Params (derived)" of the reference table: total / active (top-k experts), in billions
MOE_PARAMS = {
    "Qwen/Qwen3-30B-A3B": (30.532, 3.353),
    "Qwen/Qwen3-30B-A3B-Instruct-2507": (30.532, 3.353),  # same architecture as the base model
    "Qwen/Qwen3-235B-A22B": (235.094, 22.191),
    "mistralai/Mixtral-8x7B-v0.1": (46.703, 12.880),
}
MOE = sorted(MOE_PARAMS)

# hidden, layers, heads, kv heads, head_dim, intermediate, vocab, max_pos, tied (reference Table 2)
SHAPES = {
    "Qwen/Qwen3-0.6B": (1024, 28, 16, 8, 128, 3072, 151936, 40960, True),
    "Qwen/Qwen3-1.7B": (2048, 28, 16, 8, 128, 6144, 151936, 40960, True),
    "Qwen/Qwen3-4B": (2560, 36, 32, 8, 128, 9728, 151936, 40960, True),
    "Qwen/Qwen3-8B": (4096, 36, 32, 8, 128, 12288, 151936, 40960, False),
    "Qwen/Qwen3-14B": (5120, 40, 40, 8, 128, 17408, 151936, 40960, False),
    "Qwen/Qwen3-32B": (5120, 64, 64, 8, 128, 25600, 151936, 40960, False),
    "meta-llama/Llama-3.1-8B": (4096, 32, 32, 8, 128, 14336, 128256, 131072, False),
    "meta-llama/Llama-3.1-70B": (8192, 80, 64, 8, 128, 28672, 128256, 131072, False),
    "meta-llama/Llama-3.2-1B": (2048, 16, 32, 8, 64, 8192, 128256, 131072, True),
    "meta-llama/Llama-3.2-3B": (3072, 28, 24, 8, 128, 8192, 128256, 131072, True),
    "mistralai/Mistral-7B-v0.3": (4096, 32, 32, 8, 128, 14336, 32768, 32768, False),
}


def test_every_shipped_model_is_covered():
    shipped = sorted(p.relative_to(MODEL_DIR).with_suffix("").as_posix() for p in MODEL_DIR.rglob("*.json"))
    assert shipped == sorted([*DENSE_PARAMS, *MOE]), "add new model configs to this test"


@pytest.mark.parametrize("name", sorted(DENSE_PARAMS))
def test_dense_model_loads_and_param_count_matches(repo_catalog, name):
    m = load_model(name)
    assert m.name == name and len(m.sha256) == 64
    assert m.torch_dtype == "bfloat16"
    expected = DENSE_PARAMS[name]
    assert m.num_params() == pytest.approx(expected, rel=0.005), f"{name}: {m.num_params():,}"


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_dense_model_shapes_match_the_reference(repo_catalog, name):
    m = load_model(name)
    hidden, layers, heads, kv, hd, inter, vocab, max_pos, tied = SHAPES[name]
    got = (m.hidden_size, m.num_layers, m.num_heads, m.num_kv_heads, m.head_dim, m.intermediate_size,
           m.vocab_size, m.max_position_embeddings, m.tie_word_embeddings)
    assert got == SHAPES[name]
    assert m.qk_norm == name.startswith("Qwen/")


def test_exact_param_counts(repo_catalog):
    # the two counts the reference gives to the parameter
    assert load_model("meta-llama/Llama-3.1-8B").num_params() == 8_030_261_248
    assert load_model("Qwen/Qwen3-0.6B").num_params() == 596_049_920


def test_qwen3_attention_width_is_not_hidden(repo_catalog):
    m = load_model("Qwen/Qwen3-32B")
    assert m.q_dim == 8192 and m.hidden_size == 5120
    assert m.kv_dim == 1024
    assert load_model("Qwen/Qwen3-0.6B").q_dim == 2048  # hidden 1024
    assert load_model("Qwen/Qwen3-4B").q_dim == 4096  # hidden 2560


def test_head_dim_key_presence_is_as_published(repo_catalog):
    def raw(name):
        return json.loads((MODEL_DIR / f"{name}.json").read_text())

    for name in DENSE_PARAMS:
        cfg = raw(name)
        if name.startswith(("meta-llama/Llama-3.1", "mistralai/")):
            assert "head_dim" not in cfg, name  # implicit hidden / heads
        else:
            assert "head_dim" in cfg, name
    for name in ("Qwen/Qwen3-0.6B", "Qwen/Qwen3-1.7B", "Qwen/Qwen3-4B", "meta-llama/Llama-3.2-1B",
                 "meta-llama/Llama-3.2-3B"):
        assert raw(name)["tie_word_embeddings"] is True, name


@pytest.mark.parametrize("name", MOE)
def test_moe_model_loads_and_param_counts_match_the_reference(repo_catalog, name):
    m = load_model(name)
    total, active = MOE_PARAMS[name]
    assert round(m.num_params() / 1e9, 3) == total, f"{name}: {m.num_params():,}"
    assert round(m.active_params() / 1e9, 3) == active, f"{name}: {m.active_params():,}"
    assert m.is_moe and m.moe.num_moe_layers == m.num_layers and m.num_dense_layers == 0


# hidden, layers, heads, kv, head_dim, dense inter, expert inter, experts, top-k, norm_topk_prob (reference Table)
MOE_SHAPES = {
    "Qwen/Qwen3-30B-A3B": (2048, 48, 32, 4, 128, 6144, 768, 128, 8, True),
    "Qwen/Qwen3-235B-A22B": (4096, 94, 64, 4, 128, 12288, 1536, 128, 8, True),
    "mistralai/Mixtral-8x7B-v0.1": (4096, 32, 32, 8, 128, 14336, 14336, 8, 2, True),
}


@pytest.mark.parametrize("name", sorted(MOE_SHAPES))
def test_moe_shapes_match_the_reference(repo_catalog, name):
    m = load_model(name)
    got = (m.hidden_size, m.num_layers, m.num_heads, m.num_kv_heads, m.head_dim, m.intermediate_size,
           m.moe.expert_intermediate_size, m.moe.num_experts, m.moe.top_k, m.moe.norm_topk_prob)
    assert got == MOE_SHAPES[name]
    assert m.moe.shared_expert_intermediate_size == 0 and not m.moe.shared_expert_gate
    assert m.qk_norm == name.startswith("Qwen/")  # Qwen3-MoE normalises q and k per head, Mixtral does not


def test_instruct_2507_is_the_shared_validation_config(repo_catalog):
    """The shipped file is the one the shared DP=2/EP run used, key for key (where ../shared exists)."""
    from conftest import shared_path

    shared = shared_path("validation", "rtxpro6000-qwen3-30b-a3b-dp2-ep2", "model_config.json")
    shipped = MODEL_DIR / "Qwen" / "Qwen3-30B-A3B-Instruct-2507.json"
    assert json.loads(shipped.read_text()) == json.loads(shared.read_text())
    m = load_model("Qwen/Qwen3-30B-A3B-Instruct-2507")
    assert m.max_position_embeddings == 262144  # the 2507 variant's context, unlike the base model's 40960


def test_model_missing_a_field_names_file_and_field(tmp_path, monkeypatch):
    root = tmp_path / "cfg"
    (root / "model" / "acme").mkdir(parents=True)
    cfg = json.loads((MODEL_DIR / "Qwen" / "Qwen3-0.6B.json").read_text())
    del cfg["vocab_size"]
    (root / "model" / "acme" / "Broken.json").write_text(json.dumps(cfg))
    monkeypatch.setenv("TPSIM_CONFIG_DIR", str(root))
    with pytest.raises(InputError, match=r"Broken\.json.*'vocab_size'"):
        load_model("acme/Broken")


def test_catalog_search_prefers_tpsim_config_dir(tmp_path, monkeypatch):
    root = _config_dir(tmp_path, monkeypatch)
    doc = _raw("H100")
    doc["perf_model"]["gemm_efficiency"] = 0.5
    (root / "hardware" / "H100.yaml").write_text(yaml.safe_dump(doc))
    assert catalog.config_roots()[0] == root
    assert load_hardware("H100").perf.gemm_efficiency == 0.5
