"""Linear interpolation of frames and the train/test split in time."""

from __future__ import annotations

import pytest
import torch

from calcium_gnn.errors import ConfigError
from calcium_gnn.physics.interpolation import (
    DEFAULT_TRAIN_FRACTION,
    interpolate_frames,
    interpolate_times,
    time_split,
)


def test_time_split_paper_default():
    train, test = time_split(361)
    assert (train, test) == (slice(0, 211), slice(211, 361))
    assert DEFAULT_TRAIN_FRACTION == pytest.approx(2110 / 3610)
    # 211 training frames interpolated 10x: 2101 points, 2100 steps; 150 test frames
    assert interpolate_frames(torch.zeros(1, 211), 10).shape == (1, 2101)


def test_time_split_other_fractions():
    assert time_split(10, 0.5) == (slice(0, 5), slice(5, 10))
    assert time_split(10, 1.0) == (slice(0, 10), slice(10, 10))


@pytest.mark.parametrize("fraction", [0.0, -0.5, 1.5, 0.05])
def test_time_split_rejects_bad_fraction(fraction):
    with pytest.raises(ConfigError, match="train_fraction"):
        time_split(10, fraction)


def test_interpolate_frames_by_hand():
    x = torch.tensor([[0.0, 1.0, 3.0], [2.0, 2.0, -2.0]])
    out = interpolate_frames(x, 2)
    torch.testing.assert_close(out, torch.tensor([[0.0, 0.5, 1.0, 2.0, 3.0], [2.0, 2.0, 2.0, 0.0, -2.0]]))
    assert torch.equal(interpolate_frames(x, 1), x)
    torch.testing.assert_close(
        interpolate_times(torch.tensor([0.0, 10.0]), 4), torch.tensor([0.0, 2.5, 5, 7.5, 10])
    )
    # frames land exactly on points m * factor
    y = torch.rand(3, 7, dtype=torch.float64)
    assert torch.equal(interpolate_frames(y, 5)[:, ::5], y)


@pytest.mark.parametrize("factor", [0, -2, 1.5, True])
def test_interpolate_rejects_bad_factor(factor):
    with pytest.raises(ConfigError, match="interpolation_factor"):
        interpolate_frames(torch.zeros(2, 3), factor)
