"""Hostile inputs to ``tpsim run``, one per class of the hardening issue (#13): each is either a
complete run or one ``tpsim: error:`` line naming the field and the fix — never a traceback, a
silently wrong run, unbounded memory, or a clobbered file."""

from __future__ import annotations

import json
import resource
import subprocess
import sys

import pytest
from conftest import REPO
from hostile import GOOD_TRACE, assert_contract, cluster_doc, model_doc, run_inprocess, write_inputs


def _raw(doc: dict, old: str, new: str) -> str:
    text = json.dumps(doc)
    assert old in text
    return text.replace(old, new, 1)


HUGE_INT = "1" + "0" * 5000  # past Python's 4,300-digit int parsing limit

CLUSTERS = [
    # numbers that overflow, NaN / Infinity, past the int digit limit
    ("link_bw 10^400", _raw(cluster_doc(), '"link_bw": 16', '"link_bw": 1' + "0" * 400), "link_bw must be <="),
    ("link_bw 1e400", _raw(cluster_doc(), '"link_bw": 16', '"link_bw": 1e400'), "overflows a 64-bit float"),
    ("mem_size 1e308", cluster_doc(npu_mem={"mem_size": 1e308, "mem_bw": 1}), "npu_mem.mem_size must be <="),
    ("link_latency NaN", _raw(cluster_doc(), '"link_latency": 20000', '"link_latency": NaN'), "NaN is not a valid"),
    ("link_bw Infinity", _raw(cluster_doc(), '"link_bw": 16', '"link_bw": Infinity'), "Infinity is not a valid"),
    ("mem_latency NaN", cluster_doc(npu_mem={"mem_size": 96, "mem_bw": 1597, "mem_latency": float("nan")}),
     "NaN is not a valid"),
    ("huge integer", _raw(cluster_doc(), '"link_bw": 16', '"link_bw": ' + HUGE_INT), "too many digits"),
    ("deep nesting", '{"a":' * 100000 + "1" + "}" * 100000, "nested deeper than 64"),
    ("not UTF-8", b'{"num_nodes": 1, "x": "\xff"}', ":1: not UTF-8 text"),
    # wrong JSON types, strict booleans, long names
    ("dtype list", cluster_doc(dtype=[1]), "unknown dtype [1]"),
    ("kv dtype object", cluster_doc(kv_cache_dtype={}), "unknown kv cache dtype {}"),
    ("bool as string", cluster_doc(enable_prefix_caching="false"), "enable_prefix_caching must be true or false"),
    ("mem_util as string", cluster_doc(npu_mem={"mem_size": 96, "mem_bw": 1597, "mem_util": "0.5"}), "(0, 1]"),
    ("num_instances string", {"num_nodes": 1, "link_bw": 1, "link_latency": 0,
                              "nodes": [{"num_instances": "1",
                                         "instances": [cluster_doc()["nodes"][0]["instances"][0]]}]},
     "num_instances must be an integer"),
    ("5000-char model name", cluster_doc(model_name="a" * 5000), "model_name is 5,000 characters long"),
    ("5000-char hardware name", cluster_doc(hardware="H" * 5000), "hardware is 5,000 characters long"),
    ("ep_size string", cluster_doc(ep_size="2"), "ep_size must be an integer"),
    ("data_parallel_size 10^400", _raw(cluster_doc(data_parallel_size=2), '"data_parallel_size": 2',
                                       '"data_parallel_size": 1' + "0" * 400), "data_parallel_size must be <= 4,096"),
    ("data_parallel_size 4097", cluster_doc(data_parallel_size=4097), "data_parallel_size must be <= 4,096"),
    ("dp_group 5000 chars", cluster_doc(dp_group="g" * 5000), "dp_group is 5,000 characters long"),
    ("dp_group control chars", cluster_doc(dp_group="a\x00b"), "dp_group contains control characters"),
    ("enable_expert_parallel 1", cluster_doc(enable_expert_parallel=1), "enable_expert_parallel must be true or false"),
    ("link_bw list of text", {**cluster_doc(), "link_bw": ["a"]}, "link_bw must be a number"),
    ("link_bw list with 1e400", _raw({**cluster_doc(), "link_bw": [16, 7]}, "7]", "1e400]"), "overflows"),
    # a tiny bandwidth: steps end past 2^63 ns, where step times are stored as 8-byte integers (found by the fuzzer)
    ("mem_bw 6e-289", cluster_doc(npu_mem={"mem_size": 96, "mem_bw": 5.9e-289}), "past any --max-sim-time"),
    # ranges: values the aggregation (INT32) or the scheduler (lists per block position) cannot take
    ("tp_size 2^31", cluster_doc(tp_size=2 ** 31, num_npus=2 ** 31), "must be <= 65,536"),
    ("max_num_seqs 10^11", cluster_doc(max_num_seqs=10 ** 11), "max_num_seqs must be <= 2,147,483,647"),
    ("block_size 10^9", cluster_doc(block_size=10 ** 9), "block_size must be <= 65,536"),
    # names that would leave the catalog
    ("model name ../", cluster_doc(model_name="../../etc/passwd"), "not a catalog name"),
    ("hardware name ../", cluster_doc(hardware="../tpsim/x"), "not a catalog name"),
    ("model name absolute", cluster_doc(model_name="/etc/passwd"), "not a catalog name"),
]


