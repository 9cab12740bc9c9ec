"""Shared borders (Crofton estimate on the membrane midline) and the adjacency threshold."""

from __future__ import annotations

import math

import numpy as np
import pytest
import shapely

from calcium_gnn.errors import ConfigError
from calcium_gnn.graphs.adjacency import adjacent_pairs, close_gaps, shared_borders

CROFTON = math.pi / 8.0


def _blocks(gap: int, height: int = 10, width: int = 5) -> np.ndarray:
    """Cell 1 then ``gap`` background columns then cell 2, each ``width`` columns wide."""
    labels = np.zeros((height, 2 * width + gap), dtype=np.int32)
    labels[:, :width] = 1
    labels[:, width + gap :] = 2
    return labels


def test_vertical_border_length_by_hand() -> None:
    # 10 horizontal pixel pairs cross the border (spacing 1), 9 pairs on each diagonal (spacing 1/sqrt2)
    _, pairs, length = shared_borders(_blocks(0), max_gap=0)
    assert pairs.tolist() == [[0, 1]]
    assert length[0] == pytest.approx(CROFTON * (10 + 2 * 9 / math.sqrt(2)))


@pytest.mark.parametrize(("gap", "max_gap", "adjacent"), [(1, 2, True), (2, 2, True), (3, 2, False),
                                                          (2, 0, False), (3, 3, True), (1, 1, True)])
def test_membrane_gaps_up_to_max_gap_are_bridged(gap: int, max_gap: int, adjacent: bool) -> None:
    _, pairs, length = shared_borders(_blocks(gap), max_gap=max_gap)
    assert (pairs.shape[0] == 1) is adjacent
    if adjacent:  # measured on the midline: the same length as for touching blocks
        assert length[0] == pytest.approx(CROFTON * (10 + 2 * 9 / math.sqrt(2)))


def test_close_gaps_does_not_modify_its_input() -> None:
    labels = _blocks(2)
    before = labels.copy()
    closed = close_gaps(labels, 2)
    np.testing.assert_array_equal(labels, before)
    assert (closed[:, 5:7] > 0).all()


def test_short_borders_fall_below_the_threshold() -> None:
    labels = np.zeros((20, 20), dtype=np.int32)
    labels[:10, :10] = 1
    labels[:10, 10:] = 2
    labels[10:, 7:13] = 3  # under the 1/2 border: touches each along 3 px
    _, pairs, length = shared_borders(labels, max_gap=0)
    lengths = {tuple(p): v for p, v in zip(pairs.tolist(), length, strict=True)}
    assert lengths[(0, 1)] > 5.0
    assert lengths[(0, 2)] < 5.0 and lengths[(1, 2)] < 5.0
    _, kept, _ = adjacent_pairs(labels, min_shared_border=5.0, max_gap=0)
    assert kept.tolist() == [[0, 1]]
    _, kept_all, _ = adjacent_pairs(labels, min_shared_border=0.0, max_gap=0)
    assert kept_all.tolist() == [[0, 1], [0, 2], [1, 2]]


@pytest.mark.parametrize("angle_deg", [0.0, 10.0, 22.5, 33.0, 45.0, 60.0, 77.0])
def test_oblique_border_length_within_crofton_bound(angle_deg: float) -> None:
    """A straight border through the centre of a 201 x 201 image at any angle, against shapely."""
    size = 201
    theta = math.radians(angle_deg)
    normal = np.array([-math.sin(theta), math.cos(theta)])
    yy, xx = np.mgrid[0:size, 0:size]
    side = (xx - 100.0) * normal[0] + (yy - 100.0) * normal[1]
    labels = np.where(side < 0, 1, 2).astype(np.int32)
    box = shapely.box(-0.5, -0.5, size - 0.5, size - 0.5)
    d = np.array([math.cos(theta), math.sin(theta)]) * 400
    true = shapely.LineString([(100 - d[0], 100 - d[1]), (100 + d[0], 100 + d[1])]).intersection(box).length
    _, _, length = shared_borders(labels, max_gap=0)
    assert abs(length[0] / true - 1.0) < 0.06


def test_no_cells_touching_gives_no_pairs() -> None:
    labels = np.zeros((20, 20), dtype=np.int32)
    labels[2:5, 2:5] = 1
    labels[12:15, 12:15] = 2
    cell_id, pairs, length = shared_borders(labels, max_gap=2)
    assert cell_id.tolist() == [1, 2] and pairs.shape == (0, 2) and length.shape == (0,)


@pytest.mark.parametrize(("key", "kwargs"), [("max_gap", {"max_gap": -1}),
                                             ("min_shared_border", {"min_shared_border": float("nan")})])
def test_bad_thresholds_name_the_config_key(key: str, kwargs: dict) -> None:
    with pytest.raises(ConfigError, match=f"^{key}: "):
        adjacent_pairs(_blocks(0), **kwargs)
