"""read_imagej_rois: real .roi / RoiSet.zip files (roifile) rasterised by ImageJ's pixel-centre rule;
masks worked out by hand; order, overlaps, shapes, and every refusal named."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
from roifile import ROI_TYPE, ImagejRoi, roiwrite

from calcium_gnn.errors import ConfigError, MasksError
from calcium_gnn.io.imagej_rois import read_imagej_rois


def _box_roi(kind: ROI_TYPE, left: int, top: int, right: int, bottom: int, name: str) -> ImagejRoi:
    roi = ImagejRoi()
    roi.roitype = kind
    roi.left, roi.top, roi.right, roi.bottom = left, top, right, bottom
    roi.name = name
    return roi


def _polygon_roi(points, name: str, kind: ROI_TYPE = ROI_TYPE.POLYGON) -> ImagejRoi:
    roi = ImagejRoi.frompoints(np.asarray(points), name=name)
    roi.roitype = kind
    return roi


def test_rectangle_oval_and_traced_polygon_by_hand(tmp_path) -> None:
    rois = [
        _box_roi(ROI_TYPE.RECT, 2, 3, 6, 5, "rect"),  # columns 2..5, rows 3..4
        _box_roi(ROI_TYPE.OVAL, 10, 0, 14, 4, "oval"),  # circle of radius 2: the 4 x 4 box minus its corners
        _polygon_roi(
            [[2, 8], [8, 8], [8, 12], [2, 12]], "traced", ROI_TYPE.TRACED
        ),  # corners on pixel corners
    ]
    roiwrite(tmp_path / "RoiSet.zip", rois)
    out = read_imagej_rois(tmp_path / "RoiSet.zip", image_shape=(14, 16))
    want = np.zeros((14, 16), np.int32)
    want[3:5, 2:6] = 1
    want[0:4, 10:14] = 2
    for r, c in [(0, 10), (0, 13), (3, 10), (3, 13)]:
        want[r, c] = 0
    want[8:12, 2:8] = 3
    np.testing.assert_array_equal(out.labels, want)
    assert out.names == ["rect", "oval", "traced"]


def test_subpixel_freehand_uses_pixel_centres(tmp_path) -> None:
    # a triangle below the line y = x + 0.5: pixel (r, c), centre (c + 0.5, r + 0.5), is inside when r > c
    roi = ImagejRoi.frompoints(np.array([[0.0, 0.5], [0.0, 5.0], [4.5, 5.0]]), name="tri")
    roi.tofile(tmp_path / "tri.roi")
    out = read_imagej_rois(tmp_path / "tri.roi", image_shape=(5, 4)).labels
    rows, cols = np.mgrid[0:5, 0:4]
    np.testing.assert_array_equal(out, (rows > cols).astype(np.int32))


def test_composite_roi_keeps_its_hole(tmp_path) -> None:
    roi = ImagejRoi()
    roi.roitype = ROI_TYPE.RECT
    path = [0, 0, 0, 1, 6, 0, 1, 6, 6, 1, 0, 6, 4, 0, 2, 2, 1, 4, 2, 1, 4, 4, 1, 2, 4, 4]
    roi.multi_coordinates = np.asarray(path, np.float32)
    roi.shape_roi_size = len(path)
    roi.left, roi.top, roi.right, roi.bottom = 0, 0, 6, 6
    roi.name = "ring"
    roi.tofile(tmp_path / "ring.roi")
    out = read_imagej_rois(tmp_path / "ring.roi").labels
    want = np.ones((6, 6), np.int32)
    want[2:4, 2:4] = 0
    np.testing.assert_array_equal(out, want)


def test_shape_from_bounds_order_and_first_roi_keeps_overlaps(tmp_path) -> None:
    rois = [_box_roi(ROI_TYPE.RECT, 0, 0, 4, 4, "a"), _box_roi(ROI_TYPE.RECT, 2, 2, 7, 5, "b")]
    roiwrite(tmp_path / "RoiSet.zip", rois)
    with zipfile.ZipFile(tmp_path / "RoiSet.zip", "a") as zf:  # junk a zip tool may add
        zf.writestr("__MACOSX/._a.roi", b"junk")
        zf.writestr("README.txt", b"not a roi")
    labels = read_imagej_rois(tmp_path / "RoiSet.zip").labels
    assert labels.shape == (5, 7)
    assert labels[3, 3] == 1 and labels[4, 6] == 2 and labels[0, 6] == 0
    assert (labels == 1).sum() == 16 and (labels == 2).sum() == 15 - 4


@pytest.mark.parametrize(
    ("kind", "problem"), [(ROI_TYPE.LINE, "is a line ROI"), (ROI_TYPE.POINT, "is a point ROI")]
)
def test_non_area_rois_are_refused(tmp_path, kind, problem) -> None:
    rois = [_box_roi(ROI_TYPE.RECT, 0, 0, 4, 4, "a"), _box_roi(kind, 1, 1, 3, 3, "stroke")]
    roiwrite(tmp_path / "RoiSet.zip", rois)
    with pytest.raises(MasksError, match=f"RoiSet.zip: ROI 2 \\('stroke'\\) {problem}, not an area"):
        read_imagej_rois(tmp_path / "RoiSet.zip")


def test_roi_without_a_pixel_is_named(tmp_path) -> None:
    rois = [_box_roi(ROI_TYPE.RECT, 0, 0, 4, 4, "big"), _box_roi(ROI_TYPE.RECT, 1, 1, 3, 3, "hidden")]
    roiwrite(tmp_path / "RoiSet.zip", rois)
    with pytest.raises(MasksError, match=r"ROI 2 \('hidden'\) covers no pixel of its own"):
        read_imagej_rois(tmp_path / "RoiSet.zip")
    roiwrite(
        tmp_path / "out.zip",
        [_box_roi(ROI_TYPE.RECT, 20, 20, 24, 24, "far"), _box_roi(ROI_TYPE.RECT, 0, 0, 2, 2, "near")],
    )
    with pytest.raises(MasksError, match=r"ROI 1 \('far'\) covers no pixel .* 10 x 10 image"):
        read_imagej_rois(tmp_path / "out.zip", image_shape=[10, 10])


def test_unreadable_and_empty_sets(tmp_path) -> None:
    with zipfile.ZipFile(tmp_path / "empty.zip", "w"):
        pass
    with pytest.raises(MasksError, match="empty ROI set"):
        read_imagej_rois(tmp_path / "empty.zip")
    (tmp_path / "bad.zip").write_bytes(b"not a zip at all")
    with pytest.raises(MasksError, match="bad.zip: not a readable zip of ImageJ ROIs"):
        read_imagej_rois(tmp_path / "bad.zip")
    (tmp_path / "bad.roi").write_bytes(b"Iout" + b"\x00" * 10)
    with pytest.raises(MasksError, match="bad.roi: not a readable ImageJ ROI"):
        read_imagej_rois(tmp_path / "bad.roi")
    (tmp_path / "rois.csv").write_text("x,y\n")
    with pytest.raises(MasksError, match="unsupported file type '.csv'"):
        read_imagej_rois(tmp_path / "rois.csv")
    with pytest.raises(MasksError, match="file not found"):
        read_imagej_rois(tmp_path / "missing.zip")


@pytest.mark.parametrize("shape", [[10], [0, 5], [2.5, 3], "big"])
def test_bad_image_shape(tmp_path, shape) -> None:
    _box_roi(ROI_TYPE.RECT, 0, 0, 2, 2, "a").tofile(tmp_path / "a.roi")
    with pytest.raises(ConfigError, match="data.image_shape: must be"):
        read_imagej_rois(tmp_path / "a.roi", image_shape=shape)
