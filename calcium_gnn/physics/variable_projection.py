"""Matrix-free variable projection for the output-error problem at scale (thousands of cells).

The Levenberg-Marquardt solver (:mod:`calcium_gnn.physics.levenberg_marquardt`) forms ``J^T J``
(P, P) with P = 1 + 2 G parameters: at 10,000 cells that is 3.2 GB per copy and an O(P^3) solve
per trial, and the fit did not end within 16 GB and 10 minutes. This solver never forms it.

**Variable projection.** The residuals are affine in the linear parameters ``beta`` (the feeds
``gamma``, switched feeds, initial states ``y0``) and nonlinear only in ``phi = (k[, delta])``. For a
given ``phi`` the optimal ``beta`` solves the normal equations ``(J_b^T J_b) d = -J_b^T r`` (a profile
fit, with the box of the feeds kept by an active set as in
:func:`~calcium_gnn.physics.levenberg_marquardt.profile_fit`); ``phi`` moves by damped Gauss-Newton
steps on the profiled loss (Kaufman's approximation), whose normal matrix is the Schur complement

.. math::
    H = C^\\top C - (J_b^\\top C)^\\top (J_b^\\top J_b)^{-1} (J_b^\\top C), \\qquad
    g = C^\\top r,

``C`` (G T, n_phi) the columns ``dr/dphi`` (one forward-mode pass each). ``H`` is exactly the
inverse of the ``phi`` block of ``(J^T J)^{-1}``, so ``sigma^2 H^{-1}`` is the Gauss-Newton covariance
of ``phi`` that the full normal equations would give.

**Matrix-free normal operator** (:class:`LinearNormalOperator`). In the eigenbasis of the consensus
operator (:mod:`calcium_gnn.physics.modal`, ``A_1 = V diag(lam) V^{-1}``, ``K = V^T V``), a per-cell
block ``b`` (G,) enters the residuals as ``V (X^T o V^{-1} b)`` with ``X`` (T, G) its modal response,
so with ``W = sum_blocks X^T o V^{-1} b`` (G, T)

.. math::
    (J_b^\\top J_b\\, b)_{\\text{block}} = V^{-\\top} \\big[(X^\\top \\circ
    (K W + \\textstyle\\sum_j s_j V^\\top C_j)) \\mathbf 1\\big],

one (G, G) x (G, T) product per application, O(T G^2), with ``s_j`` the shared scalars (a shared
feed) and ``C_j`` their columns. It is solved by preconditioned conjugate gradients. The
preconditioner replaces ``K`` by its diagonal: in the eigenbasis the system then splits into one
``n_blocks x n_blocks`` system per mode. Since ``K = Q^T D^{-1} Q`` (``D`` the degrees, ``Q``
orthogonal), ``K`` lies between ``I / max|N_i|`` and ``I / min|N_i|``, so the preconditioned system's
condition number is at most about ``max|N_i| / min|N_i|``: a few tens of iterations reach rounding.

Cost per profile fit: two simulations and ``n_cg`` operator applications, all O(T G^2), against
O(G^3) per Levenberg-Marquardt trial. Memory: the eigenbasis (three (G, G) matrices) and a few
(G, T) arrays.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from calcium_gnn.physics.line_search import bracketed_minimum
from calcium_gnn.physics.modal import ModalBasis, transpose_product
from calcium_gnn.physics.output_error import OutputErrorProblem
from calcium_gnn.physics.weighted_profile import ModalWeightedProfile, weighted_profile_unavailable

RIDGE: float = 1e-12
"""Relative ridge on each mode's block of the preconditioner (a finite inverse for a mode a block
cannot see, e.g. a feed's response before it has grown)."""


