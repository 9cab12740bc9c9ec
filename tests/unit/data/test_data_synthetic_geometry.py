"""The tiling: exact polygon geometry (l_ij, u_ij, areas), label image and membranes."""

from __future__ import annotations

import numpy as np
import pytest
import shapely

from calcium_gnn.data.synthetic_geometry import (
    image_box,
    make_tiling,
    rasterise,
    shared_borders,
    voronoi_cells,
)
from calcium_gnn.errors import ConfigError


def test_two_cells_by_hand():
    # seeds at x = 10 and x = 22 (y = 16) in a 32 x 32 image [-0.5, 31.5]^2: the Voronoi edge is x = 16
    seeds = np.array([[10.0, 16.0], [22.0, 16.0]])
    polygons = voronoi_cells(seeds, 32)
    pairs, lengths = shared_borders(polygons)
    np.testing.assert_array_equal(pairs, [[0], [1]])
    assert lengths[0] == pytest.approx(32.0)
    centroids = shapely.get_coordinates(shapely.centroid(polygons))
    np.testing.assert_allclose(centroids, [[7.75, 15.5], [23.75, 15.5]])
    labels = rasterise(seeds, 32, membrane_width=2.0)
    assert np.all(labels[:, 16] == 0)  # pixel centres on the midline (distance 0 < 1)
    assert np.all(labels[:, :16] == 1) and np.all(labels[:, 17:] == 2)  # distance 1 is not < 1


@pytest.fixture(scope="module")
def tiling():
    return make_tiling(40, 200, np.random.default_rng(3))


def test_label_image(tiling):
    labels = tiling.labels
    assert labels.shape == (200, 200) and labels.dtype == np.int32
    np.testing.assert_array_equal(np.unique(labels), np.arange(41))
    _, all_lengths = shared_borders(tiling.polygons)
    expected = all_lengths.sum() * 2.0  # membrane_width 2 px along every internal Voronoi edge
    assert (labels == 0).sum() == pytest.approx(expected, rel=0.15)


def test_polygons_tile_the_image_and_perimeters_add_up(tiling):
    assert tiling.areas.sum() == pytest.approx(200.0**2)
    assert shapely.area(shapely.union_all(tiling.polygons)) == pytest.approx(200.0**2)
    # perimeter_i = sum_j l_ij (all neighbours) + its length on the image border
    pairs, lengths = shared_borders(tiling.polygons)
    shared = np.bincount(pairs.ravel(), weights=np.concatenate([lengths, lengths]), minlength=40)
    on_border = shapely.length(
        shapely.intersection(shapely.boundary(tiling.polygons), shapely.boundary(image_box(200)).buffer(1e-6))
    )
    np.testing.assert_allclose(shared + on_border, shapely.length(tiling.polygons), rtol=1e-6)


def test_edges_u_and_l(tiling):
    ei = tiling.edge_index
    assert ei.dtype == np.int64 and np.all(ei[0] < ei[1])
    keys = ei[0] * 40 + ei[1]
    assert np.all(np.diff(keys) > 0)  # sorted, no duplicates
    assert np.all(tiling.l >= 5.0)
    np.testing.assert_allclose(
        tiling.u, np.linalg.norm(tiling.centroids[ei[0]] - tiling.centroids[ei[1]], axis=1)
    )
    for (i, j), l in zip(ei.T[:10], tiling.l[:10], strict=True):
        assert shapely.intersection(tiling.polygons[i], tiling.polygons[j]).length == pytest.approx(
            l, rel=1e-6
        )


def test_centroids_agree_with_label_regions(tiling):
    rows, cols = np.nonzero(tiling.labels)
    ids = tiling.labels[rows, cols] - 1
    counts = np.bincount(ids, minlength=40)
    region = np.column_stack([np.bincount(ids, cols, 40), np.bincount(ids, rows, 40)]) / counts[:, None]
    assert np.abs(region - tiling.centroids).max() < 1.5


def test_touches_edge(tiling):
    labels = tiling.labels
    on_frame = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    from_labels = np.isin(np.arange(1, 41), on_frame)
    assert tiling.touches_edge.sum() >= 10
    assert np.mean(from_labels == tiling.touches_edge) >= 0.95  # tiny corner contacts may differ


def test_too_many_cells_is_a_config_error():
    with pytest.raises(ConfigError, match="n_cells"):
        make_tiling(400, 40, np.random.default_rng(0))
