"""Comparing conditions across dishes: a hierarchical (random-effects) model of the per-dish fits.

A biologist's question is rarely "what is k in this dish" but "does the treatment change k". Each
dish j gives an estimate ``y_j`` (``log k_j``: coupling changes are ratios, and ``k > 0``) with a
standard error ``s_j`` from its own fit (its ``k`` interval). The dishes of a condition differ by more
than their fits' errors (cultures differ), and dishes imaged together on a plate share a plate effect:

.. math::
    y_j = x_j^\\top \\beta + b_{p(j)} + u_j + \\varepsilon_j, \\qquad
    u_j \\sim \\mathcal N(0, \\tau^2), \\quad b_p \\sim \\mathcal N(0, \\sigma_p^2), \\quad
    \\varepsilon_j \\sim \\mathcal N(0, s_j^2),

with ``x_j`` the dish's condition indicator (one column per condition, so ``beta_c`` is condition c's
mean) and its centred numeric covariates. So ``y ~ N(X beta, V)``, ``V = diag(s^2) + tau^2 I +
sigma_p^2 Z Z^T`` (``Z`` the plate indicators; no plate term without plates). ``tau^2`` and
``sigma_p^2`` are estimated by restricted maximum likelihood (REML),

.. math::
    \\ell_R = -\\tfrac12 \\left(\\log|V| + \\log|X^\\top V^{-1} X| + r^\\top V^{-1} r\\right),
    \\qquad r = y - X \\hat\\beta, \\quad \\hat\\beta = (X^\\top V^{-1} X)^{-1} X^\\top V^{-1} y,

and the inference on ``beta`` uses the Knapp-Hartung adjustment (the standard small-sample correction
of random-effects meta-analysis) in its modified form: ``Cov(beta) = max(1, q) (X^T V^-1 X)^-1`` with
``q = r^T V^-1 r / (n - p)`` and Student's t with ``n - p`` degrees of freedom. With 5 dishes per
condition the plug-in normal test would be anti-conservative; the floor keeps ``q < 1`` (dishes that
agree better than their fits' errors say) from shrinking the interval, at the price of a conservative
test there. Measured false-positive rates (``docs/conditions.md``): 5.5% with real fits of dishes
whose ``k`` differs by 10%, 1.5% when it does not differ, 7.3% on synthetic values with fit errors of
2-15% (9.1% without the floor). A dish without a standard error gets ``s_j = 0``: its fit error is then
part of ``tau^2``.

A contrast between condition ``a`` and the reference ``ref`` is ``beta_a - beta_ref``: on the log scale
its exponential is the ratio ``k_a / k_ref`` (the geometric means), with its interval and the two-sided
p-value of "no difference".
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import optimize, stats

__all__ = [
    "ConditionEstimate",
    "Contrast",
    "ConditionComparison",
    "compare_conditions",
    "log_k_and_se",
]

#: variance components are searched down to this fraction of the data's variance (0 in practice)
MIN_VARIANCE_SHARE: float = 1e-10


@dataclass(frozen=True)
class ConditionEstimate:
    """A condition's estimate.

    Attributes:
        condition: its label. n_dishes: dishes it has in the model.
        estimate: the condition's mean on the natural scale (``exp(beta)`` on the log scale: the
            geometric mean of ``k`` across dishes, at the mean covariates).
        interval: its interval at ``level`` (natural scale).
    """

    condition: str
    n_dishes: int
    estimate: float
    interval: tuple[float, float]


@dataclass(frozen=True)
class Contrast:
    """Condition ``condition`` against ``reference``.

    Attributes:
        difference: ``beta_a - beta_ref`` (on the log scale: the log ratio).
        ratio: ``exp(difference)`` on the log scale (``k_a / k_ref``), None on the linear scale.
        interval: the interval of the ratio (log scale) or of the difference (linear scale).
        standard_error: of ``difference``. t: its t statistic. p_value: two-sided, Student's t with
            ``df`` degrees of freedom.
    """

    condition: str
    reference: str
    difference: float
    ratio: float | None
    interval: tuple[float, float]
    standard_error: float
    t: float
    df: int
    p_value: float


@dataclass(frozen=True)
class ConditionComparison:
    """The fitted hierarchical model (module docstring).

    Attributes:
        quantity: what was compared (``"k"``, ``"gamma_median"``). log_scale: ``y = log(value)``.
        level: interval level. conditions: per condition. contrasts: each condition against the
            reference. tau2: between-dish variance (of ``y``). plate_variance: ``sigma_p^2`` (None
            without plates). n_plates: plates in the model. covariates: covariate names (fixed
            effects). coefficients: their slopes (per unit of the covariate, on ``y``'s scale).
            df: residual degrees of freedom ``n - p``. knapp_hartung_q: the Knapp-Hartung factor ``q``.
            excluded: dishes left out, with the reason (no estimate, non-positive ``k``).
            method: one line saying what was done.
    """

    quantity: str
    log_scale: bool
    level: float
    conditions: list[ConditionEstimate]
    contrasts: list[Contrast]
    tau2: float
    plate_variance: float | None
    n_plates: int
    covariates: list[str]
    coefficients: dict[str, float]
    df: int
    knapp_hartung_q: float
    excluded: dict[str, str]
    method: str

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values."""
        return asdict(self)


def log_k_and_se(results: Mapping[str, Any]) -> tuple[float | None, float | None]:
    """A dish's ``(log k, standard error of log k)`` from its results (``results.json``).

    The standard error comes from the fit's own ``k_interval`` at ``interval_level`` (default 0.9):
    ``(log hi - log lo) / (2 z)``; None when the fit gave no interval (or ``k`` is missing or not
    positive: then both are None).
    """
    k = results.get("k")
    if k is None or not math.isfinite(float(k)) or float(k) <= 0:
        return None, None
    interval = results.get("k_interval")
    if not interval or interval[0] is None or interval[1] is None or float(interval[0]) <= 0:
        return math.log(float(k)), None
    level = float(results.get("interval_level") or 0.9)
    z = float(stats.norm.ppf(0.5 + level / 2))
    width = math.log(float(interval[1])) - math.log(float(interval[0]))
    return math.log(float(k)), (width / (2 * z) if width > 0 else None)


def _design(
    conditions: Sequence[str], order: list[str], covariates: Mapping[str, Sequence[float]]
) -> tuple[np.ndarray, list[str]]:
    n = len(conditions)
    columns = [np.array([c == name for c in conditions], dtype=float) for name in order]
    names: list[str] = []
    for name, values in covariates.items():
        v = np.asarray(values, dtype=float)
        if np.ptp(v) > 0:
            columns.append(v - v.mean())
            names.append(name)
    return np.column_stack(columns).reshape(n, -1), names


def _plate_indicators(plates: Sequence[str | None] | None) -> np.ndarray | None:
    if plates is None or all(p is None for p in plates):
        return None
    labels = [p if p is not None else f"\x00dish-{j}" for j, p in enumerate(plates)]
    unique = sorted(set(labels))
    if len(unique) < 2:
        return None
    return np.array([[label == u for u in unique] for label in labels], dtype=float)


class _Reml:
    """The restricted log-likelihood of ``y ~ N(X beta, diag(s^2) + tau^2 I + sigma_p^2 Z Z^T)``."""

    def __init__(self, y: np.ndarray, s2: np.ndarray, x: np.ndarray, z: np.ndarray | None) -> None:
        self.y, self.s2, self.x = y, s2, x
        self.zz = None if z is None else z @ z.T

    def covariance(self, tau2: float, plate2: float) -> np.ndarray:
        v = np.diag(self.s2 + tau2)
        if self.zz is not None:
            v = v + plate2 * self.zz
        return v

    def solve(self, tau2: float, plate2: float) -> tuple[float, np.ndarray, np.ndarray, float]:
        """``(-l_R, beta, (X^T V^-1 X)^-1, r^T V^-1 r)`` at the given variances."""
        v = self.covariance(tau2, plate2)
        chol = np.linalg.cholesky(v)
        vx = np.linalg.solve(chol, self.x)
        vy = np.linalg.solve(chol, self.y)
        info = vx.T @ vx
        info_chol = np.linalg.cholesky(info)
        beta = np.linalg.solve(info, vx.T @ vy)
        resid = vy - vx @ beta
        quad = float(resid @ resid)
        neg = (np.log(np.diag(chol)).sum() + np.log(np.diag(info_chol)).sum() + 0.5 * quad)
        return float(neg), beta, np.linalg.inv(info), quad


def compare_conditions(
    values: Sequence[float | None],
    standard_errors: Sequence[float | None] | None,
    conditions: Sequence[str],
    *,
    plates: Sequence[str | None] | None = None,
    covariates: Mapping[str, Sequence[float]] | None = None,
    names: Sequence[str] | None = None,
    quantity: str = "k",
    log_scale: bool = True,
    level: float = 0.95,
    reference: str | None = None,
) -> ConditionComparison:
    """Fit the hierarchical model (module docstring) and compare every condition with the reference.

    Args:
        values: (n,) per dish: ``k`` (``log_scale``; its log is modelled) or a value on its own scale;
            None for a dish without an estimate (left out, listed in ``excluded``).
        standard_errors: (n,) per dish: the standard error of ``log k`` (log scale) or of the value;
            None entries (or None for all) count as 0 (the fit error is then part of ``tau^2``).
        conditions: (n,) condition labels. plates: (n,) plate labels (None: a plate of its own), or
            None for no plate effect. covariates: name -> (n,) numeric fixed effects (centred; a
            constant one is dropped). names: (n,) dish names for ``excluded``.
        quantity: what the values are, for the report. level: interval level.
        reference: the condition the others are compared with (default: the first in order of
            appearance).

    Returns:
        The :class:`ConditionComparison`.

    Raises:
        ValueError: fewer than two dishes with estimates, an unknown reference, or no residual degrees
            of freedom (as many parameters as dishes: add dishes or drop covariates).
    """
    n_all = len(conditions)
    names = list(names) if names is not None else [f"dish {j + 1}" for j in range(n_all)]
    ses = list(standard_errors) if standard_errors is not None else [None] * n_all
    excluded: dict[str, str] = {}
    keep: list[int] = []
    for j, value in enumerate(values):
        if value is None or not math.isfinite(float(value)):
            excluded[names[j]] = f"no {quantity} estimate"
        elif log_scale and float(value) <= 0:
            excluded[names[j]] = f"{quantity} = {float(value):.4g} is not positive"
        else:
            keep.append(j)
    y = np.array([math.log(float(values[j])) if log_scale else float(values[j]) for j in keep])
    s2 = np.array([float(ses[j]) ** 2 if ses[j] is not None and math.isfinite(float(ses[j])) else 0.0
                   for j in keep])
    kept_conditions = [conditions[j] for j in keep]
    order = list(dict.fromkeys(kept_conditions))
    if reference is None:
        reference = order[0] if order else None
    if reference not in order:
        raise ValueError(f"reference condition {reference!r} has no dish with an estimate "
                         f"(conditions: {', '.join(order)})")
    kept_covariates = {k: [float(v[j]) for j in keep] for k, v in (covariates or {}).items()}
    x, covariate_names = _design(kept_conditions, order, kept_covariates)
    n, p = x.shape
    if n - p < 1:
        raise ValueError(f"{n} dishes with estimates for {p} fixed effects ({len(order)} conditions, "
                         f"{len(covariate_names)} covariates): no degrees of freedom left; add dishes")
    z = _plate_indicators([plates[j] for j in keep] if plates is not None else None)
    model = _Reml(y, s2, x, z)
    scale = float(np.var(y - x @ np.linalg.lstsq(x, y, rcond=None)[0]) + s2.mean()) or 1.0
    low = math.log(MIN_VARIANCE_SHARE * scale)
    high = math.log(100.0 * scale)
    n_var = 1 if z is None else 2

    def objective(log_vars: np.ndarray) -> float:
        tau2 = math.exp(log_vars[0])
        plate2 = math.exp(log_vars[1]) if n_var == 2 else 0.0
        return model.solve(tau2, plate2)[0]

    starts = [np.full(n_var, math.log(0.5 * scale)), np.full(n_var, low + 1.0)]
    best = min((optimize.minimize(objective, s0, method="L-BFGS-B", bounds=[(low, high)] * n_var)
                for s0 in starts), key=lambda res: res.fun)
    floor = math.exp(low) * (1 + 1e-4)
    tau2_fit = math.exp(best.x[0])
    plate_fit = math.exp(best.x[1]) if n_var == 2 else 0.0
    _, beta, cov, quad = model.solve(tau2_fit, plate_fit)
    tau2 = 0.0 if tau2_fit <= floor else tau2_fit  # at the lower end of the search: none
    plate2 = None if z is None else (0.0 if plate_fit <= floor else plate_fit)
    df = n - p
    q = max(quad / df, 1.0)
    cov = q * cov
    t_crit = float(stats.t.ppf(0.5 + level / 2, df))

    def natural(value: float) -> float:
        return math.exp(value) if log_scale else value

    estimates = []
    for c, name in enumerate(order):
        se = math.sqrt(cov[c, c])
        estimates.append(ConditionEstimate(
            name, kept_conditions.count(name), natural(beta[c]),
            (natural(beta[c] - t_crit * se), natural(beta[c] + t_crit * se))))
    ref = order.index(reference)
    contrasts = []
    for c, name in enumerate(order):
        if c == ref:
            continue
        diff = float(beta[c] - beta[ref])
        se = math.sqrt(max(cov[c, c] + cov[ref, ref] - 2 * cov[c, ref], 0.0))
        t = diff / se if se > 0 else math.inf * np.sign(diff)
        p_value = float(2 * stats.t.sf(abs(t), df)) if se > 0 else 0.0
        lo, hi = diff - t_crit * se, diff + t_crit * se
        contrasts.append(Contrast(
            name, reference, diff, math.exp(diff) if log_scale else None,
            (math.exp(lo), math.exp(hi)) if log_scale else (lo, hi), se, float(t), df, p_value))
    coefficients = {name: float(beta[len(order) + i]) for i, name in enumerate(covariate_names)}
    scale_words = f"log {quantity}" if log_scale else quantity
    method = (f"REML random-effects model of {scale_words} per dish (fit errors from each dish's interval, "
              f"between-dish variance{' and a plate effect' if z is not None else ''}), Knapp-Hartung "
              f"t with {df} df")
    return ConditionComparison(
        quantity=quantity, log_scale=log_scale, level=level, conditions=estimates, contrasts=contrasts,
        tau2=tau2, plate_variance=plate2, n_plates=0 if z is None else z.shape[1],
        covariates=covariate_names, coefficients=coefficients, df=df, knapp_hartung_q=q,
        excluded=excluded, method=method,
    )
