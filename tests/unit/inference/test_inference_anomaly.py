"""Robust z-scores and the anomaly rule, with answers worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from calcium_gnn.errors import ConfigError
from calcium_gnn.evaluation.model_figures import plot_anomaly_map
from calcium_gnn.inference.anomaly import (
    AnomalyRule,
    anomaly_scores,
    residual_level,
    robust_z,
)


def test_robust_z_by_hand() -> None:
    # values 1, 2, 3, 4, 100: median 3, |v - 3| = 2, 1, 0, 1, 97 -> MAD 1
    v = torch.tensor([1.0, 2.0, 3.0, 4.0, 100.0])
    z = robust_z(v, torch.ones(5, dtype=torch.bool), consistency=0.6745)
    expected = 0.6745 * (v.double() - 3.0)
    assert torch.allclose(z, expected)


def test_robust_z_ignores_cells_outside_the_mask() -> None:
    v = torch.tensor([1.0, 2.0, 3.0, 1000.0])
    mask = torch.tensor([True, True, True, False])
    z = robust_z(v, mask)
    assert math.isnan(float(z[3]))
    # median 2, MAD 1
    assert torch.allclose(z[:3], 0.6745 * torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64))


def test_robust_z_mad_zero_falls_back_to_mean_absolute_deviation() -> None:
    # 4 equal values and one outlier: MAD = 0; mean |v - mean| = (4*2 + 8)/5 = 3.2
    v = torch.tensor([0.0, 0.0, 0.0, 0.0, 10.0])
    z = robust_z(v, torch.ones(5, dtype=torch.bool))
    scale = 3.2 * math.sqrt(math.pi / 2)
    assert float(z[4]) == pytest.approx(10.0 / scale)
    assert float(z[0]) == 0.0


def test_robust_z_constant_values_score_zero() -> None:
    z = robust_z(torch.full((4,), 2.0), torch.ones(4, dtype=torch.bool))
    assert torch.equal(z, torch.zeros(4, dtype=torch.float64))


def test_anomaly_scores_flag_gamma_outlier_and_high_residual_only() -> None:
    n, t = 9, 50
    gen = torch.Generator().manual_seed(0)
    gamma = torch.tensor([5e-4, 5.1e-4, 4.9e-4, 5.2e-4, 4.8e-4, 5e-4, 5.05e-4, 4.95e-4, 5e-3])
    residuals = 0.01 * torch.randn(n, t, generator=gen, dtype=torch.float64)
    residuals[2] *= 20.0  # cell 2 does not follow the law
    residuals[5] *= 0.05  # cell 5 fits unusually well: not an anomaly (one-sided residual test)
    cells = torch.ones(n, dtype=torch.bool)
    scores = anomaly_scores(gamma, residuals, cells, AnomalyRule(threshold=3.5))
    assert scores.flagged.nonzero().reshape(-1).tolist() == [2, 8]
    assert float(scores.z_residual[5]) < -3.5
    assert float(scores.score[5]) < 3.5


def test_residual_level_is_log_rms() -> None:
    r = torch.tensor([[3.0, -3.0], [0.0, 0.0]])
    level = residual_level(r)
    assert float(level[0]) == pytest.approx(math.log(3.0))
    assert math.isfinite(float(level[1]))


def test_anomaly_results_and_bad_rule() -> None:
    gamma = torch.tensor([1.0, 1.1, 0.9, 1.0, 9.0])
    scores = anomaly_scores(gamma, torch.ones(5, 3), torch.tensor([True, True, True, True, True]))
    out = scores.as_results(torch.tensor([11, 12, 13, 14, 15]), torch.ones(5, dtype=torch.bool))
    assert out["flagged"] == [15]
    assert set(out["per_cell"]) == {"11", "12", "13", "14", "15"}
    assert "3.5" in out["rule"]["statement"]
    with pytest.raises(ConfigError, match="model.anomaly_threshold"):
        AnomalyRule(threshold=-1.0)


@pytest.mark.parametrize("with_labels", [True, False])
def test_plot_anomaly_map_writes_png(tmp_path, with_labels: bool) -> None:
    gamma = torch.tensor([1.0, 1.1, 0.9, 9.0])
    scores = anomaly_scores(gamma, torch.ones(4, 3), torch.tensor([True, True, True, True]))
    labels = np.array([[1, 1, 2, 2], [3, 3, 4, 4], [0, 3, 4, 0]]) if with_labels else None
    pos = torch.tensor([[0.5, 0.0], [2.5, 0.0], [0.5, 1.5], [2.5, 1.5]])
    path = plot_anomaly_map(scores, torch.tensor([1, 2, 3, 4]), pos, tmp_path / "map.png", labels=labels)
    assert path.exists() and path.stat().st_size > 1000
