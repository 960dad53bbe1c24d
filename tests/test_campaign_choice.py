"""Choosing a campaign: ``snakemake --config campaign=PATH`` reads PATH with tpsim's own bounded,
safe YAML loader; ``--configfile`` (kept for compatibility) is parsed by Snakemake itself, which
renders YTE templates -- Python in ``?`` expressions -- before the workflow sees the file."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO, checkout_env, snakemake_cmd

from tpsim.campaign.reading import CampaignError
from tpsim.campaign.workflow import (
    DEFAULT_CAMPAIGN,
    choose_campaign,
    merge,
    tpsim_location_warning,
)

SMALL = {
    "name": "pick",
    "cluster": "configs/cluster/single_node_single_instance.json",
    "workload": {"generate": {"preset": "sharegpt", "num_reqs": 5}},
    "matrix": {"model": ["Qwen/Qwen3-8B"], "tp_size": [1, 2], "link_bw": [16]},
}


def dry_run(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(snakemake_cmd("-n", "--directory", str(workdir), *args), cwd=workdir, capture_output=True,
                          text=True, timeout=300, check=False, env=checkout_env())


def yte_campaign(folder: Path, target: Path) -> Path:
    """A campaign that is a YTE template whose name, when rendered, creates ``target``."""
    doc = dict(SMALL, name=f"?__import__('pathlib').Path({str(target)!r}).touch() or 'yte'")
    path = folder / "yte.yaml"
    path.write_text("__use_yte__: true\n" + yaml.safe_dump(doc, sort_keys=False))
    return path


def test_a_yte_template_is_refused_and_runs_nothing(tmp_path):
    target = tmp_path / "PWNED"
    cfg = yte_campaign(tmp_path, target)
    proc = dry_run(tmp_path, "--config", f"campaign={cfg}")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert ("campaign yte.yaml: __use_yte__: campaigns are plain YAML, not YTE templates (their '?' expressions "
            "would run as Python); write the values out") in out
    assert "Traceback" not in out
    assert not target.exists() and not (REPO / "PWNED").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != ".snakemake") == ["yte.yaml"]


def test_the_same_template_through_configfile_runs_its_python(tmp_path):
    """Why --config campaign= is the documented way: Snakemake renders --configfile templates."""
    target = tmp_path / "PWNED"
    cfg = yte_campaign(tmp_path, target)
    proc = dry_run(tmp_path, "--configfile", str(cfg))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert target.exists()  # the expression ran; the campaign it left ('yte') is a valid one


def test_config_campaign_and_configfile_together_are_refused(tmp_path):
    cfg = tmp_path / "pick.yaml"
    cfg.write_text(yaml.safe_dump(SMALL))
    proc = dry_run(tmp_path, "--configfile", str(cfg), "--config", f"campaign={cfg}")
    assert proc.returncode != 0
    assert "--config campaign=... and --configfile both name a campaign; give one" in proc.stdout + proc.stderr


def test_a_shipped_campaign_is_found_from_another_working_directory(tmp_path):
    proc = dry_run(tmp_path, "--config", "campaign=configs/campaigns/h100_nvlink.yaml")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "results/h100_nvlink/batches/" in proc.stdout + proc.stderr
    assert "tpsim: campaign h100_nvlink: 96 runs in" in proc.stderr
    assert not (tmp_path / "results").exists()


def test_choose_campaign_reads_the_file_and_applies_config_overrides(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pick.yaml").write_text(yaml.safe_dump(SMALL))
    camp, source = choose_campaign({"campaign": "pick.yaml", "perf_model": "profile"}, roots=[Path("."), REPO])
    assert source == "pick.yaml" and camp.name == "pick" and camp.doc["perf_model"] == "profile"
    assert [r.id for r in camp.runs] == ["model=Qwen--Qwen3-8B/tp=1/link_bw=16", "model=Qwen--Qwen3-8B/tp=2/link_bw=16"]
    camp, _ = choose_campaign({"campaign": "pick.yaml", "matrix": {"tp_size": [4]}}, roots=[Path("."), REPO])
    assert [r.params["tp_size"] for r in camp.runs] == [4]  # nested keys merge, as in Snakemake's config merge
    camp, source = choose_campaign({}, roots=[Path("."), REPO])
    assert camp.name == "tp_vs_linkbw" and Path(source).resolve() == DEFAULT_CAMPAIGN.resolve()


@pytest.mark.parametrize("config, message", [
    ({"campaign": "missing.yaml"}, "campaign missing.yaml: no such file"),
    ({"campaign": ["a", "b"]}, "--config campaign=['a', 'b']: expected the path of a campaign file"),
    ({"campaign": ""}, "--config campaign=: expected the path of a campaign file"),
])
def test_choose_campaign_names_a_bad_choice(tmp_path, monkeypatch, config, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CampaignError) as exc:
        choose_campaign(config, roots=[Path(".")])
    assert str(exc.value).startswith(message), str(exc.value)


def test_merge_is_snakemakes_config_merge():
    doc = {"a": {"b": 1, "c": [1, 2]}, "d": 1}
    assert merge(doc, {"a": {"c": [3]}, "d": {"x": 1}, "e": None}) == {"a": {"b": 1, "c": [3]}, "d": {"x": 1},
                                                                       "e": None}


def test_a_workflow_running_another_checkouts_tpsim_says_so(tmp_path):
    import tpsim

    here = Path(tpsim.__file__).resolve().parents[1]
    assert tpsim_location_warning(here) is None
    warning = tpsim_location_warning(tmp_path)
    assert warning.startswith("tpsim: warning: ") and str(here) in warning and "PYTHONPATH" in warning


def test_what_the_workflow_reads_while_parsing_imports_no_heavy_library():
    """Snakemake parses the workflow for every invocation (and every Slurm job): loading a campaign,
    deriving a run and the aggregation's module stay off pandas, DuckDB, matplotlib and numpy."""
    code = ("import sys, tpsim.campaign.workflow, tpsim.campaign.derive, tpsim.campaign.aggregate, "
            "tpsim.campaign.outputs, tpsim.campaign.provenance, tpsim.validation.cases; "
            "print(sorted(m for m in ('pandas', 'duckdb', 'matplotlib', 'numpy') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False,
                          cwd=REPO, env=checkout_env())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
