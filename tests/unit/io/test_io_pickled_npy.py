"""read_pickled_npy / read_npy: suite2p's pickled dicts (datetimes included) load, code never runs."""

from __future__ import annotations

import datetime
import os
import subprocess

import numpy as np
import pytest

from calcium_gnn.errors import InputFileError
from calcium_gnn.io.pickled_npy import read_npy, read_pickled_npy


def test_ops_dict_with_datetime_and_numpy_values(tmp_path) -> None:
    ops = {
        "Ly": np.int64(512),
        "fs": 30.0,
        "date_proc": datetime.datetime(2024, 5, 6, 7, 8, 9),
        "filelist": ["a.tif"],
        "meanImg": np.ones((2, 2), np.float32),
        "none": None,
        "flag": np.bool_(True),
    }
    np.save(tmp_path / "ops.npy", ops)
    back = read_pickled_npy(tmp_path / "ops.npy")
    assert back["date_proc"] == ops["date_proc"] and back["Ly"] == 512 and back["filelist"] == ["a.tif"]
    np.testing.assert_array_equal(back["meanImg"], ops["meanImg"])


def test_plain_arrays_pass_through(tmp_path) -> None:
    np.save(tmp_path / "a.npy", np.arange(6).reshape(2, 3))
    np.testing.assert_array_equal(read_pickled_npy(tmp_path / "a.npy"), np.arange(6).reshape(2, 3))
    np.testing.assert_array_equal(read_npy(tmp_path / "a.npy"), np.arange(6).reshape(2, 3))


def test_read_npy_refuses_objects_and_garbage(tmp_path) -> None:
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object))
    with pytest.raises(InputFileError, match="holds pickled objects"):
        read_npy(tmp_path / "o.npy")
    (tmp_path / "g.npy").write_bytes(b"garbage")
    with pytest.raises(InputFileError, match="not a readable .npy"):
        read_npy(tmp_path / "g.npy")
    (tmp_path / "e.npy").write_bytes(b"")
    with pytest.raises(InputFileError, match="file is empty"):
        read_pickled_npy(tmp_path / "e.npy")


class _Exploit:
    def __reduce__(self):
        return (subprocess.call, (["touch", "pwned_by_ops"],))


def test_code_is_refused_before_it_runs(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    np.save(tmp_path / "ops.npy", {"fs": _Exploit()})
    with pytest.raises(InputFileError, match="refused"):
        read_pickled_npy(tmp_path / "ops.npy")
    assert not os.path.exists(tmp_path / "pwned_by_ops")
