"""Boundaries between watershed regions (calcium_gnn.imaging.segmentation.boundaries): strengths,
merging the boundaries that are not membranes, and the 1 px membrane line, by hand."""

from __future__ import annotations

import numpy as np
import pytest

from calcium_gnn.errors import ConfigError
from calcium_gnn.imaging.segmentation import segment, segment_with_info
from calcium_gnn.imaging.segmentation.boundaries import (
    MERGE_AREA_FACTOR,
    MERGE_FRACTION,
    MERGE_FREE_CORE_Z,
    MERGE_FREE_FRACTION,
    SPLIT_AREA_FRACTION,
    SPLIT_FRACTION,
    boundary_strengths,
    carve_membranes,
    junction_zone,
    merge_weak_boundaries,
    noise_sd,
    ridge_image,
    split_lost_membranes,
)


def test_boundary_strengths_by_hand() -> None:
    # cells 1 | 2 side by side over 3 rows, cell 3 below them; 0 = background column on the right
    labels = np.array([[1, 1, 2, 2, 0],
                       [1, 1, 2, 2, 0],
                       [3, 3, 3, 3, 0]])
    ridge = np.zeros(labels.shape)
    ridge[:, 1] = 1.0  # the crest on the left of the 1 | 2 boundary
    ridge[0, 2] = 3.0
    i, j, c, n = boundary_strengths(labels, ridge)
    assert i.tolist() == [1, 1, 2] and j.tolist() == [2, 3, 3]
    # 1 | 2: pairs (row 0: max(1, 3) = 3) and (row 1: max(1, 0) = 1); 1 / 3 (rows 1 and 2):
    # max(0, 0), max(1, 0); 2 / 3: max(0, 0) twice; boundaries with the background are not listed
    assert c.tolist() == [2.0, 0.5, 0.0] and n.tolist() == [2, 2, 2]
    empty = boundary_strengths(np.ones((3, 3), dtype=np.int32), ridge[:3, :3])
    assert all(len(a) == 0 for a in empty)


def test_junction_zone_and_core_strength_by_hand() -> None:
    # cells 1 | 2 over 5 rows, cell 3 below them: the 3 x 3 windows of rows 4-5, cols 2-3 hold all three
    labels = np.zeros((9, 6), dtype=np.int32)
    labels[:5, :3], labels[:5, 3:], labels[5:, :] = 1, 2, 3
    zone = junction_zone(labels)
    assert zone[3:7, 1:5].all() and zone.sum() == 16  # those 4 junction pixels and 1 px around them
    ridge = np.zeros(labels.shape)
    ridge[:, 2] = 1.0  # the crest on the left of the 1 | 2 boundary (5 pairs)
    ridge[3:5, 2] = 4.0  # brighter where it meets the junction
    i, j, c, n = boundary_strengths(labels, ridge)
    _, _, core, n_core = boundary_strengths(labels, ridge, exclude=zone)
    assert (i.tolist(), j.tolist()) == ([1, 1, 2], [2, 3, 3]) and n.tolist() == [5, 3, 3]
    assert n_core.tolist() == [3, 1, 1]  # the pairs away from the junctions
    assert c[0] == pytest.approx((3 * 1.0 + 2 * 4.0) / 5) and core[0] == 1.0  # rows 0-2 only
    assert c[1] == pytest.approx(4.0 / 3.0) and core[1] == 0.0  # 1 / 3: only column 0 is away
    # a boundary with no pair away from a junction keeps all of them
    _, _, everywhere, none_away = boundary_strengths(labels, ridge, exclude=np.ones(labels.shape, dtype=bool))
    assert np.array_equal(everywhere, c) and none_away.tolist() == [0, 0, 0]


