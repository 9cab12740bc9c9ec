"""A bracketing minimiser in one variable (``log k``) with no bound on how far the minimum lies."""

from __future__ import annotations

import math
from collections.abc import Callable

from scipy.optimize import minimize_scalar

STEP_FACTOR: float = 1.5
"""The downhill walk moves ``log k`` by ``log STEP_FACTOR`` per step."""

MAX_STEPS: int = 20
"""Most downhill steps before Brent (a factor ``STEP_FACTOR ** 20``, about 3,300)."""

X_TOLERANCE: float = 1e-3
"""Brent's tolerance on the variable (``log k``: 0.1% in ``k``)."""


def bracketed_minimum(
    objective: Callable[[float], float],
    centre: float,
    lower: float,
    upper: float,
    step: float = math.log(STEP_FACTOR),
    x_tolerance: float = X_TOLERANCE,
) -> tuple[float, dict[float, float]]:
    """Minimise ``objective`` over ``[lower, upper]`` from ``centre``: steps of ``step`` downhill until the
    minimum is bracketed (the middle point lower than both ends) or an end is reached (at most
    :data:`MAX_STEPS`), then Brent (bounded) on the bracket to ``x_tolerance``.

    Returns the best point evaluated and every value computed (point -> value). A minimum on ``lower``
    or ``upper`` means the objective kept falling to the end.
    """
    cache: dict[float, float] = {}

    def value(x: float) -> float:
        if x not in cache:
            cache[x] = objective(x)
        return cache[x]

    centre = min(max(centre, lower), upper)
    lo, hi = max(lower, centre - step), min(upper, centre + step)
    for _ in range(MAX_STEPS):
        f_lo, f_c, f_hi = value(lo), value(centre), value(hi)
        if f_c <= min(f_lo, f_hi):
            break
        if f_hi < f_lo:
            if hi >= upper:
                break
            lo, centre, hi = centre, hi, min(upper, hi + step)
        else:
            if lo <= lower:
                break
            lo, centre, hi = max(lower, lo - step), lo, centre
    if hi > lo:
        minimize_scalar(value, bounds=(lo, hi), method="bounded", options={"xatol": x_tolerance})
    return min(cache, key=cache.__getitem__), cache
