"""Fit-quality groups (paper section 4) on hand-made traces, one cell per group."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from calcium_gnn.errors import ConfigError
from calcium_gnn.evaluation.quality import GROUPS, QualityRule, quality_groups
from calcium_gnn.evaluation.spikes import SpikeRule, spike_counts_per_cell


def _pulses(n_frames: int) -> np.ndarray:
    frames = np.arange(n_frames)
    return 1.0 + sum(np.exp(-0.5 * ((frames - c) / 2.0) ** 2) for c in (15, 45, 75))


def test_one_cell_in_each_group():
    obs = _pulses(100)
    flat = np.full_like(obs, obs.mean())
    observed = np.stack([obs, obs, obs, obs])
    simulated = np.stack([
        obs + 0.01,        # 1: right shape, right level
        flat,              # 2: right level (bias 0) but no peak
        obs + 2.0,         # 3: every peak, level far off (bias = 2 / robust range ~ 2)
        flat + 2.0,        # other: neither
    ])
    t = np.arange(100) * 10.0
    counts = spike_counts_per_cell(observed, simulated, t, range(4), SpikeRule(tolerance_s=20.0))
    groups, per_cell = quality_groups(torch.tensor(observed), torch.tensor(simulated), [0, 1, 2, 3], counts)
    assert groups == {GROUPS[0]: [0], GROUPS[1]: [1], GROUPS[2]: [2], GROUPS[3]: [3]}
    assert per_cell[0]["correlation"] == pytest.approx(1.0)
    assert per_cell[1]["correlation"] is None  # constant simulation
    assert per_cell[2]["spike_recall"] == 1.0 and not per_cell[2]["magnitude_ok"]


def test_a_cell_without_observed_peaks():
    observed = np.full((1, 50), 1.0) + np.linspace(0, 0.1, 50)
    counts = spike_counts_per_cell(observed, observed.copy(), np.arange(50.0), [0])
    groups, _ = quality_groups(torch.tensor(observed), torch.tensor(observed), [0], counts)
    assert groups[GROUPS[0]] == [0]  # no peak observed, none simulated: peaks pass


def test_rule_statement_and_validation():
    rule = QualityRule(min_correlation=0.7)
    assert "Pearson r >= 0.7" in rule.statement()
    assert rule.as_dict()["statement"] == rule.statement()
    with pytest.raises(ConfigError, match="^quality.min_spike_recall:"):
        QualityRule(min_spike_recall=1.5)
