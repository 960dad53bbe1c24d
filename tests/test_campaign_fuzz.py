"""Property-based fuzzing of campaign YAML: every input gives a campaign or one-line errors.

The contract: loading a campaign either expands it into runs whose folder names are in the
documented alphabet and whose parameters are finite JSON, or raises CampaignError whose every
line reads ``campaign <file>: <key>: ...`` -- never another exception, never a multi-line
message, never unbounded work (YAML alias bombs, deep nesting, huge matrices are refused by
size before anything walks them).  Most examples call the loader directly; a few run
``snakemake -n --config campaign=FILE`` for real and check that the user sees the same lines and no
traceback.
"""

import math
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import REPO, checkout_env, snakemake_cmd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tpsim.campaign import spec
from tpsim.campaign.reading import MAX_DEPTH
from tpsim.campaign.spec import CampaignError, load_campaign, load_campaign_file

SOURCE = "fuzz.yaml"
SEGMENT = re.compile(r"^[a-z_]+=[A-Za-z0-9._+%-]+(~[0-9a-f]{16})?$")
GOOD = {
    "name": "fuzz",
    "cluster": "configs/cluster/single_node_single_instance.json",
    "workload": {"generate": {"preset": "sharegpt", "num_reqs": 5, "rate": 2}},
    "matrix": {"model": ["Qwen/Qwen3-8B", "Qwen/Qwen3-0.6B"], "tp_size": [1, 2], "link_bw": [16, 450]},
}
HOSTILE = ["$(touch PWNED)", "`touch PWNED`", "a;b", "a\tb", "a\nb", "'\"", "../../etc/passwd", "/dev/zero",
           "x" * 5000, "{run}", "%2F", "--output", "Qwen/Qwen3-8B\u2028x", "\x00", "\ud800", "ünï/cödé", ".nan",
           "workloads/example_trace.jsonl", "configs/model/Qwen/Qwen3-8B.json", "H100", "1e400"]
KEYS = ["name", "description", "cluster", "workload", "matrix", "exclude", "perf_model", "tpsim_args", "limits",
        "model", "tp_size", "link_bw", "link_latency", "hardware", "rate", "seed", "max_num_seqs",
        "max_num_batched_tokens", "generate", "trace", "num_reqs", "max_runs", "validation_root"]
NUMBERS = st.one_of(
    st.integers(min_value=-(2**40), max_value=2**40),
    st.sampled_from([0, 1, 2, 2**31 - 1, 2**31, 2**63, 10**11, 10**100, -1]),
    st.floats(allow_nan=True, allow_infinity=True),
)
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, st.text(max_size=20), st.sampled_from(HOSTILE))
VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=8)), children, max_size=4),
    max_leaves=20,
)
# where a mutation may land: (path to a mapping, key)
SLOTS = [((), k) for k in ("name", "description", "cluster", "workload", "matrix", "exclude", "perf_model",
                            "tpsim_args", "limits", "extra")] + \
    [(("matrix",), k) for k in ("model", "tp_size", "link_bw", "link_latency", "hardware", "rate", "seed",
                                "max_num_seqs", "max_num_batched_tokens", "other")] + \
    [(("workload", "generate"), k) for k in ("num_reqs", "rate", "seed", "duration_s", "preset", "cv", "x")]


#: an error line: the campaign file, a line number when the YAML parser gave one, then the problem
ERROR_LINE = re.compile(rf"campaign {re.escape(SOURCE)}(:\d+)?: ")


def lines_of(exc: CampaignError) -> list[str]:
    lines = str(exc).split("\n")
    assert lines and all(ERROR_LINE.match(line) for line in lines), lines
    assert len(lines) <= spec.MAX_PROBLEMS + 1
    assert all(line.isprintable() and len(line) < 4000 for line in lines), lines
    return lines


def check_contract(doc) -> None:
    """A campaign with runs in the documented alphabet and finite parameters, or one-line errors."""
    try:
        camp = load_campaign(doc, source=SOURCE, roots=[REPO])
    except CampaignError as exc:
        lines_of(exc)
        return
    assert 1 <= len(camp.runs) <= 10_000
    for run in camp.runs:
        assert all(SEGMENT.match(part) for part in run.id.split("/")), run.id
        for value in run.params.values():
            assert not (isinstance(value, float) and not math.isfinite(value)), run.params
        assert run.params["num_npus"] <= 65536


