"""Photobleaching correction: the exponential trend of the frame means is found and divided out."""

from __future__ import annotations

import numpy as np
import pytest

from calcium_gnn.errors import MovieError
from calcium_gnn.imaging.preprocess import bleaching_trend, preprocess


def _bleached(rate: float, dark: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(0)
    base = rng.uniform(200, 400, size=(1, 16, 16))
    t = np.arange(50)[:, None, None]
    return dark + base * np.exp(rate * t)


def test_trend_of_an_exponentially_dimming_movie_is_exact() -> None:
    trend = bleaching_trend(_bleached(-0.01, dark=100.0), dark_level=100.0)
    np.testing.assert_allclose(trend, np.exp(-0.01 * np.arange(50)), rtol=1e-10)


def test_a_brightening_movie_is_not_corrected() -> None:
    np.testing.assert_array_equal(bleaching_trend(_bleached(+0.01)), np.ones(50))


def test_correction_makes_a_bleached_static_movie_static() -> None:
    movie = _bleached(-0.02, dark=50.0)
    out = preprocess(movie, hot_pixels=False, bleach_correction=True, dark_level=50.0, log=False,
                     normalise=False, progress=False)
    np.testing.assert_allclose(out, np.broadcast_to(out[:1], out.shape), rtol=1e-5)
    assert movie[-1].mean() < movie[0].mean(), "the input was modified"


def test_frames_at_the_dark_level_are_refused() -> None:
    with pytest.raises(MovieError, match="dark_level"):
        bleaching_trend(np.full((3, 4, 4), 10.0), dark_level=10.0, source="m.tif")
