"""A given KV capacity (vLLM's ``num_gpu_blocks_override``; ``tpsim replay`` takes a run's recorded
``kv_cache.num_gpu_blocks``): the memory plan by hand, its bounds as one-line errors, the replay's source,
and the KV cache never over the given capacity."""

from __future__ import annotations

import json
import re

import pytest
from conftest import read_csv_rows, run_tpsim, write_cluster, write_trace
from validation_cases import replay_dir

from tpsim.config.engine import DEFAULTS, resolve_engine
from tpsim.config.model import load_model
from tpsim.errors import InputError
from tpsim.memory import plan_memory
from tpsim.units import GiB


def _engine(model, **kw):
    return resolve_engine(dict(DEFAULTS, **kw), {}, model.torch_dtype, model.max_position_embeddings, None, "test")


def test_plan_by_hand():
    m = load_model("meta-llama/Llama-3.1-8B")
    estimate = plan_memory(m, 1, 1, _engine(m), 96, 1.5, "t")
    plan = plan_memory(m, 1, 1, _engine(m, num_gpu_blocks_override=1000), 96, 1.5, "t")
    assert (plan.num_blocks, plan.kv_capacity_tokens, plan.kv_capacity_bytes) == (1000, 16_000, 16_000 * 131_072)
    assert plan.estimated_blocks == estimate.num_blocks and estimate.estimated_blocks is None
    assert plan.weights_bytes == estimate.weights_bytes and plan.budget_bytes == estimate.budget_bytes
    d = plan.as_dict()
    assert (d["kv_capacity_blocks"], d["kv_capacity_source"], d["kv_capacity_blocks_estimated"]) == \
        (1000, "num_gpu_blocks_override", estimate.num_blocks)
    assert "kv_capacity_source" not in estimate.as_dict()


def test_more_than_the_estimate_is_allowed_up_to_the_whole_gpu():
    # vLLM allocates the blocks asked for whatever its memory utilisation: the limit is the GPU itself
    m = load_model("meta-llama/Llama-3.1-8B")
    estimate = plan_memory(m, 1, 1, _engine(m), 96, 1.5, "t")
    per_block = 16 * 131_072
    room = int(96 * GiB) - estimate.weights_bytes - estimate.activation_bytes - estimate.reserve_bytes
    fits = room // per_block
    assert fits > estimate.num_blocks
    assert plan_memory(m, 1, 1, _engine(m, num_gpu_blocks_override=fits), 96, 1.5, "t").num_blocks == fits
    with pytest.raises(InputError) as exc:
        plan_memory(m, 1, 1, _engine(m, num_gpu_blocks_override=fits + 1), 96, 1.5, "cluster.json: instance 0")
    msg = str(exc.value)
    assert msg.startswith(f"cluster.json: instance 0: num_gpu_blocks_override {fits + 1:,} is ")
    assert msg.endswith(f"at most {fits:,} blocks fit; lower it")


@pytest.mark.parametrize("value, message", [
    (0, "--num-gpu-blocks-override must be >= 1, got 0"),
    (-5, "--num-gpu-blocks-override must be >= 1, got -5"),
    (True, "--num-gpu-blocks-override must be an integer, got True"),
    (2.5, "--num-gpu-blocks-override must be an integer, got 2.5"),
    (1 << 41, "--num-gpu-blocks-override must be <= 1,099,511,627,776, got 2199023255552"),
])
def test_bad_values(value, message):
    m = load_model("Qwen/Qwen3-0.6B")
    with pytest.raises(InputError, match=re.escape(message)):
        _engine(m, num_gpu_blocks_override=value)


