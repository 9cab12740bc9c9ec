"""Peak detection and matching on hand-made traces with known peaks."""

from __future__ import annotations

import numpy as np
import pytest

from calcium_gnn.errors import ConfigError
from calcium_gnn.evaluation.spikes import (
    SpikeCounts,
    SpikeRule,
    detect_spikes,
    frame_interval,
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
        ({"min_distance_frames": 2.5}, "spikes.min_distance_frames"),
        ({"min_distance_s": 0.0}, "spikes.min_distance_s"),
        ({"tolerance_s": -1.0}, "spikes.tolerance_s"),
        ({"tolerance_s": float("nan")}, "spikes.tolerance_s"),
        ({"tolerance_frames": -1.0}, "spikes.tolerance_frames"),
        ({"tolerance_frames": 0.5}, "spikes.tolerance_frames"),
        ({"tolerance_frames": 3.0, "tolerance_s": 30.0}, "spikes.tolerance"),
        ({"min_distance_frames": 3, "min_distance_s": 30.0}, "spikes.min_distance"),
    ],
)
def test_bad_rule_is_a_config_error(kwargs, key):
    with pytest.raises(ConfigError, match=f"^{key}:"):
        SpikeRule(**kwargs)


# -- time rules at any frame interval -------------------------------------------------------------

#: one peak train in frames: observed peaks, and simulated ones 1, 3, 0 and 30 frames off
OBSERVED_PEAKS = [20, 60, 100, 140]
SIMULATED_PEAKS = [21, 63, 100, 170]


def _peak_train(dt: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = 200
    observed = np.stack([_bumps(n, OBSERVED_PEAKS, [1.0] * 4)])
    simulated = np.stack([_bumps(n, SIMULATED_PEAKS, [1.0] * 4)])
    return observed, simulated, np.arange(n) * dt


@pytest.mark.parametrize("dt", [0.5, 0.1, 10.0, 20.0])
def test_the_same_peak_train_matches_the_same_at_any_frame_interval(dt):
    # default rule: 3 frames. The former absolute rule (30 s) matched all four pairs at 0.5 s frames
    # (60 frames of tolerance) and only the 0- and 1-frame pairs at 20 s frames (1.5 frames).
    observed, simulated, t = _peak_train(dt)
    counts = spike_counts_per_cell(observed, simulated, t, [0])[0]
    assert (counts.tp, counts.fp, counts.fn) == (3, 1, 1)
    assert sorted(round(e / dt, 9) for e in counts.timing_errors_s) == [0.0, 1.0, 3.0]


def test_an_absolute_tolerance_in_seconds_depends_on_the_frame_interval():
    # the same rule in seconds (30 s) means 60 frames at 0.5 s and 1.5 frames at 20 s: that is what
    # the user asked for, and it is converted with the traces' own dt
    rule = SpikeRule(tolerance_s=30.0)
    results = {}
    for dt in (0.5, 10.0, 20.0):
        observed, simulated, t = _peak_train(dt)
        c = spike_counts_per_cell(observed, simulated, t, [0], rule)[0]
        results[dt] = (c.tp, c.fp, c.fn)
    assert results == {0.5: (4, 0, 0), 10.0: (3, 1, 1), 20.0: (2, 2, 2)}


def test_the_default_rule_equals_the_former_30_s_rule_at_10_s_frames():
    observed, simulated, t = _peak_train(10.0)
    frames = spike_counts_per_cell(observed, simulated, t, [0])[0]
    seconds = spike_counts_per_cell(observed, simulated, t, [0], SpikeRule(tolerance_s=30.0))[0]
    assert frames == seconds
    assert SpikeRule().resolve(10.0).tolerance_s == 30.0
    assert SpikeRule().resolve(10.0).min_distance_s == 30.0


def test_a_tolerance_in_seconds_below_one_frame_is_refused_naming_dt():
    observed, simulated, t = _peak_train(10.0)
    refused = r"^spikes.tolerance_s: 5 s is below one frame interval \(dt = 10 s\)"
    with pytest.raises(ConfigError, match=refused):
        spike_counts_per_cell(observed, simulated, t, [0], SpikeRule(tolerance_s=5.0))
    # the same rule is fine at 1 s frames, and 0 (same frame only) is fine everywhere
    assert SpikeRule(tolerance_s=5.0).resolve(1.0).tolerance_frames == 5.0
    assert SpikeRule(tolerance_s=0.0).resolve(10.0).tolerance_frames == 0.0


def test_a_minimum_distance_in_seconds_is_converted_with_dt():
    rule = SpikeRule(min_distance_s=25.0)
    assert rule.min_distance_at(10.0) == 3  # at least 25 s apart: 3 frames
    assert rule.min_distance_at(0.5) == 50
    assert rule.min_distance_at(60.0) == 1  # shorter than a frame: no constraint beyond the grid
    # two peaks 2 frames apart: one survives at 10 s frames (20 s < 25 s), both at 20 s frames (40 s)
    trace = _bumps(40, [10, 12], [1.0, 0.9], width=0.5)
    assert detect_spikes(trace, rule, dt=10.0).tolist() == [10]
    assert detect_spikes(trace, rule, dt=20.0).tolist() == [10, 12]
    with pytest.raises(ValueError, match="frame interval dt"):
        detect_spikes(trace, rule)


def test_frame_interval_is_the_median_step_and_refuses_bad_times():
    assert frame_interval([0.0, 10.0, 20.0, 40.0, 50.0]) == 10.0  # one dropped frame
    with pytest.raises(ValueError, match="strictly increasing"):
        frame_interval([0.0, 10.0, 10.0])
    with pytest.raises(ValueError, match="at least two"):
        frame_interval([0.0])


def test_rule_is_recorded_with_its_values_in_frames_and_seconds():
    d = SpikeRule().as_dict()
    assert set(d) == {"rel_prominence", "range_percentiles", "min_distance_frames", "min_distance_s",
                      "tolerance_frames", "tolerance_s", "resolved"}
    assert isinstance(d["range_percentiles"], list)
    assert (d["tolerance_frames"], d["tolerance_s"], d["resolved"]) == (3.0, None, None)
    at_20 = SpikeRule(tolerance_s=30.0).as_dict(dt=20.0)
    assert at_20["tolerance_frames"] is None and at_20["tolerance_s"] == 30.0
    assert at_20["resolved"] == {"frame_interval_s": 20.0, "min_distance_frames": 3, "min_distance_s": 60.0,
                                 "tolerance_frames": 1.5, "tolerance_s": 30.0}
