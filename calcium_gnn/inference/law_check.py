"""Does the paper's law fit the data? A score test of the leak term at the fitted linear law.

The leak laws (:mod:`calcium_gnn.physics.laws`) add ``- delta (y_i - b_i)`` to eq. (3); the paper's law
is the leak law at ``delta = 0``. At the linear fit's per-cell optimum ``theta_hat`` (before pooling and
before the border-noise correction: the point where the fit's gradient vanishes), the normal equations of
the extended problem at ``(theta_hat, delta = 0)`` give one Gauss-Newton step of every parameter,

.. math::
    \\Delta = -(J^T J)^{-1} J^T r, \\qquad
    z = \\frac{\\Delta_\\delta}{\\sqrt{\\sigma^2 \\kappa \\, [(J^T J)^{-1}]_{\\delta\\delta}}},

with ``sigma^2 = ||r||^2 / (M - P)`` and ``kappa`` the AR(1) inflation of the residuals' lag-1
autocorrelation (:func:`calcium_gnn.inference.uncertainty.normal_matrix_covariance`). Because the other
parameters' gradient is zero at ``theta_hat``, ``Delta_delta`` is the score of ``delta`` projected on
what the fitted parameters cannot absorb, over its information: ``z`` is the (signed) Rao score
statistic, about N(0, 1) when the data follow the paper's law. A large positive ``z`` says that a leak
back to baseline explains the data better than the coupling alone can, and then the linear law's ``k``
absorbs the leak. On the zoo's dev-0..119 (``python benchmarks/zoo.py --split dev --n-dev 120
--estimators neural_ode``), the 94 linear members' ``z`` were at most 2.46; of the 26 leak members, 13
had ``z`` above 3.09 (the flag: :attr:`calcium_gnn.evaluation.diagnostics.DiagnosticRule.law_rejection_z`,
one-sided ``p = 0.001``, with a leak above 2% of the coupling rate), their linear law's coupling rates
0.5-95% off. Parameters held at a bound
of the box (pushed outward by the gradient) stay where they are; ``delta`` is always free so that ``z``
keeps its sign.

The test costs one set of normal equations (the fit's modal basis is reused). It is a test of one
alternative, not a proof that the law is right: a small ``z`` says only that a leak does not help.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch

from calcium_gnn.inference.uncertainty import normal_matrix_covariance
from calcium_gnn.physics.edge_weights import coupling_rate
from calcium_gnn.physics.output_error import OutputErrorProblem

#: the relative ridge added to the free block of ``J^T J`` before it is solved (an unidentified feed)
RIDGE: float = 1e-12


def rejects_law(z: float, step_over_coupling: float, z_threshold: float, share: float) -> bool:
    """Whether a leak score rejects the law without a leak: ``z`` above ``z_threshold`` *and* a one-step
    leak above ``share`` of the median coupling rate (a significant but negligible leak is no rejection).
    The one rule of the diagnostics' law check and of the output-error reference's choice of law."""
    return z > z_threshold and step_over_coupling > share


@dataclass(frozen=True)
class LeakScore:
    """The score test of the leak term (module docstring).

    Attributes:
        z: the signed score statistic of ``delta`` at 0.
        delta_step: the Gauss-Newton step of ``delta`` from 0 (1/s); ``delta_se`` its standard error.
        step_over_coupling: ``delta_step`` over the median coupling rate ``c_i = k / |N_i| sum_j w_ij``
            of G: how large the leak is next to the coupling (a significant but negligible leak, such as
            the integrator's error on noise-free data can produce, is not a rejection of the law).
        rho, inflation: the residuals' pooled lag-1 autocorrelation and the AR(1) inflation applied.
        seconds: the wall time of the test.
    """

    z: float
    delta_step: float
    delta_se: float
    step_over_coupling: float
    rho: float
    inflation: float
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        """The ``law.leak_score`` block of results.json."""
        return {
            "alternative": "leak: eq. 3 - delta (y_i - b_i)",
            "z": self.z,
            "delta_step": self.delta_step,
            "delta_se": self.delta_se,
            "step_over_coupling": self.step_over_coupling,
            "rho": self.rho,
            "inflation": self.inflation,
            "seconds": self.seconds,
        }


def median_coupling_rate(problem: OutputErrorProblem, k: torch.Tensor) -> torch.Tensor:
    """The median over G of the coupling rates ``c_i`` (1/s, 0-d,
    :func:`calcium_gnn.physics.edge_weights.coupling_rate`)."""
    rates = coupling_rate(k, problem.edge_weight, problem.edge_index, problem.modelled.shape[0])
    return rates[problem.index].median()


@torch.no_grad()
def leak_score_test(
    problem: OutputErrorProblem, leak_bounds: tuple[float, float], autocorrelation: bool = True
) -> LeakScore | str:
    """The score test of the leak term at ``problem``'s per-cell optimum (module docstring).

    Args:
        problem: a fitted output-error problem of a law without a leak (at its optimum).
        leak_bounds: the box of ``delta`` (only its place in the extended problem; the test is unbounded).
        autocorrelation: apply the AR(1) inflation to the variance.

    Returns:
        the :class:`LeakScore`, or why the test cannot be made (one line): the extended problem's normal
        equations cannot be formed, or the law already has a leak.
    """
    if problem.has_leak:
        return "the law already has a leak"
    start = time.perf_counter()
    extended = problem.with_leak(leak_bounds)
    unavailable = extended.normal_equations_unavailable()
    if unavailable is not None:
        return unavailable
    theta = extended.embed_theta(problem.theta_unpooled(), problem)
    jtj, jtr, residuals = extended.normal_equations(theta)
    leak = extended.layout()["leak"].start
    free = ~extended.held_at_bounds(theta, jtr)
    free[leak] = True
    block = jtj[free][:, free]
    shift = RIDGE * float(block.diagonal().max())
    block = block + shift * torch.eye(block.shape[0], dtype=block.dtype, device=block.device)
    step = -torch.linalg.solve(block, jtr[free])
    cov = normal_matrix_covariance(block, residuals, autocorrelation=autocorrelation, ridge=0.0,
                                   n_parameters=extended.n_parameters)
    position = int(free[:leak].sum())
    delta_step = float(step[position])
    se = math.sqrt(max(float(cov.cov[position, position]), 0.0))
    z = delta_step / se if se > 0 else math.copysign(math.inf, delta_step)
    rate = float(median_coupling_rate(problem, theta[0]))
    return LeakScore(z=z, delta_step=delta_step, delta_se=se,
                     step_over_coupling=delta_step / rate if rate > 0 else math.inf,
                     rho=cov.rho, inflation=cov.inflation,
                     seconds=time.perf_counter() - start)
