"""voronoi_labels / clipped_regions: a 3 x 3 grid of centroids worked out by hand (spacing 10 px,
offset 0.3 px so no pixel centre sits on a bisector); the clip rule, frame clipping, refusals."""

from __future__ import annotations

import numpy as np
import pytest

from calcium_gnn.errors import ConfigError, MasksError
from calcium_gnn.graphs.voronoi import (
    clipped_regions,
    default_clip,
    median_neighbour_distance,
    voronoi_labels,
)

GRID = np.array([(5.3 + 10 * i, 5.3 + 10 * j) for j in range(3) for i in range(3)])  # (x, y), row-major
CENTRE = 4  # the middle cell, label 5: its region is the square x, y in [10.3, 20.3]


def test_grid_tessellation_by_hand() -> None:
    tess = voronoi_labels(GRID, (30, 30))
    assert median_neighbour_distance(GRID) == pytest.approx(10.0)
    assert tess.clip == pytest.approx(15.0) == default_clip(GRID)
    assert tess.clip_rule == "1.5 x median nearest-neighbour distance"
    rows, cols = np.mgrid[0:30, 0:30]
    want = 1 + (cols > 10.3).astype(int) + (cols > 20.3) + 3 * ((rows > 10.3).astype(int) + (rows > 20.3))
    np.testing.assert_array_equal(tess.labels, want)
    assert (tess.labels == 5).sum() == 100  # columns and rows 11..20
    # every outer cell's region is unbounded; the middle one's farthest vertex is 5 sqrt(2) < 15 away
    assert tess.clipped.tolist() == [i != CENTRE for i in range(9)]


def test_clip_distance_makes_background_and_clips_the_middle_cell() -> None:
    # 7.2 px: the corner pixel (0, 0) is 5.3 sqrt(2) = 7.50 px from its centroid -> background; the middle
    # cell's vertices are 7.07 px away -> whole
    tess = voronoi_labels(GRID, (30, 30), clip=7.2)
    assert tess.labels[0, 0] == 0 and tess.labels[1, 1] == 1 and tess.clip_rule == "given"
    assert (tess.labels == 5).sum() == 100 and not tess.clipped[CENTRE]
    tighter = voronoi_labels(GRID, (30, 30), clip=6.0)
    assert tighter.clipped.all() and (tighter.labels == 5).sum() < 100


def test_frame_clipping_is_reported() -> None:
    # the middle cell's vertices reach y = 20.3, beyond a 19-row image (its last pixel edge is 18.5)
    assert clipped_regions(GRID, 100.0, (19, 30))[CENTRE]
    assert not clipped_regions(GRID, 100.0, (21, 30))[CENTRE]


def test_shape_from_centroids_and_clip_and_given_ids() -> None:
    ids = np.arange(9) * 10 + 3
    tess = voronoi_labels(GRID, clip=15.0, ids=ids)
    assert tess.labels.shape == (41, 41)  # up to 25.3 + 15
    assert set(np.unique(tess.labels).tolist()) == {0, *ids.tolist()}
    assert tess.labels[15, 15] == ids[CENTRE]


@pytest.mark.parametrize("points", [[(1.0, 1.0), (5.0, 5.0)], [(1.0, 1.0), (5.0, 5.0), (9.0, 9.0)]])
def test_few_or_collinear_centroids_are_all_clipped(points) -> None:
    tess = voronoi_labels(np.array(points), (12, 12))
    assert tess.clipped.all()


def test_refusals() -> None:
    with pytest.raises(MasksError, match="at least 2 centroids"):
        voronoi_labels(np.array([[1.0, 1.0]]), (5, 5))
    with pytest.raises(MasksError, match=r"cell 7 at \(5\.3, 25\.3\) lies outside the 20 x 30 image"):
        voronoi_labels(GRID, (20, 30), source="c.csv")
    with pytest.raises(ConfigError, match="data.voronoi_clip"):
        voronoi_labels(GRID, (30, 30), clip=0)
    with pytest.raises(ConfigError, match="data.image_shape"):
        voronoi_labels(GRID, (30,))
    with pytest.raises(MasksError, match="distinct integers"):
        voronoi_labels(GRID, (30, 30), ids=np.ones(9))
    squeezed = np.array([[5.0, 5.0], [5.3, 5.0], [5.6, 5.0], [15.0, 15.0]])  # the middle one owns no centre
    with pytest.raises(MasksError, match="cell 2 got no pixel"):
        voronoi_labels(squeezed, (20, 20))
