"""Projected Levenberg-Marquardt for the output-error problem, and profile fits at a fixed ``k``.

One iteration from ``theta`` (P,) with damping ``mu``: the normal equations ``J^T J``, ``J^T r`` of the
problem (:meth:`~calcium_gnn.physics.output_error.OutputErrorProblem.normal_equations`),

.. math::
    (J^\\top J + \\mu \\operatorname{diag}(J^\\top J))_{FF} \\, \\delta_F = -(J^\\top r)_F

over the free parameters F (those not held at a bound by an outward gradient: an active set), the
step projected on the box, accepted when the loss decreases (then ``mu /= damping_factor``, else
``mu *= damping_factor`` and retried, at most ``max_retries`` times). The model is affine in
``(gamma, y0)``, so a few iterations converge. The fit stops when an accepted step lowers the loss by
less than ``tolerance`` (relative).

:class:`LevenbergMarquardt` keeps the solver's state (``mu``, ``converged``) as buffers, so a
checkpoint resumes it and ``.to(device)`` moves it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from calcium_gnn.physics.output_error import OutputErrorProblem

PROFILE_ITERATIONS: int = 20
"""Most active-set solves of the linear parameters at one fixed ``k`` (:func:`profile_fit`)."""

RIDGE: float = 1e-12
"""Relative ridge on the normal matrix of the linear parameters (a finite solve if one is unidentified)."""


@dataclass(frozen=True)
class LMSettings:
    """Host settings of the Levenberg-Marquardt iteration (module docstring)."""

    damping_factor: float = 10.0
    max_retries: int = 8
    tolerance: float = 1e-9


def lm_iteration(
    problem: OutputErrorProblem,
    theta: Tensor,
    mu: float,
    settings: LMSettings,
    fixed: Tensor | None = None,
) -> tuple[Tensor, float, float, bool]:
    """One projected Levenberg-Marquardt trial sequence from ``theta`` (module docstring).

    Args:
        problem: the output-error problem.
        theta: (P,) start.
        mu: damping.
        settings: damping factor, retries, tolerance.
        fixed: optional (P,) bool, parameters kept where they are (e.g. ``k`` in a profile fit).

    Returns:
        ``(theta, loss, mu, moved)``: the new point (``theta`` itself when no trial lowered the loss
        within ``max_retries``), its mean squared residual, the updated damping, and whether a step was
        accepted that lowered the loss by at least ``tolerance`` (relative).
    """
    lo, hi = problem.theta_bounds()
    jtj, grad, r = problem.normal_equations(theta)
    loss = float(r.pow(2).mean())
    diag = jtj.diagonal().clamp(min=1e-30)
    hold = problem.held_at_bounds(theta, grad)
    if fixed is not None:
        hold = hold | fixed
    free = (~hold).nonzero().reshape(-1)
    jtj_free, grad_free, diag_free = jtj[free.reshape(-1, 1), free], grad[free], diag[free]
    for _ in range(settings.max_retries + 1):
        step = torch.zeros_like(theta)
        system = jtj_free.clone()  # (F, F): one copy per trial, the damping added on its diagonal
        system.diagonal().add_(mu * diag_free)
        step[free] = torch.linalg.solve(system, -grad_free)
        del system
        trial = torch.minimum(torch.maximum(theta + step, lo), hi)
        new_loss = problem.loss_theta(trial)
        if new_loss < loss:
            moved = (loss - new_loss) >= settings.tolerance * loss
            return trial, new_loss, max(mu / settings.damping_factor, 1e-12), moved
        mu = mu * settings.damping_factor
    return theta, loss, mu, False


class LevenbergMarquardt(nn.Module):
    """The Levenberg-Marquardt solver with its state as buffers (module docstring).

    Args:
        damping: initial ``mu`` (default 1e-3).
        settings: damping factor, retries, tolerance.
    """

    def __init__(self, damping: float = 1e-3, settings: LMSettings | None = None) -> None:
        super().__init__()
        self.settings = settings or LMSettings()
        self.register_buffer("mu", torch.tensor(float(damping), dtype=torch.float64))
        self.register_buffer("converged", torch.tensor(False))

    @torch.no_grad()
    def step(self, problem: OutputErrorProblem) -> float:
        """One iteration on ``problem`` (its parameters updated in place); returns the loss after it."""
        problem.restore_unpooled()
        theta = problem.theta()
        if bool(self.converged):
            return problem.loss_theta(theta)
        new_theta, loss, mu, moved = lm_iteration(problem, theta, float(self.mu), self.settings)
        self.mu.fill_(mu)
        if new_theta is not theta:
            problem.set_theta(new_theta)
        if not moved:
            self.converged.fill_(True)
        return loss

    @torch.no_grad()
    def fit(self, problem: OutputErrorProblem, max_iterations: int = 100) -> int:
        """Iterate until converged (at most ``max_iterations``); returns the number of iterations."""
        iterations = 0
        while iterations < max_iterations and not bool(self.converged):
            self.step(problem)
            iterations += 1
        return iterations


def ridged_block(jtj: Tensor, idx: Tensor) -> Tensor:
    """``J^T J`` restricted to the parameters ``idx`` (a copy), plus ``RIDGE`` times its largest diagonal
    entry on the diagonal: a finite solve even when a linear parameter is not identified."""
    block = jtj[idx.reshape(-1, 1), idx]
    if idx.numel():
        block.diagonal().add_(RIDGE * float(block.diagonal().max()))
    return block


@torch.no_grad()
def profile_fit(problem: OutputErrorProblem, theta: Tensor) -> tuple[Tensor, Tensor]:
    """The linear parameters (``gamma``, ``y0``, switched feeds) refitted with the nonlinear ones (``k =
    theta[0]``, and the leak rate of a leak law) fixed, from ``theta``.

    The residuals are affine in them, so ``J^T J`` is the same at every ``theta`` with this ``k`` and the
    gradient moves by ``J^T J`` times the step: one Gauss-Newton solve is exact. It is repeated when a step
    crosses a bound (the crossing parameters are then held there) or when, after an unclipped step, the
    gradient releases a held parameter or holds a free one (an active-set iteration to the
    Karush-Kuhn-Tucker point). So the result does not depend on the starting ``theta`` (the border-noise
    correction starts each profile from the previous one); the earlier stop after the first unclipped
    step kept whichever parameters the start had on a bound, and its ``R(k)`` moved with the path by as
    much as one standard error of ``k`` does (1,000 cells).

    Returns:
        ``(theta, free)``: the optimum and the (P,) mask of linear parameters not held at a bound.
    """
    lo, hi = problem.theta_bounds()
    fixed = torch.zeros_like(theta, dtype=torch.bool)
    fixed[: problem.n_nonlinear] = True
    jtj, grad, _ = problem.normal_equations(theta, with_k=False)
    free = ~(problem.held_at_bounds(theta, grad) | fixed)
    for _ in range(PROFILE_ITERATIONS):
        idx = free.nonzero().reshape(-1)
        step = torch.zeros_like(theta)
        step[idx] = torch.linalg.solve(ridged_block(jtj, idx), -grad[idx])
        unclipped = theta + step
        moved = torch.minimum(torch.maximum(unclipped, lo), hi)
        grad = grad + jtj @ (moved - theta)
        theta = moved
        now_free = ~(problem.held_at_bounds(theta, grad) | fixed)
        if torch.equal(theta, unclipped) and torch.equal(now_free, free):
            break
        free = now_free
    return theta, free
