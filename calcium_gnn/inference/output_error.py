"""Post-fit statistics of an output-error fit, as functions over a small protocol.

A :class:`LinearisedFit` is anything that can give its per-cell optimum ``theta`` (P,) =
``(k, gamma (free), y0)``, the normal equations there and the map back to per-node values:
:class:`calcium_gnn.physics.output_error.OutputErrorProblem` is one. From it:

* :func:`laplace`: the Gauss-Newton (Laplace) covariance at the per-cell optimum
  (:mod:`calcium_gnn.inference.uncertainty`); :func:`nonlinear_laplace` the same for ``k`` (and a leak
  rate) alone from their Schur complement, where a matrix-free fit never forms the normal equations;
* :func:`pooled_feeds`: the random-effects posterior of the feeds given ``k``
  (:mod:`calcium_gnn.inference.random_effects`);
* :func:`parameter_intervals`: intervals of ``k`` and ``gamma_i``, pooled or per cell;
* :func:`fit_anomaly_scores`: robust z-scores of the per-cell feeds and residual levels
  (:mod:`calcium_gnn.inference.anomaly`); pooling would pull every feed toward the culture mean and
  hide the cells this is meant to find, so the per-cell optimum is always used.

Results are host objects (CPU tensors), whatever device the fit ran on.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import torch
from torch import Tensor

from calcium_gnn.inference.anomaly import AnomalyRule, AnomalyScores, anomaly_scores
from calcium_gnn.inference.random_effects import PooledFeeds, pool_feeds
from calcium_gnn.inference.uncertainty import (
    GaussNewtonCovariance,
    ParameterIntervals,
    normal_interval,
    normal_matrix_covariance,
)


class LinearisedFit(Protocol):
    """What the post-fit statistics need of a fit (module docstring)."""

    gamma_mode: str
    index: Tensor
    modelled: Tensor

    @property
    def feed_positions(self) -> slice: ...

    @property
    def n_nonlinear(self) -> int: ...

    def theta_unpooled(self) -> Tensor: ...

    def normal_equations(self, theta: Tensor, with_k: bool = True) -> tuple[Tensor, Tensor, Tensor]: ...

    def unpack(self, theta: Tensor) -> Any: ...

    def residuals_theta(self, theta: Tensor) -> Tensor: ...


@torch.no_grad()
def laplace(
    fit: LinearisedFit, autocorrelation: bool = True, input_noise: Tensor | None = None
) -> tuple[Tensor, GaussNewtonCovariance]:
    """The per-cell optimum (P,) and its Gauss-Newton covariance (one set of normal equations).

    ``input_noise`` (P, n_p): ``J^T F_k z_p`` for probes of the noisy border inputs
    (:func:`~calcium_gnn.physics.border_noise.input_noise_products`); the covariance is then the sandwich
    that counts their noise (:mod:`calcium_gnn.inference.uncertainty`).
    """
    theta = fit.theta_unpooled()
    jtj, _, residuals = fit.normal_equations(theta)
    return theta, normal_matrix_covariance(
        jtj, residuals, autocorrelation=autocorrelation, input_noise=input_noise
    )


def nonlinear_laplace(
    fit: LinearisedFit, schur: Tensor, autocorrelation: bool = True
) -> tuple[Tensor, GaussNewtonCovariance]:
    """The optimum (P,) and the Gauss-Newton covariance of its nonlinear parameters (``k``, a leak rate)
    from their Schur complement ``H`` (the inverse of their block of ``(J^T J)^{-1}``)."""
    theta = fit.theta_unpooled()
    residuals = fit.residuals_theta(theta)
    cov = normal_matrix_covariance(
        schur, residuals, autocorrelation=autocorrelation, ridge=0.0, n_parameters=theta.numel()
    )
    return theta, cov


@torch.no_grad()
def pooled_feeds(
    fit: LinearisedFit, autocorrelation: bool = True, input_noise: Tensor | None = None
) -> PooledFeeds:
    """The random-effects posterior of the per-cell feeds given ``k`` (REML ``mu``, ``tau^2``; BLUP), from
    the covariance of :func:`laplace`."""
    theta, cov = laplace(fit, autocorrelation, input_noise)
    return pool_feeds(theta, cov.cov, fit.feed_positions, list(range(fit.n_nonlinear)))


@torch.no_grad()
def parameter_intervals(
    fit: LinearisedFit,
    level: float,
    k_bounds: tuple[float, float],
    gamma_bounds: tuple[float, float],
    *,
    autocorrelation: bool = True,
    pool: bool = False,
    schur: Tensor | None = None,
    k_spread: tuple[float, float] | None = None,
    input_noise: Tensor | None = None,
) -> ParameterIntervals:
    """Intervals of ``k`` and ``gamma_i`` at the per-cell optimum; the feeds pooled when ``pool``.

    With ``pool`` the feed intervals are the BLUP's prediction intervals
    (:mod:`calcium_gnn.inference.random_effects`). ``schur`` (n_nonlinear, n_nonlinear): the Schur
    complement of the nonlinear parameters from a matrix-free fit
    (:mod:`calcium_gnn.physics.variable_projection`), where the normal equations are too large to form:
    then only ``k`` gets an interval (the same one the full covariance would give) and the feeds' are
    NaN. ``k_spread`` ``(bias, sd)``: the corrected ``k``'s bias and spread from a parametric bootstrap
    (:func:`~calcium_gnn.physics.border_noise.correct_border_noise_weighted`); they replace the
    Gauss-Newton standard error of ``k`` and centre its interval on ``k - bias``. ``input_noise``
    (P, n_p): probes of the noisy border inputs (:func:`laplace`); the covariance is then the sandwich
    that adds their noise. Returned on the CPU.
    """
    if schur is not None:
        theta, cov = nonlinear_laplace(fit, schur, autocorrelation)
        se = torch.full_like(theta, math.nan)
        se[: fit.n_nonlinear] = cov.se
        pool = False
    else:
        theta, cov = laplace(fit, autocorrelation, input_noise)
        se = cov.se
    pooled = None
    if pool:
        pooled = pool_feeds(theta, cov.cov, fit.feed_positions, list(range(fit.n_nonlinear)))
        theta, se = pooled.theta, pooled.cov.diagonal().clamp(min=0).sqrt()
    theta, se = theta.detach().cpu(), se.detach().cpu()
    index = fit.index.detach().cpu()
    k_centre = theta[:1].clone()
    if k_spread is not None:
        k_centre -= k_spread[0]
        se = se.clone()
        se[0] = k_spread[1]
    k_lo, k_hi = normal_interval(k_centre, se[:1], level, k_bounds)
    n = fit.modelled.shape[0]
    nan = torch.full((n,), math.nan, dtype=torch.float64)
    gamma, gamma_se = fit.unpack(theta.to(fit.index.device)).gamma.detach().cpu().clone(), nan.clone()
    sl = fit.feed_positions
    if fit.gamma_mode == "per_cell":
        gamma_se[index] = se[sl]
    elif fit.gamma_mode == "shared":
        gamma_se[index] = se[sl].expand(index.numel())
    gamma = torch.where(torch.isfinite(gamma_se), gamma, nan)
    g_lo, g_hi = normal_interval(gamma, gamma_se, level, gamma_bounds)
    correction = "AR(1) inflation (1+rho)/(1-rho)" if autocorrelation else "no autocorrelation correction"
    method = (
        f"Gauss-Newton (Laplace) covariance sigma^2 (J^T J)^-1 at the output-error optimum, "
        f"sigma^2 = RSS/(M-P), {correction}; "
    )
    if input_noise is not None and schur is None:
        method += (
            "plus the noise of the border inputs propagated through the fit, sigma^2 (J^T J)^-1 J^T F_k "
            f"F_k^T J (J^T J)^-1 (errors in variables; Hutchinson, {input_noise.shape[-1]} probes); "
        )
    if schur is not None:
        method = (
            f"Gauss-Newton (Laplace) variance of k from the Schur complement of the variable projection "
            f"(the (k, k) entry of sigma^2 (J^T J)^-1 without forming it), sigma^2 = RSS/(M-P), "
            f"{correction}; no feed intervals at this size (the normal equations are not formed); "
        )
    if k_spread is not None:
        method += (
            "k: standard error and bias from a parametric bootstrap of the border-noise-corrected "
            "estimator (the Gauss-Newton information counts border noise reaching G as information), "
            "interval centred on k - bias; "
        )
    if pooled is not None:
        method += "feeds pooled as random effects (REML mu, tau^2; BLUP prediction variance); "
    method += f"normal {level:.0%} intervals clipped to the bounds"
    return ParameterIntervals(
        level=level,
        k=float(theta[0]),
        k_se=float(se[0]),
        k_interval=(float(k_lo[0]), float(k_hi[0])),
        gamma=gamma,
        gamma_se=gamma_se,
        gamma_lower=g_lo,
        gamma_upper=g_hi,
        sigma2=cov.sigma2,
        rho=cov.rho,
        inflation=cov.inflation,
        method=method,
    )


@torch.no_grad()
def fit_anomaly_scores(fit: LinearisedFit, rule: AnomalyRule | None = None) -> AnomalyScores:
    """Robust z-scores of ``gamma_i`` and of the training residual level per modelled cell (on the CPU)."""
    theta = fit.theta_unpooled()
    gamma = fit.unpack(theta).gamma
    residuals_g = fit.residuals_theta(theta)  # (G, T)
    residuals = residuals_g.new_zeros(fit.modelled.shape[0], residuals_g.shape[1])
    residuals[fit.index] = residuals_g
    return anomaly_scores(gamma.cpu(), residuals.cpu(), fit.modelled.cpu(), rule)
