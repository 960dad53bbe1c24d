"""The typed run API (``tpsim.run(RunConfig) -> RunResult``), its one source of defaults, the summary's
schema, and the package's import graph."""

from __future__ import annotations

import ast
import dataclasses
import json

import jsonschema
import msgspec
import pytest
from conftest import REPO, write_cluster, write_trace

import tpsim
from tpsim.argspec import Parser
from tpsim.commands.run import add_run_arguments, config_from_args
from tpsim.config.run import EngineOptions, RunConfig
from tpsim.errors import InputError
from tpsim.io.results import HEADER, ListSink, read_rows
from tpsim.io.summary import RunSummary, load_summary, schema, summary_path

TRACE = [{"input_toks": 30 + i, "output_toks": 4 + i % 3, "arrival_time_ns": i * 1_000_000} for i in range(12)]


def test_cli_defaults_are_the_dataclass_defaults():
    """One source of defaults: parsing no flags gives exactly RunConfig()."""
    p = Parser(prog="t")
    add_run_arguments(p)
    assert config_from_args(p.parse_args([])) == RunConfig()
    assert RunConfig().engine == EngineOptions()


def test_every_flag_round_trips_through_the_cli():
    p = Parser(prog="t")
    add_run_arguments(p)
    cfg = config_from_args(p.parse_args(["--max-num-seqs", "7", "--no-enable-prefix-caching", "--dtype", "fp8",
                                         "--log-interval", "0.5", "--inputs-root", "x"]))
    assert cfg.engine.max_num_seqs == 7 and cfg.engine.enable_prefix_caching is False and cfg.engine.dtype == "fp8"
    assert cfg.log_interval == 0.5 and cfg.compat.inputs_root == "x"
    flags = cfg.flags()
    assert list(flags) == sorted(flags) and flags["max_num_seqs"] == 7 and "engine" not in flags


def test_run_to_a_list_sink_matches_the_csv_file(tmp_path, test_configs):
    cfg = write_cluster(tmp_path / "c.json")
    trace = write_trace(tmp_path / "t.jsonl", TRACE)
    sink = ListSink()
    result = tpsim.run(RunConfig(cluster_config=str(cfg), dataset=str(trace)), sink=sink)
    assert result.ok and result.output is None and len(sink.rows) == len(TRACE)
    assert not list(tmp_path.glob("*.csv"))  # a custom sink replaces the file
    out = tmp_path / "o" / "r.csv"
    filed = tpsim.run(RunConfig(cluster_config=str(cfg), dataset=str(trace), output=str(out)))
    assert filed.output == str(out)
    assert out.read_text() == sink.csv_text()
    read_back = [row for _, row in read_rows(out)]
    assert read_back == sink.rows
    for row in sink.rows:
        assert row.ttft + sum(row.itl) == row.latency and len(row.itl) == row.output - 1
    loaded = load_summary(summary_path(str(out)))
    assert loaded.totals == result.summary.totals and loaded.status == "ok"
    assert result.summary.metric("ttft", "p50") == loaded.metrics_ms["ttft"]["p50"]


def test_summaries_follow_the_json_schema(tmp_path, test_configs):
    cfg = write_cluster(tmp_path / "c.json")
    trace = write_trace(tmp_path / "t.jsonl", TRACE)
    ok = tpsim.run(RunConfig(cluster_config=str(cfg), dataset=str(trace))).summary.to_dict()
    jsonschema.Draft202012Validator(schema()).validate(ok)
    big = write_cluster(tmp_path / "big.json", model="meta-llama/Llama-3.1-70B")
    infeasible = tpsim.run(RunConfig(cluster_config=str(big), dataset=str(trace), record_infeasible=True))
    assert infeasible.summary.status == "infeasible" and "does not fit" in infeasible.summary.reason
    jsonschema.Draft202012Validator(schema()).validate(infeasible.summary.to_dict())
    bad = dict(ok, status="maybe")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(schema()).validate(bad)


def test_summary_round_trips_and_keeps_extra_blocks():
    s = RunSummary(status="ok", tpsim_version="x", provenance={}, extra={"replay": {"a": 1}})
    d = s.to_dict()
    assert list(d)[0] == "schema_version" and list(d)[-1] == "replay"
    assert RunSummary.from_dict(json.loads(s.to_json())) == s


