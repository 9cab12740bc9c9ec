"""Per-cell geometry from label images: areas, centroids, edge flags and polygons worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from calcium_gnn.errors import MasksError
from calcium_gnn.graphs.geometry import cell_polygons, cell_table, dense_index, validate_labels


def _two_blocks() -> np.ndarray:
    """10 x 10: cell 3 on columns 0-4, cell 7 on columns 5-9."""
    labels = np.zeros((10, 10), dtype=np.int32)
    labels[:, :5] = 3
    labels[:, 5:] = 7
    return labels


def test_area_centroid_and_ids_of_two_blocks() -> None:
    table = cell_table(_two_blocks())
    np.testing.assert_array_equal(table.cell_id, [3, 7])
    np.testing.assert_allclose(table.area, [50.0, 50.0])
    # centroid (x, y) = (mean column, mean row)
    np.testing.assert_allclose(table.centroid, [[2.0, 4.5], [7.0, 4.5]])
    assert table.touches_edge.tolist() == [True, True]


def test_touches_edge_with_margin() -> None:
    labels = np.zeros((12, 12), dtype=np.int32)
    labels[1:4, 1:4] = 1  # one pixel away from the border
    labels[5:8, 5:8] = 2  # far from the border
    assert cell_table(labels).touches_edge.tolist() == [False, False]
    assert cell_table(labels, edge_margin=1).touches_edge.tolist() == [True, False]


def test_dense_index_maps_sparse_and_huge_ids() -> None:
    labels = np.array([[0, 5], [2_000_000_000, 5]], dtype=np.int64)
    cell_id, index = dense_index(labels)
    np.testing.assert_array_equal(cell_id, [5, 2_000_000_000])
    np.testing.assert_array_equal(index, [[-1, 0], [1, 0]])


def test_square_polygon_is_the_marching_squares_outline() -> None:
    labels = np.zeros((8, 8), dtype=np.int32)
    labels[2:6, 2:6] = 1
    (poly,) = cell_polygons(labels)
    # through the pixel-edge midpoints: a 4 x 4 square from 1.5 to 5.5 with its four corners cut
    # by triangles of legs 0.5: area 16 - 4 * 0.125
    assert poly.area == pytest.approx(15.5)
    assert poly.bounds == pytest.approx((1.5, 1.5, 5.5, 5.5))
    assert poly.is_valid


def test_polygon_with_a_hole_and_a_two_piece_cell() -> None:
    labels = np.zeros((12, 20), dtype=np.int32)
    labels[1:8, 1:8] = 1
    labels[3:5, 3:5] = 0  # a 2 x 2 hole
    labels[1:3, 12:14] = 2
    labels[6:8, 12:14] = 2  # cell 2 in two pieces
    ring, pieces = cell_polygons(labels)
    assert ring.geom_type == "Polygon" and len(ring.interiors) == 1
    # outer 7 x 7 outline (49 - 4 * 0.125) minus the hole's outline (2 x 2 with cut corners: 4 - 0.5)
    assert ring.area == pytest.approx(48.5 - 3.5)
    assert pieces.geom_type == "MultiPolygon" and len(pieces.geoms) == 2
    assert pieces.area == pytest.approx(2 * 3.5)


def test_polygon_area_tracks_pixel_area_of_large_cells() -> None:
    yy, xx = np.mgrid[0:80, 0:80]
    labels = ((xx - 40.0) ** 2 + (yy - 40.0) ** 2 <= 30.0**2).astype(np.int32)
    (poly,) = cell_polygons(labels)
    area = cell_table(labels).area[0]
    assert abs(poly.area - area) / area < 0.02
    assert poly.centroid.x == pytest.approx(40.0, abs=1e-6)


@pytest.mark.parametrize(
    ("labels", "problem"),
    [
        (np.zeros((2, 3, 4), dtype=np.int32), "2-D"),
        (np.full((3, 3), 1.5), "integer"),
        (np.full((3, 3), -1), "negative"),
    ],
)
def test_bad_label_images_raise_one_line_masks_errors(labels: np.ndarray, problem: str) -> None:
    with pytest.raises(MasksError, match=problem) as info:
        validate_labels(labels, "masks.tif")
    assert str(info.value).startswith("masks.tif: ")
    assert "\n" not in str(info.value)


def test_integral_float_labels_are_accepted() -> None:
    out = validate_labels(np.array([[0.0, 2.0]]))
    assert out.dtype == np.int64 and out.tolist() == [[0, 2]]
