"""Random-effects (empirical-Bayes) pooling of the per-cell feeds ``gamma_i`` of an output-error fit.

Why: at realistic noise each ``gamma_i`` is pinned down only by the level offset of cell i from its
neighbours, measured from T noisy training frames. Its Cramér-Rao bound (docs/noise.md) is a
standard error of roughly 25-40% of the mean feed at 5% observation noise on the built-in culture,
so *no unbiased per-cell estimate* gets the typical error much lower. What does help is what a
biologist already assumes when comparing cells of one culture: the feeds come from one population.

Model (a linear mixed model on the Laplace approximation of the fit). Let ``theta = (k, g, y0)`` be
the output-error optimum (``g`` the G free feeds) with Gauss-Newton covariance ``C``
(:func:`calcium_gnn.inference.uncertainty.gauss_newton_covariance`). Conditional on ``k`` (a fixed
effect, estimated without the prior, so the prior cannot bias it), the rest ``r = (g, y0)`` is
approximately

.. math::
    \\hat r \\mid r \\sim \\mathcal N(r, C_c), \\qquad
    C_c = C_{rr} - C_{rk} C_{kk}^{-1} C_{kr},

and the feeds are random effects ``g_i ~ N(mu, tau^2)`` i.i.d. (``y0`` flat). Then
``hat g ~ N(mu 1, V)`` with ``V = tau^2 I + C_c[g, g]``. ``mu`` and ``tau^2`` are estimated by
restricted maximum likelihood (REML, ``mu`` profiled out):

.. math::
    \\ell(\\tau^2) = -\\tfrac12 \\log|V| - \\tfrac12 \\log(1^\\top V^{-1} 1)
    - \\tfrac12 (\\hat g - \\hat\\mu 1)^\\top V^{-1} (\\hat g - \\hat\\mu 1), \\qquad
    \\hat\\mu = \\frac{1^\\top V^{-1} \\hat g}{1^\\top V^{-1} 1},

maximised over ``log tau^2`` (one eigendecomposition of ``C_c[g, g]``, then O(G) per evaluation).
The pooled estimate is the best linear unbiased predictor (BLUP)

.. math::
    \\tilde r = \\hat r - C_c[:, g] V^{-1} (\\hat g - \\hat\\mu 1)

(each feed moves toward ``mu`` by how uncertain it is, using the full correlation between the cells'
estimates), with prediction-error covariance (Henderson; the second term for estimating ``mu``, the
third for the uncertainty of ``k``, ``b = C_{rk} / C_{kk}``)

.. math::
    \\operatorname{Cov}(\\tilde r - r) = C_c - C_c[:, g] V^{-1} C_c[g, :]
    + \\frac{u u^\\top}{1^\\top V^{-1} 1} + C_{kk}\\, b b^\\top, \\qquad u = C_c[:, g] V^{-1} 1.

``tau^2`` is plugged in (not integrated over); the coverage this gives is measured in
``benchmarks/coverage_neural_ode.py``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from scipy.optimize import minimize_scalar
from torch import Tensor

MIN_POOLED_CELLS: int = 3
"""REML estimates two hyperparameters (mu, tau^2) from the G feeds: at least 3 cells are needed."""

JITTER: float = 1e-10
"""Relative diagonal jitter on ``V`` (times the mean sampling variance) for the Cholesky factor."""

TAU2_SEARCH_DECADES: tuple[float, float] = (-8.0, 2.0)
"""``log10(tau^2 / s)`` is searched in this range, ``s`` = sample variance of the feeds + mean C_gg."""


@dataclass
class PooledFeeds:
    """The random-effects posterior of ``theta`` (module docstring).

    Attributes:
        theta: (P,) pooled parameters: ``k`` unchanged, the feeds and ``y0`` moved (BLUP).
        cov: (P, P) prediction-error covariance of ``theta``.
        mu: REML estimate of the population mean of the feeds (1/s).
        tau2: REML estimate of the population variance of the feeds ((1/s)^2).
        shrinkage: (G,) ``1 - d(tilde g_i)/d(hat g_i)``: 0 = kept, 1 = replaced by ``mu``.
        at_lower_bound: ``tau^2`` hit the lower end of the search (the data show no spread).
    """

    theta: Tensor
    cov: Tensor
    mu: float
    tau2: float
    shrinkage: Tensor
    at_lower_bound: bool


def reml_feed_variance(estimate: Tensor, cov: Tensor) -> tuple[float, float, bool]:
    """REML ``(mu, tau^2)`` of ``estimate ~ N(mu 1, tau^2 I + cov)`` (module docstring).

    Args:
        estimate: (G,) per-cell estimates, ``G >= MIN_POOLED_CELLS``.
        cov: (G, G) their sampling covariance (symmetric positive semi-definite).

    Returns:
        ``(mu, tau2, at_lower_bound)``.
    """
    g = estimate.detach().double().reshape(-1).cpu()
    cov = cov.detach().double().cpu()
    n = g.numel()
    if n < MIN_POOLED_CELLS:
        raise ValueError(f"random-effects pooling needs at least {MIN_POOLED_CELLS} feeds, got {n}")
    if cov.shape != (n, n):
        raise ValueError(f"cov must be ({n}, {n}), got {tuple(cov.shape)}")
    lam, q = torch.linalg.eigh(0.5 * (cov + cov.T))
    lam = lam.clamp(min=0.0)
    g_rot, one_rot = q.T @ g, q.T @ torch.ones(n, dtype=torch.float64)
    scale = float(g.var()) + float(lam.mean())
    if not scale > 0:
        return float(g.mean()), 0.0, True

    def negative_log_likelihood(log_tau2: float) -> float:
        v = math.exp(log_tau2) + lam
        a = float((one_rot * one_rot / v).sum())
        mu = float((one_rot * g_rot / v).sum()) / a
        res = g_rot - mu * one_rot
        return 0.5 * (float(torch.log(v).sum()) + math.log(a) + float((res * res / v).sum()))

    lo = math.log(scale) + TAU2_SEARCH_DECADES[0] * math.log(10.0)
    hi = math.log(scale) + TAU2_SEARCH_DECADES[1] * math.log(10.0)
    # a coarse grid finds the basin (the REML curve can be flat near tau^2 -> 0), then Brent refines
    grid = torch.linspace(lo, hi, 41, dtype=torch.float64).tolist()
    values = [negative_log_likelihood(x) for x in grid]
    best = min(range(len(grid)), key=values.__getitem__)
    a, b = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
    found = minimize_scalar(negative_log_likelihood, bounds=(a, b), method="bounded", options={"xatol": 1e-6})
    log_tau2 = float(found.x) if found.fun <= values[best] else grid[best]
    tau2 = math.exp(log_tau2)
    v = tau2 + lam
    mu = float((one_rot * g_rot / v).sum()) / float((one_rot * one_rot / v).sum())
    return mu, tau2, best == 0


def pool_feeds(theta: Tensor, cov: Tensor, feeds: slice, k_index: int | Sequence[int] = 0) -> PooledFeeds:
    """Random-effects posterior of the fitted parameters (module docstring).

    Args:
        theta: (P,) output-error optimum ``(k, g, y0)`` (with a leak law ``(k, delta, g, y0)``).
        cov: (P, P) its Gauss-Newton covariance.
        feeds: positions of the G per-cell feeds in ``theta``.
        k_index: position(s) of the fixed effects, kept where they are: ``k`` (default 0) and, for a
            leak law, the leak rate. The rest is conditioned on them (``C_rr - C_rf C_ff^-1 C_fr``).

    Returns:
        the :class:`PooledFeeds`.
    """
    device = theta.device  # a (G, G) problem: solved on the CPU, returned on theta's device
    theta = theta.detach().double().cpu()
    cov = cov.detach().double().cpu()
    cov = 0.5 * (cov + cov.T)
    p = theta.numel()
    fixed = torch.as_tensor([k_index] if isinstance(k_index, int) else list(k_index), dtype=torch.long)
    rest = torch.tensor([i for i in range(p) if i not in set(fixed.tolist())], dtype=torch.long)
    pos = torch.arange(p)[feeds]
    g_in_rest = torch.searchsorted(rest, pos)
    c_ff = cov[fixed][:, fixed]
    c_rf = cov[rest][:, fixed]
    positive = bool((c_ff.diagonal() > 0).all())
    b = torch.linalg.solve(c_ff, c_rf.T).T if positive else torch.zeros_like(c_rf)  # (R, F)
    c_c = cov[rest][:, rest] - b @ c_rf.T
    c_gg = c_c[g_in_rest][:, g_in_rest]
    g = theta[pos]
    mu, tau2, at_lower = reml_feed_variance(g, c_gg)
    n = g.numel()
    # a relative jitter keeps V positive definite when tau^2 -> 0 and C_gg is rank deficient
    jitter = JITTER * float(c_gg.diagonal().mean().clamp(min=0.0)) + tau2
    v = jitter * torch.eye(n, dtype=torch.float64) + 0.5 * (c_gg + c_gg.T)
    chol = torch.linalg.cholesky(v)
    one = torch.ones(n, 1, dtype=torch.float64)
    v_inv_res = torch.cholesky_solve((g - mu).reshape(-1, 1), chol).reshape(-1)
    v_inv_one = torch.cholesky_solve(one, chol).reshape(-1)
    c_rg = c_c[:, g_in_rest]
    pooled_rest = theta[rest] - c_rg @ v_inv_res
    u = c_rg @ v_inv_one
    post_cov = (
        c_c
        - c_rg @ torch.cholesky_solve(c_rg.T.contiguous(), chol)
        + torch.outer(u, u) / float(v_inv_one.sum())
        + b @ c_ff @ b.T
    )
    out_theta = theta.clone()
    out_theta[rest] = pooled_rest
    out_cov = cov.clone()
    out_cov[rest.reshape(-1, 1), rest] = 0.5 * (post_cov + post_cov.T)
    # the fixed effects keep their covariance with the rest through b (the feeds move with k as before)
    out_cov[rest.reshape(-1, 1), fixed] = b @ c_ff
    out_cov[fixed.reshape(-1, 1), rest] = (b @ c_ff).T
    keep = tau2 * torch.cholesky_solve(torch.eye(n, dtype=torch.float64), chol).diagonal()
    return PooledFeeds(
        theta=out_theta.to(device),
        cov=out_cov.to(device),
        mu=mu,
        tau2=tau2,
        shrinkage=(1.0 - keep).to(device),
        at_lower_bound=at_lower,
    )
