"""The shared MoE measurement (vLLM 0.19, Qwen3-30B-A3B-Instruct-2507, DP 2 with EP 2 on two RTX PRO 6000),
replayed with its LLMServingSim config unchanged and scored with ``tpsim validate``.

Targets: mean TTFT, TPOT and latency within 5 % of vLLM's, and a paired TTFT MAPE below LLMServingSim's own on
this run (issue 8) -- the bundle model also against issue 9's 10 %.  tpsim's default latency model (auto ->
kernels on RTX PRO 6000) and LLMServingSim's MoE bundle are scored.  What is met is asserted; what is not is a
strict xfail carrying the measured miss, so it fails loudly once met.  Nothing here was fitted to this run: the
kernel tables, the bundle and the hardware catalog are the inputs (docs/notes/moe-fidelity.md decomposes the
remaining error op by op).
"""

from __future__ import annotations

import pytest
from conftest import run_subprocess, shared_path

from tpsim.validation.report import validate

CASE = "rtxpro6000-qwen3-30b-a3b-dp2-ep2"
MEAN_PCT = 5.0
MAPE_PCT = 10.0


def replay(tmp_path_factory, name, *flags):
    case = shared_path("validation", CASE)
    out = tmp_path_factory.mktemp("moe-replay") / f"{name}.csv"
    proc = run_subprocess(["-m", "tpsim", "replay", "--measured", str(case), "--output", str(out),
                           "--log-interval", "0", *flags])
    assert proc.returncode == 0, proc.stderr
    doc, _ = validate(case, out)
    assert doc["pairing"]["paired"] == 300 and doc["pairing"]["output_tokens_mismatch"] == 0
    return doc


@pytest.fixture(scope="module")
def default(tmp_path_factory):
    return replay(tmp_path_factory, "tpsim-default")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return replay(tmp_path_factory, "tpsim-profile", "--perf-model", "profile", "--profile-dir",
                  str(shared_path("profiles", "llmservingsim")))


@pytest.fixture(scope="module")
def analytical(tmp_path_factory):
    return replay(tmp_path_factory, "tpsim-analytical", "--perf-model", "analytical")


def mean_diff(doc, metric):
    return doc["metrics"][metric]["diff_pct"]["mean"]


def test_the_default_is_the_kernel_model_and_every_request_finishes(default):
    assert default["sim"]["label"] == "tpsim-kernels"


@pytest.fixture(scope="module")
def peer():
    case = shared_path("validation", CASE)
    doc, _ = validate(case, case / "llmservingsim" / "sim.csv", label="LLMServingSim")
    return doc


def test_default_model_paired_ttft_mape_is_below_llmservingsims(default, peer):
    """13.9 % against LLMServingSim's 21.8 % on the same requests (vLLM's queued_ts definition)."""
    assert default["metrics"]["ttft"]["paired"]["mape_pct"] < peer["metrics"]["ttft"]["paired"]["mape_pct"]


def test_default_model_tpot_and_latency_within_5_percent(default):
    """-3.7 % and -4.2 % (they were -7.1 % and -7.7 % before FlashAttention 2's uneven-context decode term)."""
    assert abs(mean_diff(default, "tpot")) <= MEAN_PCT and abs(mean_diff(default, "latency")) <= MEAN_PCT


@pytest.mark.xfail(strict=True, reason=(
    "measured miss: mean TTFT -18.5 % with the kernel model (TPOT -3.7 %: the run saturates at 128 requests per "
    "rank, where slightly fast decoding shortens the queue). Kernel-level evidence for the rest "
    "(docs/notes/moe-fidelity.md): the bundle's larger per-call attention cost, small kernels, and mixed steps' "
    "decodes over uneven contexts (not modelled)"))
def test_default_model_mean_ttft_within_5_percent(default):
    assert abs(mean_diff(default, "ttft")) <= MEAN_PCT


def test_bundle_model_tpot_and_latency_within_5_percent(bundle):
    assert abs(mean_diff(bundle, "tpot")) <= MEAN_PCT and abs(mean_diff(bundle, "latency")) <= MEAN_PCT


def test_bundle_model_mean_ttft_within_5_percent(bundle):
    """+4.9 % (vLLM's queued_ts definition, which tpsim replay models; +7.6 % when the simulated TTFT started at the
    arrival)."""
    assert abs(mean_diff(bundle, "ttft")) <= MEAN_PCT


@pytest.mark.xfail(strict=True, reason=(
    "measured miss with LLMServingSim's bundle: paired TTFT MAPE 12.6 % against the 10 % target (vLLM's queued_ts "
    "definition, which tpsim replay models; 14.3 % from arrival; LLMServingSim 21.8 %)"))
def test_bundle_model_paired_ttft_mape_below_10_percent(bundle):
    assert bundle["metrics"]["ttft"]["paired"]["mape_pct"] < MAPE_PCT


def test_bundle_model_mean_ttft_from_arrival_within_5_percent(bundle):
    assert abs(mean_diff(bundle, "ttft_from_arrival")) <= MEAN_PCT


def test_analytical_model_alone_tpot_and_latency_within_5_percent(analytical):
    """What the roofline alone reaches (issue 9 asks to state it): TPOT and latency within 5 %; its mean TTFT
    (-12.5 %) and paired MAPE (20.7 %) are reported in the README, not targets."""
    assert abs(mean_diff(analytical, "tpot")) <= MEAN_PCT and abs(mean_diff(analytical, "latency")) <= MEAN_PCT
