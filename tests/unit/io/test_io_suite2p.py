"""read_suite2p: a hand-made plane written as suite2p writes it; iscell, neuropil, overlaps by lam,
plane discovery, and every missing file or key named."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from calcium_gnn.errors import InputFileError
from calcium_gnn.io.suite2p import find_plane_folder, read_suite2p

T = 5


def _stat(pixels, lam) -> dict:
    y, x = np.array(pixels, dtype=np.int32).T
    return {
        "ypix": y,
        "xpix": x,
        "lam": np.asarray(lam, np.float32),
        "med": [int(np.median(y)), int(np.median(x))],
        "npix": len(pixels),
    }


def _plane(
    folder: Path,
    *,
    ops: dict | None = None,
    stat: list | None = None,
    f: np.ndarray | None = None,
    iscell: np.ndarray | None = None,
) -> Path:
    """Four ROIs in a 6 x 8 image (module tests): ROI 2 is not a cell."""
    folder.mkdir(parents=True, exist_ok=True)
    stat = (
        stat
        if stat is not None
        else [
            _stat([(1, 1), (1, 2), (2, 1), (2, 2)], [1, 1, 1, 1]),
            _stat([(2, 2), (2, 3), (3, 3)], [2, 1, 1]),  # takes (2, 2) from ROI 0: larger lam
            _stat([(4, 4)], [1]),
            _stat([(2, 1), (5, 7)], [0.5, 1]),  # (2, 1) stays with ROI 0: smaller lam
        ]
    )
    n = len(stat)
    f = f if f is not None else np.arange(n * T, dtype=np.float32).reshape(n, T) + 100
    np.save(folder / "stat.npy", np.array(stat, dtype=object))
    np.save(folder / "F.npy", f)
    np.save(folder / "Fneu.npy", np.full((n, T), 10.0, np.float32))
    np.save(
        folder / "iscell.npy",
        iscell if iscell is not None else np.array([[1, 0.9], [1, 0.8], [0, 0.2], [1, 0.7]]),
    )
    np.save(folder / "ops.npy", ops if ops is not None else {"Ly": 6, "Lx": 8, "fs": 4.0})
    return folder


def test_cells_overlaps_and_neuropil(tmp_path) -> None:
    plane = read_suite2p(_plane(tmp_path / "plane0"))
    want = np.zeros((6, 8), np.int32)
    want[1, 1] = want[1, 2] = want[2, 1] = 1
    want[2, 2] = want[2, 3] = want[3, 3] = 2
    want[5, 7] = 4
    np.testing.assert_array_equal(plane.labels, want)
    assert plane.roi_index.tolist() == [0, 1, 3] and plane.fs == 4.0
    f = np.arange(4 * T, dtype=np.float64).reshape(4, T) + 100
    np.testing.assert_allclose(plane.traces, f[[0, 1, 3]] - 0.7 * 10.0)


def test_coefficient_zero_needs_no_fneu_and_fs_is_optional(tmp_path) -> None:
    folder = _plane(tmp_path / "plane0", ops={"Ly": 6, "Lx": 8})
    (folder / "Fneu.npy").unlink()
    plane = read_suite2p(folder, neuropil_coefficient=0)
    assert plane.fs is None
    np.testing.assert_allclose(plane.traces[0], np.arange(T) + 100.0)
    with pytest.raises(InputFileError, match="Fneu.npy: file not found"):
        read_suite2p(folder)


def test_plane_discovery(tmp_path) -> None:
    _plane(tmp_path / "out" / "suite2p" / "plane0")
    assert find_plane_folder(tmp_path / "out") == tmp_path / "out" / "suite2p" / "plane0"
    assert find_plane_folder(tmp_path / "out" / "suite2p") == tmp_path / "out" / "suite2p" / "plane0"
    _plane(tmp_path / "out" / "suite2p" / "plane1")
    with pytest.raises(InputFileError, match=r"several suite2p planes \(plane0, plane1\)"):
        find_plane_folder(tmp_path / "out" / "suite2p")
    with pytest.raises(InputFileError, match="no suite2p plane here"):
        find_plane_folder(tmp_path)
    with pytest.raises(InputFileError, match="folder not found"):
        find_plane_folder(tmp_path / "nope")


@pytest.mark.parametrize(
    ("change", "file", "problem"),
    [
        ({"ops": {"Lx": 8, "fs": 4.0}}, "ops.npy", "missing key.* Ly"),
        ({"ops": {"Ly": 6, "Lx": 8, "fs": -1.0}}, "ops.npy", "fs .* must be a positive number"),
        ({"stat": [{"ypix": np.array([1]), "xpix": np.array([1])}]}, "stat.npy", "ROI 0 lacks key.* lam"),
        ({"stat": [_stat([(9, 1)], [1])]}, "stat.npy", "ROI 0 has pixels outside the 6 x 8 image"),
        ({"f": np.zeros((3, T), np.float32)}, "F.npy", r"shape \(3, 5\): expected \(4, T\)"),
        ({"iscell": np.zeros((4, 2))}, "iscell.npy", "no ROI is a cell"),
        ({"iscell": np.ones((2, 2))}, "iscell.npy", r"expected \(4, 2\)"),
        ({"stat": [_stat([(1, 1)], [1]), _stat([(1, 1)], [2])]}, "stat.npy", "ROI 0 lost every pixel"),
    ],
)
def test_bad_planes_name_file_and_problem(tmp_path, change, file, problem) -> None:
    if "stat" in change and "iscell" not in change:
        change["iscell"] = np.ones((len(change["stat"]), 2))
        change["f"] = np.ones((len(change["stat"]), T), np.float32)
    folder = _plane(tmp_path / "plane0", **change)
    with pytest.raises(InputFileError, match=problem) as err:
        read_suite2p(folder)
    assert str(folder / file) in str(err.value)


def test_nan_traces_of_a_cell_are_refused_but_a_rejected_roi_may_hold_them(tmp_path) -> None:
    f = np.ones((4, T), np.float32)
    f[2, 0] = np.nan  # ROI 2 is not a cell
    read_suite2p(_plane(tmp_path / "a", f=f))
    f[1, 3] = np.nan
    with pytest.raises(InputFileError, match="F.npy: ROI 1 has NaN or Inf"):
        read_suite2p(_plane(tmp_path / "b", f=f))


def test_missing_file(tmp_path) -> None:
    folder = _plane(tmp_path / "plane0")
    (folder / "iscell.npy").unlink()
    with pytest.raises(InputFileError, match="iscell.npy: file not found"):
        read_suite2p(folder)


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned_by_stat",))


def test_pickled_code_in_stat_is_refused(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    folder = _plane(tmp_path / "plane0")
    np.save(folder / "stat.npy", np.array([{"ypix": _Exploit()}], dtype=object))
    with pytest.raises(InputFileError, match="unsafe or corrupt pickled data refused"):
        read_suite2p(folder)
    assert not (tmp_path / "pwned_by_stat").exists()