@dataclass(frozen=True)
class ProjectionSettings:
    """Host settings of the variable-projection fit (module docstring).

    Attributes:
        cg_tolerance: conjugate gradients stop when the residual norm falls below this fraction of
            the right-hand side's.
        schur_tolerance: the same for the solves of the Schur complement (a relative error of ``H``).
        cg_max_iterations: most conjugate-gradient iterations per solve.
        step_tolerance: a stage ends when the Gauss-Newton step of every ``phi`` is smaller than this
            fraction of its standard error (a move that small is far inside the estimate's own
            uncertainty).
        profile_iterations: most active-set rounds of one profile fit.
        line_tolerance: of the weighted stage's line search on ``log k`` (where it is one).
        damping_factor, max_retries, tolerance: of the damped Gauss-Newton steps on ``phi`` (as
            :class:`~calcium_gnn.physics.levenberg_marquardt.LMSettings`).
    """

    cg_tolerance: float = 1e-9
    schur_tolerance: float = 1e-6
    cg_max_iterations: int = 300
    step_tolerance: float = 1e-2
    profile_iterations: int = 20
    line_tolerance: float = 1e-4
    damping_factor: float = 10.0
    max_retries: int = 8
    tolerance: float = 1e-9


@dataclass
class ConjugateGradientReport:
    """How a conjugate-gradient solve ended: iterations used, and whether it reached its tolerance."""

    iterations: int
    converged: bool
    relative_residual: float


