"""Per-cell MSE, correlation and relative bias on tiny hand-made traces."""

from __future__ import annotations

import math

import pytest
import torch

from calcium_gnn.evaluation.metrics import mse_per_cell, overall_mse, pearson_per_cell, relative_bias_per_cell


def test_mse_per_cell_by_hand():
    observed = torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    simulated = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 2.0, 3.0, 1.0]])
    per_cell = mse_per_cell(observed, simulated, slice(1, 4))
    assert torch.allclose(per_cell, torch.tensor([1.0, 5.0 / 3.0]))
    assert overall_mse(per_cell, torch.tensor([True, True])) == pytest.approx(4.0 / 3.0)
    assert overall_mse(per_cell, torch.tensor([False, True])) == pytest.approx(5.0 / 3.0)
    assert math.isnan(overall_mse(per_cell, torch.tensor([False, False])))
    # all frames, and an index tensor of frames
    assert mse_per_cell(observed, simulated)[1] == pytest.approx(5.0 / 4.0)
    assert mse_per_cell(observed, simulated, torch.tensor([0, 2]))[1] == pytest.approx(2.0)


def test_mse_rejects_mismatched_or_empty():
    with pytest.raises(ValueError):
        mse_per_cell(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError):
        mse_per_cell(torch.zeros(2, 3), torch.zeros(2, 3), slice(3, 3))


def test_pearson():
    x = torch.tensor([[0.0, 1.0, 2.0, 5.0], [1.0, 2.0, 1.0, 2.0], [3.0, 3.0, 3.0, 3.0]])
    y = torch.stack([2 * x[0] + 1, -x[1], x[1]])
    r = pearson_per_cell(x, y)
    assert r[0] == pytest.approx(1.0) and r[1] == pytest.approx(-1.0)
    assert math.isnan(float(r[2]))  # constant observed trace


def test_relative_bias():
    x = torch.arange(101, dtype=torch.float64).reshape(1, -1)  # P5 = 5, P95 = 95: range 90
    assert float(relative_bias_per_cell(x, x + 9.0)[0]) == pytest.approx(0.1)
    assert float(relative_bias_per_cell(x, x - 45.0)[0]) == pytest.approx(-0.5)
    assert math.isnan(float(relative_bias_per_cell(torch.ones(1, 5), torch.ones(1, 5))[0]))