def test_carve_membranes_leaves_the_membrane_line_as_background() -> None:
    labels = np.array([[1, 1, 2, 2, 0, 0],
                       [1, 1, 2, 2, 0, 0]])
    membrane = np.array([[0.0, 0.9, 0.5, 0.0, 0.0, 0.0],
                         [0.0, 0.2, 0.5, 0.0, 0.0, 0.0]])
    out = carve_membranes(labels, membrane)
    # row 0: the crest is in cell 1 (0.9 > 0.5), and the membrane covers the pixel across it too
    # (0.5 >= (0.9 + 0) / 2, cell 2's median being 0): a 2 px line; row 1: the crest is in cell 2, and
    # 0.2 < (0.5 + 0) / 2 leaves the pixel across it in cell 1; the background edge is untouched
    assert out.tolist() == [[1, 0, 0, 2, 0, 0], [1, 1, 0, 2, 0, 0]]
    assert labels[0, 1] == 1 and out.dtype == labels.dtype  # a new array
    membrane[0, 2] = 0.4  # under half the crest: a 1 px line there too
    assert carve_membranes(labels, membrane).tolist() == [[1, 0, 2, 2, 0, 0], [1, 1, 0, 2, 0, 0]]


def _grid_image(cells: int = 3, size: int = 20, weak: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A ``cells x cells`` tiling of ``size`` px squares with 1 px bright membranes (1.0) on a dark
    field; ``weak`` dims the membrane between the first two squares of the top row to that level.
    Returns (membrane image, the true labels with the membranes given to the square on their right /
    below, as a watershed would)."""
    side = cells * size
    image = np.zeros((side, side))
    image[::size, :] = image[:, ::size] = 1.0
    if weak is not None:
        image[1:size, size] = weak
    labels = (np.arange(side)[:, None] // size) * cells + np.arange(side)[None, :] // size + 1
    return image, labels.astype(np.int32)


def test_merge_removes_a_boundary_across_a_nucleus_and_keeps_the_membranes() -> None:
    image, labels = _grid_image()
    yy, xx = np.mgrid[: image.shape[0], : image.shape[1]]
    image[np.hypot(yy - 10, xx - 10) <= 6] = 0.6  # a wide nucleus in the first cell
    split = labels.copy()
    split[(labels == 1) & (xx >= 10)] = 10  # the watershed split the first cell across its nucleus
    merged, record = merge_weak_boundaries(split, image)
    assert merged.max() == 9 and record["cells_before_merge"] == 10 and record["boundaries_removed"] == 1
    assert np.array_equal(merged == merged[5, 5], labels == 1)  # the two halves are one cell again
    # a 1 px line of 1.0 smoothed by 1 px peaks at 1 / sqrt(2 pi) = 0.40; no noise: no floor
    assert record["membrane_strength"] == pytest.approx(0.4, abs=0.02)
    assert record["membrane_core_strength"] == pytest.approx(0.4, abs=0.02)
    assert record["merge_threshold"] == pytest.approx(MERGE_FRACTION * record["membrane_core_strength"])
    # nothing to merge: the true tiling stays as it is
    same, record = merge_weak_boundaries(labels, image)
    assert np.array_equal(same, labels) and record["boundaries_removed"] == 0


def _cut_ridge(image: np.ndarray, column: int, core: float) -> np.ndarray:
    """The ridge of ``_grid_image(cells=3, size=10)`` with a cut down ``column`` through the centre row
    of cells: ``core`` along it, the membranes' 1.0 on the two pairs next to each junction."""
    ridge = image.copy()
    ridge[10:20, column] = core
    ridge[[10, 11, 18, 19], column] = 1.0
    return ridge


def _strengths_of(
    labels: np.ndarray, ridge: np.ndarray, a: int, b: int
) -> tuple[float, float, int, int, np.ndarray]:
    """``(c, c', n, n')`` of the boundary between cells ``a < b``, and ``c`` of every other boundary."""
    i, j, c, n = boundary_strengths(labels, ridge)
    _, _, core, n_core = boundary_strengths(labels, ridge, exclude=junction_zone(labels))
    at = np.flatnonzero((i == a) & (j == b))[0]
    return float(c[at]), float(core[at]), int(n[at]), int(n_core[at]), np.delete(c, at)


def test_merge_judges_a_boundary_away_from_its_junctions() -> None:
    """A boundary drawn across a small cell's nucleus meets the membranes at its two ends and takes
    their crest there: on its whole length it looks like a faint membrane (mean 0.46 of the
    membranes, kept by the whole-boundary rule), away from the junctions it is no membrane (0.1)."""
    image, labels = _grid_image(cells=3, size=10)
    split = labels.copy()
    split[(labels == 5) & (np.arange(30)[None, :] >= 15)] = 10  # the centre cell cut at x = 14 | 15
    ridge = _cut_ridge(image, column=14, core=0.1)  # the membranes: 1.0
    c, core, _, _, others = _strengths_of(split, ridge, 5, 10)
    assert c == pytest.approx(0.46) and core == pytest.approx(0.1)
    assert c > MERGE_FRACTION * np.median(others)  # weak by its core strength only
    merged, record = merge_weak_boundaries(split, image, (image, ridge))
    assert record["boundaries_removed"] == 1 and np.array_equal(merged == merged[12, 12], labels == 5)


def test_merge_keeps_two_cells_behind_a_faint_membrane_unless_very_faint() -> None:
    # a membrane at 0.4 of the others: weak (< 0.45) but not very weak (>= 0.3), and the two
    # squares together are 2 > 1.5 typical cells: kept
    assert MERGE_FREE_FRACTION < 0.4 < MERGE_FRACTION and MERGE_AREA_FACTOR < 2.0
    image, labels = _grid_image(weak=0.4)
    kept, record = merge_weak_boundaries(labels, image)
    assert kept.max() == 9 and record["boundaries_removed"] == 0
    # at 0.1 of the others it is no membrane: merged whatever the size
    image, labels = _grid_image(weak=0.1)
    merged, record = merge_weak_boundaries(labels, image)
    assert merged.max() == 8 and record["boundaries_removed"] == 1


def test_merge_never_fuses_two_cells_that_a_membrane_separates_elsewhere() -> None:
    """The centre cell of a 3 x 3 grid of 20 px squares is cut across (a boundary with nothing under it)
    into a top half and a bottom half, and its membrane with the cell on its right is almost lost along
    the top half (0.1 of the others, a very weak contact). Merging the cut first and then the contact
    would fuse two true cells that the bottom half's membrane (1.0) still separates: the contact is kept
    (zoo members dev-743 and dev-1168 fused two cells so through contacts of 0.13-0.36 of the typical
    strength while their other membranes were at 0.58-0.96)."""
    image, labels = _grid_image(cells=3, size=20)
    image[21:30, 40] = 0.1  # the faint stretch between the top half and the right-hand cell
    cut = labels.copy()
    cut[(labels == 5) & (np.arange(60)[:, None] >= 30)] = 10  # the bottom half of the centre cell
    merged, record = merge_weak_boundaries(cut, image, (image, image))
    assert record["boundaries_removed"] == 1 and record["boundaries_kept_apart"] == 1
    assert merged.max() == 9 and np.array_equal(merged == merged[25, 25], labels == 5)
    assert np.array_equal(merged == merged[25, 50], labels == 6)
    # with the bottom half's membrane as faint as the top's, nothing separates them: one region
    image[30:40, 40] = 0.1
    fused, record = merge_weak_boundaries(cut, image, (image, image))
    assert record["boundaries_kept_apart"] == 0 and fused.max() == 8
    assert np.array_equal(fused == fused[25, 25], (labels == 5) | (labels == 6))


def test_merge_removes_a_cut_across_a_large_cell_unless_the_noise_hides_it() -> None:
    """A large cell (two squares, 2 > 1.5 typical cells) cut across its nucleus: on its whole length the
    cut takes the crest of the membranes it meets (0.55 of them, not very weak), in its core it is 0.25
    of them, under ``f_0`` by more than its standard error in a clean image: merged whatever the size.
    Under white noise whose floor is 0.4 of the membranes, 0.25 is within two standard errors of ``f_0``
    (6 pairs in its core): a faint membrane, kept (zoo member dev-578: 19 large cells cut so, 91% ->
    99.5%)."""
    assert MERGE_FREE_FRACTION == 0.3 and MERGE_FREE_CORE_Z == 2.0 and MERGE_AREA_FACTOR < 2.0
    image, labels = _grid_image(cells=3, size=10)
    image[11:20, 20] = 0.0  # squares 5 and 6 are one cell ...
    cut = labels.copy()  # ... that the watershed cut at x = 19 | 20
    truth = labels.copy()
    truth[labels == 6] = 5
    ridge = _cut_ridge(image, column=19, core=0.25)
    c, core, n, n_core, _ = _strengths_of(cut, ridge, 5, 6)
    assert c == pytest.approx(0.55) and core == pytest.approx(0.25) and n == 10 and n_core == 6
    merged, record = merge_weak_boundaries(cut, image, (image, ridge))
    assert record["boundaries_removed"] == 1 and np.array_equal(merged == merged[15, 15], truth == 5)
    noisy = image + np.random.default_rng(0).normal(0.0, 0.4 / 4.0 * 2.0 * np.sqrt(np.pi), image.shape)
    kept, record = merge_weak_boundaries(cut, noisy, (image, ridge))
    assert record["boundaries_removed"] == 0 and kept.max() == 9


def test_split_restores_a_lost_membrane_and_nothing_else() -> None:
    """Coarse labels that flooded the first two squares into one region; the finer watershed draws
    their membrane, a cut across square 5 where there is none, and one along a bright line 4 px
    inside square 9 (a part of 4 x 20 px, under a_s of a cell)."""
    image, truth = _grid_image(cells=3, size=20)
    image[40:60, 44] = 1.0  # the line inside square 9 (x = 40..59)
    coarse = truth.copy()
    coarse[coarse == 2] = 1
    finer = truth.copy()
    finer[(truth == 5) & (np.arange(60)[None, :] >= 30)] = 10  # no membrane at x = 29 | 30
    finer[(truth == 9) & (np.arange(60)[None, :] < 45)] = 11  # the bright line at x = 44
    merged, record = merge_weak_boundaries(coarse, image)
    assert record["boundaries_removed"] == 0 and len(np.unique(merged)) == 8
    core_typical = float(record["membrane_core_strength"])
    split, split_record = split_lost_membranes(merged, finer, image, core_typical)
    assert split_record["boundaries_split"] == 1 and len(np.unique(split)) == 9 == split.max()
    assert split_record["split_threshold"] == pytest.approx(SPLIT_FRACTION * core_typical)
    assert 4 * 20 < SPLIT_AREA_FRACTION * 20 * 20  # the strip is too small to be a cell
    # the same tiling as the truth: each true square is one region, each region one true square
    pairs = np.unique(np.stack([truth.ravel(), split.ravel()]), axis=1)
    assert pairs.shape[1] == 9 and len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == 9
    # nothing to split: the labels come back as they were
    same, none = split_lost_membranes(truth, truth, image, core_typical)
    assert none["boundaries_split"] == 0 and np.array_equal(same, truth)


def test_noise_sd_and_ridge_image() -> None:
    rng = np.random.default_rng(0)
    assert noise_sd(rng.normal(0.0, 0.1, (200, 200))) == pytest.approx(0.1, rel=0.05)
    assert noise_sd(np.zeros((5, 5))) == 0.0
    image, _ = _grid_image()
    smooth, ridge = ridge_image(image)
    assert smooth.shape == ridge.shape == image.shape
    assert ridge[5, 20] > 0.3 and ridge[5, 10] == pytest.approx(0.0, abs=1e-9)  # membrane vs cell interior


def test_merge_and_membrane_line_options() -> None:
    image, truth = _grid_image(cells=4)
    auto = segment_with_info(image).info  # preset auto: both on
    assert auto["merge"] is True and auto["membrane_line"] is True and "boundaries_removed" in auto
    assert auto["boundaries_split"] == 0 and auto["split_threshold"] > auto["merge_threshold"]
    plain = segment_with_info(image, merge=False, membrane_line=False)
    assert "boundaries_removed" not in plain.info and not (plain.labels == 0).any()
    lined = segment(image, merge=False)
    assert (lined == 0).any() and lined.max() == plain.labels.max() == 16
    assert segment_with_info(image, preset="epitools").info["merge"] is False
    with pytest.raises(ConfigError, match=r"^segmentation\.merge: must be true or false"):
        segment(image, merge="yes")
    with pytest.raises(ConfigError, match=r"^segmentation\.membrane_line"):
        segment(image, membrane_line=1)