class LinearNormalOperator:
    """``J_b^T J_b`` of the linear parameters at fixed ``phi``, applied without forming it.

    Vectors are the linear part of ``theta`` (``theta[n_nonlinear:]``, the problem's layout: shared
    scalars first, then the per-cell blocks of G each).

    Args:
        problem: the output-error problem (with a modal basis).
        theta: (P,) the point whose ``phi`` fixes the operator.
    """

    def __init__(self, problem: OutputErrorProblem, theta: Tensor, weights: Tensor | None = None) -> None:
        basis = problem.modal_basis()
        if basis is None:
            raise ValueError("variable projection needs the modal basis (symmetric edge weights)")
        self.basis: ModalBasis = basis
        self.weights = weights
        dense, blocks = problem._modal_design(theta, basis, with_k=False)
        self.columns = [c.double() for c in dense[problem.n_nonlinear:]]  # shared scalars, (G, T) each
        self.blocks = blocks  # per-cell blocks, (T, G) modal responses each
        self.g = int(basis.lam.numel())
        self.q = len(self.columns)
        self.rotated = [basis.v.T @ self._weigh(c) for c in self.columns]  # V^T D_w C_j (G, T)
        cross = theta.new_zeros(self.q, self.q)
        for a in range(self.q):
            for b in range(self.q):
                cross[a, b] = (self.columns[a] * self._weigh(self.columns[b])).sum()
        self.cross = cross
        # the preconditioner: the degree-weighted normal matrix J_b^T D J_b, one (B, B) block per mode
        # (V^T D V = I), scaled by mean(1/|N_i|); exact for the weighted loss
        scale_metric = 1.0 if weights is not None else float(problem.degrees().reciprocal().mean())
        if blocks:
            stacked = torch.stack(blocks, dim=0)  # (B, T, G)
            per_mode = torch.einsum("btg,ctg->gbc", stacked, stacked) * scale_metric
            scale = per_mode.diagonal(dim1=1, dim2=2).amax(dim=1).clamp(min=1e-300)
            eye = torch.eye(len(blocks), dtype=per_mode.dtype, device=per_mode.device)
            self.mode_inverse = torch.linalg.inv(per_mode + RIDGE * scale.reshape(-1, 1, 1) * eye)
        else:
            self.mode_inverse = theta.new_zeros(self.g, 0, 0)
        #: the last held set of :meth:`held_factor`: (indices, N_HH, its Cholesky factor)
        self._held: tuple[Tensor, Tensor, Tensor] | None = None

    def _weigh(self, r: Tensor) -> Tensor:
        """``D_w r`` for a (G, T) array (the residual weights, or ``r`` itself without them)."""
        return r if self.weights is None else r * self.weights.reshape(-1, 1)

    @property
    def size(self) -> int:
        """Number of linear parameters."""
        return self.q + self.g * len(self.blocks)

    def _split(self, v: Tensor) -> tuple[Tensor, list[Tensor]]:
        q, g = self.q, self.g
        return v[:q], [v[q + i * g : q + (i + 1) * g] for i in range(len(self.blocks))]

    def _modal_state(self, blocks: list[Tensor]) -> Tensor:
        """``W = sum_b X_b^T o V^{-1} b`` (G, T)."""
        state = None
        for x, b in zip(self.blocks, blocks, strict=True):
            term = x.T * (self.basis.v_inv @ b).reshape(-1, 1)
            state = term if state is None else state + term
        return state

    def apply(self, v: Tensor) -> Tensor:
        """``J_b^T J_b v`` (module docstring)."""
        shared, blocks = self._split(v)
        out = [self.cross @ shared] if self.q else []
        state = self._modal_state(blocks) if self.blocks else None
        if state is not None:
            for j in range(self.q):
                out[0][j] = out[0][j] + (self.rotated[j] * state).sum()
            z = self.basis.gram @ state if self.weights is None else state
        else:
            z = None
        for j in range(self.q):
            z = shared[j] * self.rotated[j] if z is None else z + shared[j] * self.rotated[j]
        v_inv_t = self.basis.v_inv.T
        out += [v_inv_t @ (x.T * z).sum(dim=1) for x in self.blocks]
        return torch.cat(out) if out else v.new_zeros(0)

    def transpose(self, residual: Tensor) -> Tensor:
        """``J_b^T D_w r`` for a (G, T) ``residual``."""
        return transpose_product(self.basis, self.blocks, self.columns, self._weigh(residual))

    def precondition(self, v: Tensor) -> Tensor:
        """``N v``, ``N`` the inverse of the preconditioner ``P`` (the degree-weighted normal matrix,
        module docstring; shared scalars by their diagonal)."""
        shared, blocks = self._split(v)
        out = [shared / self.cross.diagonal().clamp(min=1e-300)] if self.q else []
        if self.blocks:
            rotated = torch.stack([self.basis.v.T @ b for b in blocks], dim=1)  # (G, B)
            solved = (self.mode_inverse @ rotated.unsqueeze(-1)).squeeze(-1)  # (G, B)
            out += [self.basis.v @ solved[:, i] for i in range(len(self.blocks))]
        return torch.cat(out) if out else v.new_zeros(0)

    def inverse_entries(self, rows: Tensor, cols: Tensor) -> Tensor:
        """Entries ``N_rc`` (|rows|, |cols|) of ``N = P^{-1}`` between per-cell linear parameters (indices
        into the per-cell blocks, ``block * G + cell``): ``N = V M V^T`` with ``M`` the per-mode inverses,
        one (|rows|, G) x (G, |cols|) product per pair of blocks."""
        g, v, inverse = self.g, self.basis.v, self.mode_inverse  # inverse: (G, B, B)
        row_block, col_block = rows // g, cols // g
        v_rows, v_cols = v[rows % g], v[cols % g]
        out = torch.empty(rows.numel(), cols.numel(), dtype=v.dtype, device=v.device)
        for b1 in row_block.unique().tolist():
            i1 = (row_block == b1).nonzero().reshape(-1)
            for b2 in col_block.unique().tolist():
                i2 = (col_block == b2).nonzero().reshape(-1)
                out[i1.reshape(-1, 1), i2] = (v_rows[i1] * inverse[:, b1, b2]) @ v_cols[i2].T
        return out

    def held_factor(self, held: Tensor) -> Tensor:
        """Cholesky factor of ``N_HH`` (H, H) for the held per-cell parameters ``held`` (sorted indices into
        the blocks). Forming ``N_HH`` costs O(H^2 G); the operator keeps the last one, so the next held set
        (an active-set round of the same profile fit, or the Schur complement's solves) only computes the
        rows of the parameters it adds (at 10,000 cells the six rounds held 3,698, 5,878, 6,523, 6,574,
        6,512 and 6,504 feeds)."""
        cached = self._held
        if cached is not None and torch.equal(cached[0], held):
            return cached[2]
        n_hh = None
        if cached is not None:
            position = torch.full((self.g * len(self.blocks),), -1, dtype=torch.long, device=held.device)
            position[cached[0]] = torch.arange(cached[0].numel(), device=held.device)
            old = position[held]
            known = (old >= 0).nonzero().reshape(-1)
            added = (old < 0).nonzero().reshape(-1)
            if known.numel() > added.numel():  # reuse pays when most of the set is unchanged
                n_hh = torch.empty(held.numel(), held.numel(), dtype=cached[1].dtype, device=cached[1].device)
                n_hh[known.reshape(-1, 1), known] = cached[1][old[known].reshape(-1, 1), old[known]]
                if added.numel():
                    fresh = self.inverse_entries(held[added], held)  # (|added|, H)
                    n_hh[added] = fresh
                    n_hh[:, added] = fresh.T
        if n_hh is None:
            n_hh = self.inverse_entries(held, held)
        factor = torch.linalg.cholesky(0.5 * (n_hh + n_hh.T))
        self._held = (held, n_hh, factor)
        return factor

    def restricted_preconditioner(self, free: Tensor) -> Callable[[Tensor], Tensor]:
        """The exact inverse of ``P`` restricted to the ``free`` entries (bool, like a vector), for the
        system with the held entries fixed: ``(P_FF)^{-1} = N_FF - N_FH N_HH^{-1} N_HF`` (``N = P^{-1}``),
        with ``N_HH`` formed once per held set (:meth:`held_factor`). The restricted system keeps ``P``'s
        bound on the condition number (module docstring), where masking ``N`` alone lost it (iterations
        x 10)."""
        mask = free.to(self.cross.dtype)
        held_blocks = (~free[self.q:]).nonzero().reshape(-1)
        if held_blocks.numel() == 0:
            return lambda r: self.precondition(r * mask) * mask
        factor = self.held_factor(held_blocks)
        where = self.q + held_blocks

        def apply(r: Tensor) -> Tensor:
            y = self.precondition(r * mask)
            correction = torch.cholesky_solve(y[where].reshape(-1, 1), factor).reshape(-1)
            lifted = torch.zeros_like(y)
            lifted[where] = correction
            return (y - self.precondition(lifted)) * mask

        return apply


