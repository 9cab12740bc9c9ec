"""read_caiman: CaImAn's HDF5 layout (CSC parts, 'NoneType'), Fortran pixel order, the footprint
threshold and argmax by hand, accepted components, and every missing key named."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.sparse as sp

from calcium_gnn.errors import InputFileError
from calcium_gnn.io.caiman import read_caiman

DIMS = (4, 5)  # d1 rows, d2 columns; pixel p = row + 4 * column (Fortran order)
T = 6


def _p(row: int, col: int) -> int:
    return row + DIMS[0] * col


def _footprints() -> np.ndarray:
    """(20, 3): component 0 at (0,0) 1.0, (1,0) 0.5, (3,4) 0.1 (a tail below 0.2 x max); component 1 at
    (1,0) 0.8 (wins over 0.5) and (2,1) 0.8; component 2 at (0,4)."""
    a = np.zeros((DIMS[0] * DIMS[1], 3))
    a[_p(0, 0), 0], a[_p(1, 0), 0], a[_p(3, 4), 0] = 1.0, 0.5, 0.1
    a[_p(1, 0), 1], a[_p(2, 1), 1] = 0.8, 0.8
    a[_p(0, 4), 2] = 1.0
    return a


def _write(path: Path, *, a=None, c=None, dims=DIMS, fr=2.0, accepted=None, dense=False, drop=()) -> Path:
    a = _footprints() if a is None else a
    c = np.arange(a.shape[1] * T, dtype=np.float32).reshape(a.shape[1], T) if c is None else c
    with h5py.File(path, "w") as f:
        if "A" not in drop:
            if dense:
                f["estimates/A"] = a
            else:
                csc = sp.csc_matrix(a)
                for key in ("data", "indices", "indptr"):
                    f[f"estimates/A/{key}"] = getattr(csc, key)
                f["estimates/A/shape"] = np.array(csc.shape)
        f["estimates/C"] = c if "C" not in drop else "NoneType"
        if dims is not None:
            f["estimates/dims"] = np.array(dims)
        f["estimates/idx_components"] = "NoneType" if accepted is None else np.asarray(accepted)
        if fr is not None:
            f["params/data/fr"] = fr
        f["dview"] = "NoneType"
    return path


@pytest.mark.parametrize("dense", [False, True])
def test_threshold_argmax_and_fortran_order(tmp_path, dense) -> None:
    out = read_caiman(_write(tmp_path / "r.hdf5", dense=dense))
    want = np.zeros(DIMS, np.int32)
    want[0, 0] = 1
    want[1, 0] = want[2, 1] = 2
    want[0, 4] = 3
    np.testing.assert_array_equal(out.labels, want)
    assert out.component_index.tolist() == [0, 1, 2] and out.fr == 2.0
    np.testing.assert_array_equal(out.traces, np.arange(3 * T).reshape(3, T))


def test_a_low_threshold_keeps_the_tail(tmp_path) -> None:
    out = read_caiman(_write(tmp_path / "r.hdf5"), footprint_threshold=0.05)
    assert out.labels[3, 4] == 1


def test_accepted_components_only_and_dims_fallbacks(tmp_path) -> None:
    path = _write(tmp_path / "r.hdf5", accepted=[2, 0], dims=None, fr=None)
    with h5py.File(path, "a") as f:
        f["params/data/dims"] = np.array(DIMS)
    out = read_caiman(path)
    assert out.component_index.tolist() == [0, 2] and out.fr is None
    assert out.labels[1, 0] == 1  # component 1 is rejected: its pixels do not compete
    assert set(np.unique(out.labels).tolist()) == {0, 1, 3}
    np.testing.assert_array_equal(out.traces[1], np.arange(2 * T, 3 * T))


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"drop": ("A",)}, "missing estimates/A"),
        ({"drop": ("C",)}, "missing estimates/C"),
        ({"dims": None}, "missing estimates/dims"),
        ({"dims": (4, 5, 2)}, r"only 2-D \(d1, d2\) recordings"),
        ({"dims": (5, 5)}, "estimates/A has 20 pixels, dims"),
        ({"c": np.zeros((2, T))}, r"estimates/C has shape \(2, 6\)"),
        ({"c": np.full((3, T), np.nan)}, "component 0 has NaN or Inf"),
        ({"accepted": [0, 7]}, "idx_components must hold component indices 0..2"),
        ({"fr": -3.0}, "params/data/fr must be a positive frame rate"),
        (
            {"a": np.c_[_footprints(), np.zeros(20)], "c": np.zeros((4, T))},
            "component 3 has no pixel of its own",
        ),
    ],
)
def test_bad_files_name_the_problem(tmp_path, kwargs, problem) -> None:
    path = _write(tmp_path / "r.hdf5", **kwargs)
    with pytest.raises(InputFileError, match=problem) as err:
        read_caiman(path)
    assert str(path) in str(err.value)


def test_not_hdf5_and_missing(tmp_path) -> None:
    (tmp_path / "r.hdf5").write_bytes(b"plain bytes")
    with pytest.raises(InputFileError, match="not a readable HDF5 file"):
        read_caiman(tmp_path / "r.hdf5")
    with pytest.raises(InputFileError, match="file not found"):
        read_caiman(tmp_path / "missing.hdf5")


def test_threshold_outside_0_1(tmp_path) -> None:
    with pytest.raises(ValueError, match="footprint_threshold"):
        read_caiman(_write(tmp_path / "r.hdf5"), footprint_threshold=0)
