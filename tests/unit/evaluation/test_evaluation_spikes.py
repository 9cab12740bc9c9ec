"""Peak detection and matching on hand-made traces with known peaks."""

from __future__ import annotations

import numpy as np
import pytest

from calcium_gnn.errors import ConfigError
from calcium_gnn.evaluation.spikes import (
    SpikeCounts,
    SpikeRule,
    detect_spikes,
    match_spikes,
    pool,
    spike_counts_per_cell,
)


def _bumps(n_frames: int, at: list[int], heights: list[float], width: float = 1.5) -> np.ndarray:
    frames = np.arange(n_frames)
    return sum((h * np.exp(-0.5 * ((frames - a) / width) ** 2) for a, h in zip(at, heights, strict=True)),
               np.zeros(n_frames))


def test_detects_the_big_peaks_and_ignores_a_small_one():
    trace = _bumps(90, [10, 30, 50, 70], [1.0, 0.8, 1.2, 0.05])
    assert detect_spikes(trace, SpikeRule(rel_prominence=0.25)).tolist() == [10, 30, 50]
    # a low enough threshold finds the small one too
    assert detect_spikes(trace, SpikeRule(rel_prominence=0.01)).tolist() == [10, 30, 50, 70]


def test_constant_or_short_trace_has_no_peak():
    assert detect_spikes(np.full(50, 3.0)).size == 0
    assert detect_spikes(np.array([0.0, 1.0])).size == 0


def test_matching_counts_and_timing():
    counts = match_spikes(np.array([100.0, 300.0, 500.0]), np.array([110.0, 290.0, 700.0]), tolerance_s=30.0)
    assert (counts.tp, counts.fp, counts.fn) == (2, 1, 1)
    assert counts.precision == pytest.approx(2 / 3)
    assert counts.recall == pytest.approx(2 / 3)
    assert counts.f1 == pytest.approx(2 / 3)
    assert sorted(counts.timing_errors_s) == [-10.0, 10.0]
    assert counts.median_timing_error_s == 0.0
    assert counts.as_dict()["median_abs_timing_error_s"] == 10.0


def test_matching_maximises_the_number_of_pairs():
    # nearest-first greedy would pair 12 with 10 and leave 0 and 22 alone; the optimum pairs both
    counts = match_spikes(np.array([0.0, 12.0]), np.array([10.0, 22.0]), tolerance_s=10.0)
    assert counts.tp == 2 and counts.fp == 0 and counts.fn == 0


def test_no_peaks_anywhere_gives_undefined_scores():
    counts = match_spikes(np.array([]), np.array([]), tolerance_s=5.0)
    assert counts.precision is None and counts.recall is None and counts.f1 is None
    assert counts.median_timing_error_s is None
    only_simulated = match_spikes(np.array([]), np.array([3.0]), tolerance_s=5.0)
    assert only_simulated.precision == 0.0 and only_simulated.recall is None and only_simulated.f1 == 0.0


def test_per_cell_and_pooled_counts():
    t = np.arange(80) * 10.0
    observed = np.stack([_bumps(80, [10, 40], [1, 1]), _bumps(80, [20, 60], [1, 1])])
    simulated = np.stack([_bumps(80, [11, 70], [1, 1]), _bumps(80, [20, 60], [1, 1])])
    per_cell = spike_counts_per_cell(observed, simulated, t, [0, 1], SpikeRule(tolerance_s=15.0))
    assert (per_cell[0].tp, per_cell[0].fp, per_cell[0].fn) == (1, 1, 1)
    assert per_cell[0].timing_errors_s == [10.0]
    assert (per_cell[1].tp, per_cell[1].fp, per_cell[1].fn) == (2, 0, 0)
    total = pool(per_cell.values())
    assert isinstance(total, SpikeCounts)
    assert (total.tp, total.fp, total.fn) == (3, 1, 1)
    assert total.precision == 0.75 and total.recall == 0.75


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"rel_prominence": 0.0}, "spikes.rel_prominence"),
        ({"range_percentiles": (90.0, 10.0)}, "spikes.range_percentiles"),
        ({"min_distance_frames": 0}, "spikes.min_distance_frames"),
        ({"tolerance_s": -1.0}, "spikes.tolerance_s"),
    ],
)
def test_bad_rule_is_a_config_error(kwargs, key):
    with pytest.raises(ConfigError, match=f"^{key}:"):
        SpikeRule(**kwargs)


def test_rule_is_recorded_as_a_dict():
    d = SpikeRule().as_dict()
    assert set(d) == {"rel_prominence", "range_percentiles", "min_distance_frames", "tolerance_s"}
    assert isinstance(d["range_percentiles"], list)
