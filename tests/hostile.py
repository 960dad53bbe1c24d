"""Helpers for the hostile-input tests: run ``tpsim`` in-process and check the error contract.

The contract (DEVELOPERS.md): exit 0 with complete outputs, or exit 2 with exactly one line
``tpsim: error: ...`` on stderr, no traceback and no output file; inputs never modified.
"""

from __future__ import annotations

import io
import json
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

from conftest import REPO

BASE_INSTANCE = {"model_name": "Qwen/Qwen3-0.6B", "hardware": "RTXPRO6000",
                 "npu_mem": {"mem_size": 96, "mem_bw": 1597, "mem_latency": 0}, "num_npus": 1, "tp_size": 1,
                 "pd_type": None}
GOOD_TRACE = '{"input_toks": 20, "output_toks": 5, "arrival_time_ns": 0}\n'


def cluster_doc(**instance) -> dict:
    inst = json.loads(json.dumps(BASE_INSTANCE))
    inst.update(instance)
    return {"num_nodes": 1, "link_bw": 16, "link_latency": 20000,
            "nodes": [{"num_instances": 1, "instances": [inst]}]}


def model_doc(name: str = "Qwen/Qwen3-0.6B") -> dict:
    return json.loads((REPO / "configs" / "model" / f"{name}.json").read_text())


def run_inprocess(argv: list[str]) -> tuple[int, str, str]:
    """``tpsim argv`` in this process; any exception other than a clean exit propagates (a failure)."""
    from tpsim.cli import main

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse usage errors
            code = exc.code
    return code, out.getvalue(), err.getvalue()


def assert_contract(code: int, err: str, outputs: list[Path], inputs: dict[Path, bytes]) -> str:
    """Exit 0 with every output written, or exit 2 with one error line and no output; inputs intact.

    Returns the error line ('' on success).
    """
    for path, content in inputs.items():
        assert path.read_bytes() == content, f"{path} was modified"
    if code == 0:
        for path in outputs:
            assert path.is_file(), f"exit 0 but {path} missing"
        return ""
    lines = err.strip().splitlines()
    assert code == 2, (code, err)
    assert len(lines) == 1 and lines[0].startswith("tpsim: error: "), err
    assert "Traceback" not in err
    for path in outputs:
        assert not path.exists(), f"exit 2 but {path} written"
    return lines[0]


def write_inputs(folder: Path, cluster, trace: bytes | str = GOOD_TRACE, model=None) -> dict[str, Path]:
    """Cluster config (a dict, or raw text/bytes), trace and optional model config in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"cluster": folder / "cluster.json", "trace": folder / "trace.jsonl"}
    if model is not None:
        paths["model"] = folder / "model.json"
        _write(paths["model"], model)
        if isinstance(cluster, dict):
            for inst in cluster["nodes"][0]["instances"]:
                inst["model_name"] = str(paths["model"])
    _write(paths["cluster"], cluster)
    _write(paths["trace"], trace)
    return paths


def _write(path: Path, content) -> None:
    if isinstance(content, (dict, list)):
        content = json.dumps(content)  # NaN / Infinity written as such (allow_nan)
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
