"""`tpsim import aic` on small synthetic AIC tables written here with DuckDB: every cleaning
rule sees dirty rows (exact and conflicting duplicates, mislabelled versions and GPUs,
missing columns, impossible times) and the report and provenance count what it did."""

from __future__ import annotations

import gzip
import json
import statistics
from pathlib import Path

import pytest
from conftest import run_tpsim

duckdb = pytest.importorskip("duckdb")

GPU = "FAKE GPU 80GB"
VERSION = "0.19.0"
SYSTEM_YAML = """\
gpu:
  mem_bw: 1000000000000        # 1000 GB/s
  bfloat16_tc_flops: 100000000000000   # 100 TFLOPS
  fp8_tc_flops: 200000000000000
node:
  intra_node_bw: 100000000000  # 100 GB/s
misc:
  nccl_version: '2.27.3'
"""
GEMM_M = (1, 2, 4, 8, 16, 32, 64, 128)
GEMM_NK = (256, 512, 1024, 2048)


def gemm_ms(m, n, k):
    """5 us plus twice the roofline: always physically possible."""
    flops_s = 2 * m * n * k / 1e14
    bytes_s = ((m * k + k * n) * 2 + m * n * 2) / 1e12
    return 0.005 + 2e3 * max(flops_s, bytes_s)