def conjugate_gradients(
    operator: LinearNormalOperator,
    rhs: Tensor,
    free: Tensor,
    settings: ProjectionSettings,
    floor: float = 0.0,
) -> tuple[Tensor, ConjugateGradientReport]:
    """Solve ``operator x = rhs`` on the ``free`` (bool, like ``rhs``) entries, the others held at 0.

    Preconditioned conjugate gradients (the preconditioner restricted to the free entries exactly,
    :meth:`LinearNormalOperator.restricted_preconditioner`),
    from 0, until the residual norm is at most ``cg_tolerance ||rhs||`` or ``floor`` (an absolute
    level: a solve that starts near its answer stops at once).
    """
    mask = free.to(rhs.dtype)
    b = rhs * mask
    x = torch.zeros_like(b)
    norm_b = float(b.norm())
    target = max(settings.cg_tolerance * norm_b, floor)
    if norm_b <= target:  # before the preconditioner: forming it costs O(H^2 G) with H entries held
        return x, ConjugateGradientReport(0, True, 0.0 if norm_b == 0.0 else 1.0)
    precondition = operator.restricted_preconditioner(free)
    r = b.clone()
    z = precondition(r)
    p = z.clone()
    rz = float(r @ z)
    relative = 1.0
    for iteration in range(1, settings.cg_max_iterations + 1):
        if relative * norm_b <= target:
            return x, ConjugateGradientReport(iteration - 1, True, relative)
        ap = operator.apply(p) * mask
        curvature = float(p @ ap)
        if not curvature > 0.0:  # a direction without curvature: nothing more to gain along it
            return x, ConjugateGradientReport(iteration, False, relative)
        alpha = rz / curvature
        x = x + alpha * p
        r = r - alpha * ap
        relative = float(r.norm()) / norm_b
        z = precondition(r)
        rz_new = float(r @ z)
        p = z + (rz_new / rz) * p
        rz = rz_new
    return x, ConjugateGradientReport(settings.cg_max_iterations, relative * norm_b <= target, relative)


