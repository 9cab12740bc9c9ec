"""The paired held-out comparison: z and gain by hand, the rule, and what it refuses."""

from __future__ import annotations

import math

import pytest

from calcium_gnn.inference.held_out import BETTER_MIN_GAIN, BETTER_Z, paired_comparison


def test_z_and_gain_by_hand() -> None:
    reference, candidate = [1.0, 2.0, 3.0, 4.0], [0.5, 1.0, 2.0, 3.5]
    d = [0.5, 1.0, 1.0, 0.5]  # mean 0.75, sd sqrt(1/12)
    out = paired_comparison(reference, candidate)
    assert out.n_cells == 4
    assert out.z == pytest.approx(0.75 / (math.sqrt(sum((v - 0.75) ** 2 for v in d) / 3) / 2))
    assert out.gain == pytest.approx(1 - 7.0 / 10.0)
    assert out.better == (out.z > BETTER_Z and out.gain > BETTER_MIN_GAIN)
    assert out.better  # z = 5.2, gain 30 %
    assert paired_comparison(reference, candidate, 10.0, 9.9).gain == pytest.approx(0.01)
    assert not paired_comparison(reference, candidate, 10.0, 9.9).better  # a gain below 2 % is not enough


def test_a_worse_or_noisy_candidate_is_not_better() -> None:
    assert not paired_comparison([1.0, 1.0, 1.0], [1.1, 1.2, 1.3]).better
    noisy = paired_comparison([1.0, 1.0, 1.0, 1.0], [0.5, 1.4, 0.6, 1.3])  # 10 % lower, but z ~ 0.5
    assert noisy.gain == pytest.approx(0.05) and not noisy.better


def test_what_cannot_be_compared() -> None:
    assert paired_comparison([1.0], [0.5]) is None
    assert paired_comparison([0.0, 0.0], [0.0, 0.0]) is None
    with pytest.raises(ValueError, match="same cells"):
        paired_comparison([1.0, 2.0], [1.0])
