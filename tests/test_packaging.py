"""The installed package carries its catalog: configs/ ships inside the wheel as tpsim/_configs.

The fast tests pin the search order of :mod:`tpsim.config.catalog` with stand-in folders.  The
end-to-end test builds the wheel (hatchling, no build isolation, no network), installs it into a
fresh virtual environment and runs the README's documented command from a folder that is not the
checkout: every model, hardware entry and kernel table must then come from site-packages.
"""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tpsim.config import catalog
from tpsim.config.hardware import load_hardware

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"


# ----------------------------------------------------------------------------- search order
def _hardware(root: Path, name: str, gemm_efficiency: float) -> None:
    """A copy of the shipped H100 entry under ``root`` with one value changed, to tell roots apart."""
    import yaml

    doc = yaml.safe_load((CONFIGS / "hardware" / "H100.yaml").read_text())
    doc["name"] = name
    doc["perf_model"]["gemm_efficiency"] = gemm_efficiency
    (root / "hardware").mkdir(parents=True, exist_ok=True)
    (root / "hardware" / f"{name}.yaml").write_text(yaml.safe_dump(doc))


@pytest.fixture
def four_roots(tmp_path, monkeypatch):
    """$TPSIM_CONFIG_DIR, ./configs, a checkout and a packaged catalog, each its own folder."""
    env, work, checkout, site = (tmp_path / n for n in ("env", "work", "checkout", "site"))
    for root in (env, work / "configs", checkout / "configs", site / "tpsim" / "_configs"):
        root.mkdir(parents=True)
    (checkout / "pyproject.toml").write_text("[project]\nname = 'tpsim'\n")
    monkeypatch.setenv("TPSIM_CONFIG_DIR", str(env))
    monkeypatch.chdir(work)
    monkeypatch.setattr(catalog, "PACKAGE_ROOT", checkout)
    monkeypatch.setattr(catalog, "PACKAGED_CONFIGS", site / "tpsim" / "_configs")
    return env, work / "configs", checkout / "configs", site / "tpsim" / "_configs"


def test_search_order_is_env_cwd_checkout_then_package(four_roots):
    assert catalog.config_roots() == list(four_roots)


def test_each_name_comes_from_the_first_root_that_holds_it(four_roots):
    """A user's folder may override one entry; the rest still come from the packaged catalog."""
    for i in range(len(four_roots)):  # GPU<i> exists in root i and every later root j, with efficiency 0.1*(j+1)
        for j, later in enumerate(four_roots[i:], start=i):
            _hardware(later, f"GPU{i}", 0.1 * (j + 1))
    for i, root in enumerate(four_roots):
        hw = load_hardware(f"GPU{i}")
        assert Path(hw.source) == root / "hardware" / f"GPU{i}.yaml"
        assert hw.perf.gemm_efficiency == pytest.approx(0.1 * (i + 1))
    assert catalog.available("hardware", ".yaml") == ["GPU0", "GPU1", "GPU2", "GPU3"]


def test_site_packages_is_not_taken_for_a_checkout(four_roots, tmp_path, monkeypatch):
    """Installed, PACKAGE_ROOT is site-packages: a configs/ there belongs to another distribution."""
    env, cwd, _, packaged = four_roots
    site = packaged.parent.parent
    _hardware(site / "configs", "Stray", 0.5)
    monkeypatch.setattr(catalog, "PACKAGE_ROOT", site)
    assert catalog.config_roots() == [env, cwd, packaged]
    assert catalog.find("hardware", "Stray.yaml") is None


def test_a_missing_packaged_catalog_is_skipped(four_roots, monkeypatch):
    """An editable install has no tpsim/_configs: the checkout's configs/ is the last root."""
    env, cwd, checkout, packaged = four_roots
    shutil.rmtree(packaged)
    assert catalog.config_roots() == [env, cwd, checkout]


def test_profile_bundles_do_not_ship(four_roots, monkeypatch):
    """No bundles are packaged: profile roots stop at the checkout's profiles/."""
    _, cwd, checkout, _ = four_roots
    monkeypatch.delenv("TPSIM_PROFILE_DIR", raising=False)
    assert catalog.profile_roots() == [cwd.parent / "profiles", checkout.parent / "profiles"]


def test_this_checkout_is_found_as_one():
    """Run from the repository, the catalog is the checkout's configs/ (nothing copied)."""
    import tpsim

    if Path(tpsim.__file__).resolve().parents[1] != REPO:
        pytest.skip("tpsim is imported from an installed copy, not this checkout")
    assert catalog._checkout_root() == REPO
    assert (REPO / "configs").resolve() in [r.resolve() for r in catalog.config_roots()]


# ----------------------------------------------------------------------------- the built wheel
def _readme_command() -> list[str]:
    """The `python -m serving ...` command of the README's "Two commands" section."""
    text = (REPO / "README.md").read_text()
    found = re.search(r"^python3 -m pip install [^\n]*&& (python -m serving [^\n]*)$", text, re.MULTILINE)
    assert found, "README's setup line (pip install ... && python -m serving ...) not found"
    return shlex.split(found.group(1))


