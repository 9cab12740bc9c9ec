"""Atomic writes (:mod:`calcium_gnn.io.atomic`): a complete file (or folder) or the old one, never half."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from calcium_gnn.errors import OutputError
from calcium_gnn.io.atomic import (
    atomic_folder,
    atomic_path,
    atomic_write_bytes,
    atomic_write_text,
    new_file_mode,
)


def test_write_and_replace_leave_only_the_target(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    assert atomic_write_text(path, "{}") == path
    assert path.read_text() == "{}"
    atomic_write_bytes(path, b"[1]")
    assert path.read_bytes() == b"[1]"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]
    assert stat.S_IMODE(path.stat().st_mode) == new_file_mode()


def test_a_failing_writer_keeps_the_old_file_and_removes_its_temporary(tmp_path: Path) -> None:
    path = tmp_path / "graph.pt"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(path) as tmp:
            assert tmp.parent == tmp_path and tmp.suffix == ".pt" and tmp != path
            tmp.write_bytes(b"half")
            raise RuntimeError("boom")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["graph.pt"]


def test_refusals_name_the_target(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    path.write_text("x")
    with pytest.raises(OutputError, match="already exists"):
        atomic_write_text(path, "y", overwrite=False)
    assert path.read_text() == "x"
    missing = tmp_path / "no" / "such" / "f.txt"
    with pytest.raises(OutputError, match=f"^{missing}: cannot write: folder .* does not exist"):
        atomic_write_text(missing, "y")
    assert atomic_write_text(missing, "y", make_parents=True).read_text() == "y"
    blocker = tmp_path / "somefile"
    blocker.write_text("a file")
    under = blocker / "out" / "f.txt"
    with pytest.raises(OutputError, match=f"^{under}: cannot create the folder"):
        atomic_write_text(under, "y", make_parents=True)
    with pytest.raises(OutputError, match="is not a folder"):
        atomic_write_text(blocker / "f.txt", "y")


def test_folder_appears_complete_or_not_at_all(tmp_path: Path) -> None:
    target = tmp_path / "cache" / "entry"
    with pytest.raises(ValueError):
        with atomic_folder(target) as tmp:
            (tmp / "graph.pt").write_bytes(b"half")
            raise ValueError("crash while writing")
    assert not target.exists() and os.listdir(tmp_path / "cache") == []
    with atomic_folder(target) as tmp:
        (tmp / "graph.pt").write_bytes(b"whole")
        assert not target.exists()
    assert (target / "graph.pt").read_bytes() == b"whole"
    # another process filled the entry first: theirs is kept, ours discarded
    with atomic_folder(target) as tmp:
        (tmp / "graph.pt").write_bytes(b"ours")
    assert (target / "graph.pt").read_bytes() == b"whole"
    with pytest.raises(OutputError, match="cannot move the finished folder"):
        with atomic_folder(target, keep_existing=False) as tmp:
            (tmp / "graph.pt").write_bytes(b"ours")
    assert sorted(os.listdir(tmp_path / "cache")) == ["entry"]
