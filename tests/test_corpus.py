"""The safety net for refactoring: a corpus of runs whose outputs must stay byte-identical.

Each entry runs tpsim through its command line (in-process, from the repository root, relative
paths) and compares the SHA-256 of every output with ``tests/corpus/manifest.json``.  Summaries
are compared without the fields that legitimately vary between invocations (``timing``, the git
commit, ``argv``, the SHA-256 of catalog entries, which gain documented fields; catalog paths are
made relative to the checkout, wherever it is).  Every latency model is pinned explicitly
(``--perf-model analytical``; ``kernels`` for the kernel-table entries), so a new default model does not
move the corpus.

A deliberate change of outputs updates the manifest:
``python3 tests/test_corpus.py --update`` (and the commit says why).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MANIFEST = REPO / "tests" / "corpus" / "manifest.json"
EX = "workloads/example_trace.jsonl"
BURST = "tests/corpus/burst60.jsonl"
SESSIONS = "tests/corpus/sessions.jsonl"
TP2 = "configs/cluster/single_node_single_instance.json"
SMALL = "tests/corpus/small_memory.json"
A = ["--perf-model", "analytical"]
K = ["--perf-model", "kernels"]

#: name -> tpsim argv (outputs are added by the runner)
RUNS: dict[str, list[str]] = {
    **{f"config-{c}": ["run", "--cluster-config", f"configs/cluster/{c}.json", "--dataset", EX, *A]
       for c in ("single_node_single_instance", "single_node_single_instance_tp1", "single_node_single_instance_tp4",
                 "single_node_two_instances", "single_node_tp2_pp2", "h100_tp2_nvlink", "rtxpro6000_llama8b_tp1")},
    "reference-path": ["run", "--cluster-config", TP2, "--dataset", EX, *A, "--no-fast-forward"],
    "sync-scheduling": ["run", "--cluster-config", TP2, "--dataset", EX, *A, "--no-async-scheduling"],
    "no-prefix-caching": ["run", "--cluster-config", TP2, "--dataset", EX, *A, "--no-enable-prefix-caching"],
    "no-chunked-prefill": ["run", "--cluster-config", TP2, "--dataset", EX, *A, "--no-enable-chunked-prefill"],
    "small-limits": ["run", "--cluster-config", TP2, "--dataset", EX, *A, "--max-num-seqs", "8",
                     "--max-num-batched-tokens", "512"],
    "long-prefill-threshold": ["run", "--cluster-config", TP2, "--dataset", EX, *A,
                               "--long-prefill-token-threshold", "256"],
    "reserve-full-isl": ["run", "--cluster-config", TP2, "--dataset", EX, *A, "--reserve-full-isl"],
    "fp8": ["run", "--cluster-config", TP2, "--dataset", EX, *A, "--dtype", "fp8", "--kv-cache-dtype", "fp8"],
    "block-32-fine-log": ["run", "--cluster-config", TP2, "--dataset", EX, *A, "--block-size", "32",
                          "--num-reqs", "20", "--log-interval", "0.25"],
    "built-in-requests": ["run", "--cluster-config", TP2, *A],
    "two-instances-rr": ["run", "--cluster-config", "configs/cluster/single_node_two_instances.json",
                         "--dataset", BURST, *A, "--request-routing-policy", "RR"],
    "two-instances-rand": ["run", "--cluster-config", "configs/cluster/single_node_two_instances.json",
                           "--dataset", BURST, *A, "--request-routing-policy", "RAND", "--seed", "7"],
    "preemption-no-ids": ["run", "--cluster-config", SMALL, "--dataset", BURST, *A],
    "preemption-with-prefix-cache": ["run", "--cluster-config", SMALL, "--dataset", EX, *A],
    "preemption-reference": ["run", "--cluster-config", SMALL, "--dataset", EX, *A, "--no-fast-forward"],
    "sessions": ["run", "--cluster-config", TP2, "--dataset", SESSIONS, *A],
    "sessions-two-instances": ["run", "--cluster-config", "configs/cluster/single_node_two_instances.json",
                               "--dataset", SESSIONS, *A],
    "infeasible": ["run", "--cluster-config", TP2, "--dataset", EX, *A, "--dtype", "float32",
                   "--npu-memory-utilization", "0.3", "--record-infeasible"],
    "trace-sharegpt": ["trace", "--preset", "sharegpt", "--num-reqs", "200", "--rate", "5", "--seed", "11"],
    "trace-prefix-groups": ["trace", "--num-reqs", "50", "--rate", "2", "--prefix-groups", "3", "--prefix-len", "64",
                            "--seed", "2"],
    "step-mixed": ["step", "--model", "Qwen/Qwen3-32B", "--hardware", "RTXPRO6000", "--tp", "2", *A,
                   "--prefill", "512@1024", "--decode", "32@2000", "--json"],
    "step-decode-h100-tp4": ["step", "--model", "meta-llama/Llama-3.1-70B", "--hardware", "H100", "--tp", "4", *A,
                             "--decode", "64@3000", "--json"],
    # the kernel-table model, pinned the same way (its hot path caches op times: these hold it to its answers)
    "kernels-rtxpro6000-llama8b": ["run", "--cluster-config", "configs/cluster/rtxpro6000_llama8b_tp1.json",
                                   "--dataset", BURST, *K],
    "kernels-h100-tp2": ["run", "--cluster-config", "configs/cluster/h100_tp2_nvlink.json", "--dataset", EX, *K],
    "kernels-moe-dp2-ep2": ["run", "--cluster-config", "configs/cluster/rtxpro6000_qwen3_30b_a3b_dp2_ep2.json",
                            "--dataset", EX, *K],
    "kernels-step-mixed": ["step", "--model", "Qwen/Qwen3-32B", "--hardware", "H100", "--tp", "2", *K,
                           "--prefill", "512@1024", "--decode", "32@2000", "--json"],
}


def _normalise_summary(text: str) -> bytes:
    doc = json.loads(text.replace(str(REPO) + "/", ""))  # catalog paths are absolute: compare them relative
    doc.pop("timing", None)
    prov = doc.get("provenance") or {}
    prov.pop("git_commit", None)
    prov.pop("argv", None)
    (prov.get("flags") or {}).pop("output", None)
    for kind in ("models", "hardware"):  # catalog entries gain documented fields; what they yield is compared
        for ref in ((prov.get("inputs") or {}).get(kind) or {}).values():
            ref.pop("sha256", None)

    for inst in doc.get("instances") or []:
        (inst.get("latency_model") or {}).pop("hardware_source", None)
    return json.dumps(doc, indent=1, sort_keys=True).encode()


def run_entry(name: str, folder: Path) -> dict[str, str]:
    """Run one corpus entry; SHA-256 of each output (normalised where noted)."""
    import io
    from contextlib import redirect_stderr, redirect_stdout

    from tpsim.cli import main

    argv = list(RUNS[name])
    out = folder / f"{name}.out"
    if argv[0] == "run":
        argv += ["--output", str(out.with_suffix(".csv"))]
    elif argv[0] == "trace":
        argv += ["--output", str(out.with_suffix(".jsonl"))]
    stdout = io.StringIO()
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        with redirect_stdout(stdout), redirect_stderr(io.StringIO()):
            code = main(argv)
    finally:
        os.chdir(cwd)
    assert code == 0, name
    digest = lambda data: hashlib.sha256(data).hexdigest()  # noqa: E731
    if argv[0] == "run":
        csv = out.with_suffix(".csv")
        return {"csv": digest(csv.read_bytes()),
                "summary": digest(_normalise_summary(csv.with_suffix(".summary.json").read_text()))}
    if argv[0] == "trace":
        return {"trace": digest(out.with_suffix(".jsonl").read_bytes())}
    return {"stdout": digest(stdout.getvalue().encode())}


@pytest.mark.parametrize("name", sorted(RUNS))
def test_corpus_outputs_are_unchanged(tmp_path, name):
    expected = json.loads(MANIFEST.read_text())
    assert name in expected, f"{name} is not in {MANIFEST}; run python3 tests/test_corpus.py --update"
    assert run_entry(name, tmp_path) == expected[name], (
        f"outputs of corpus entry {name} changed; if intended, run python3 tests/test_corpus.py --update "
        "and say why in the commit")


def test_manifest_lists_exactly_the_corpus():
    assert sorted(json.loads(MANIFEST.read_text())) == sorted(RUNS)


if __name__ == "__main__":  # python3 tests/test_corpus.py --update
    if sys.argv[1:] != ["--update"]:
        sys.exit("usage: python3 tests/test_corpus.py --update")
    sys.path.insert(0, str(REPO))
    with tempfile.TemporaryDirectory() as tmp:
        manifest = {name: run_entry(name, Path(tmp)) for name in sorted(RUNS)}
    MANIFEST.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    print(f"wrote {MANIFEST} ({len(manifest)} entries)")
