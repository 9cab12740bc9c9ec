"""The spread of errors that a set of fits' own standard errors implies.

A benchmark over many cultures reports quantiles of ``|k - k*| / k*``. Part of that error is the
information in each culture's data, which no estimator removes: where a fit is calibrated and its
relative standard error is ``s_m``, its error is about ``N(0, s_m^2)``. Over ``M`` cultures the
absolute error ``|e|`` is then distributed as the mixture

    P(|e| > x) = 1/M sum_m P(|N(0, s_m^2)| > x) = 1/M sum_m erfc(x / (sqrt(2) s_m)),

and its ``q`` quantile ``x_q`` solves ``P(|e| > x_q) = 1 - q``. Comparing the measured quantile with
``x_q`` separates what the data allow (``x_q``; the Gauss-Newton standard error estimates the
Cramér-Rao bound of an unbiased estimator) from what the estimator loses to bias or to optimistic
intervals (the excess of the measured quantile over ``x_q``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from scipy.optimize import brentq
from scipy.special import erfc


def implied_error_quantile(standard_errors: Sequence[float], q: float) -> float:
    """The ``q`` quantile of ``|e|`` when each fit's error is ``N(0, s_m^2)`` (module docstring).

    Args:
        standard_errors: ``s_m`` (M,), one per fit, in the units of the error (e.g. relative to the
            true ``k``); each finite and >= 0 (0: a fit that is exact).
        q: the quantile, in (0, 1).

    Returns:
        ``x_q``; for a single fit ``s * Phi^-1((1 + q) / 2)`` (1.645 s at q = 0.9).

    Raises:
        ValueError: no standard errors, one that is negative or not finite, or ``q`` outside (0, 1).
    """
    if not 0.0 < q < 1.0:
        raise ValueError(f"quantile q must lie in (0, 1), got {q}")
    s = [float(v) for v in standard_errors]
    if not s:
        raise ValueError("implied_error_quantile needs at least one standard error")
    bad = [v for v in s if not math.isfinite(v) or v < 0.0]
    if bad:
        raise ValueError(f"standard errors must be finite and >= 0, got {bad[:3]}")
    positive = [v for v in s if v > 0.0]
    tail = 1.0 - q
    if len(positive) / len(s) <= tail:
        return 0.0  # exact fits alone reach the quantile

    def excess(x: float) -> float:
        return sum(erfc(x / (math.sqrt(2.0) * v)) for v in positive) / len(s) - tail

    upper = max(positive)
    while excess(upper) > 0.0:
        upper *= 2.0
    return float(brentq(excess, 0.0, upper, xtol=1e-12 * upper, rtol=1e-12))