def write_parquet(path: Path, columns: dict, rows: list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    con.execute("CREATE TABLE t (" + ", ".join(f"{c} {t}" for c, t in columns.items()) + ")")
    con.executemany(f"INSERT INTO t VALUES ({', '.join('?' * len(columns))})", rows)
    con.execute(f"COPY t TO '{path}' (FORMAT parquet)")
    con.close()


HEAD = {"framework": "VARCHAR", "version": "VARCHAR", "device": "VARCHAR", "op_name": "VARCHAR",
        "kernel_source": "VARCHAR"}
CONFLICT = (16, 1024, 1024)
CONFLICT_MS = (gemm_ms(*CONFLICT), 1.5 * gemm_ms(*CONFLICT), 1.2 * gemm_ms(*CONFLICT))


def make_system(root: Path) -> Path:
    """An AIC-shaped systems/ folder for the system ``fake_sxm``; returns the systems dir."""
    systems = root / "systems"
    data = systems / "data" / "fake_sxm"
    systems.mkdir(parents=True)
    (systems / "fake_sxm.yaml").write_text(SYSTEM_YAML)
    (root / "LICENSE").write_text("                                 Apache License\n"
                                  "                           Version 2.0, January 2004\n")
    head = ("VLLM", VERSION, GPU)
    # GEMM: a full 8x4x4 grid plus one exact duplicate, a key measured three times, rows of
    # another version and another GPU, an fp8_block row, and one impossibly fast point
    rows = [(*head, "gemm", "vllm_default", "bfloat16", m, n, k, gemm_ms(m, n, k))
            for m in GEMM_M for n in GEMM_NK for k in GEMM_NK if (m, n, k) != CONFLICT]
    rows.append(rows[0])
    rows += [(*head, "gemm", "vllm_default", "bfloat16", *CONFLICT, ms) for ms in CONFLICT_MS]
    rows += [("VLLM", "0.19.1", GPU, "gemm", "vllm_default", "bfloat16", 1, 256, 256, 9.0)] * 3
    rows.append(("VLLM", VERSION, "OTHER GPU", "gemm", "vllm_default", "bfloat16", 1, 256, 512, 9.0))
    rows.append((*head, "gemm", "vllm_default", "fp8_block", 1, 256, 256, 0.01))
    fast = rows.index(next(r for r in rows if r[6:9] == (128, 2048, 2048)))
    rows[fast] = (*rows[fast][:9], 1e-6)
    write_parquet(data / "gemm/vllm/0.19.0/gemm_perf.parquet",
                  {**HEAD, "gemm_dtype": "VARCHAR", "m": "BIGINT", "n": "BIGINT", "k": "BIGINT", "latency": "DOUBLE"},
                  rows)
    # attention: bf16 KV plausible (plus sliding-window rows, out of scope); fp8 KV impossibly fast
    attn_cols = {**HEAD, "batch_size": "BIGINT", "isl": "BIGINT", "num_heads": "BIGINT",
                 "num_key_value_heads": "BIGINT", "head_dim": "BIGINT", "beam_width": "BIGINT",
                 "attn_dtype": "VARCHAR", "kv_cache_dtype": "VARCHAR", "step": "BIGINT", "window_size": "BIGINT",
                 "latency": "DOUBLE"}
    ctx, gen = [], []
    for b in (1, 2, 4):
        for s in (16, 128, 1024):
            flops_ms = 2 * b * 8 * s * s * 128 / 1e14 * 1e3
            for kv, ms in (("bfloat16", 0.01 + 2 * flops_ms), ("fp8", flops_ms / 100)):
                ctx.append((*head, "context_attention", "fa", b, s, 8, 8, 128, 1, "bfloat16", kv, 0, 0, ms))
            ctx.append((*head, "context_attention", "fa", b, s, 8, 8, 128, 1, "bfloat16", "bfloat16", 0, 128, 1.0))
            gen.append((*head, "generation_attention", "fa", b, 1, 8, 8, 128, 1, "bfloat16", "bfloat16", s - 1, 0,
                        0.01 + b * s * 2 * 8 * 128 * 2 / 1e12 * 2e3))
    write_parquet(data / "attention/vllm/0.19.0/context_attention_perf.parquet", attn_cols, ctx)
    write_parquet(data / "attention/vllm/0.19.0/generation_attention_perf.parquet", attn_cols, gen)
    # custom all-reduce without its backend column: skipped with a message
    write_parquet(data / "comm/vllm/0.19.0/custom_allreduce_perf.parquet",
                  {**HEAD, "allreduce_dtype": "VARCHAR", "num_gpus": "BIGINT", "message_size": "BIGINT",
                   "latency": "DOUBLE"},
                  [(*head, "all_reduce", "custom", "bfloat16", 2, 1024, 0.005)])
    # NCCL: folder 2.27.3 holds 2.29.2 rows twice; folder 2.29.2 has the same keys once more with
    # other times; folder 2.23 lacks the version and device columns
    nccl_cols = {**HEAD, "nccl_dtype": "VARCHAR", "num_gpus": "BIGINT", "message_size": "BIGINT", "latency": "DOUBLE"}
    nccl = [("TRTLLM", "2.29.2", GPU, op, "NCCL", dt, 2, size, 0.01 + size / 1e8)
            for op in ("all_reduce", "all_gather", "reduce_scatter", "alltoall") for dt in ("half", "int8")
            for size in (1024, 65536, 1048576)]
    write_parquet(data / "comm/nccl/2.27.3/nccl_perf.parquet", nccl_cols, nccl * 2)
    write_parquet(data / "comm/nccl/2.29.2/nccl_perf.parquet", nccl_cols, [(*r[:8], r[8] * 1.1) for r in nccl])
    write_parquet(data / "comm/nccl/2.23/nccl_perf.parquet",
                  {"nccl_dtype": "VARCHAR", "num_gpus": "BIGINT", "message_size": "BIGINT", "op_name": "VARCHAR",
                   "latency": "DOUBLE"}, [("half", 2, 1024, "all_gather", 0.01)])
    moe = [(*head, "moe", "vllm_fused_moe", "bfloat16", t, 2048, 768, 8, 128, 1, 1, "balanced",
            0.02 + 2e3 * 6 * 2048 * 768 * 8 * t / 1e14)
           for t in (1, 16, 256)]
    write_parquet(data / "moe/vllm/0.19.0/moe_perf.parquet",
                  {**HEAD, "moe_dtype": "VARCHAR", "num_tokens": "BIGINT", "hidden_size": "BIGINT",
                   "inter_size": "BIGINT", "topk": "BIGINT", "num_experts": "BIGINT", "moe_tp_size": "BIGINT",
                   "moe_ep_size": "BIGINT", "distribution": "VARCHAR", "latency": "DOUBLE"}, moe)
    return systems


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    root = tmp_path_factory.mktemp("aic")
    make_system(root)
    out = root / "cfg" / "kernels" / "FAKE"
    argv = ["import", "aic", "--from", str(root), "--system", "fake_sxm", "--hardware", "FAKE",
            "--version", VERSION, "--out", str(out), "--source-id", "synthetic test data"]
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = run_tpsim(argv)
    assert code == 0
    return {"root": root, "out": out, "argv": argv, "report": buf.getvalue(),
            "prov": json.loads((out / "provenance.json").read_text())}


def table_doc(out: Path, name: str) -> dict:
    return json.loads(gzip.decompress((out / f"{name}.json.gz").read_bytes()))


def test_versions_and_gpu_come_from_the_rows(imported):
    prov = imported["prov"]
    assert prov["gpu"] == GPU and prov["engine_version"] == VERSION
    gemm = prov["tables"]["gemm.bfloat16"]
    assert gemm["rows_other_version"] == {"0.19.1": 3}
    assert gemm["rows_other_gpu"] == {"OTHER GPU": 1}
    assert prov["not_imported"]["gemm"] == {"fp8_block": 1}
    # the NCCL folder named 2.27.3 holds 2.29.2 rows: the yaml's 2.27.3 has no rows, so 2.29.2 is taken
    assert prov["nccl_version"] == "2.29.2" and "names 2.27.3, of which no row exists" in prov["nccl_rule"]


def test_duplicates_are_dropped_and_conflicts_take_the_median(imported):
    gemm = imported["prov"]["tables"]["gemm.bfloat16"]
    assert gemm["exact_duplicates_dropped"] == 1
    assert gemm["conflicting_keys"] == 1 and gemm["conflicting_rows_merged"] == 3
    assert gemm["worst_conflict_max_over_min"] == 1.5
    doc = table_doc(imported["out"], "gemm.bfloat16")
    (group,) = doc["groups"]
    m, n, k = group["axes"]
    flat = (m.index(16) * len(n) + n.index(1024)) * len(k) + k.index(1024)
    assert group["latency_ns"][flat] == float(f"{statistics.median(CONFLICT_MS) * 1e6:.5g}")
    nccl = imported["prov"]["tables"]["nccl.float16"]
    # 12 keys, each twice identical in one folder (exact) and once with another time (conflict)
    assert nccl["exact_duplicates_dropped"] == 12 and nccl["conflicting_keys"] == 12


def test_impossible_points_are_dropped_and_an_impossible_table_is_skipped(imported):
    prov = imported["prov"]
    gemm = prov["tables"]["gemm.bfloat16"]
    assert gemm["hard_roofline_violators_dropped"] == 1 and gemm["points"] == 127
    assert "context_attention.bfloat16.kv_fp8" not in prov["tables"]
    assert "beat the hard roofline" in prov["skipped"]["context_attention.bfloat16.kv_fp8"]
    assert prov["tables"]["context_attention.bfloat16.kv_bfloat16"]["rows_out_of_scope"] == {"window_size=128": 9}


def test_files_lacking_columns_are_skipped_with_a_message(imported):
    skipped = imported["prov"]["skipped"]
    assert "lacks column(s) backend" in skipped["systems/data/fake_sxm/comm/vllm/0.19.0/custom_allreduce_perf.parquet"]
    assert "lacks column(s) version, device" in skipped["systems/data/fake_sxm/comm/nccl/2.23/nccl_perf.parquet"]
    assert not (imported["out"] / "custom_allreduce.bfloat16.json.gz").exists()


def test_report_names_what_each_rule_did(imported):
    report = imported["report"]
    assert f"fake_sxm: GPU '{GPU}' (from the rows), vllm {VERSION}, NCCL 2.29.2" in report
    assert "gemm rows by version: 0.19.0 " in report and "0.19.1 3 (kept 0.19.0)" in report
    assert ("gemm.bfloat16: 135 rows; other version 0.19.1: 3; other GPU OTHER GPU: 1; 1 exact duplicates dropped; "
            "1 conflicting keys (3 rows, max/min up to 1.5) -> median; 1 below the hard roofline dropped") in report
    assert "skipped context_attention.bfloat16.kv_fp8: 9 of 9 points (100%) beat the hard roofline" in report
    assert "not imported (gemm): fp8_block 1 rows" in report


def test_output_has_licence_notice_and_provenance(imported):
    out = imported["out"]
    assert "Apache License" in (out / "LICENSE").read_text()
    notice = (out / "NOTICE").read_text()
    assert "derivative of the NVIDIA AIConfigurator" in notice and "not the tpsim project's" in notice
    rec = imported["prov"]["tables"]["gemm.bfloat16"]
    assert rec["engine"] == "vllm" and rec["engine_version"] == VERSION and rec["gpu"] == [GPU]
    assert rec["source_files"][0]["path"] == "systems/data/fake_sxm/gemm/vllm/0.19.0/gemm_perf.parquet"
    assert len(rec["source_files"][0]["sha256"]) == 64
    assert imported["prov"]["source"]["id"] == "synthetic test data"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["LICENSE", "NOTICE", "provenance.json", "context_attention.bfloat16.kv_bfloat16.json.gz",
         "gemm.bfloat16.json.gz", "generation_attention.bfloat16.kv_bfloat16.json.gz", "moe.bfloat16.json.gz",
         "nccl.float16.json.gz", "nccl.int8.json.gz"])


