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

MAX_REFINEMENTS: int = 30
"""Most evaluations of the parabolic refinement (:func:`parabolic_refinement`) after the walk."""

GOLDEN: float = (3.0 - math.sqrt(5.0)) / 2.0
"""The golden-section fraction: where a refinement step goes when the parabola is of no use."""


def bracketed_minimum(
    objective: Callable[[float], float],
    centre: float,
    lower: float,
    upper: float,
    step: float = math.log(STEP_FACTOR),
    x_tolerance: float = X_TOLERANCE,
    relative_tolerance: float | None = None,
) -> tuple[float, dict[float, float]]:
    """Minimise ``objective`` over ``[lower, upper]`` from ``centre``: steps of ``step`` downhill until the
    minimum is bracketed (the middle point lower than both ends) or an end is reached (at most
    :data:`MAX_STEPS`), then, on the last interval, Brent (bounded) to ``x_tolerance``, or, with
    ``relative_tolerance`` and a bracket, :func:`parabolic_refinement` (which stops on the value the
    parabola predicts, usually after far fewer evaluations).

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
    bracketed = False
    for _ in range(MAX_STEPS):
        f_lo, f_c, f_hi = value(lo), value(centre), value(hi)
        if f_c <= min(f_lo, f_hi):
            bracketed = True
            break
        if f_hi < f_lo:
            if hi >= upper:
                break
            lo, centre, hi = centre, hi, min(upper, hi + step)
        else:
            if lo <= lower:
                break
            lo, centre, hi = max(lower, lo - step), lo, centre
    if relative_tolerance is not None and bracketed and hi > lo:
        parabolic_refinement(value, (lo, centre, hi), relative_tolerance, x_tolerance)
    elif hi > lo:  # Brent, also where the walk reached an end: the minimum may lie before it
        minimize_scalar(value, bounds=(lo, hi), method="bounded", options={"xatol": x_tolerance})
    return min(cache, key=cache.__getitem__), cache


def parabola_vertex(
    xs: tuple[float, float, float], fs: tuple[float, float, float]
) -> tuple[float, float] | None:
    """The vertex ``(x, value)`` of the parabola through three points; ``None`` when it does not open
    upward (no minimum to predict)."""
    (a, b, c), (fa, fb, fc) = xs, fs
    # divided differences: p(x) = fb + d1 (x - b) + d2 (x - b)(x - a)
    d1 = (fb - fa) / (b - a)
    d2 = ((fc - fb) / (c - b) - d1) / (c - a)
    if not d2 > 0.0:
        return None
    x = 0.5 * (a + b) - d1 / (2.0 * d2)
    return x, fb + d1 * (x - b) + d2 * (x - b) * (x - a)


def parabolic_refinement(
    value: Callable[[float], float],
    bracket: tuple[float, float, float],
    relative_tolerance: float,
    x_tolerance: float = X_TOLERANCE,
) -> float:
    """Successive parabolic interpolation inside a bracket ``a < b < c`` with ``f(b) <= f(a), f(c)``.

    Each step evaluates the vertex of the parabola through the bracket (a golden-section point of the
    larger half when the vertex falls outside it or on ``b``) and keeps the three points that still
    bracket the minimum. It stops when the parabola predicts that the minimum lies less than
    ``relative_tolerance * |f(b)|`` below the best value (never on the first parabola: through the
    bracket's wide ends alone it can misplace an asymmetric minimum), when the bracket is narrower than
    ``x_tolerance``, or after :data:`MAX_REFINEMENTS` evaluations. Returns the best point evaluated.

    Why a value tolerance: for a loss whose rise ``f(x) - f*`` is ``f* / D`` per squared standard error of
    ``x`` (the noise-normalised loss of :mod:`calcium_gnn.physics.border_noise`, ``D`` its degrees of
    freedom), ``relative_tolerance = c^2 / D`` stops within ``c`` standard errors of the minimum.
    """
    a, b, c = bracket
    fa, fb, fc = value(a), value(b), value(c)
    for evaluations in range(MAX_REFINEMENTS):
        if c - a <= x_tolerance:
            break
        vertex = parabola_vertex((a, b, c), (fa, fb, fc))
        if evaluations and vertex is not None and fb - vertex[1] <= relative_tolerance * abs(fb):
            break
        u = vertex[0] if vertex is not None else b
        if not (a < u < c) or abs(u - b) < 0.5 * x_tolerance:
            u = b + GOLDEN * (c - b) if c - b >= b - a else b - GOLDEN * (b - a)
        fu = value(u)
        if fu <= fb:
            if u < b:
                c, fc = b, fb
            else:
                a, fa = b, fb
            b, fb = u, fu
        elif u < b:
            a, fa = u, fu
        else:
            c, fc = u, fu
    return b
