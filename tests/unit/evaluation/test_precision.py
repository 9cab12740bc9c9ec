"""The error quantile that fits' own standard errors imply (``evaluation.precision``)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from calcium_gnn.evaluation.precision import implied_error_quantile


def test_one_fit_gives_the_normal_quantile_of_its_standard_error() -> None:
    assert implied_error_quantile([0.04], 0.9) == pytest.approx(0.04 * norm.ppf(0.95), rel=1e-9)
    assert implied_error_quantile([0.04], 0.5) == pytest.approx(0.04 * norm.ppf(0.75), rel=1e-9)


def test_a_mixture_of_precisions_matches_sampled_errors() -> None:
    """A few imprecise fits among precise ones set the 90th percentile: errors drawn from N(0, s_m^2)
    have the quantile the function gives (1.2 million draws, Monte-Carlo error well under 1%)."""
    s = np.array([0.01] * 40 + [0.03] * 8 + [0.3] * 2)
    x90 = implied_error_quantile(s.tolist(), 0.9)
    draws = np.abs(np.random.default_rng(0).standard_normal((24_000, s.size)) * s)
    assert x90 == pytest.approx(np.quantile(draws, 0.9), rel=0.01)
    assert x90 > 1.5 * 0.01 * norm.ppf(0.95)  # the 20% imprecise fits, not the precise ones, set it


def test_exact_fits_count_as_zero_error() -> None:
    assert implied_error_quantile([0.0] * 19 + [0.5], 0.9) == 0.0
    assert implied_error_quantile([0.0] * 5 + [0.1] * 5, 0.9) > implied_error_quantile([0.1] * 5, 0.5)


@pytest.mark.parametrize(
    ("standard_errors", "q", "message"),
    [
        ([], 0.9, "at least one"),
        ([0.1, -0.1], 0.9, "finite and >= 0"),
        ([float("nan")], 0.9, "finite"),
        ([0.1], 1.0, "quantile q"),
    ],
)
def test_bad_input_is_named(standard_errors, q, message) -> None:
    with pytest.raises(ValueError, match=message):
        implied_error_quantile(standard_errors, q)