def test_objects_win_over_the_catalog(tmp_path, test_configs):
    """A model spec given as an object is used for its name; the catalog is not consulted."""
    from tpsim.config.model import load_model

    spec = load_model("Qwen/Qwen3-0.6B")
    smaller = msgspec.structs.replace(spec, num_layers=2, name="acme/Unknown-1B", source="given", sha256="0" * 64)
    cfg = write_cluster(tmp_path / "c.json", model="acme/Unknown-1B")
    trace = write_trace(tmp_path / "t.jsonl", TRACE)
    with pytest.raises(InputError, match="unknown model 'acme/Unknown-1B'"):
        tpsim.run(RunConfig(cluster_config=str(cfg), dataset=str(trace)))
    result = tpsim.run(RunConfig(cluster_config=str(cfg), dataset=str(trace), models={"acme/Unknown-1B": smaller}))
    assert result.summary.provenance["inputs"]["models"]["acme/Unknown-1B"]["path"] == "given"
    assert result.summary.instances[0]["memory"]["weights_gb"] > 0


def test_config_is_frozen_and_replace_makes_a_copy():
    cfg = RunConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 1  # type: ignore[misc]
    other = cfg.replace(seed=1, engine=dataclasses.replace(cfg.engine, block_size=32))
    assert (cfg.seed, cfg.engine.block_size) == (42, 16) and (other.seed, other.engine.block_size) == (1, 32)


def test_bad_config_is_an_input_error_before_anything_runs(tmp_path):
    with pytest.raises(InputError, match="--log-interval must be 0"):
        tpsim.run(RunConfig(log_interval=float("nan"), output=str(tmp_path / "x.csv")))
    assert not (tmp_path / "x.csv").exists()


def test_header_is_defined_once():
    """The 12-column header lives in tpsim/io/results.py only (workflow and validation import it)."""
    text = "instance id,request id,model"
    holders = [p.relative_to(REPO).as_posix() for p in (REPO / "tpsim").rglob("*.py") if text in p.read_text()]
    assert holders == [], holders  # the header is spelled as COLUMNS, never as a literal line
    assert HEADER.startswith("instance id,request id,model,")


def test_no_import_cycles():
    """Neither at module level nor through function-level imports: tpsim's import graph is a DAG."""
    modules = {}
    for path in (REPO / "tpsim").rglob("*.py"):
        name = path.relative_to(REPO).with_suffix("").as_posix().replace("/", ".").removesuffix(".__init__")
        tree = ast.parse(path.read_text())
        deps = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tpsim"):
                for alias in node.names:  # `from pkg import submodule` depends on the submodule
                    sub = f"{node.module}.{alias.name}"
                    rel = sub.replace(".", "/")
                    is_module = (REPO / f"{rel}.py").is_file() or (REPO / rel).is_dir()
                    deps.add(sub if is_module else node.module)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name.startswith("tpsim"))
        modules[name] = {d for d in deps if d != name}
    # packages depend on nothing by themselves; a cycle needs real modules on both sides
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for d in sorted(modules.get(m, ())):
            if d not in modules or d == "tpsim":
                continue
            if state.get(d) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(d):] + [d]))
            if d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(modules):
        if m not in state:
            visit(m)


@pytest.mark.parametrize("fmt", ["parquet", "both"])
def test_requests_as_parquet_hold_the_csv_rows(tmp_path, test_configs, fmt):
    duckdb = pytest.importorskip("duckdb")
    cfg = write_cluster(tmp_path / "c.json")
    trace = write_trace(tmp_path / "t.jsonl", TRACE)
    sink = ListSink()
    tpsim.run(RunConfig(cluster_config=str(cfg), dataset=str(trace)), sink=sink)
    out = tmp_path / "o" / "r.csv"
    tpsim.run(RunConfig(cluster_config=str(cfg), dataset=str(trace), output=str(out), requests_format=fmt))
    assert out.exists() == (fmt == "both") and out.with_suffix(".summary.json").exists()
    rows = duckdb.sql(f"SELECT * FROM '{out.with_suffix('.parquet')}'").fetchall()
    expected = [(r.instance_id, r.request_id, r.model, r.input, r.output, r.arrival, r.end_time, r.latency,
                 r.queuing_delay, r.ttft, r.tpot, r.itl) for r in sink.rows]
    assert rows == expected
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporary files left
