"""tpsim.io.writing.AtomicFiles: several outputs appear together or not at all, also when a tool
(DuckDB, matplotlib) writes a file itself to a path reserved for it."""

import os

import pytest

from tpsim.io.writing import AtomicFiles


def test_reserved_and_opened_files_are_renamed_into_place_together(tmp_path):
    with AtomicFiles() as out:
        reserved = out.reserve(tmp_path / "sub" / "fig.pdf", ".pdf")
        assert not os.path.exists(reserved)  # the tool creates it
        assert os.path.dirname(reserved) == str(tmp_path / "sub") and reserved.endswith(".tmp.pdf")
        with open(reserved, "wb") as f:
            f.write(b"%PDF")
        out.open(tmp_path / "sub" / "fig.csv").write("x\n1\n")
        assert not (tmp_path / "sub" / "fig.pdf").exists()  # nothing visible before the block ends
    assert (tmp_path / "sub" / "fig.pdf").read_bytes() == b"%PDF"
    assert (tmp_path / "sub" / "fig.csv").read_text() == "x\n1\n"
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["fig.csv", "fig.pdf"]


def test_a_failure_removes_what_the_tool_wrote_and_keeps_the_old_file(tmp_path):
    target = tmp_path / "campaign.duckdb"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), AtomicFiles() as out:
        reserved = out.reserve(target)
        with open(reserved, "wb") as f:
            f.write(b"half")
        out.reserve(tmp_path / "runs.parquet")  # never written: the tool failed first
        raise RuntimeError("the tool failed")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["campaign.duckdb"]


def test_reserved_names_are_distinct(tmp_path):
    with AtomicFiles() as out:
        names = {out.reserve(tmp_path / "a.png", ".png") for _ in range(20)}
        for name in names:
            open(name, "wb").close()
    assert len(names) == 20
