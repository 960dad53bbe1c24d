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
    """20.1 % against LLMServingSim's 21.8 % on the same requests (vLLM's queued_ts definition)."""
    assert default["metrics"]["ttft"]["paired"]["mape_pct"] < peer["metrics"]["ttft"]["paired"]["mape_pct"]


@pytest.mark.xfail(strict=True, reason=(
    "measured miss: the kernel model's steps are still too fast: TPOT -3.7 %, latency -4.1 %, but mean TTFT "
    "-15.9 % (the run saturates at 128 requests per rank, where faster decoding means shorter queues). "
    "Kernel-level evidence for the rest (docs/notes/moe-fidelity.md): the bundle's larger per-call attention "
    "cost, small kernels, and mixed steps' decodes over uneven contexts (not modelled)"))
def test_default_model_means_within_5_percent(default):
    diffs = {k: round(mean_diff(default, k), 1) for k in ("ttft", "tpot", "latency")}
    assert all(abs(v) <= MEAN_PCT for v in diffs.values()), diffs


def test_bundle_model_tpot_and_latency_within_5_percent(bundle):
    assert abs(mean_diff(bundle, "tpot")) <= MEAN_PCT and abs(mean_diff(bundle, "latency")) <= MEAN_PCT


@pytest.mark.xfail(strict=True, reason=(
    "measured miss with LLMServingSim's bundle: mean TTFT +7.6 %, paired TTFT MAPE 25.6 % (vLLM's queued_ts "
    "definition: it starts when the engine loop takes the request, 27 ms after its arrival on average here); "
    "from arrival, as tpsim measures, the mean is met (+4.9 %) and the MAPE is 14.3 %"))
def test_bundle_model_ttft_targets(bundle):
    assert abs(mean_diff(bundle, "ttft")) <= MEAN_PCT
    assert bundle["metrics"]["ttft"]["paired"]["mape_pct"] < MAPE_PCT


def test_bundle_model_mean_ttft_from_arrival_within_5_percent(bundle):
    assert abs(mean_diff(bundle, "ttft_from_arrival")) <= MEAN_PCT


def test_analytical_model_alone_tpot_and_latency_within_5_percent(analytical):
    """What the roofline alone reaches (issue 9 asks to state it): TPOT and latency within 5 %; its mean TTFT
    (-12.5 %) and paired MAPE (20.7 %) are reported in the README, not targets."""
    assert abs(mean_diff(analytical, "tpot")) <= MEAN_PCT and abs(mean_diff(analytical, "latency")) <= MEAN_PCT