@dataclass
class ProfileSolution:
    """A profile fit at fixed ``phi``: ``theta`` (P,), its residuals (G, T) and loss (mean square), the
    operator, the (P,) mask of linear parameters not held at a bound, and the conjugate-gradient
    iterations it took (all rounds) and whether every solve reached its tolerance."""

    theta: Tensor
    residuals: Tensor
    loss: float
    operator: LinearNormalOperator
    free: Tensor
    cg_iterations: int
    cg_converged: bool


@torch.no_grad()
def profile_solve(
    problem: OutputErrorProblem,
    theta: Tensor,
    settings: ProjectionSettings,
    weights: Tensor | None = None,
    box: bool = True,
) -> ProfileSolution:
    """The linear parameters refitted at the ``phi`` of ``theta``, matrix-free.

    ``box``: the feeds' box is kept by an active set (as
    :func:`~calcium_gnn.physics.levenberg_marquardt.profile_fit`; a parameter clipped in one round
    stays held in the next, so the set does not oscillate, and is released once no bound is crossed if
    the gradient then pulls it inward); ``weights`` (G,): residual weights
    (``None``: the fit's own unweighted loss). ``loss`` is the mean of ``weights r^2``.
    """
    lo, hi = problem.theta_bounds()
    nl = problem.n_nonlinear
    operator = LinearNormalOperator(problem, theta, weights)
    fixed = torch.zeros_like(theta, dtype=torch.bool)
    fixed[:nl] = True
    residuals = problem.residuals_theta(theta)
    # the gradient's scale with no linear parameters: a warm start near the optimum stops at once
    floor = settings.cg_tolerance * float(operator.transpose(problem.x_train[problem.index]).norm())
    iterations, converged = 0, True
    free, clipped = ~fixed, torch.zeros_like(fixed)
    for round_ in range(settings.profile_iterations if box else 1):
        grad = theta.new_zeros(theta.shape)
        grad[nl:] = operator.transpose(residuals)
        optimal_set = fixed | (problem.held_at_bounds(theta, grad) if box else torch.zeros_like(fixed))
        if round_ > 0 and not bool(clipped.any()):
            if torch.equal(optimal_set, ~free):
                break  # no bound crossed, and every held parameter pushes outward: the box optimum
            clipped = torch.zeros_like(fixed)  # release the ones the gradient now pulls inward
        free = ~(optimal_set | clipped)
        step_linear, report = conjugate_gradients(operator, -grad[nl:], free[nl:], settings, floor)
        iterations += report.iterations
        converged = converged and report.converged
        step = torch.zeros_like(theta)
        step[nl:] = step_linear
        unclipped = theta + step
        theta = torch.minimum(torch.maximum(unclipped, lo), hi) if box else unclipped
        residuals = problem.residuals_theta(theta)
        clipped = theta != unclipped
        if not box:
            break
    weighted = residuals if weights is None else residuals * weights.reshape(-1, 1).sqrt()
    loss = float(weighted.pow(2).mean())
    return ProfileSolution(theta, residuals, loss, operator, free, iterations, converged)


@torch.no_grad()
def nonlinear_normal_equations(
    problem: OutputErrorProblem, solution: ProfileSolution, settings: ProjectionSettings
) -> tuple[Tensor, Tensor]:
    """Kaufman's Gauss-Newton system of the profiled loss at a profile solution: the Schur complement
    ``H`` (n_phi, n_phi) and the gradient ``g = C^T D_w r`` (n_phi,) (module docstring), in the metric
    of the solution's operator (its residual weights, if any)."""
    theta, nl = solution.theta, problem.n_nonlinear
    operator, free = solution.operator, solution.free[nl:]
    columns = []
    for position in range(nl):
        tangent = torch.zeros_like(theta)
        tangent[position] = 1.0
        _, column = torch.func.jvp(problem.residuals_theta, (theta,), (tangent,))
        columns.append(column)
    coupled = [operator.transpose(c) * free.to(theta.dtype) for c in columns]
    schur_settings = dataclasses.replace(settings, cg_tolerance=settings.schur_tolerance)
    solved = [conjugate_gradients(operator, c, free, schur_settings)[0] for c in coupled]
    h = theta.new_zeros(nl, nl)
    g = theta.new_zeros(nl)
    for a in range(nl):
        g[a] = (operator._weigh(columns[a]) * solution.residuals).sum()
        for b in range(nl):
            h[a, b] = (operator._weigh(columns[a]) * columns[b]).sum() - coupled[a] @ solved[b]
    return 0.5 * (h + h.T), g


