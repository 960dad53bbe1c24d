"""The shipped kernel tables (configs/kernels/) and the query API over them."""

from __future__ import annotations

import gzip
import json
import shutil
from math import isclose

import pytest
from conftest import REPO, run_subprocess, run_tpsim, shared_path
from hypothesis import given, settings
from hypothesis import strategies as st

from tpsim.errors import InputError
from tpsim.kernels import KernelTables, MissingTableError, load_kernel_tables
from tpsim.kernels.kinds import KINDS
from tpsim.kernels.store import read_provenance

KERNELS = REPO / "configs" / "kernels"
SOURCE_ID = "ai-dynamo/aiconfigurator commit 095f58a5 (snapshot of 2026-08-21)"
SHIPPED = {  # hardware -> (AIC system, engine version, GPU as recorded)
    "H100": ("h100_sxm", "0.19.0", "NVIDIA H100 80GB HBM3"),
    "H200": ("h200_sxm", "0.19.0", "NVIDIA H200"),
    "B200": ("b200_sxm", "0.19.0", "NVIDIA B200"),
    "RTXPRO6000": ("rtx_pro_6000_server", "0.19.0", "NVIDIA RTX PRO 6000 Blackwell Server Edition"),
    "A100": ("a100_sxm", "0.14.0", "NVIDIA A100-SXM4-80GB"),
}


def fresh(hardware: str) -> KernelTables:
    """Tables of a shipped GPU with nothing parsed yet (load_kernel_tables caches instances)."""
    folder = KERNELS / hardware
    return KernelTables(hardware, folder, read_provenance(folder / "provenance.json"))


def raw(hardware: str, name: str) -> dict:
    return json.loads(gzip.decompress((KERNELS / hardware / f"{name}.json.gz").read_bytes()))


@pytest.mark.parametrize("hardware", sorted(SHIPPED))
def test_shipped_tables_carry_licence_notice_and_provenance(hardware):
    system, version, gpu = SHIPPED[hardware]
    folder = KERNELS / hardware
    licence = (folder / "LICENSE").read_text()
    assert "Apache License" in licence and "Version 2.0, January 2004" in licence
    assert "not the tpsim project's" in (folder / "NOTICE").read_text()
    prov = read_provenance(folder / "provenance.json")
    assert (prov["hardware"], prov["gpu"], prov["engine_version"]) == (hardware, gpu, version)
    assert prov["source"]["system"] == system and prov["source"]["id"] == SOURCE_ID
    assert (hardware == "A100") == (prov["nccl_version"] == "2.27.3")
    for name, rec in prov["tables"].items():
        assert (folder / rec["file"]).is_file(), name
        assert rec["gpu"] == [gpu] and rec["points"] > 0 and rec["source_files"]
    on_disk = {p.name for p in folder.glob("*.json.gz")}
    assert on_disk == {rec["file"] for rec in prov["tables"].values()}
    assert {"gemm.bfloat16", "generation_attention.bfloat16.kv_bfloat16", "custom_allreduce.bfloat16",
            "nccl.float16", "nccl.int8", "moe.bfloat16"} <= set(prov["tables"])


def test_shipped_tables_are_a_few_megabytes():
    total = sum(p.stat().st_size for p in KERNELS.rglob("*") if p.is_file())
    assert total < 4e6


def test_loader_finds_the_shipped_tables_and_unknown_gpus_have_none():
    kt = load_kernel_tables("H100")
    assert kt is not None and kt.folder == (KERNELS / "H100").resolve()
    assert load_kernel_tables("H100") is kt  # cached
    assert load_kernel_tables("RTX4090") is None


def test_tables_are_loaded_only_when_a_query_needs_them():
    kt = fresh("H100")
    assert kt.loaded() == ()
    kt.generation_attention(8, 1024, 32, 8, 128)
    assert kt.loaded() == ("generation_attention.bfloat16.kv_bfloat16",)
    kt.nccl("all_gather", 4, 65536, "fp8")
    kt.custom_allreduce(2, 4096)
    assert kt.loaded() == ("custom_allreduce.bfloat16", "generation_attention.bfloat16.kv_bfloat16", "nccl.int8")


def test_measured_points_are_exact_and_carry_their_source():
    kt = fresh("H100")
    group = raw("H100", "gemm.bfloat16")["groups"][0]
    m, n, k = group["axes"]
    for i, j, h in ((0, 0, 0), (20, 7, 11), (len(m) - 1, len(n) - 2, len(k) - 1)):
        e = kt.gemm(m[i], n[j], k[h])
        assert e.time_ns == group["latency_ns"][(i * len(n) + j) * len(k) + h]
        assert e.source == "measured" and e.table == "gemm.bfloat16" and e.points == ((m[i], n[j], k[h]),)


