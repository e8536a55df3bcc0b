"""Atomic outputs: nothing half-written, nothing overwritten without permission."""

import pytest

from lsmap.errors import OutputExistsError
from lsmap.io.rasters import atomic_output


def test_success_renames_into_place(tmp_path):
    out = tmp_path / "sub" / "a.txt"
    with atomic_output(out) as tmp:
        assert tmp.suffix == ".txt" and tmp != out
        tmp.write_text("done")
    assert out.read_text() == "done"
    assert [p.name for p in out.parent.iterdir()] == ["a.txt"]


def test_failure_leaves_nothing(tmp_path):
    out = tmp_path / "a.txt"
    with pytest.raises(RuntimeError):
        with atomic_output(out) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_existing_output_needs_overwrite(tmp_path):
    out = tmp_path / "a.txt"
    out.write_text("keep")
    with pytest.raises(OutputExistsError, match="`overwrite`"):
        with atomic_output(out):
            pass
    assert out.read_text() == "keep"
    with atomic_output(out, overwrite=True) as tmp:
        tmp.write_text("new")
    assert out.read_text() == "new"


def test_directory_output_replaces_whole_folder(tmp_path):
    out = tmp_path / "patches"
    out.mkdir()
    (out / "stale.h5").write_text("old")
    with atomic_output(out, overwrite=True, directory=True) as tmp:
        (tmp / "new.h5").write_text("x")
    assert sorted(p.name for p in out.iterdir()) == ["new.h5"]