def test_import_is_byte_identical_when_repeated(imported, tmp_path, capsys):
    argv = list(imported["argv"])
    argv[argv.index("--out") + 1] = str(tmp_path / "again")
    assert run_tpsim(argv) == 0
    for f in imported["out"].iterdir():
        assert (tmp_path / "again" / f.name).read_bytes() == f.read_bytes(), f.name


def test_generation_axis_is_vllm_seq_len(imported):
    doc = table_doc(imported["out"], "generation_attention.bfloat16.kv_bfloat16")
    assert doc["axis_names"] == ["batch", "kv_len"] and doc["groups"][0]["axes"][1] == [16, 128, 1024]


def test_synthetic_tables_answer_queries(imported, monkeypatch):
    from tpsim.kernels.store import read_provenance
    from tpsim.kernels.tables import KernelTables

    kt = KernelTables("FAKE", imported["out"], read_provenance(imported["out"] / "provenance.json"))
    e = kt.gemm(4, 512, 1024)
    assert e.source == "measured" and e.time_ns == float(f"{gemm_ms(4, 512, 1024) * 1e6:.5g}")
    assert kt.gemm(5, 512, 1024).source == "interpolated"
    assert kt.gemm(128, 2048, 2048).source == "extrapolated"  # its measurement was dropped
    assert kt.nccl("all_gather", 2, 65536, "bfloat16").source == "measured"
    monkeypatch.setenv("TPSIM_CONFIG_DIR", str(imported["out"].parents[1]))
    from tpsim.kernels.tables import load_kernel_tables

    found = load_kernel_tables("FAKE")
    assert found is not None and found.folder == imported["out"].resolve() and found.provenance["gpu"] == GPU


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    return err