def _clean_env(**extra: str) -> dict:
    """The environment without anything that would point tpsim at this checkout."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "TPSIM_CONFIG_DIR", "TPSIM_PROFILE_DIR", "PYTHONHOME")}
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1", PIP_USER="0", **extra)
    return env


def _run(argv: list, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in argv], cwd=cwd, env=_clean_env(), capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert proc.returncode == 0, f"{argv}: exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(wheel, venv python, its site-packages) — the project built and installed non-editable."""
    if importlib.util.find_spec("hatchling") is None:
        pytest.skip("the build backend hatchling is not installed (pip install -e '.[dev]' brings it)")
    base = tmp_path_factory.mktemp("packaging")
    _run([sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "--no-index",
          "-w", base / "dist", REPO], cwd=base)
    (wheel,) = (base / "dist").glob("tpsim-*.whl")
    # no pip of its own: the environment's pip installs into it, dependencies come from the system site
    _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", base / "venv"], cwd=base)
    python = base / "venv" / "bin" / "python"
    _run([python, "-m", "pip", "install", "--no-deps", "--no-index", wheel], cwd=base)
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     cwd=base).stdout.strip())
    return wheel, python, site


def _inside(path: str, folder: Path) -> bool:
    return Path(path).resolve().is_relative_to(folder.resolve())


def test_wheel_carries_the_whole_catalog_with_licences(installed):
    wheel, _, _ = installed
    with zipfile.ZipFile(wheel) as z:
        members = {name: z.read(name) for name in z.namelist()}
    expected = {p for p in CONFIGS.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    assert expected
    for path in expected:
        name = "tpsim/_configs/" + path.relative_to(CONFIGS).as_posix()
        assert name in members, f"{name} missing from {wheel.name}"
        assert hashlib.sha256(members[name]).digest() == hashlib.sha256(path.read_bytes()).digest(), name
    gpus = sorted(p.name for p in (CONFIGS / "kernels").iterdir() if p.is_dir())
    assert gpus, "no kernel tables in configs/kernels"
    for gpu in gpus:  # data from AIConfigurator (Apache-2.0): its licence and notice travel with it
        for name in ("LICENSE", "NOTICE", "provenance.json"):
            assert f"tpsim/_configs/kernels/{gpu}/{name}" in members
    assert "tpsim/io/run_summary.schema.json" in members
    assert "serving/__main__.py" in members
    assert not [n for n in members if n.startswith("configs/") or "__pycache__" in n or n.endswith(".pyc")]


def test_documented_command_runs_from_another_folder(installed, tmp_path):
    """README's command, with copies of just its two input files, finds everything else installed."""
    _, python, site = installed
    packaged = site / "tpsim" / "_configs"
    command = _readme_command()
    args = dict(itertools.pairwise(command))
    cluster, dataset, output = args["--cluster-config"], args["--dataset"], args["--output"]
    work = tmp_path / "elsewhere"
    for rel in (cluster, dataset):
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO / rel, work / rel)

    show_roots = "from tpsim.config import catalog; print('\\n'.join(map(str, catalog.config_roots())))"
    roots = _run([python, "-c", show_roots], cwd=work).stdout.split()
    assert [Path(r).resolve() for r in roots] == [(work / "configs").resolve(), packaged.resolve()]

    _run([python, *command[1:]], cwd=work)
    summary = json.loads((work / output).with_suffix(".summary.json").read_text())
    inputs = summary["provenance"]["inputs"]
    sources = [ref["path"] for kind in ("models", "hardware") for ref in inputs[kind].values()]
    assert sources and all(_inside(p, packaged) for p in sources), sources
    assert all(not _inside(p, REPO) for p in sources)

    # the same command from the checkout, on the checkout's configs/: the very same CSV
    reference = tmp_path / "reference.csv"
    argv = command[1:]
    argv[argv.index("--output") + 1] = str(reference)
    _run([sys.executable, *argv], cwd=REPO)
    assert (work / output).read_bytes() == reference.read_bytes()


def test_kernel_tables_are_read_from_the_installed_package(installed, tmp_path):
    _, python, site = installed
    packaged = (site / "tpsim" / "_configs").resolve()
    tpsim = python.parent / "tpsim"  # the console script the wheel installs
    step = _run([tpsim, "step", "--perf-model", "kernels", "--model", "meta-llama/Llama-3.1-8B",
                 "--hardware", "H100", "--decode", "8@512", "--json"], cwd=tmp_path)
    doc = json.loads(step.stdout)
    assert doc["perf_model"] == "kernels" and doc["total_ns"] > 0
    assert "measured" in {op["source"] for op in doc["ops"]}

    cluster = tmp_path / "h100.json"
    shutil.copyfile(CONFIGS / "cluster" / "h100_tp2_nvlink.json", cluster)
    _run([tpsim, "run", "--cluster-config", cluster, "--dataset", REPO / "workloads" / "example_trace.jsonl",
          "--output", tmp_path / "k.csv", "--perf-model", "kernels", "--num-reqs", "10"], cwd=tmp_path)
    summary = json.loads((tmp_path / "k.summary.json").read_text())
    source = summary["instances"][0]["latency_model"]["source"]
    assert f"{packaged / 'kernels' / 'H100'} " in source, source
