"""filter_small_cells, check_labels_match, IoU matching, and the 'masks' backend."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from calcium_gnn.errors import ConfigError, MasksError
from calcium_gnn.imaging.segmentation import (
    check_labels_match,
    filter_small_cells,
    iou_matrix,
    matched_fraction,
    segment,
)


def test_filter_small_cells_by_hand():
    labels = np.zeros((4, 6), np.int32)
    labels[0, :2] = 3  # area 2: dropped
    labels[1:, :3] = 5  # area 9: kept -> 1
    labels[1:, 3:] = 9  # area 9: kept -> 2
    labels[0, 2:] = 12  # area 4: kept (area == min_area) -> 3
    before = labels.copy()
    out, old = filter_small_cells(labels, min_area=4, return_mapping=True)
    want = np.zeros((4, 6), np.int32)
    want[1:, :3], want[1:, 3:], want[0, 2:] = 1, 2, 3
    np.testing.assert_array_equal(out, want)
    np.testing.assert_array_equal(old, [5, 9, 12])
    assert out.dtype == np.int32
    np.testing.assert_array_equal(labels, before)
    assert filter_small_cells(labels).max() == 0  # the paper's 500 px drops every cell here


def test_filter_small_cells_errors():
    with pytest.raises(ConfigError, match="min_area"):
        filter_small_cells(np.ones((2, 2), np.int32), min_area=-1)


def test_check_labels_match():
    check_labels_match(np.zeros((4, 5)), (4, 5), "m.tif")
    with pytest.raises(MasksError, match=r"m\.tif: label image shape \(4, 5\) differs"):
        check_labels_match(np.zeros((4, 5)), (5, 4), "m.tif")


def test_iou_by_hand():
    true = np.array([[1, 1, 2, 2]])
    pred = np.array([[1, 1, 1, 0]])
    # true 1 vs pred 1: |{0,1}| / |{0,1,2}| = 2/3; true 2 vs pred 1: 1 / 4
    np.testing.assert_allclose(iou_matrix(true, pred), [[2 / 3], [1 / 4]])
    assert matched_fraction(true, pred, 0.6) == 0.5
    assert matched_fraction(true, true) == 1.0


def test_masks_backend(tmp_path):
    labels = np.zeros((10, 12), np.uint16)
    labels[2:5, 2:9] = 4
    path = tmp_path / "labels.tif"
    tifffile.imwrite(path, labels)
    np.testing.assert_array_equal(segment(np.zeros((10, 12)), backend="masks", path=path), labels)
    with pytest.raises(MasksError, match="differs"):
        segment(np.zeros((12, 10)), backend="masks", path=path)
    with pytest.raises(ConfigError, match="segmentation.path"):
        segment(np.zeros((10, 12)), backend="masks")
    with pytest.raises(MasksError, match="file not found"):
        segment(np.zeros((10, 12)), backend="masks", path=tmp_path / "nope.tif")