@st.composite
def mutated(draw, values=VALUES):
    doc = yaml.safe_load(yaml.safe_dump(GOOD))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        path, key = draw(st.sampled_from(SLOTS))
        node = doc
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node[key] = draw(values)
    if draw(st.booleans()):  # a list value: one element changed instead of the whole list
        key = draw(st.sampled_from(["model", "tp_size", "link_bw"]))
        if isinstance(doc.get("matrix"), dict) and isinstance(doc["matrix"].get(key), list) and doc["matrix"][key]:
            doc["matrix"][key][0] = draw(SCALARS)
    return doc


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_campaigns_load_or_fail_with_one_line_errors(doc):
    check_contract(doc)


LINK_BW = st.one_of(st.integers(1, 10**6), st.floats(min_value=1e-300, max_value=1e6))
OPTIONAL = {"link_latency": st.one_of(st.integers(0, 10**10), st.floats(0, 1e10)), "seed": st.integers(0, 2**31 - 1),
            "rate": st.floats(1e-6, 1e9), "max_num_seqs": st.integers(1, 2**31 - 1),
            "hardware": st.sampled_from(["H100", "A100"]), "max_num_batched_tokens": st.integers(1, 2**31 - 1)}


@st.composite
def well_formed(draw):
    """Campaigns of the right shape with wide values: most expand, so the run ids are exercised."""
    matrix = {"model": draw(st.lists(st.sampled_from(["Qwen/Qwen3-8B", "Qwen/Qwen3-0.6B", "meta-llama/Llama-3.1-8B"]),
                                     min_size=1, max_size=3, unique=True)),
              "tp_size": draw(st.lists(st.integers(1, 65536), min_size=1, max_size=3, unique=True)),
              "link_bw": draw(st.lists(LINK_BW, min_size=1, max_size=3))}
    for key in draw(st.lists(st.sampled_from(sorted(OPTIONAL)), max_size=3, unique=True)):
        matrix[key] = draw(st.lists(OPTIONAL[key], min_size=1, max_size=2))
    doc = dict(GOOD, matrix=matrix, limits={"max_runs": draw(st.integers(1, 200))})
    rules = draw(st.lists(st.sampled_from(sorted(matrix)), max_size=2))
    doc["exclude"] = [{key: draw(st.sampled_from(matrix[key]))} for key in rules]
    return doc


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(well_formed())
def test_well_formed_campaigns_expand_into_safe_runs(doc):
    check_contract(doc)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=8)), VALUES, max_size=8))
def test_random_structures_fail_with_one_line_errors(doc):
    check_contract(doc)


def bomb(kind: str, levels: int, width: int, at: str) -> str:
    """A billion-laughs campaign: each anchor holds `width` aliases of the one before."""
    lines = [f"name: bomb\ncluster: {GOOD['cluster']}\nworkload: workloads/example_trace.jsonl",
             "x0: &a0 [lol]" if kind == "list" else "x0: &a0 {k: lol}"]
    for i in range(1, levels + 1):
        items = ", ".join([f"*a{i - 1}"] * width) if kind == "list" else \
            ", ".join(f"k{j}: *a{i - 1}" for j in range(width))
        lines.append(f"x{i}: &a{i} [{items}]" if kind == "list" else f"x{i}: &a{i} {{{items}}}")
    link_bw = f"*a{levels}" if at == "link_bw" else "[16]"
    lines.append(f"matrix: {{model: [Qwen/Qwen3-8B], tp_size: [1], link_bw: {link_bw}}}")
    return "\n".join(lines) + "\n"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(["list", "map"]), levels=st.integers(1, 30), width=st.integers(1, 30),
       at=st.sampled_from(["link_bw", "x"]))
