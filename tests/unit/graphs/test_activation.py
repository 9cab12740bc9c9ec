"""activation_times on analytic traces: exact sub-frame crossings, noise, cells that never activate."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from calcium_gnn.errors import CalciumGNNError, ConfigError, GraphError
from calcium_gnn.graphs.activation import (
    MIN_RISE_NOISE,
    ActivationRule,
    activation_times,
    crossing_slopes,
    timing_se,
    trace_noise,
)

DT = 2.0
T = np.arange(100) * DT  # 0 .. 198 s


def ramp(t: np.ndarray, start: float, width: float, base: float = 1.0, height: float = 2.0) -> np.ndarray:
    """``base`` until ``start``, linear up to ``base + height`` over ``width`` s, then flat."""
    return base + height * np.clip((t - start) / width, 0.0, 1.0)


def test_ramps_cross_exactly_between_frames():
    # width 3 frames: the frames on both sides of the crossing lie on the ramp, so the linear
    # interpolation is exact: tau = start + f * width
    starts = np.array([20.3, 41.7, 100.0, 150.9])
    x = np.stack([ramp(T, s, 3 * DT) for s in starts])
    np.testing.assert_allclose(activation_times(x, T), starts + 0.5 * 3 * DT, atol=1e-9)
    at_30 = activation_times(x, T, threshold_fraction=0.3)
    np.testing.assert_allclose(at_30, starts + 0.3 * 3 * DT, atol=1e-9)


def test_after_ignores_earlier_events_and_takes_the_baseline_before_it():
    early = ramp(T, 10.0, 3 * DT) - 2.0 * np.clip((T - 30.0) / (3 * DT), 0.0, 1.0)  # an event, 10-36 s
    x = np.stack([early + ramp(T, 80.5, 4 * DT, base=0.0, height=3.0)])
    # whole recording: baseline 1, peak 4, theta 2.5: the first event crosses it 3/4 up its ramp
    assert activation_times(x, T)[0] == pytest.approx(10.0 + 0.75 * 6.0, abs=1e-9)
    # after 60 s: baseline 1.0 (median of the frames up to 60 s), peak 4.0, theta 2.5
    assert activation_times(x, T, after=60.0)[0] == pytest.approx(80.5 + 4.0, abs=1e-9)
    rule = ActivationRule(after=60.0).as_dict()
    assert rule["after_s"] == 60.0 and rule["min_rise_noise"] == MIN_RISE_NOISE and "statement" in rule


def test_cells_that_never_activate_are_nan():
    rng = np.random.default_rng(1)
    flat = np.full(T.size, 0.7)
    falling = 2.0 - T / T[-1]
    noise_only = 0.5 + 0.05 * rng.standard_normal((40, T.size))
    small = ramp(T, 50.0, 10.0, height=0.1)
    x = np.vstack([flat, falling, small, noise_only])
    out = activation_times(x, T)
    assert np.isnan(out[:2]).all()  # no rise at all
    assert np.isfinite(out[2])  # a clean rise counts, however small ...
    assert np.isnan(activation_times(x[2:3], T, min_rise=0.2)[0])  # ... unless below the floor
    assert np.isnan(out[3:]).all()  # noise alone never clears 5 sigma
    # rises that end before `after` do not count
    assert np.isnan(activation_times(ramp(T, 10.0, 6.0)[None], T, after=100.0)[0])


def test_noise_robustness_and_the_noise_estimate():
    rng = np.random.default_rng(2)
    sigma, n = 0.05, 60
    starts = rng.uniform(40.0, 150.0, size=n)
    clean = np.stack([ramp(T, s, 10 * DT) for s in starts])  # rise of 2 = 40 sigma over 10 frames
    noisy = clean + sigma * rng.standard_normal(clean.shape)
    estimate = trace_noise(noisy)
    assert np.median(estimate) == pytest.approx(sigma, rel=0.1)
    out = activation_times(noisy, T)
    assert np.isfinite(out).all()
    # timing noise sigma / slope = 0.25 frame, and the noisy peak raises theta by about 0.3 frame
    err = np.abs(out - (starts + 10 * DT / 2)) / DT
    assert np.median(err) < 0.5 and err.max() < 1.0  # frames


def test_a_noise_excursion_that_falls_back_is_skipped():
    x = ramp(T, 100.0, 4 * DT, base=0.0, height=1.0)
    x[20] = 0.52  # above theta = 0.5 but below the confirmation level 0.5 + 2 * 0.02
    tau = activation_times(x[None], T, noise=0.02)[0]
    assert tau == pytest.approx(100.0 + 2 * DT, abs=1e-9)
    x[20] = 0.9  # a real (if brief) event: it is the first activation
    assert activation_times(x[None], T, noise=0.02)[0] == pytest.approx(T[19] + (0.5 / 0.9) * DT)


def test_torch_inputs_and_given_baseline():
    x = torch.tensor(np.stack([ramp(T, 30.25, 3 * DT)]), dtype=torch.float32)
    out = activation_times(x, torch.tensor(T))
    assert out.dtype == np.float64 and out[0] == pytest.approx(30.25 + 3.0, abs=1e-4)
    # baseline 2.0 given: theta = 2 + 0.5 * (3 - 2) = 2.5, reached 3/4 of the way up the ramp
    assert activation_times(x, T, baseline=2.0)[0] == pytest.approx(30.25 + 0.75 * 3 * DT, abs=1e-4)


@pytest.mark.parametrize(
    ("x", "t", "kwargs", "error", "culprit"),
    [
        (np.zeros(10), np.arange(10.0), {}, GraphError, "x"),
        (np.zeros((2, 10)), np.arange(9.0), {}, GraphError, "t"),
        (np.zeros((2, 1)), np.arange(1.0), {}, GraphError, "x"),
        (np.full((2, 10), np.nan), np.arange(10.0), {}, GraphError, "x"),
        (np.zeros((2, 10)), np.arange(10.0)[::-1], {}, GraphError, "t"),
        (np.zeros((2, 10)), np.arange(10.0), {"threshold_fraction": 1.5}, ConfigError, "threshold_fraction"),
        (np.zeros((2, 10)), np.arange(10.0), {"min_rise": -1.0}, ConfigError, "min_rise"),
        (np.zeros((2, 10)), np.arange(10.0), {"after": 9.0}, ConfigError, "after"),
        (np.zeros((2, 10)), np.arange(10.0), {"noise": [1.0, 2.0, 3.0]}, ConfigError, "noise"),
    ],
)
def test_bad_inputs_raise_named_errors(x, t, kwargs, error, culprit):
    with pytest.raises(error) as caught:
        activation_times(x, t, **kwargs)
    assert isinstance(caught.value, CalciumGNNError) and caught.value.culprit == culprit


def test_crossing_slopes_and_timing_se_by_hand():
    x = np.stack([ramp(T, 20.0, 40.0), ramp(T, 20.0, 10.0), np.ones_like(T)])
    tau = activation_times(x, T)
    assert np.isnan(tau[2])
    slopes = crossing_slopes(x, T, tau)
    np.testing.assert_allclose(slopes[:2], [2.0 / 40.0, 2.0 / 10.0])
    assert np.isnan(slopes[2])
    np.testing.assert_allclose(timing_se([0.1, 0.1, 0.1], slopes), [2.0, 0.5, np.nan])
    assert timing_se([0.1], [0.0])[0] == np.inf  # no rise: no time to give
    with pytest.raises(ConfigError, match="^times:"):
        crossing_slopes(x, T, tau[:2])


@pytest.mark.parametrize("frames_per_sigma", [0.4, 2.0, 6.0])
def test_timing_se_is_the_spread_of_observed_crossings(frames_per_sigma):
    """sigma / slope is the noise's share of an observed activation time, from a sharp rise to one
    several frames per noise sigma (measured: RMS error 0.71-0.84 of it)."""
    rng = np.random.default_rng(int(frames_per_sigma * 10))
    t = np.arange(300) * 1.0
    sigma, height = 0.02, 1.0
    slope = sigma / frames_per_sigma  # per s, one frame per s
    clean = np.clip((t - 50.0) * slope, 0.0, height)
    x = clean[None] + sigma * rng.standard_normal((1000, t.size))
    level = np.full(1000, height / 2)
    tau = activation_times(x, t, after=40.0, noise=np.full(1000, sigma), levels=level)
    truth = activation_times(clean[None], t, after=40.0, noise=[sigma], levels=level[:1])[0]
    se = timing_se([sigma], crossing_slopes(clean[None], t, [truth]))[0]
    assert se == pytest.approx(frames_per_sigma)
    rms = float(np.sqrt(np.nanmean((tau - truth) ** 2)))
    assert 0.6 * se < rms < 1.0 * se
