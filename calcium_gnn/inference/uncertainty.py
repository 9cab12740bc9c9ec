"""Confidence intervals for ``k`` and ``gamma_i`` of an output-error fit (Laplace / Gauss-Newton).

An output-error fit (:mod:`calcium_gnn.models.neural_ode`) minimises the sum of squared residuals
``r(theta) = y_sim(theta) - x`` over the G modelled cells and T training frames (M = G T residuals),
``theta = (k, gamma, y0)`` (P parameters). Near the optimum ``theta*`` the model is linear,
``r(theta) ~ r* + J (theta - theta*)`` with ``J = dr/dtheta`` (M, P), and with i.i.d. residuals of
variance ``sigma^2`` the estimate is approximately Gaussian (Laplace approximation of the likelihood):

.. math::
    \\operatorname{Cov}(\\hat\\theta) \\approx \\hat\\sigma^2 (J^\\top J)^{-1} \\, \\kappa, \\qquad
    \\hat\\sigma^2 = \\frac{\\lVert r^* \\rVert^2}{M - P}, \\qquad
    \\kappa = \\frac{1 + \\hat\\rho}{1 - \\hat\\rho} \\ (\\hat\\rho > 0; \\text{ else } 1),

where ``rho`` is the pooled lag-1 autocorrelation of the residuals along time (the residuals of the
consensus model are not white: the noisy border inputs are low-pass filtered by the ODE). ``kappa``
is the long-run variance factor of an AR(1) process, the variance inflation of a mean of correlated
samples; it is exact when the columns of ``J`` vary slowly in time compared with the correlation.

**Noisy inputs (errors in variables).** The border cells drive the simulation with their *observed*
traces, whose noise ``e`` (variance ``sigma^2`` per value, like every cell of one movie) reaches the
simulated interior through the linear map ``F_k`` (border inputs -> traces of G,
:mod:`calcium_gnn.physics.border_noise`): ``r = r* + eps + F_k e``. To first order the estimate moves
by ``-(J^T J)^{-1} J^T (eps + F_k e)``, so its covariance is the sandwich

.. math::
    \\operatorname{Cov}(\\hat\\theta) \\approx \\hat\\sigma^2 \\kappa \\left[(J^\\top J)^{-1}
    + (J^\\top J)^{-1} J^\\top F_k F_k^\\top J (J^\\top J)^{-1}\\right]
    \\approx \\hat\\sigma^2 \\kappa \\left[(J^\\top J)^{-1} + \\tfrac{1}{n_p} U U^\\top\\right],
    \\qquad U = (J^\\top J)^{-1} \\left[J^\\top F_k z_1, \\dots, J^\\top F_k z_{n_p}\\right],

with ``n_p`` standard-normal probes ``z_p`` on the border inputs (Hutchinson: ``E[F z z^T F^T] = F F^T``).
The Gauss-Newton term alone counts the border noise that reaches G as information; the second term
(``input_noise``) adds it back as variance. On the 91 linear dev members of the zoo at <= 5% noise that
get an interval, it widens the interval of ``k`` by a median 6% (90th percentile 22.5%, at most 58%),
and the 90% intervals hold the true ``k`` in 86.8% of them instead of 83.5% (32 probes, the default;
85.7% with 8, 87.9% with 64).

The ``level`` two-sided interval is ``theta_p +- z_{(1+level)/2} se_p`` (``se_p`` the square root of
the diagonal of the covariance), clipped to the parameter's box.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import torch
from torch import Tensor

from calcium_gnn.errors import ConfigError

DEFAULT_LEVEL: float = 0.9


def check_level(level: float, key: str = "model.interval_level") -> float:
    """``level`` as a float in (0, 1); ConfigError naming ``key`` otherwise."""
    try:
        value = float(level)
    except (TypeError, ValueError):
        raise ConfigError(key, f"expected a probability in (0, 1), got {level!r}") from None
    if not 0.0 < value < 1.0:
        raise ConfigError(key, f"expected a probability in (0, 1), got {level!r}")
    return value


def lag1_autocorrelation(residuals: Tensor) -> float:
    """Pooled lag-1 autocorrelation of (G, T) residuals.

    ``rho = sum_i sum_t r_it r_i,t+1 / sum_i sum_t r_it^2``.

    Each row is centred on its mean first; 0 when there is fewer than 2 frames or no variance.
    """
    r = residuals.detach().double()
    if r.dim() != 2 or r.shape[1] < 2:
        return 0.0
    r = r - r.mean(dim=1, keepdim=True)
    denominator = float((r * r).sum())
    if denominator <= 0:
        return 0.0
    return float((r[:, 1:] * r[:, :-1]).sum()) / denominator


@dataclass
class GaussNewtonCovariance:
    """The Laplace / Gauss-Newton covariance of the parameters (module docstring).

    Attributes:
        cov: (P, P) covariance of ``theta``.
        sigma2: residual variance ``||r||^2 / (M - P)``.
        rho: pooled lag-1 autocorrelation of the residuals.
        inflation: ``kappa`` applied to the covariance (1 when ``rho <= 0`` or correction disabled).
        dof: ``M - P``.
    """

    cov: Tensor
    sigma2: float
    rho: float
    inflation: float
    dof: int

    @property
    def se(self) -> Tensor:
        """(P,) standard errors."""
        return self.cov.diagonal().clamp(min=0).sqrt()


def gauss_newton_covariance(
    jacobian: Tensor,
    residuals: Tensor,
    *,
    autocorrelation: bool = True,
    ridge: float = 1e-12,
) -> GaussNewtonCovariance:
    """``sigma^2 kappa (J^T J)^{-1}`` (module docstring).

    Args:
        jacobian: (M, P) ``dr/dtheta`` with the rows ordered like ``residuals.reshape(-1)``.
        residuals: (G, T) residuals at the optimum (cells first, time last).
        autocorrelation: apply the AR(1) inflation ``kappa`` (default True).
        ridge: relative Tikhonov shift ``ridge * max(diag(J^T J))`` added to the diagonal so that
            an unidentifiable direction gives a huge but finite variance instead of a failure.

    Returns:
        the :class:`GaussNewtonCovariance`.
    """
    j = jacobian.detach().double()
    if residuals.numel() != j.shape[0]:
        raise ValueError(f"jacobian has {j.shape[0]} rows but there are {residuals.numel()} residuals")
    return normal_matrix_covariance(j.T @ j, residuals, autocorrelation=autocorrelation, ridge=ridge)


def normal_matrix_covariance(
    normal_matrix: Tensor,
    residuals: Tensor,
    *,
    autocorrelation: bool = True,
    ridge: float = 1e-12,
    n_parameters: int | None = None,
    input_noise: Tensor | None = None,
) -> GaussNewtonCovariance:
    """:func:`gauss_newton_covariance` from ``J^T J`` (P, P) instead of ``J`` (M = ``residuals.numel()``).

    For fits that assemble the normal matrix without forming ``J`` (:mod:`calcium_gnn.physics.modal`).
    ``n_parameters``: the fit's number of parameters when ``normal_matrix`` is the Schur complement of
    a subset (the information of ``k`` with the other parameters profiled out): the degrees of freedom
    of ``sigma^2`` are ``M - n_parameters`` (default: the matrix's size). ``input_noise`` (P, n_p): the
    products ``J^T F_k z_p`` of the noisy inputs' probes (module docstring); their term
    ``U U^T / n_p`` is added inside the sandwich (default: none, the Gauss-Newton covariance alone).
    """
    r = residuals.detach().double()
    info = normal_matrix.detach().double()
    m, p = r.numel(), info.shape[0]
    dof = max(m - (p if n_parameters is None else int(n_parameters)), 1)
    sigma2 = float((r * r).sum()) / dof
    rho = lag1_autocorrelation(r) if autocorrelation else 0.0
    inflation = (1.0 + rho) / (1.0 - rho) if 0.0 < rho < 1.0 else 1.0
    shift = ridge * float(info.diagonal().max()) if p else 0.0
    info = info + shift * torch.eye(p, dtype=info.dtype, device=info.device)
    inverse = torch.linalg.inv(info)
    if input_noise is not None:
        products = input_noise.detach().to(inverse)
        if products.dim() != 2 or products.shape[0] != p or products.shape[1] == 0:
            raise ValueError(f"input_noise must be ({p}, n_probes), got {tuple(products.shape)}")
        u = inverse @ products
        inverse = inverse + (u @ u.T) / products.shape[1]
    cov = sigma2 * inflation * inverse
    cov = 0.5 * (cov + cov.T)
    return GaussNewtonCovariance(cov=cov, sigma2=sigma2, rho=rho, inflation=inflation, dof=dof)


def normal_interval(
    estimate: Tensor, se: Tensor, level: float = DEFAULT_LEVEL, bounds: tuple[float, float] | None = None
) -> tuple[Tensor, Tensor]:
    """Two-sided ``level`` intervals ``estimate +- z se`` (``z`` the ``(1 + level)/2`` normal quantile).

    Args:
        estimate, se: same shape.
        level: coverage probability in (0, 1) (default 0.9).
        bounds: optional box ``(lo, hi)`` the intervals are clipped to.

    Returns:
        ``(lower, upper)``, the shape of ``estimate``.
    """
    z = NormalDist().inv_cdf(0.5 + 0.5 * check_level(level))
    lower, upper = estimate - z * se, estimate + z * se
    if bounds is not None:
        lower, upper = lower.clamp(bounds[0], bounds[1]), upper.clamp(bounds[0], bounds[1])
    return lower, upper


@dataclass
class ParameterIntervals:
    """Intervals of the consensus parameters at one ``level``.

    Attributes:
        level: coverage probability of the intervals.
        k, k_se: estimate and standard error of ``k``; k_interval: ``(lower, upper)``.
        gamma, gamma_se, gamma_lower, gamma_upper: (N,) per cell (NaN for cells without a fitted gamma).
        sigma2, rho, inflation: see :class:`GaussNewtonCovariance`.
        method: how they were obtained (text, recorded in results.json).
    """

    level: float
    k: float
    k_se: float
    k_interval: tuple[float, float]
    gamma: Tensor
    gamma_se: Tensor
    gamma_lower: Tensor
    gamma_upper: Tensor
    sigma2: float
    rho: float
    inflation: float
    method: str

    def covers(self, k_true: float, gamma_true: Tensor) -> tuple[bool, Tensor]:
        """Whether the k interval holds ``k_true`` and, per cell, the gamma interval holds ``gamma_true``.

        Returns:
            ``(k_covered, gamma_covered)``; ``gamma_covered`` is (N,) bool, False where undefined.
        """
        g = torch.as_tensor(gamma_true, dtype=torch.float64)
        inside = (g >= self.gamma_lower) & (g <= self.gamma_upper)
        return self.k_interval[0] <= k_true <= self.k_interval[1], inside

    def as_results(self, cell_id: Tensor, cells: Tensor) -> dict[str, Any]:
        """The results.json entries ``k_interval``, ``gamma_interval``, ``interval_level`` and details.

        Args:
            cell_id: (N,) cell labels (``data.cell_id``).
            cells: (N,) bool, the cells whose gamma interval is reported (the modelled cells).
        """
        ids = cell_id.reshape(-1).tolist()
        keep = cells.reshape(-1).tolist()
        gamma_interval = {
            str(ids[i]): [float(self.gamma_lower[i]), float(self.gamma_upper[i])]
            for i in range(len(ids))
            if keep[i] and math.isfinite(float(self.gamma_lower[i]))
        }
        return {
            "interval_level": self.level,
            "k_interval": [float(self.k_interval[0]), float(self.k_interval[1])],
            "gamma_interval": gamma_interval,
            "interval_method": self.method,
            "k_se": self.k_se,
            "residual_sigma": math.sqrt(self.sigma2),
            "residual_lag1_autocorrelation": self.rho,
            "variance_inflation": self.inflation,
        }