@pytest.mark.parametrize("label,cluster,expect", CLUSTERS, ids=[c[0] for c in CLUSTERS])
def test_hostile_cluster_configs(tmp_path, label, cluster, expect):
    _check(tmp_path, cluster, GOOD_TRACE, None, [], expect)


TRACES = [
    ("NaN", '{"input_toks": 20, "output_toks": 5, "arrival_time_ns": NaN}\n', ":1: NaN is not a valid"),
    ("arrival past the horizon", '{"input_toks": 2, "output_toks": 5, "arrival_time_ns": 10000000000000001}\n',
     "raise --max-sim-time"),
    ("huge token id",
     '{"input_toks": 1, "output_toks": 1, "arrival_time_ns": 0, "input_tok_ids": [' + HUGE_INT + "]}\n",
     ":1: an integer has too many digits"),
    ("not UTF-8", b'{"input_toks": 20, "output_toks": 5, "arrival_time_ns": 0, "x": "\xff"}\n', ":1: not UTF-8"),
    ("deep nesting", '{"a":' * 5000 + "1" + "}" * 5000 + "\n", ":1: JSON nested deeper"),
    ("fractional tokens", '{"input_toks": 20.5, "output_toks": 5, "arrival_time_ns": 0}\n', "must be an integer"),
    ("1e300 tokens", '{"input_toks": 1e300, "output_toks": 5, "arrival_time_ns": 0}\n', "must be <= 2,147,483,647"),
    ("boolean token ids", '{"input_toks": 2, "output_toks": 1, "arrival_time_ns": 0, "input_tok_ids": [true, false]}\n',
     "list of integer token ids"),
    ("session id object", '{"session_id": {"a": 1}, "arrival_time_ns": 0, "sub_requests": '
                          '[{"input_toks": 2, "output_toks": 2}]}\n', "'session_id' must be"),
    ("tool time 1e400", '{"arrival_time_ns": 0, "sub_requests": [{"input_toks": 2, "output_toks": 2, '
                        '"tool_duration_ns": 1e400}]}\n', "overflows"),
    ("follow-up past the horizon", '{"arrival_time_ns": 0, "sub_requests": [{"input_toks": 2, "output_toks": 2, '
                                   '"tool_duration_ns": 100000000000000000}, {"input_toks": 2, "output_toks": 2}]}\n',
     "passed --max-sim-time"),
]


@pytest.mark.parametrize("label,trace,expect", TRACES, ids=[t[0] for t in TRACES])
def test_hostile_traces(tmp_path, label, trace, expect):
    _check(tmp_path, cluster_doc(), trace, None, [], expect)


def _model(**changes):
    doc = model_doc()
    doc.update(changes)
    return doc


MODELS = [
    ("text_config string", {"model_type": "llama", "text_config": "abc"}, "'text_config' must be an object"),
    ("tie_word_embeddings string", _model(tie_word_embeddings="false"), "'tie_word_embeddings' must be true or false"),
    ("vocab 10^30", _model(vocab_size=10 ** 30), "'vocab_size' must be <="),
    ("hidden NaN", _raw(model_doc(), '"hidden_size": 1024', '"hidden_size": NaN'), "NaN is not a valid"),
    ("not UTF-8", b'{"model_type": "\xff"}', ":1: not UTF-8"),
    ("a list", "[1, 2]", "expected a JSON object"),
    ("torch_dtype list", _model(torch_dtype=["bf16"]), "torch_dtype ['bf16']"),
]


@pytest.mark.parametrize("label,model,expect", MODELS, ids=[m[0] for m in MODELS])
def test_hostile_model_configs(tmp_path, label, model, expect):
    _check(tmp_path, cluster_doc(), GOOD_TRACE, model, [], expect)


FLAGS = [
    (["--log-interval", "inf"], "--log-interval must be 0"),
    (["--log-interval", "1e-12"], "--log-interval must be 0"),
    (["--log-interval", "nan"], "--log-interval must be 0"),
    (["--max-sim-time", "inf"], "--max-sim-time must be between"),
    (["--npu-memory-utilization", "nan"], "(0, 1]"),
    (["--max-num-seqs", "1" + "0" * 30], "--max-num-seqs must be <="),
    (["--block-size", "1000000000"], "--block-size must be <= 65,536"),
]