def test_instance_key_and_one_line_error(tmp_path, test_configs, capsys):
    cfg = write_cluster(tmp_path / "c.json", extra={"num_gpu_blocks_override": "many"})
    trace = write_trace(tmp_path / "t.jsonl", [{"input_toks": 32, "output_toks": 4, "arrival_time_ns": 0}])
    out = tmp_path / "o.csv"
    assert run_tpsim(["run", "--cluster-config", str(cfg), "--dataset", str(trace), "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tpsim: error: ")
    assert err[0].endswith("num_gpu_blocks_override must be an integer, got 'many'")
    assert not out.exists()


def test_kv_never_over_the_given_capacity(tmp_path, test_configs):
    # 12 requests of 200 prompt + 40 output tokens need 15 blocks each; 40 blocks hold two at a time
    cfg = write_cluster(tmp_path / "c.json")
    trace = write_trace(tmp_path / "t.jsonl", [{"input_toks": 200, "output_toks": 40, "arrival_time_ns": 0}
                                                for _ in range(12)])
    out = tmp_path / "o.csv"
    assert run_tpsim(["run", "--cluster-config", str(cfg), "--dataset", str(trace), "--output", str(out),
                      "--perf-model", "analytical", "--num-gpu-blocks-override", "40", "--log-interval", "0"]) == 0
    s = json.loads((tmp_path / "o.summary.json").read_text())
    inst = s["instances"][0]
    assert inst["memory"]["kv_capacity_blocks"] == 40
    assert 0 < inst["peak_kv_blocks_used"] <= 40 and 0 < inst["peak_kv_utilization"] <= 1.0
    assert len(read_csv_rows(out)) == 12


def _meta(blocks):
    return {"vllm_version": "0.19.0", "model": "Qwen/Qwen3-0.6B",
            "engine_kwargs": {"max_num_seqs": 4, "max_num_batched_tokens": 256, "dtype": "bfloat16"},
            "kv_cache": {"block_size": 16, "num_gpu_blocks": blocks}}


def test_replay_takes_the_recorded_blocks(tmp_path, test_configs):
    d = replay_dir(tmp_path / "case", test_configs, layers=4, meta=_meta(64))
    out = tmp_path / "r.csv"
    assert run_tpsim(["replay", "--measured", str(d), "--output", str(out), "--perf-model", "analytical",
                      "--log-interval", "0"]) == 0
    s = json.loads((tmp_path / "r.summary.json").read_text())
    assert s["instances"][0]["memory"]["kv_capacity_blocks"] == 64
    setting = s["replay"]["settings"]["num_gpu_blocks_override"]
    assert setting["value"] == 64 and setting["source"].endswith("kv_cache.num_gpu_blocks")
    # an explicit flag wins over the directory's value
    assert run_tpsim(["replay", "--measured", str(d), "--output", str(out), "--perf-model", "analytical",
                      "--log-interval", "0", "--num-gpu-blocks-override", "80"]) == 0
    s = json.loads((tmp_path / "r.summary.json").read_text())
    assert s["instances"][0]["memory"]["kv_capacity_blocks"] == 80
    assert s["replay"]["settings"]["num_gpu_blocks_override"]["source"] == "command line"


def test_replay_says_the_utilisation_sets_no_capacity(tmp_path, test_configs):
    meta = _meta(64)
    meta["kv_cache"]["gpu_memory_utilization"] = 0.8  # the cluster config says 0.9, which is used
    d = replay_dir(tmp_path / "case", test_configs, layers=4, meta=meta)
    assert run_tpsim(["replay", "--measured", str(d), "--output", str(tmp_path / "r.csv"), "--perf-model",
                      "analytical", "--log-interval", "0"]) == 0
    notes = json.loads((tmp_path / "r.summary.json").read_text())["replay"]["notes"]
    assert any(n.startswith("gpu_memory_utilization 0.8 (") and
               n.endswith("which is used; the KV capacity is the given num_gpu_blocks_override either way")
               for n in notes), notes


@pytest.mark.parametrize("blocks", [0, -3, "lots", True, 1.5])
def test_replay_rejects_a_bad_record(tmp_path, test_configs, capsys, blocks):
    d = replay_dir(tmp_path / "case", test_configs, layers=4, meta=_meta(blocks))
    out = tmp_path / "r.csv"
    assert run_tpsim(["replay", "--measured", str(d), "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"tpsim: error: {d / 'vllm' / 'meta.json'}: kv_cache.num_gpu_blocks must be a positive integer, "
                   f"got {blocks!r}; fix or remove it (tpsim then estimates the KV capacity)"]
    assert not out.exists()