gemm_axes = raw("H100", "gemm.bfloat16")["groups"][0]["axes"]


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_gemm_interpolation_is_bounded_by_its_bracketing_measurements(data):
    kt = load_kernel_tables("H100")
    point = []
    for axis in gemm_axes:
        j = data.draw(st.integers(0, len(axis) - 2))
        point.append(data.draw(st.integers(axis[j], axis[j + 1])))
    e = kt.gemm(*point)
    corners = [kt.gemm(*p) for p in e.points]
    if e.source != "extrapolated":  # the (65536, 65536) corner is not measured
        assert all(c.source == "measured" for c in corners)
        assert min(c.time_ns for c in corners) <= e.time_ns <= max(c.time_ns for c in corners)


@pytest.mark.parametrize("query", [
    lambda kt, x: kt.gemm(4096, 65536 * x, 8192),
    lambda kt, x: kt.gemm(32768 * x, 4096, 4096),
    lambda kt, x: kt.generation_attention(8, 32768 * x, 32, 8, 128),
    lambda kt, x: kt.context_attention(1, 16384 * x, 32, 8, 128),
    lambda kt, x: kt.nccl("all_reduce", 8, 268435456 * x),
    lambda kt, x: kt.custom_allreduce(8, 128 / x),
])
def test_extrapolation_is_continuous_at_the_grid_edge(query):
    kt = load_kernel_tables("H100")
    edge = query(kt, 1)
    just_beyond = query(kt, 1 + 1e-7)
    far = query(kt, 4)
    assert edge.source in ("measured", "interpolated")
    assert just_beyond.source == far.source == "extrapolated" and "beyond the grid" in far.note
    assert isclose(just_beyond.time_ns, edge.time_ns, rel_tol=1e-5)


def test_lm_head_beyond_the_grid_scales_with_the_bytes():
    kt = load_kernel_tables("H100")
    edge = kt.gemm(1, 65536, 5120)
    lm_head = kt.gemm(1, 151936, 5120)  # Qwen vocabulary at TP=1
    assert lm_head.source == "extrapolated" and lm_head.points == ((1, 65536, 5120),)
    assert isclose(lm_head.time_ns / edge.time_ns, 151936 / 65536, rel_tol=0.05)


def test_missing_head_configuration_is_scaled_from_the_nearest_measured_one():
    kt = load_kernel_tables("H100")
    e = kt.generation_attention(16, 4096, 32, 8, 96)
    assert e.source == "extrapolated" and e.key == (32, 8, 128)
    assert "(32, 8, 96) not measured: roofline-scaled from (32, 8, 128)" in e.note
    measured = kt.generation_attention(16, 4096, 32, 8, 128)
    assert 0.6 < e.time_ns / measured.time_ns < 1.0  # fewer bytes per KV row, not more


def test_collectives_by_element_size():
    kt = load_kernel_tables("H100")
    bf16 = kt.nccl("all_reduce", 4, 1 << 20, "bfloat16")
    fp16 = kt.nccl("all_reduce", 4, 1 << 20, "float16")
    assert bf16 == fp16 and bf16.table == "nccl.float16" and bf16.source == "measured"
    fp32 = kt.nccl("all_reduce", 4, 1 << 20, "float32")
    assert fp32.source == "extrapolated" and fp32.time_ns == kt.nccl("all_reduce", 4, 1 << 21, "bfloat16").time_ns
    graph, eager = kt.custom_allreduce(8, 8192), kt.custom_allreduce(8, 8192, backend="eager")
    assert graph.key == ("graph", 8) and eager.key == ("eager", 8) and graph.time_ns < eager.time_ns
    assert kt.custom_allreduce(16, 8192).source == "extrapolated"


def test_bad_queries_and_missing_tables():
    kt = load_kernel_tables("H200")
    with pytest.raises(MissingTableError, match="H200 has no kernel table 'context_attention.bfloat16.kv_bfloat16'"):
        kt.context_attention(1, 1024, 32, 8, 128)  # skipped by the importer: impossible times
    with pytest.raises(ValueError, match="m must be > 0"):
        kt.gemm(0, 1024, 1024)
    with pytest.raises(ValueError, match="op must be one of"):
        kt.nccl("broadcast", 2, 1024)
    with pytest.raises(ValueError, match="num_gpus >= 2"):
        kt.custom_allreduce(1, 1024)