@pytest.mark.parametrize("flags,expect", FLAGS, ids=[" ".join(f[0])[:40] for f in FLAGS])
def test_hostile_flags(tmp_path, flags, expect):
    _check(tmp_path, cluster_doc(), GOOD_TRACE, None, flags, expect)


def _check(tmp_path, cluster, trace, model, flags, expect):
    paths = write_inputs(tmp_path / "in", cluster, trace, model)
    out = tmp_path / "out" / "r.csv"
    inputs = {p: p.read_bytes() for p in paths.values()}
    code, _, err = run_inprocess(["run", "--cluster-config", str(paths["cluster"]), "--dataset", str(paths["trace"]),
                                  "--output", str(out), *flags])
    line = assert_contract(code, err, [out, out.with_suffix(".summary.json")], inputs)
    assert expect in line, line
    assert len(line) < 600, "errors stay one readable line"


def test_output_never_replaces_a_device_or_an_input(tmp_path):
    """Outputs go to regular files only, never onto an input (the temp-and-rename would replace it)."""
    paths = write_inputs(tmp_path, cluster_doc())
    inputs = {p: p.read_bytes() for p in paths.values()}
    base = ["run", "--cluster-config", str(paths["cluster"]), "--dataset", str(paths["trace"])]
    for out, expect in [("/dev/null", "not a regular file"), (str(paths["trace"]), "is also an input"),
                        (str(paths["cluster"]), "is also an input")]:
        code, _, err = run_inprocess(base + ["--output", out])
        assert code == 2 and expect in err, err
    # the summary beside the CSV must not land on an input either
    summary_named = tmp_path / "trace.summary.json"
    summary_named.write_text(GOOD_TRACE)
    inputs[summary_named] = summary_named.read_bytes()
    code, _, err = run_inprocess(["run", "--cluster-config", str(paths["cluster"]), "--dataset", str(summary_named),
                                  "--output", str(tmp_path / "trace.csv")])
    assert code == 2 and "summary" in err and "is also an input" in err, err
    assert not (tmp_path / "trace.csv").exists()
    # a model config given by path is an input too (known only once the cluster config is read)
    model = tmp_path / "m.json"
    model.write_text(json.dumps(model_doc()))
    paths = write_inputs(tmp_path / "m", cluster_doc(model_name=str(model)))
    code, _, err = run_inprocess(["run", "--cluster-config", str(paths["cluster"]), "--dataset", str(paths["trace"]),
                                  "--output", str(model)])
    assert code == 2 and "is also an input" in err, err
    for path, content in inputs.items():
        assert path.read_bytes() == content
    assert (tmp_path / "m.json").read_text() == json.dumps(model_doc())
    import os
    import stat

    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_log_interval_zero_means_no_lines_and_no_timeline(tmp_path):
    paths = write_inputs(tmp_path, cluster_doc())
    out = tmp_path / "r.csv"
    code, stdout, err = run_inprocess(["run", "--cluster-config", str(paths["cluster"]), "--dataset",
                                       str(paths["trace"]), "--output", str(out), "--log-interval", "0"])
    assert code == 0, err
    assert "[INFO]" not in stdout
    summary = json.loads(out.with_suffix(".summary.json").read_text())
    assert summary["timeline"] == [] and summary["timeline_bin_s"] is None


def test_timeline_is_coarsened_past_its_bin_limit(tmp_path):
    """A long run at a fine --log-interval keeps at most MAX_TIMELINE_BINS bins, and says so."""
    from tpsim.report import MAX_TIMELINE_BINS

    trace = "".join(json.dumps({"input_toks": 8, "output_toks": 2, "arrival_time_ns": t * 10 ** 9}) + "\n"
                    for t in (0, 50))
    paths = write_inputs(tmp_path, cluster_doc(), trace)
    out = tmp_path / "r.csv"
    code, _, err = run_inprocess(["run", "--cluster-config", str(paths["cluster"]), "--dataset", str(paths["trace"]),
                                  "--output", str(out), "--log-interval", "0.000001"])
    assert code == 0, err
    summary = json.loads(out.with_suffix(".summary.json").read_text())
    bins = summary["timeline"]
    assert 0 < len(bins) <= MAX_TIMELINE_BINS
    width = summary["timeline_bin_s"]
    assert width > 1e-6 and any("timeline: bins of" in a for a in summary["approximations"])
    generated = sum(b["generation_tokens_per_s"] * width for b in bins)
    assert round(generated) == summary["totals"]["output_tokens"]  # tokens conserved by the merge


def _limited(argv, cwd, limit_gb=2):
    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (limit_gb << 30, limit_gb << 30))

    return subprocess.run([sys.executable, "-m", "tpsim", *argv], cwd=cwd, capture_output=True, text=True,
                          timeout=60, preexec_fn=cap)


