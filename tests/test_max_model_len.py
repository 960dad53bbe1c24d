"""``--max-model-len`` (vLLM's flag; ``tpsim replay`` takes ``engine_kwargs.max_model_len``): its bounds as
one-line errors, and a request longer than it rejected with the reason while the others run."""

from __future__ import annotations

import json

import pytest
from conftest import read_csv_rows, run_tpsim, write_cluster, write_trace
from validation_cases import replay_dir

from tpsim.config.engine import DEFAULTS, resolve_engine
from tpsim.config.model import load_model
from tpsim.errors import InputError


def _engine(model, **kw):
    return resolve_engine(dict(DEFAULTS, **kw), {}, model.torch_dtype, model.max_position_embeddings, None, "test")


def test_default_and_bounds():
    m = load_model("Qwen/Qwen3-0.6B")  # max_position_embeddings 40960
    assert _engine(m).max_model_len == 40960
    assert _engine(m, max_model_len=4096).max_model_len == 4096
    with pytest.raises(InputError, match=r"^--max-model-len 40961 exceeds the model's max_position_embeddings "
                                         r"\(40960\); lower it or leave it out$"):
        _engine(m, max_model_len=40961)
    for bad in (0, -1, True, "4k"):
        with pytest.raises(InputError, match="^--max-model-len must be"):
            _engine(m, max_model_len=bad)


def test_longer_requests_are_rejected(tmp_path, test_configs):
    cfg = write_cluster(tmp_path / "c.json")
    trace = write_trace(tmp_path / "t.jsonl", [{"input_toks": 100, "output_toks": 20, "arrival_time_ns": 0},
                                                {"input_toks": 100, "output_toks": 29, "arrival_time_ns": 1},
                                                {"input_toks": 100, "output_toks": 28, "arrival_time_ns": 2}])
    out = tmp_path / "o.csv"
    assert run_tpsim(["run", "--cluster-config", str(cfg), "--dataset", str(trace), "--output", str(out),
                      "--perf-model", "analytical", "--max-model-len", "128", "--log-interval", "0"]) == 0
    assert sorted(r["request id"] for r in read_csv_rows(out)) == ["0", "2"]
    s = json.loads((tmp_path / "o.summary.json").read_text())
    assert s["instances"][0]["engine"]["max_model_len"] == 128
    text = json.dumps(s)
    assert "context 129 tokens (input 100 + output 29) exceeds max_model_len 128" in text


def test_replay_takes_it_and_rejects_a_bad_record(tmp_path, test_configs, capsys):
    meta = {"vllm_version": "0.19.0", "engine_kwargs": {"max_num_seqs": 4, "max_model_len": 2048}}
    d = replay_dir(tmp_path / "case", test_configs, layers=4, meta=meta)
    assert run_tpsim(["replay", "--measured", str(d), "--output", str(tmp_path / "r.csv"), "--perf-model",
                      "analytical", "--log-interval", "0"]) == 0
    s = json.loads((tmp_path / "r.summary.json").read_text())
    assert s["instances"][0]["engine"]["max_model_len"] == 2048
    assert s["replay"]["settings"]["max_model_len"]["source"].endswith("engine_kwargs.max_model_len")
    capsys.readouterr()
    d2 = replay_dir(tmp_path / "bad", test_configs, layers=4,
                     meta={"vllm_version": "0.19.0", "engine_kwargs": {"max_model_len": "long"}})
    assert run_tpsim(["replay", "--measured", str(d2), "--output", str(tmp_path / "b.csv")]) == 2
    assert capsys.readouterr().err == (f"tpsim: error: {d2 / 'vllm' / 'meta.json'}: engine_kwargs.max_model_len must "
                                       "be a positive integer or null, got 'long'\n")
