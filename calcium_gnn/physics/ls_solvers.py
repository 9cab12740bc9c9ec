"""Solvers of the (constrained, regularised) least squares of eqs. (17)-(20).

All three minimise over ``theta = [k, gamma_1..gamma_m]``

.. math::
    f(\\theta) = \\tfrac12 \\lVert A\\theta - b \\rVert^2 + \\tfrac{\\lambda}{2} \\lVert\\theta\\rVert^2,
    \\qquad l \\le \\theta \\le u,

(LSM: ``lambda = 0``, no box, eq. 17; RLSM: eqs. 18-19; CRLSM: eq. 20) — see
:mod:`calcium_gnn.physics.ls_system` for ``A``, ``b`` and the statistics ``P, C, Q, R, D``.

**Fast exact path** (:func:`solve_fast`). The normal matrix is an arrow matrix: every row touches
``k`` and one ``gamma_g``. For a fixed ``k`` the problem separates, and each feed is

.. math::
    \\gamma_g(k) = \\operatorname{clip}\\Big(\\frac{D_g - k Q_g}{R_g + \\lambda}, l_\\gamma, u_\\gamma\\Big)

(the Schur complement of the gamma block). The reduced objective ``F(k) = min_gamma f(k, gamma)`` is
convex and piecewise quadratic, with derivative (envelope theorem)

.. math::
    F'(k) = (P + \\lambda) k + \\sum_g Q_g \\gamma_g(k) - C,

continuous, non-decreasing and piecewise linear, with breakpoints where a ``gamma_g(k)`` reaches a
bound. The optimum is ``k = l_k`` if ``F'(l_k) >= 0``, ``k = u_k`` if ``F'(u_k) <= 0``, and otherwise
the root of ``F'``: a bisection over the sorted breakpoints finds the linear piece holding it
(O(m log m)), on which the active set is fixed and the root is closed-form. These are exactly the KKT
conditions of the box-constrained problem, so the answer is exact (up to rounding).

**Differentiable path** (:func:`solve_active_set`): given the active set, the free variables solve the
normal equations restricted to them, in closed form (torch), so gradients flow to the data and the
weights (the implicit-function gradient of the optimum, valid wherever the active set is locally
constant).

**Reference** (:func:`solve_scipy`): ``scipy.optimize.lsq_linear(method="trf")`` on the stacked
sparse system, the paper's solver (eq. 20).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import lsq_linear
from torch import Tensor

from calcium_gnn.physics.ls_system import LSSystem, NormalStats, assemble_sparse, normal_stats

Bounds = tuple[float, float]
UNBOUNDED: Bounds = (-math.inf, math.inf)


@dataclass
class LSSolution:
    """An optimum of eq. (18)/(20).

    Attributes:
        k: (), float64.
        gamma: (m,), float64 (one per gamma group; empty for ``gamma_mode="none"``).
        k_active: -1 (at the lower bound), 0 (free) or +1 (at the upper bound).
        gamma_active: (m,) int8, same coding.
        objective: (), ``f(theta)`` at the optimum.
    """

    k: Tensor
    gamma: Tensor
    k_active: int
    gamma_active: Tensor
    objective: Tensor


def objective(stats: NormalStats, k: Tensor, gamma: Tensor, lam: float) -> Tensor:
    """``f = 1/2 ||A theta - b||^2 + lam/2 ||theta||^2`` from the normal statistics, shape ()."""
    data = stats.P * k * k + 2 * k * (stats.Q @ gamma) + stats.R @ (gamma * gamma)
    data = data - 2 * stats.C * k - 2 * (stats.D @ gamma) + stats.BB
    return 0.5 * data + 0.5 * lam * (k * k + gamma @ gamma)


def projected_gradient(
    stats: NormalStats, k: Tensor, gamma: Tensor, lam: float, k_bounds: Bounds, gamma_bounds: Bounds
) -> Tensor:
    """KKT residual of the box-constrained problem, (1 + m,): the gradient of ``f`` with the components
    that push into an active bound set to zero (all zero exactly at the optimum)."""
    grad = torch.cat(
        [
            ((stats.P + lam) * k + stats.Q @ gamma - stats.C).reshape(1),
            stats.Q * k + (stats.R + lam) * gamma - stats.D,
        ]
    )
    theta = torch.cat([k.reshape(1), gamma])
    lo = theta.new_tensor([k_bounds[0]] + [gamma_bounds[0]] * gamma.numel())
    hi = theta.new_tensor([k_bounds[1]] + [gamma_bounds[1]] * gamma.numel())
    at_lo, at_hi = theta <= lo, theta >= hi
    return torch.where(at_lo, grad.clamp(max=0), torch.where(at_hi, grad.clamp(min=0), grad))


def _numpy_stats(stats: NormalStats) -> tuple[float, float, np.ndarray, np.ndarray, np.ndarray]:
    def arr(t: Tensor) -> np.ndarray:
        return t.detach().double().cpu().numpy()

    return float(stats.P.detach()), float(stats.C.detach()), arr(stats.Q), arr(stats.R), arr(stats.D)


def solve_fast(
    stats: NormalStats,
    lam: float,
    k_bounds: Bounds = UNBOUNDED,
    gamma_bounds: Bounds = UNBOUNDED,
    *,
    flat_tol: float = 1e-12,
) -> LSSolution:
    """Exact minimiser of eq. (18)/(20) by the reduction to ``k`` (module docstring), O(m log m).

    Args:
        stats: normal statistics of the system.
        lam: Tikhonov weight lambda >= 0 (eq. 18).
        k_bounds, gamma_bounds: the box of eq. (20); ``(-inf, inf)`` for LSM / RLSM.
        flat_tol: relative curvature below which ``F`` counts as flat along ``k`` (only with
            ``lam = 0`` and a rank-deficient ``A``); then the minimum-norm minimiser is returned, as the
            pseudo-inverse of eq. (17) does.

    Returns:
        the :class:`LSSolution` (values from :func:`solve_active_set`), on the device of ``stats``.

    The search for the active set runs on the host (a few scalars per group, numpy); the closed-form
    solve that gives the values runs in torch on the device of ``stats``, so it stays differentiable.
    """
    P, C, Q, R, D = _numpy_stats(stats)
    Rl = R + lam
    k_lo, k_hi = k_bounds
    g_lo, g_hi = gamma_bounds

    def gamma_free(k: float) -> np.ndarray:
        return (D - k * Q) / Rl

    def slope(k: float) -> float:
        return (P + lam) * k + float(Q @ np.clip(gamma_free(k), g_lo, g_hi)) - C

    if math.isfinite(k_lo) and slope(k_lo) >= 0:
        k_active, seg = -1, (k_lo, k_lo)
    elif math.isfinite(k_hi) and slope(k_hi) <= 0:
        k_active, seg = 1, (k_hi, k_hi)
    else:
        k_active = 0
        nz = Q != 0
        with np.errstate(invalid="ignore"):
            cand = np.concatenate([(D[nz] - g_lo * Rl[nz]) / Q[nz], (D[nz] - g_hi * Rl[nz]) / Q[nz]])
        cand = np.unique(cand[np.isfinite(cand) & (cand > k_lo) & (cand < k_hi)])
        lo_i, hi_i = -1, cand.size  # invariant: slope(cand[lo_i]) < 0 <= slope(cand[hi_i]) (ends: bounds)
        while hi_i - lo_i > 1:
            mid = (lo_i + hi_i) // 2
            if slope(float(cand[mid])) < 0:
                lo_i = mid
            else:
                hi_i = mid
        seg = (float(cand[lo_i]) if lo_i >= 0 else k_lo, float(cand[hi_i]) if hi_i < cand.size else k_hi)
    # the active set of the gammas inside the piece that holds the optimum
    a, b = seg
    if math.isfinite(a) and math.isfinite(b):
        probe = 0.5 * (a + b)
    elif math.isfinite(a):
        probe = a + max(1.0, abs(a))
    elif math.isfinite(b):
        probe = b - max(1.0, abs(b))
    else:
        probe = 0.0
    free_value = gamma_free(probe)
    gamma_active = np.where(free_value < g_lo, -1, np.where(free_value > g_hi, 1, 0)).astype(np.int8)
    active = torch.from_numpy(gamma_active).to(stats.Q.device)
    k, gamma = solve_active_set(stats, lam, k_bounds, gamma_bounds, k_active, active, flat_tol=flat_tol)
    if k_active == 0 and not (a <= float(k.detach()) <= b):  # rounding at a breakpoint: stay in the piece
        k = k.clamp(a, b)
        gamma = torch.where(active == 0, (stats.D - k * stats.Q) / (stats.R + lam), gamma)
    return LSSolution(
        k=k, gamma=gamma, k_active=k_active, gamma_active=active, objective=objective(stats, k, gamma, lam)
    )


def solve_active_set(
    stats: NormalStats,
    lam: float,
    k_bounds: Bounds,
    gamma_bounds: Bounds,
    k_active: int,
    gamma_active: Tensor,
    *,
    flat_tol: float = 1e-12,
) -> tuple[Tensor, Tensor]:
    """Closed-form optimum for a given active set; differentiable in ``stats`` (torch).

    With ``F`` the free gammas and ``B`` the bound ones (at ``beta_g``), the stationarity of ``f`` in the
    free variables gives (Schur complement of the gamma block):

    .. math::
        k = \\frac{C - \\sum_{g\\in F} Q_g D_g/(R_g+\\lambda) - \\sum_{g \\in B} Q_g \\beta_g}
                 {P + \\lambda - \\sum_{g \\in F} Q_g^2/(R_g+\\lambda)}, \\qquad
        \\gamma_g = \\frac{D_g - k Q_g}{R_g + \\lambda} \\ (g \\in F),

    or ``k`` at its bound when ``k_active != 0``. When the denominator vanishes (``lambda = 0``,
    rank-deficient ``A``) ``k`` minimises ``k^2 + sum_F gamma_g(k)^2`` instead (minimum norm).

    Args:
        stats: normal statistics (float64, any device).
        lam: Tikhonov weight lambda >= 0.
        k_bounds, gamma_bounds: the box.
        k_active: -1, 0 or +1 (at the lower bound, free, at the upper bound).
        gamma_active: (m,) integer codes, same coding (moved to the device of ``stats`` if needed).
        flat_tol: see :func:`solve_fast`.

    Returns:
        ``(k (), gamma (m,))`` in float64, on the device of ``stats``.
    """
    Rl = stats.R + lam
    gamma_active = gamma_active.to(stats.R.device)
    free = gamma_active == 0
    beta = torch.where(
        gamma_active < 0,
        torch.full_like(stats.R, gamma_bounds[0]),
        torch.full_like(stats.R, gamma_bounds[1]),
    )
    beta = torch.where(free, torch.zeros_like(beta), beta)
    if k_active != 0:
        k = stats.P.new_tensor(k_bounds[0] if k_active < 0 else k_bounds[1])
    else:
        QF = torch.where(free, stats.Q, torch.zeros_like(stats.Q))
        num = stats.C - (QF * stats.D / Rl).sum() - (stats.Q * beta).sum()
        den = stats.P + lam - (QF * QF / Rl).sum()
        if float(den.detach()) > flat_tol * float(stats.P.detach() + lam):
            k = num / den
        else:
            k = (QF * stats.D / Rl**2).sum() / (1 + (QF * QF / Rl**2).sum())
    gamma = torch.where(free, (stats.D - k * stats.Q) / Rl, beta)
    return k, gamma


def solve_scipy(
    system: LSSystem,
    lam: float,
    k_bounds: Bounds = UNBOUNDED,
    gamma_bounds: Bounds = UNBOUNDED,
    *,
    tol: float = 1e-14,
    lsmr_tol: float | None = 1e-14,
    max_iter: int | None = None,
) -> LSSolution:
    """Reference: ``scipy.optimize.lsq_linear(method="trf")`` on the stacked sparse system (eq. 20).

    Args:
        system: the regression rows.
        lam: Tikhonov weight (stacked as ``sqrt(lam) I``, eq. 19).
        k_bounds, gamma_bounds: the box (infinite for LSM / RLSM).
        tol: ``lsq_linear`` termination tolerance (tight by default, so it is a real reference).
        lsmr_tol: tolerance of the inner LSMR solves.
        max_iter: iteration cap of ``lsq_linear`` (None: scipy's default).

    Returns:
        the :class:`LSSolution` (objective from the normal statistics), on the device of the system's
        tensors (scipy itself runs on the host).
    """
    matrix, rhs = assemble_sparse(system, lam)
    m = system.num_gamma
    lower = np.array([k_bounds[0]] + [gamma_bounds[0]] * m)
    upper = np.array([k_bounds[1]] + [gamma_bounds[1]] * m)
    result = lsq_linear(
        matrix, rhs, bounds=(lower, upper), method="trf", tol=tol, lsq_solver="lsmr",
        lsmr_tol=lsmr_tol, max_iter=max_iter,
    )
    device = system.drive.device
    theta = torch.from_numpy(np.asarray(result.x, dtype=np.float64)).to(device)
    active = torch.from_numpy(np.asarray(result.active_mask, dtype=np.int8)).to(device)
    k, gamma = theta[0], theta[1:]
    stats = normal_stats(system)
    return LSSolution(
        k=k, gamma=gamma, k_active=int(result.active_mask[0]), gamma_active=active[1:],
        objective=objective(stats, k, gamma, lam),
    )