def test_moe_query_on_the_tables_own_keys():
    kt = load_kernel_tables("H100")
    e = kt.moe(512, 2048, 768, 8, 128, tp_size=1, ep_size=1)
    assert e.source == "measured" and e.key == (2048, 768, 8, 128, 1, 1, "balanced")
    assert kt.moe(500, 2048, 768, 8, 128).source == "interpolated"
    assert kt.moe(512, 2048, 768, 8, 128, distribution="power_law_1.2").key[-1] == "power_law_1.2"


def test_user_config_dir_takes_precedence(tmp_path, monkeypatch):
    mine = tmp_path / "kernels" / "H100"
    mine.mkdir(parents=True)
    shutil.copy(KERNELS / "H100" / "provenance.json", mine)
    monkeypatch.setenv("TPSIM_CONFIG_DIR", str(tmp_path))
    kt = load_kernel_tables("H100")
    assert kt.folder == mine.resolve()
    with pytest.raises(InputError, match="gemm.bfloat16.json.gz"):
        kt.gemm(1, 1024, 1024)  # the provenance names a table this folder lacks


@pytest.mark.parametrize("payload", [
    b"not gzip",
    gzip.compress(b'{"format": "tpsim-kernel-table/1", "groups": ['),  # cut short
    gzip.compress(b'{"format": "tpsim-kernel-table/1", "groups": [NaN]}'),  # not JSON (no NaN in a table)
    gzip.compress(b"\xff\xfe{}"),  # not UTF-8
], ids=["not-gzip", "truncated-json", "nan", "not-utf8"])
def test_damaged_table_is_an_input_error(tmp_path, monkeypatch, payload):
    mine = tmp_path / "kernels" / "H100"
    mine.mkdir(parents=True)
    shutil.copy(KERNELS / "H100" / "provenance.json", mine)
    (mine / "gemm.bfloat16.json.gz").write_bytes(payload)
    kt = KernelTables("H100", mine, read_provenance(mine / "provenance.json"))
    with pytest.raises(InputError, match="not a tpsim kernel table"):
        kt.gemm(1, 1024, 1024)


def test_importer_and_query_layer_agree_on_names():
    from tpsim.aic.specs import SOURCES

    for src in SOURCES:
        kind = KINDS[src.kind]
        assert tuple(c.name for c in src.keys) == kind.key_names
        assert tuple(c.name for c in src.axes) == kind.axis_names


def test_run_path_imports_no_kernel_tables_and_the_api_no_heavy_libraries():
    code = ("import sys, tpsim.cli, tpsim.api, tpsim.commands.run; "
            "assert 'tpsim.kernels' not in sys.modules, 'run path imports tpsim.kernels'; "
            "from tpsim.kernels import load_kernel_tables; kt = load_kernel_tables('H100'); "
            "kt.gemm(64, 4096, 4096); kt.moe(64, 2048, 768, 8, 128); "
            "heavy = [m for m in ('duckdb', 'pandas', 'numpy', 'pyarrow', 'yaml') if m in sys.modules]; "
            "assert not heavy, heavy; print('ok')")
    res = run_subprocess(["-c", code])
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr


@pytest.mark.slow
def test_import_of_shared_h100_reproduces_the_committed_tables(tmp_path, capsys):
    """Same source, same bytes.  The gzip payloads are compared (a different zlib build may
    compress the same JSON to other bytes); every other file byte for byte."""
    shared_path("aic", "systems", "data", "h100_sxm")
    out = tmp_path / "H100"
    argv = ["import", "aic", "--from", str(REPO.parent / "shared" / "aic"), "--system", "h100_sxm",
            "--version", "0.19.0", "--out", str(out), "--source-id", SOURCE_ID]
    assert run_tpsim(argv) == 0
    committed = KERNELS / "H100"
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in committed.iterdir())
    for f in committed.iterdir():
        mine, theirs = (out / f.name).read_bytes(), f.read_bytes()
        if f.name.endswith(".gz"):
            mine, theirs = gzip.decompress(mine), gzip.decompress(theirs)
        assert mine == theirs, f.name


def test_read_table_gives_the_standard_librarys_values_for_every_shipped_table():
    """msgspec parses the tables: the same numbers, of the same types, as json.loads."""
    from tpsim.kernels.store import read_table

    def typed(x):  # a float 1.0 and an int 1 compare equal: compare the types too
        if isinstance(x, dict):
            return {k: typed(v) for k, v in x.items()}
        if isinstance(x, list):
            return [typed(v) for v in x]
        return (type(x).__name__, x)

    files = sorted(KERNELS.glob("*/*.json.gz"))
    assert files
    for f in files:
        assert typed(read_table(f)) == typed(json.loads(gzip.decompress(f.read_bytes()))), f