def test_unknown_system_is_one_line_error(imported, capsys, tmp_path):
    argv = ["import", "aic", "--from", str(imported["root"]), "--system", "nope_sxm", "--hardware", "X",
            "--version", VERSION, "--out", str(tmp_path / "o")]
    assert run_tpsim(argv) == 2
    err = _error_line(capsys)
    assert err.startswith("tpsim: error: --system nope_sxm: no nope_sxm.yaml") and "systems there: fake_sxm" in err
    assert not (tmp_path / "o").exists()


def test_missing_folder_is_one_line_error(capsys, tmp_path):
    argv = ["import", "aic", "--from", str(tmp_path / "absent"), "--system", "h100_sxm", "--version", VERSION]
    assert run_tpsim(argv) == 2
    assert _error_line(capsys).startswith(f"tpsim: error: --from {tmp_path / 'absent'}: no such folder")


def test_unknown_version_is_one_line_error(imported, capsys, tmp_path):
    argv = ["import", "aic", "--from", str(imported["root"]), "--system", "fake_sxm", "--hardware", "FAKE",
            "--version", "0.18.0", "--out", str(tmp_path / "o")]
    assert run_tpsim(argv) == 2
    err = _error_line(capsys)
    assert "--version 0.18.0: no vllm rows of that version for fake_sxm" in err and "rows hold: 0.19.0, 0.19.1" in err
    assert not (tmp_path / "o").exists()


def test_system_without_a_hardware_name_asks_for_one(imported, capsys):
    argv = ["import", "aic", "--from", str(imported["root"]), "--system", "fake_sxm", "--version", VERSION]
    assert run_tpsim(argv) == 2
    assert "--system fake_sxm: no tpsim hardware name known for it" in _error_line(capsys)


def test_out_folder_with_foreign_files_is_refused(imported, capsys, tmp_path):
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "mine.txt").write_text("keep me")
    argv = list(imported["argv"])
    argv[argv.index("--out") + 1] = str(tmp_path / "o")
    assert run_tpsim(argv) == 2
    assert "holds files that are not kernel tables" in _error_line(capsys)
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["mine.txt"]


def test_import_needs_a_source_word(capsys):
    with pytest.raises(SystemExit) as exc:
        run_tpsim(["import"])
    assert exc.value.code == 2 and "(see tpsim import --help)" in capsys.readouterr().err
