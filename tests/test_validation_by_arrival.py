"""``tpsim validate``'s paired errors by arrival: the groups by hand, the invariant that a metric's MAPE
points add up to its MAPE, and the flag's bounds."""

from __future__ import annotations

import pytest
from conftest import run_subprocess
from hypothesis import given, settings
from hypothesis import strategies as st
from validation_cases import write_measured, write_sim

from tpsim.validation.by_arrival import split_even
from tpsim.validation.compare import Side, compare
from tpsim.validation.report import markdown, validate


@pytest.fixture
def case(tmp_path):
    return write_measured(tmp_path / "measured"), write_sim(tmp_path / "sim.csv")


def test_groups_by_hand(case):
    # paired 0, 1, 2 (queued 100.0, 100.5, 101.0 s); TTFT measured 100 / 400 / 200, simulated 110 / 300 / 250;
    # TPOT 100 / 200 against 90 / 250 (request 2 has one output token: no TPOT)
    doc, _ = validate(*case, arrival_groups=2)
    first, second = doc["by_arrival"]
    approx = pytest.approx
    assert (first["n"], first["queued_from_s"], first["queued_to_s"]) == (2, 0.0, 0.5)
    assert (second["n"], second["queued_from_s"], second["queued_to_s"]) == (1, 1.0, 1.0)
    assert first["ttft"] == approx({"n": 2, "measured_mean": 250.0, "sim_mean": 205.0, "diff_pct": -18.0,
                                    "mape_pct": 17.5, "mape_points": 35 / 3}, abs=1e-5)
    assert second["ttft"] == approx({"n": 1, "measured_mean": 200.0, "sim_mean": 250.0, "diff_pct": 25.0,
                                     "mape_pct": 25.0, "mape_points": 25 / 3}, abs=1e-5)
    assert first["ttft"]["mape_points"] + second["ttft"]["mape_points"] == approx(
        doc["metrics"]["ttft"]["paired"]["mape_pct"], abs=1e-5)
    assert first["tpot"] == approx({"n": 2, "measured_mean": 150.0, "sim_mean": 170.0, "diff_pct": 40 / 3,
                                    "mape_pct": 17.5, "mape_points": 17.5}, abs=1e-5)
    assert second["tpot"] is None
    lines = markdown(doc).splitlines()
    assert ("| 1 | 0.0-0.5 | 2 | 250.00 | 205.00 | -18.0 | 17.5 | 11.67 | 150.00 | 170.00 | +13.3 | 17.5 | 17.50 |"
            in lines)
    assert "| 2 | 1.0-1.0 | 1 | 200.00 | 250.00 | +25.0 | 25.0 | 8.33 | n/a | n/a | n/a | n/a | n/a |" in lines


def test_more_groups_than_requests_and_none(case):
    doc, _ = validate(*case, arrival_groups=50)
    assert [g["n"] for g in doc["by_arrival"]] == [1, 1, 1]
    doc, _ = validate(*case, arrival_groups=0)
    assert doc["by_arrival"] is None
    assert "Paired errors by arrival" not in markdown(doc)


def test_cli_default_of_five_groups_is_capped_by_the_requests(case, tmp_path):
    measured_dir, sim_csv = case
    r = run_subprocess(["-m", "tpsim", "validate", "--measured", str(measured_dir), "--sim", str(sim_csv)])
    assert r.returncode == 0, r.stderr
    assert "Paired errors by arrival: 3 groups of consecutive requests" in r.stdout  # 3 paired < 5


@pytest.mark.parametrize("n", ["-1", "101"])
def test_out_of_range_is_one_line(case, tmp_path, n):
    measured_dir, sim_csv = case
    out = tmp_path / "out"
    r = run_subprocess(["-m", "tpsim", "validate", "--measured", str(measured_dir), "--sim", str(sim_csv),
                        "--out", str(out), "--arrival-groups", n])
    assert r.returncode == 2
    assert r.stderr == f"tpsim: error: --arrival-groups must be between 0 and 100, got {n}\n"
    assert r.stdout == "" and not out.exists()


@given(st.lists(st.integers(0, 50), max_size=60), st.integers(1, 12))
def test_split_even(items, groups):
    parts = split_even(items, groups)
    assert len(parts) == groups
    assert [x for p in parts for x in p] == items
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


_request = st.tuples(st.floats(0, 1e4), st.floats(0.1, 1e5), st.floats(0.1, 1e5), st.floats(0, 1e3),
                     st.floats(0, 1e3))


@settings(max_examples=60, deadline=None)
@given(st.lists(_request, min_size=1, max_size=40), st.integers(1, 9))
def test_points_add_up_to_the_mape(requests, groups):
    measured, sim = Side("m"), Side("s")
    for i, (queued, ttft_m, ttft_s, tpot_m, tpot_s) in enumerate(requests):
        for side in (measured, sim):
            side.tokens[i] = (None, 2)
        measured.queued_s[i] = queued
        measured.values.setdefault("ttft", {})[i] = ttft_m
        sim.values.setdefault("ttft", {})[i] = ttft_s
        measured.values.setdefault("tpot", {})[i] = tpot_m  # may be 0: skipped by the MAPE
        sim.values.setdefault("tpot", {})[i] = tpot_s
    result = compare(measured, sim, groups)
    rows = result["by_arrival"]
    assert sum(r["n"] for r in rows) == len(requests) and len(rows) == min(groups, len(requests))
    assert all(a["queued_to_s"] <= b["queued_from_s"] for a, b in zip(rows, rows[1:]))
    for key in ("ttft", "tpot"):
        whole = result["metrics"][key]["paired"]["mape_pct"]
        points = [r[key]["mape_points"] for r in rows if r[key] and r[key]["mape_points"] is not None]
        if whole is None:
            assert not points
        else:
            assert sum(points) == pytest.approx(whole, rel=1e-9, abs=1e-9)
