"""Hostile file names through real campaigns: nothing runs that the campaign did not ask for.

Trace, cluster and model config files are named with shell syntax (`$(...)`, backquotes, `;`,
quotes, spaces, braces, a leading '-', '%', non-ASCII); every one must reach tpsim as a plain
argument.  The tests run Snakemake for real (`-s <repo>/Snakefile --directory <tmp>`) and assert
that no PWNED file appears anywhere, that nothing outside the campaign's results folder (and
Snakemake's own .snakemake/) changed, that every run folder name is in the documented alphabet,
and that the tables carry the names as written.  Names with a tab or a line break are refused
with one line naming the key.
"""

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from test_campaign_e2e import REPO, ok, query, snakemake

from tpsim.campaign import run_ids

MODEL_SRC = REPO / "configs/model/Qwen/Qwen3-0.6B.json"
CLUSTER_SRC = REPO / "configs/cluster/single_node_single_instance.json"
SEGMENT = re.compile(r"^[a-z_]+=[A-Za-z0-9._+%-]+(~[0-9a-f]{16})?$")  # README: the run id alphabet
HOSTILE_MODELS = [
    "a;touch PWNED;b.json",
    "m`touch PWNED`.json",
    "m$(touch PWNED).json",
    "m'\"q\\.json",
    "-m --output=x.json",
    "m{x y}.json",
    "m%41 ünï--x.json",
    "dir $(touch PWNED)/m,c.json",
]
HOSTILE_TRACES = ["t$(touch PWNED).jsonl", "t`touch PWNED`;x'q\".jsonl", "-t {x y} %.jsonl"]


def write_trace(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"input_toks": 64 + 8 * i, "output_toks": 8, "arrival_time_ns": i * 50_000_000})
                            + "\n" for i in range(6)))
    return path


def snapshot(root: Path, skip=("results", ".snakemake", "__pycache__", ".pytest_cache", ".git")) -> dict:
    """path -> (size, mtime_ns, mode) of everything under root but the skipped folders."""
    out = {}
    for p in root.rglob("*"):
        rel = p.relative_to(root)
        if rel.parts[0] in skip or "__pycache__" in rel.parts:
            continue
        st = p.lstat()
        out[str(rel)] = (st.st_size, st.st_mtime_ns, st.st_mode)
    return out


def pwned_anywhere(*roots: Path) -> list[str]:
    found = []
    for root in roots:
        found += [str(p) for p in root.rglob("*PWNED*") if p.name == "PWNED"]
    return found + [str(p) for p in (Path.cwd() / "PWNED", Path.home() / "PWNED", Path("/tmp/PWNED")) if p.exists()]


def campaign(wd: Path, name: str, *, trace: str, models: list[str], cluster: str = "cluster.json", **extra) -> Path:
    doc = {"name": name, "cluster": cluster, "workload": {"trace": trace},
           "matrix": {"model": models, "tp_size": [1], "link_bw": [16]}, **extra}
    path = wd / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True))
    return path