class VariableProjection(nn.Module):
    """The variable-projection solver with its state as buffers (module docstring).

    Two stages. First the *degree-weighted* loss ``sum_i |N_i| sum_n r_in^2`` without the feeds' box: in
    the eigenbasis its normal equations split exactly into one small system per mode (``V^T D V = I``),
    so every conjugate-gradient solve ends in one iteration and ``phi`` comes close to its optimum
    cheaply from a poor start (CRLSM's ``k`` can be 40 % off at 5 % noise). With ``k`` alone nonlinear
    and per-cell linear parameters the weighted profile even separates by mode, and the stage is one
    line search on ``k`` at O(G T) per point (:mod:`calcium_gnn.physics.weighted_profile`, one
    :meth:`step`). Then the fit's own loss
    with the box, from there: a few steps. The weighted stage only chooses the start; what is returned
    is the optimum of the unweighted, box-constrained output-error problem (the Levenberg-Marquardt
    optimum, tested to rounding on small cultures).

    Same interface as :class:`~calcium_gnn.physics.levenberg_marquardt.LevenbergMarquardt`: one
    :meth:`step` per training step, :meth:`fit` to convergence. After :meth:`fit`, :attr:`schur`
    (n_phi, n_phi) holds ``H`` at the optimum (the Gauss-Newton information of ``phi``) and
    :attr:`cg_converged` whether every conjugate-gradient solve reached its tolerance.

    With ``weighted_only`` the fit stops after the weighted stage (:attr:`schur` then stays 0): for a
    caller that corrects ``k`` in the weighted metric next
    (:func:`~calcium_gnn.physics.border_noise.correct_border_noise_weighted`) and would discard the
    unweighted optimum; :meth:`resume` runs the unweighted stage after all.

    Args:
        n_nonlinear: number of nonlinear parameters ``phi`` (1: ``k``; 2: ``k`` and a leak rate).
        damping: initial damping ``mu`` of the steps on ``phi`` (default 1e-3).
        settings: the solver's settings.
        weighted_only: stop after the weighted stage (default False).
    """

    def __init__(
        self,
        n_nonlinear: int = 1,
        damping: float = 1e-3,
        settings: ProjectionSettings | None = None,
        weighted_only: bool = False,
    ) -> None:
        super().__init__()
        self.settings = settings or ProjectionSettings()
        self.damping = float(damping)
        self.weighted_only = bool(weighted_only)
        #: whether the weighted stage was a line search on ``k`` (else damped Gauss-Newton steps)
        self.line_searched = False
        self.register_buffer("mu", torch.tensor(float(damping), dtype=torch.float64))
        self.register_buffer("weighted_stage", torch.tensor(True))
        self.register_buffer("converged", torch.tensor(False))
        self.register_buffer("cg_converged", torch.tensor(True))
        self.register_buffer("cg_iterations", torch.tensor(0, dtype=torch.long))
        self.register_buffer("schur", torch.zeros(n_nonlinear, n_nonlinear, dtype=torch.float64))

        self._derived: dict[str, ProfileSolution] = {}

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> VariableProjection:
        """``.to()``, ``.cuda()``, ``.double()``: the kept profile solution is dropped (recomputed)."""
        self._derived = {}
        return super()._apply(fn, recurse)

    def _record(self, solution: ProfileSolution) -> None:
        self.cg_iterations.add_(solution.cg_iterations)
        if not solution.cg_converged:
            self.cg_converged.fill_(False)

    def _profile(self, problem: OutputErrorProblem, theta: Tensor) -> ProfileSolution:
        """The profile solution at ``theta`` in the current stage's metric (the last one kept when it
        was found at this very ``theta``, as after an accepted step)."""
        kept = self._derived.get("solution")
        if kept is not None and kept.theta.device == theta.device and torch.equal(kept.theta, theta):
            return kept
        weighted = bool(self.weighted_stage)
        solution = profile_solve(
            problem, theta, self.settings, problem.degrees() if weighted else None, box=not weighted
        )
        self._record(solution)
        return solution

    def _keep(self, problem: OutputErrorProblem, solution: ProfileSolution) -> None:
        problem.set_theta(solution.theta)
        solution.theta = problem.theta()  # as stored (the bounded maps round a value on a bound)
        self._derived["solution"] = solution

    def _next_stage(self, problem: OutputErrorProblem) -> None:
        """The weighted stage has chosen the start: on to the fit's own loss and box (or done)."""
        self._derived = {}
        if bool(self.weighted_stage):
            self.weighted_stage.fill_(False)
            self.mu.fill_(self.damping)
            lo, hi = problem.theta_bounds()
            problem.set_theta(torch.minimum(torch.maximum(problem.theta(), lo), hi))
            if self.weighted_only:  # the weighted information is not the fit's: no Schur until refreshed
                self.schur.zero_()
                self.converged.fill_(True)
        else:
            self.converged.fill_(True)

    @torch.no_grad()
    def step(self, problem: OutputErrorProblem) -> float:
        """One damped Gauss-Newton step on ``phi`` with the linear parameters profiled out (the
        problem's parameters updated in place); returns the fit's mean squared residual after it.

        A stage ends when the undamped step is within ``step_tolerance`` standard errors for every
        ``phi`` (no trial is then needed), when no damped trial lowers the loss, or when an accepted
        one lowers it by less than ``tolerance`` (relative)."""
        problem.restore_unpooled()
        settings = self.settings
        if bool(self.weighted_stage) and self._line_search_applies(problem):
            return self._weighted_line_search(problem)
        current = self._profile(problem, problem.theta())
        self._keep(problem, current)
        if bool(self.converged):
            return float(current.residuals.pow(2).mean())
        nl = problem.n_nonlinear
        h, g = nonlinear_normal_equations(problem, current, settings)
        self.schur.copy_(h)
        lo, hi = problem.theta_bounds()
        padded = torch.cat([g, g.new_zeros(current.theta.numel() - nl)])
        hold = problem.held_at_bounds(current.theta, padded)[:nl]
        free = (~hold).nonzero().reshape(-1)
        if free.numel() == 0 or self._step_within_uncertainty(h, g, free, current, problem):
            self._next_stage(problem)
            return float(current.residuals.pow(2).mean())
        mu = float(self.mu)
        for _ in range(settings.max_retries + 1):
            system = h[free.reshape(-1, 1), free].clone()
            system.diagonal().add_(mu * system.diagonal().clamp(min=1e-300))
            step = torch.zeros_like(g)
            step[free] = torch.linalg.solve(system, -g[free])
            trial = current.theta.clone()
            trial[:nl] = torch.minimum(torch.maximum(current.theta[:nl] + step, lo[:nl]), hi[:nl])
            candidate = self._profile(problem, trial)
            if candidate.loss < current.loss:
                self.mu.fill_(max(mu / settings.damping_factor, 1e-12))
                self._keep(problem, candidate)
                if (current.loss - candidate.loss) < settings.tolerance * current.loss:
                    self._next_stage(problem)
                return float(candidate.residuals.pow(2).mean())
            mu *= settings.damping_factor
        self.mu.fill_(mu)
        self._next_stage(problem)
        return float(current.residuals.pow(2).mean())

    @staticmethod
    def _line_search_applies(problem: OutputErrorProblem) -> bool:
        """Whether the weighted stage is a line search on ``k`` (one nonlinear parameter, and the weighted
        profile separates by mode: :mod:`calcium_gnn.physics.weighted_profile`)."""
        return problem.n_nonlinear == 1 and weighted_profile_unavailable(problem) is None

    def _weighted_line_search(self, problem: OutputErrorProblem) -> float:
        """The whole weighted stage in one step: ``k`` minimising the weighted profile's ``RSS_w(k)``
        (O(G T) per ``k``, :class:`~calcium_gnn.physics.weighted_profile.ModalWeightedProfile`), by
        :func:`~calcium_gnn.physics.line_search.bracketed_minimum` on ``log k`` to ``line_tolerance``,
        then the linear parameters' weighted profile there. Returns the fit's mean squared residual."""
        profile = ModalWeightedProfile(problem, n_probes=0)
        lower, upper = (math.log(b) for b in problem.conv.k_bounds)
        best, _ = bracketed_minimum(
            lambda log_k: profile.evaluate(math.exp(log_k))[0],
            math.log(float(problem.theta()[0])),
            lower,
            upper,
            x_tolerance=self.settings.line_tolerance,
        )
        theta = problem.theta().clone()
        theta[0] = math.exp(best)
        solution = profile_solve(problem, theta, self.settings, problem.degrees(), box=False)
        self._record(solution)
        self._keep(problem, solution)
        self.line_searched = True
        self._next_stage(problem)
        return problem.loss_theta(problem.theta())

    def _step_within_uncertainty(
        self, h: Tensor, g: Tensor, free: Tensor, solution: ProfileSolution, problem: OutputErrorProblem
    ) -> bool:
        """Whether the undamped Gauss-Newton step is within ``step_tolerance`` standard errors (from
        ``sigma^2 H^{-1}``, ``sigma^2`` the stage's loss per degree of freedom) for every free ``phi``."""
        system = h[free.reshape(-1, 1), free]
        step = torch.linalg.solve(system, -g[free])
        sigma2 = solution.loss * problem.n_residuals / max(problem.n_residuals - problem.n_parameters, 1)
        se = (sigma2 * torch.linalg.inv(system).diagonal().clamp(min=0)).sqrt()
        return bool((step.abs() <= self.settings.step_tolerance * se).all())

    @torch.no_grad()
    def fit(self, problem: OutputErrorProblem, max_iterations: int = 100) -> int:
        """Iterate until converged (at most ``max_iterations`` steps, both stages); returns the number of
        steps. :attr:`schur` then holds ``H`` at the final point (:meth:`refresh_schur` if the steps
        ran out before convergence)."""
        iterations = 0
        while iterations < max_iterations and not bool(self.converged):
            self.step(problem)
            iterations += 1
        if not self.weighted_only and (not bool(self.converged) or bool(self.weighted_stage)):
            self.refresh_schur(problem)
        return iterations

    @torch.no_grad()
    def resume(self, problem: OutputErrorProblem, max_iterations: int = 100) -> int:
        """After a ``weighted_only`` fit: the unweighted stage after all (to convergence, as :meth:`fit`)."""
        self.weighted_only = False
        self.weighted_stage.fill_(False)
        self.converged.fill_(False)
        self._derived = {}
        return self.fit(problem, max_iterations)

    @torch.no_grad()
    def refresh_schur(
        self, problem: OutputErrorProblem, solution: ProfileSolution | None = None
    ) -> ProfileSolution:
        """Profile at the problem's current ``phi`` (the fit's own loss and box) and store ``H`` there;
        ``solution``: that profile when the caller already has it (the fit's own metric and box, at the
        problem's ``phi``: :func:`~calcium_gnn.physics.border_noise.correct_border_noise_weighted`'s)."""
        if solution is None:
            solution = profile_solve(problem, problem.theta(), self.settings)
        self._record(solution)
        self.schur.copy_(nonlinear_normal_equations(problem, solution, self.settings)[0])
        problem.set_theta(solution.theta)
        self._derived = {}
        return solution