def test_yaml_alias_bombs_are_refused_early(tmp_path_factory, kind, levels, width, at):
    path = tmp_path_factory.mktemp("bomb") / SOURCE
    path.write_text(bomb(kind, levels, width, at))
    try:
        load_campaign_file(path, roots=[REPO])
    except CampaignError as exc:
        lines = str(exc).split("\n")
        assert all(line.startswith(f"campaign {path}") for line in lines) and all(line.isprintable() for line in lines)
        if width ** levels > 10**6:  # far past the value budget
            assert "YAML aliases are expanded" in lines[0] or "nested more than" in lines[0], lines


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(
    st.binary(max_size=300),
    st.builds(lambda d, c: ("m: " + c[0] * d + c[1] * d + "\n").encode(), st.integers(1, 20_000),
              st.sampled_from(["[]", "{}"])),
    st.builds(lambda n: f"name: x\nmatrix: {{tp_size: [{'9' * n}]}}\n".encode(), st.integers(1, 6000)),
    st.builds(lambda t: t.encode("utf-8", "surrogatepass"), st.text(max_size=200)),
))
def test_raw_bytes_load_or_fail_with_one_line_errors(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("raw") / SOURCE
    path.write_bytes(data)
    try:
        load_campaign_file(path, roots=[REPO])
    except CampaignError as exc:
        lines = str(exc).split("\n")
        assert all(line.startswith(f"campaign {path}") and line.isprintable() for line in lines), lines


def test_nesting_past_the_limit_is_refused_by_line(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text("name: x\nm: " + "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1) + "\n")
    try:
        load_campaign_file(path, roots=[REPO])
    except CampaignError as exc:
        assert str(exc) == f"campaign {path}:2: nested more than {MAX_DEPTH} levels deep"
    else:
        raise AssertionError("not refused")


# ----------------------------------------------------------------------------- through Snakemake


def snakemake_dry(tmp_path: Path, text: str, configfile: bool = False) -> subprocess.CompletedProcess:
    """``snakemake -n`` on the campaign ``text``: chosen with --config campaign= (``configfile``:
    with --configfile, which Snakemake parses itself)."""
    cfg = tmp_path / SOURCE
    cfg.write_text(text)
    choose = ["--configfile", SOURCE] if configfile else ["--config", f"campaign={SOURCE}"]
    return subprocess.run(snakemake_cmd("-n", *choose), cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          check=False, env=checkout_env())


# Kept as the --configfile tests had them: there Snakemake parses the file itself (Python's YAML
# loader) and an integer of more than 4,300 digits fails in Snakemake, before the workflow's code.
SNAKEMAKE_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                              st.floats(allow_nan=True, allow_infinity=True),
                              st.text(max_size=20), st.sampled_from(HOSTILE))


@settings(max_examples=4, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(mutated(values=SNAKEMAKE_SCALARS))
def test_snakemake_shows_the_same_one_line_errors_and_no_traceback(tmp_path, doc):
    proc = snakemake_dry(tmp_path, yaml.safe_dump(doc, allow_unicode=True))
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out and "tpsim/campaign/" not in out, out[-3000:]
    if proc.returncode != 0:
        lines = [line for line in out.splitlines() if ERROR_LINE.match(line)]
        assert lines, out[-3000:]
        assert "WorkflowError in file" in out
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("configfile", [False, True], ids=["config-campaign", "configfile"])
def test_snakemake_refuses_a_bomb_with_one_line(tmp_path, configfile):
    """A list bomb and a small mapping bomb (about 66,000 values) are refused by the value budget
    with one line.  Read with --config campaign= neither is ever expanded; with --configfile
    Snakemake's config merge expands the mapping bomb before the workflow refuses it."""
    for kind, levels, width in (("list", 9, 9), ("map", 5, 9)):
        proc = snakemake_dry(tmp_path, bomb(kind, levels, width, "link_bw" if kind == "list" else "x"), configfile)
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0 and "Traceback" not in out
        lines = [line for line in out.splitlines() if line.startswith("campaign ")]
        assert lines == [(f"campaign {SOURCE}: more than 100,000 values once its YAML aliases are expanded (a campaign "
                         "has a few hundred; raise the limit with the environment variable TPSIM_CAMPAIGN_MAX_NODES)")]


def test_a_path_of_5000_characters_gives_a_short_error_line():
    """Found by the fuzzer: a missing 5,000-character cluster path was echoed whole (a 5,000-character line)."""
    doc = {**GOOD, "cluster": "x" * 5000}
    with pytest.raises(CampaignError) as err:
        load_campaign(doc, source=SOURCE, roots=[REPO])
    lines = lines_of(err.value)
    assert any(line.startswith(f"campaign {SOURCE}: cluster: xxx") and "..." in line and len(line) < 300
               for line in lines), lines