@pytest.fixture
def wd(tmp_path):
    wd = tmp_path / "work"
    wd.mkdir()
    for name in HOSTILE_MODELS:
        (wd / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(MODEL_SRC, wd / name)
    for name in HOSTILE_TRACES:
        write_trace(wd / name)
    shutil.copy(CLUSTER_SRC, wd / "c $(touch PWNED);`x`.json")
    shutil.copy(CLUSTER_SRC, wd / "cluster.json")
    return wd


def check_runs(wd: Path, name: str, models: list[str]) -> None:
    runs = wd / "results" / name / "runs"
    dirs = sorted(p.parent for p in runs.rglob("requests.parquet"))
    assert len(dirs) == len(models)
    for d in dirs:
        parts = d.relative_to(runs).parts
        assert all(SEGMENT.match(part) for part in parts), parts
        rec = json.loads((d / "run.json").read_text())
        assert run_ids.decode_name(parts[0].removeprefix("model=")) == rec["model"]
        assert json.loads((d / "requests.summary.json").read_text())["status"] == "ok"
    rows = query(wd / "results" / name / "campaign.duckdb", "SELECT model, status, count(*) FROM runs GROUP BY ALL")
    assert sorted(rows) == sorted((m, "ok", 1) for m in models)


def test_hostile_model_cluster_and_trace_names_run_as_plain_arguments(wd):
    before = snapshot(wd), snapshot(REPO)
    cfg = campaign(wd, "hostile", trace=HOSTILE_TRACES[0], models=HOSTILE_MODELS,
                   cluster="c $(touch PWNED);`x`.json")
    ok(snakemake(wd, "--cores", "2", config=cfg))
    check_runs(wd, "hostile", HOSTILE_MODELS)
    for i, trace in enumerate(HOSTILE_TRACES[1:]):
        cfg = campaign(wd, f"hostile{i}", trace=trace, models=HOSTILE_MODELS[:1])
        ok(snakemake(wd, "--cores", "2", f"results/hostile{i}/campaign.duckdb", config=cfg))  # no figures
        check_runs(wd, f"hostile{i}", HOSTILE_MODELS[:1])
        rec = json.loads(next((wd / f"results/hostile{i}/runs").rglob("run.json")).read_text())
        assert rec["inputs"]["dataset"]["path"] == trace
    assert pwned_anywhere(wd, REPO) == []
    after_wd = {k: v for k, v in snapshot(wd).items() if not k.startswith("hostile")}  # the campaign files
    assert after_wd == {k: v for k, v in before[0].items() if not k.startswith("hostile")}
    assert snapshot(REPO) == before[1]


def test_hostile_tpsim_args_stay_one_argument(wd):
    cfg = campaign(wd, "args", trace="t$(touch PWNED).jsonl", models=["Qwen/Qwen3-0.6B"],
                   tpsim_args=["--log-level=INFO;touch PWNED", "$(touch PWNED)"])
    proc = snakemake(wd, "--cores", "2", config=cfg)
    assert proc.returncode != 0
    # tpsim got the flag as one argument, and refused its value; no shell ran any of it
    assert "error: argument --log-level: invalid choice: 'INFO;touch PWNED'" in proc.stdout + proc.stderr
    assert pwned_anywhere(wd, REPO) == []
    assert not (wd / "results/args/campaign.duckdb").exists()


@pytest.mark.parametrize("key, doc_over, needle", [
    ("workload.trace", {"workload": {"trace": "t\ttouch PWNED.jsonl"}},
     "workload.trace: the value 't\\ttouch PWNED.jsonl' contains a control character (tab, at 1)"),
    ("matrix.model[0]", {"matrix": {"model": ["a;touch\tPWNED;b.json"], "tp_size": [1], "link_bw": [16]}},
     "matrix.model[0]: the value 'a;touch\\tPWNED;b.json' contains a control character (tab, at 7)"),
    ("cluster", {"cluster": "c\nx.json"},
     "cluster: the value 'c\\nx.json' contains a control character (line feed, at 1)"),
    ("matrix.model[0]", {"matrix": {"model": ["m{run}.json"], "tp_size": [1], "link_bw": [16]}},
     "matrix.model[0]: 'm{run}.json' contains '{run}', which Snakemake reads as a wildcard; rename the file"),
])
def test_unusable_names_are_refused_with_one_line(wd, key, doc_over, needle):
    """Control characters are never part of a name; '{word}' cannot be a Snakemake input."""
    for name in ("t\ttouch PWNED.jsonl", "a;touch\tPWNED;b.json", "c\nx.json", "m{run}.json"):  # they exist
        shutil.copy(MODEL_SRC if name.endswith(".json") else wd / "cluster.json", wd / name)
    doc = {"name": "ctl", "cluster": "cluster.json", "workload": {"trace": HOSTILE_TRACES[0]},
           "matrix": {"model": ["Qwen/Qwen3-0.6B"], "tp_size": [1], "link_bw": [16]}}
    doc.update(doc_over)
    cfg = wd / "ctl.yaml"
    cfg.write_text(yaml.safe_dump(doc))
    proc = snakemake(wd, "-n", config=cfg)
    assert proc.returncode != 0
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("campaign ")]
    assert len(lines) == 1 and needle in lines[0], lines
    assert lines[0].startswith(f"campaign ctl.yaml: {key}: ")  # the campaign file, relative to the work folder
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not (wd / "results").exists() and pwned_anywhere(wd, REPO) == []