def test_huge_memory_and_fine_bins_stay_within_2gb_and_60s(tmp_path):
    """Memory follows the work, not the numbers: a 100 TiB GPU with token ids (the prefix cache's blocks
    are created on use), one-token KV blocks, a request at 1e16 ns and 1-microsecond timeline bins."""
    ids = {"input_toks": 2, "output_toks": 2, "arrival_time_ns": 0, "input_tok_ids": [1, 2], "output_tok_ids": [3, 4]}
    late = {"input_toks": 2, "output_toks": 2, "arrival_time_ns": 9 * 10 ** 15}
    paths = write_inputs(tmp_path, cluster_doc(npu_mem={"mem_size": 100000, "mem_bw": 1597}, block_size=1),
                         json.dumps(ids) + "\n" + json.dumps(late) + "\n")
    out = tmp_path / "r.csv"
    proc = _limited(["run", "--cluster-config", str(paths["cluster"]), "--dataset", str(paths["trace"]),
                     "--output", str(out), "--log-interval", "0.000001"], REPO)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(out.with_suffix(".summary.json").read_text())
    assert summary["totals"]["finished"] == 2


def test_session_with_an_empty_id_releases_its_follow_ups(tmp_path):
    """Found by the fuzz suite: a session whose id is "" lost its follow-ups (KeyError in the event loop)."""
    line = {"session_id": "", "arrival_time_ns": 10,
            "sub_requests": [{"input_toks": 3, "output_toks": 2, "tool_duration_ns": 5},
                             {"input_toks": 2, "output_toks": 1}]}
    paths = write_inputs(tmp_path, cluster_doc(), json.dumps(line) + "\n")
    out = tmp_path / "r.csv"
    code, _, err = run_inprocess(["run", "--cluster-config", str(paths["cluster"]), "--dataset", str(paths["trace"]),
                                  "--output", str(out)])
    assert code == 0, err
    summary = json.loads(out.with_suffix(".summary.json").read_text())
    assert summary["totals"]["finished"] == 2


def test_a_failing_run_prints_only_its_error_line(tmp_path):
    """Found by the fuzz suite: warnings (an unknown key) printed before an error found while simulating
    (the horizon) made two lines.  Warnings now print only when the run succeeds."""
    doc = cluster_doc(npu_mem={"mem_size": 96, "mem_bw": 1e-8})  # the roofline model reads weights at mem_bw
    doc["surplus"] = 0
    _check(tmp_path, doc, GOOD_TRACE, None, ["--perf-model", "analytical"], "passed --max-sim-time")


@pytest.mark.parametrize("where", ["sink", "parquet"])
def test_a_full_disk_mid_run_is_one_error_line_and_no_outputs(tmp_path, monkeypatch, where):
    """Rows go out while the run goes on, and Parquet is written by DuckDB at the end: a write error in
    either is one line naming --output, exit 2, nothing left behind."""
    import errno

    from tpsim.io import results

    def full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    if where == "sink":
        monkeypatch.setattr(results.CsvFileSink, "write", full)
    else:  # DuckDB reports a full disk with its own exception type
        import duckdb

        def duck_full(*_args, **_kwargs):
            raise duckdb.IOException("IO Error: No space left on device")

        monkeypatch.setattr(results, "_parquet_connection", lambda: type("Con", (), {"execute": duck_full})())
    paths = write_inputs(tmp_path, cluster_doc())
    out = tmp_path / "out.csv"
    flags = ["--requests-format", "both"] if where == "parquet" else []
    code, _, err = run_inprocess(["run", "--cluster-config", str(paths["cluster"]), "--dataset", str(paths["trace"]),
                                  "--output", str(out), "--log-interval", "0", *flags])
    line = assert_contract(code, err, [out, out.with_suffix(".summary.json"), out.with_suffix(".parquet")],
                           {})
    assert "No space left on device" in line and str(out) in line
    assert not [p for p in tmp_path.iterdir() if p.name.startswith((".", "out"))]  # no temporary files either


def test_sort_trace_on_a_full_disk_is_one_error_line(tmp_path, monkeypatch):
    import errno

    from tpsim.io import trace_sort

    def full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(trace_sort.tempfile, "TemporaryFile", full)
    src = tmp_path / "t.jsonl"
    src.write_text(GOOD_TRACE if isinstance(GOOD_TRACE, str) else GOOD_TRACE.decode())
    out = tmp_path / "sorted.jsonl"
    code, _, err = run_inprocess(["sort-trace", str(src), "--output", str(out)])
    line = assert_contract(code, err, [out], {src: src.read_bytes()})
    assert "No space left on device" in line and "--chunk-mb" in line
