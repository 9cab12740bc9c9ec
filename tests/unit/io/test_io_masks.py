"""read_labels: TIFF / NPY / Cellpose _seg.npy label images, safe unpickling, one-line errors."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import tifffile

from calcium_gnn.errors import MasksError
from calcium_gnn.io.masks import read_labels

EPITOOLS = Path(__file__).resolve().parents[2] / "data" / "epitools"


@pytest.fixture
def labels() -> np.ndarray:
    lab = np.zeros((20, 30), dtype=np.uint16)
    lab[2:8, 3:12] = 1
    lab[10:18, 5:25] = 7
    return lab


def test_epitools_labels_reproduced_exactly():
    path = EPITOOLS / "test_image-projected-segmented.tif"
    got = read_labels(path)
    want = tifffile.imread(path)
    assert got.dtype == np.int32 and got.shape == (199, 206)
    np.testing.assert_array_equal(got, want.astype(np.int64))
    assert got.max() == 94 and np.unique(got).size == 94


@pytest.mark.parametrize("suffix", [".tif", ".npy"])
def test_tiff_and_npy_round_trip(tmp_path, labels, suffix):
    path = tmp_path / f"labels{suffix}"
    tifffile.imwrite(path, labels) if suffix == ".tif" else np.save(path, labels)
    got = read_labels(path)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, labels)


def test_cellpose_seg_npy_dict(tmp_path, labels):
    # the layout Cellpose's GUI saves: np.save of a dict (a 0-d object array, pickled)
    path = tmp_path / "img_seg.npy"
    seg = {"masks": labels, "outlines": labels * 0, "filename": "img.tif", "diameter": np.float64(30.0),
           "ismanual": np.zeros(2, bool), "flows": [np.zeros((1, 20, 30, 3), np.uint8), []],
           "chan_choose": [0, 0]}
    np.save(path, seg, allow_pickle=True)
    np.testing.assert_array_equal(read_labels(path), labels)


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned_by_pickle",))


def test_malicious_pickle_is_refused_without_running_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil_seg.npy"
    np.save(path, np.array({"masks": _Exploit()}, dtype=object), allow_pickle=True)
    with pytest.raises(MasksError, match="refused") as exc:
        read_labels(path)
    assert "\n" not in str(exc.value) and str(path) in str(exc.value)
    assert not (tmp_path / "pwned_by_pickle").exists()


def test_pickled_dict_without_masks(tmp_path):
    path = tmp_path / "other.npy"
    np.save(path, {"something": 1}, allow_pickle=True)
    with pytest.raises(MasksError, match="'masks'"):
        read_labels(path)


@pytest.mark.parametrize(
    ("array", "match"),
    [
        (np.full((5, 5), 0.5), "float64 values"),
        (np.ones((2, 5, 5), np.uint16) * np.arange(1, 3)[:, None, None], "2-D"),
        (np.zeros((5, 5), np.uint16), "no cells"),
        (-np.ones((5, 5), np.int32), "negative"),
        (np.ones((5, 5), bool), "binary mask"),
    ],
    ids=["float", "3d", "empty", "negative", "bool"],
)
def test_not_a_label_image(tmp_path, array, match):
    path = tmp_path / "bad.npy"
    np.save(path, array)
    with pytest.raises(MasksError, match=match) as exc:
        read_labels(path)
    assert "\n" not in str(exc.value) and str(path) in str(exc.value)


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("missing.tif", None, "file not found"),
        ("empty.tif", b"", "empty"),
        ("junk.tif", b"no tiff here" * 20, "not a readable TIFF"),
        ("labels.png", b"\x89PNG", "unsupported file type"),
        ("junk.npy", b"not numpy" * 20, "not a readable"),
    ],
)
def test_bad_files(tmp_path, name, content, match):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(MasksError, match=match) as exc:
        read_labels(path)
    assert "\n" not in str(exc.value) and str(path) in str(exc.value)


def test_input_file_not_modified(tmp_path, labels):
    path = tmp_path / "labels.tif"
    tifffile.imwrite(path, labels)
    before = path.read_bytes()
    read_labels(path)
    assert path.read_bytes() == before
