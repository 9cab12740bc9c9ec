"""Errors-in-variables correction of ``k`` for noisy border inputs (output-error fit, ``model=neural_ode``).

Why: the border cells drive the simulation with their *observed* traces ``x_B = x_B* + e``. The
simulated interior is affine in those inputs, ``y(theta; x_B) = y(theta; x_B*) + F_k e`` with
``F_k`` the linear map from border inputs to the simulated traces of G (it depends on ``k`` only).
With ``e`` independent of the interior noise (variance ``sigma^2`` per value, as for every cell of
one movie), the expected training loss is

.. math::
    \\mathbb E\\, \\|r(\\theta)\\|^2 = \\|r^*(\\theta)\\|^2 + \\sigma^2 (M - P_\\ell)
    + \\sigma^2 \\| (I - \\Pi_\\theta) F_k \\|_F^2,

where ``r*`` is the misfit with clean inputs, ``P_l`` the number of linear parameters
(``gamma``, ``y0``) profiled out and ``Pi_theta`` the projection on their Jacobian columns (both taken
with the parameters free of the box at the fit's own ``k``, the same at every ``k`` searched, so that
``R`` is smooth in ``k``). The last
term grows with ``k`` (a stronger coupling passes more border noise), so plain least squares trades
misfit for less noise and underestimates ``k``: on a 1,000-cell culture at 5% noise, 11.6% low with the
true clean inputs giving 1.4% (docs/noise.md). The correction profiles the linear parameters out at
each ``k`` and minimises the noise-normalised loss

.. math::
    R(k) = \\frac{\\min_{\\gamma, y_0} \\|r(k, \\gamma, y_0)\\|^2}{M - P_\\ell + q(k)}, \\qquad
    q(k) = \\frac{1}{n_p} \\sum_{p=1}^{n_p} \\|(I - \\Pi) F_k z_p\\|^2 \\approx \\|(I - \\Pi) F_k\\|_F^2,

whose expectation is ``sigma^2 + ||r*||^2 / (M - P_l + q)``: minimal where the clean misfit is, with no
need to know ``sigma``. When ``k`` is barely identified (one modelled cell, say) ``R`` is flat and its
minimum runs to an end of the search interval; the correction is then reported and not applied.
``q`` is a Hutchinson estimate with ``n_p`` fixed standard-normal probes ``z_p`` on the border inputs
(the same probes for every ``k``, so ``R`` is smooth); ``F_k z_p`` is one simulation of the linear
part, ``Pi`` uses the normal equations of the fit. ``k`` is found on ``log k`` within a factor
:data:`SEARCH_FACTOR` of the plain output-error optimum: a downhill walk from it until the minimum is
bracketed, then successive parabolas until the next one would move ``k`` by less than a twentieth of its
standard error (:data:`SE_FRACTION`; each point is one profile fit).

Beyond the normal equations (the variable-projection fit, thousands of cells)
:func:`correct_border_noise_weighted` minimises the same ratio in the degree-weighted metric, where the
profile over the linear parameters is exact and cheap (mode by mode,
:mod:`calcium_gnn.physics.weighted_profile`), and walks ``k`` as far as the minimum is: the bias grows
with the culture (44% low at 2,000 cells at 5% noise; 5.1% after the correction with 8 probes, 4.7%
with 64 or more, against 2.9% for the same fit with clean border inputs).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from calcium_gnn.physics.levenberg_marquardt import profile_fit, ridged_block
from calcium_gnn.physics.line_search import bracketed_minimum
from calcium_gnn.physics.modal import input_response
from calcium_gnn.physics.output_error import OutputErrorProblem
from calcium_gnn.physics.variable_projection import (
    ProfileSolution,
    ProjectionSettings,
    conjugate_gradients,
    profile_solve,
)
from calcium_gnn.physics.weighted_profile import ModalWeightedProfile, weighted_profile_unavailable

SEARCH_FACTOR: float = 1.5
"""The search for ``k`` spans ``[k_hat / SEARCH_FACTOR, k_hat * SEARCH_FACTOR]`` (inside the box)."""

SEARCH_STEPS: int = 2
"""The search walks ``log k`` downhill from the fit's ``k`` in steps of ``log(SEARCH_FACTOR) / SEARCH_STEPS``
until the minimum of ``R`` is bracketed, then refines it by successive parabolas."""

SE_FRACTION: float = 0.05
"""The search stops when the parabola through its bracket puts the minimum of ``R`` within this many
standard errors of ``log k`` from the best ``k`` evaluated: ``R`` rises by ``R / D`` per squared standard
error (``D`` the degrees of freedom), so the predicted drop is below ``SE_FRACTION**2 R / D``."""

SEARCH_X_TOLERANCE: float = 1e-4
"""The search also stops when its bracket on ``log k`` is narrower than this."""

PROBE_CHUNK: int = 8
"""Probes simulated together by :func:`input_noise_products` (their responses take 8 G T bytes each)."""

EDGE_TOLERANCE: float = 1e-3
"""A minimum within this distance (in ``log k``) of an end of the search interval counts as on the end."""


@dataclass
class BorderNoiseCorrection:
    """Result of :func:`correct_border_noise`.

    Attributes:
        k_uncorrected: the plain output-error ``k``.
        k: the corrected ``k``.
        theta: (P,) the profile optimum at the corrected ``k`` (a numpy array after :meth:`on_host`).
        noise_gain: ``q(k)`` at the corrected ``k`` (border noise energy reaching G, unit variance).
        evaluations: number of profile fits.
        interior: the minimum of ``R`` lies inside the search interval. When it sits on an end, ``R``
            has no usable minimum there (``k`` barely identified, e.g. one modelled cell) and the
            correction is not applied.
        replicates: the corrected ``k`` of each parametric-bootstrap replicate
            (:func:`correct_border_noise_weighted`; ``None`` where none were drawn).
        solution: the fit's own (box-constrained) profile solution at the corrected ``k``
            (:func:`correct_border_noise_weighted` only; its operator serves the Schur complement there;
            dropped by :meth:`on_host`).
    """

    k_uncorrected: float
    k: float
    theta: Tensor | np.ndarray
    noise_gain: float
    evaluations: int
    interior: bool
    replicates: list[float] | None = None
    solution: ProfileSolution | None = None

    def on_host(self) -> BorderNoiseCorrection:
        """The same result with ``theta`` as a numpy array (what a module keeps after the fit: no tensor
        outside its parameters and buffers)."""
        theta = self.theta.detach().cpu().numpy() if isinstance(self.theta, Tensor) else self.theta
        return BorderNoiseCorrection(
            self.k_uncorrected, self.k, theta, self.noise_gain, self.evaluations, self.interior,
            self.replicates,
        )


def border_probes(problem: OutputErrorProblem, n_probes: int, seed: int) -> list[Tensor]:
    """``n_probes`` fixed (N, T_train) standard-normal probes on the border inputs (0 on G)."""
    gen = torch.Generator().manual_seed(seed)
    border = (~problem.modelled).reshape(-1, 1).cpu()
    shape = tuple(problem.drive_train.shape)
    return [
        (torch.randn(shape, generator=gen, dtype=torch.float64) * border).to(problem.drive_train.device)
        for _ in range(n_probes)
    ]


def probe_responses(
    problem: OutputErrorProblem, k: Tensor, probes: list[Tensor], leak: Tensor | None = None
) -> list[Tensor]:
    """``F_k z`` (G, T) for every probe ``z``: the simulated response of G to border inputs ``z``.

    In the eigenbasis (:func:`calcium_gnn.physics.modal.input_response`, all probes at once, their
    drive from the edges that leave a border cell) when the fit has one, else one simulation per probe
    (``problem.simulate_window``). ``leak``: the leak rate of a leak law (default: the one the problem's
    layer holds).
    """
    zero = torch.zeros_like(problem.drive_train[:, 0])
    leak = problem.conv.leak.detach() if leak is None else leak
    basis = problem.modal_basis()
    if basis is None:
        return [problem.simulate_window(k, zero, zero, drive=z, leak=leak)[problem.index] for z in probes]
    stacked = torch.cat(probes, dim=1)  # (N, K T): the probes side by side as features
    # the probes are 0 on G and the states start at 0, so only the edges leaving a border cell carry a
    # message: the layer runs on those alone (the same drive, without gathering K T values per edge),
    # their weights scaled by (border in-degree of i) / |N_i| so that the layer's mean over fewer edges
    # is still the sum over the border neighbours divided by |N_i|
    edge_index, edge_weight = problem.edge_index, problem.edge_weight.reshape(-1)
    from_border = ~problem.modelled[edge_index[0]]
    dst = edge_index[1]
    degree = problem.in_degrees().clamp(min=1)  # |N_i|
    kept = torch.bincount(dst[from_border], minlength=degree.numel())
    scale = (kept / degree)[dst[from_border]].to(edge_weight)
    drive = problem.conv(
        torch.zeros_like(stacked),
        stacked,
        edge_index[:, from_border],
        edge_weight[from_border] * scale,
        problem.modelled,
        k=k,
        gamma=zero,
        leak=leak,
    )[problem.index]
    n_frames = problem.drive_train.shape[1]
    drive = drive.reshape(-1, len(probes), n_frames).permute(0, 2, 1)  # (G, T, K)
    states = input_response(
        basis,
        float(k),
        problem.interval_lengths,
        problem.interval_group,
        problem.substeps,
        drive,
        problem.ode_method,
        leak=float(leak),
    )
    return [states[:, :, p] for p in range(len(probes))]


def input_noise_products(problem: OutputErrorProblem, theta: Tensor, n_probes: int, seed: int) -> Tensor:
    """``J^T F_k z_p`` (P, n_probes) at ``theta``: the border inputs' noise as the fit sees it.

    ``z_p`` are :func:`border_probes`; ``F_k z_p`` their responses in G (:func:`probe_responses`), and
    ``J^T`` the fit's transposed Jacobian (all parameters, ``k`` included). With them the covariance of
    the estimate gains the errors-in-variables term ``sigma^2 (J^T J)^{-1} J^T F_k F_k^T J (J^T J)^{-1}``
    (:mod:`calcium_gnn.inference.uncertainty`). Cost: one simulation of the probes and ``n_probes``
    transposed products (in the eigenbasis, :data:`PROBE_CHUNK` probes per pass).
    """
    probes = border_probes(problem, n_probes, seed)
    leak = problem.unpack(theta).leak
    products = []
    for start in range(0, n_probes, PROBE_CHUNK):  # a few probes at a time: memory O(PROBE_CHUNK G T)
        responses = probe_responses(problem, theta[0], probes[start : start + PROBE_CHUNK], leak)
        products += problem.transpose_products(theta, responses, with_k=True)
    return torch.stack(products, dim=1)


def noise_gain(problem: OutputErrorProblem, theta: Tensor, free: Tensor, probes: list[Tensor]) -> float:
    """``q(k)``: mean over probes of ``||(I - Pi) F_k z||^2`` (module docstring), at ``k = theta[0]``."""
    responses = probe_responses(problem, theta[0], probes, problem.unpack(theta).leak)
    jtj, _, _ = problem.normal_equations(theta, with_k=False)
    idx = free.nonzero().reshape(-1)
    info = ridged_block(jtj, idx)
    products = torch.stack(
        [jtv[idx] for jtv in problem.transpose_products(theta, responses, with_k=False)], dim=1
    )
    explained = (products * torch.linalg.solve(info, products)).sum(dim=0)
    total = sum(float(fz.pow(2).sum()) for fz in responses) - float(explained.sum())
    return total / len(probes)


@torch.no_grad()
def correct_border_noise(
    problem: OutputErrorProblem, n_probes: int = 8, seed: int = 0, se_fraction: float | None = SE_FRACTION
) -> BorderNoiseCorrection:
    """Minimise the noise-normalised profile loss ``R(k)`` (module docstring) around the model's ``k``.

    ``se_fraction``: the search stops within about this many standard errors of ``log k`` from the
    minimum (:data:`SE_FRACTION`); ``None``: Brent to :data:`SEARCH_X_TOLERANCE` instead (the previous
    release's exhaustive search, the reference of ``benchmarks/bench_border_noise_search.py``). The
    problem's parameters are left unchanged; the caller stores ``result.theta``.
    """
    theta_hat = problem.theta()
    k_hat = float(theta_hat[0])
    m = problem.n_residuals
    probes = border_probes(problem, n_probes, seed)
    fits: dict[float, tuple[Tensor, float]] = {}
    start = {"theta": theta_hat}
    # the linear parameters free of the box at the fit's own k count in M - P_l and span Pi at every k:
    # a feed reaching its bound at some k would otherwise step R by R / (M - P_l), one squared standard
    # error of log k, and the search would chase the steps
    _, free = profile_fit(problem, theta_hat)
    n_free = int(free.sum())

    def objective(log_k: float) -> float:
        theta = start["theta"].clone()
        theta[0] = math.exp(log_k)
        theta, _ = profile_fit(problem, theta)
        start["theta"] = theta
        rss = float(problem.residuals_theta(theta).pow(2).sum())
        gain = noise_gain(problem, theta, free, probes)
        fits[log_k] = (theta, gain)
        return rss / (m - n_free + gain)

    lo = math.log(max(problem.conv.k_bounds[0], k_hat / SEARCH_FACTOR))
    hi = math.log(min(problem.conv.k_bounds[1], k_hat * SEARCH_FACTOR))
    dof = m - (theta_hat.numel() - problem.n_nonlinear)
    best, cache = bracketed_minimum(
        objective, math.log(k_hat), lo, hi, step=math.log(SEARCH_FACTOR) / SEARCH_STEPS,
        x_tolerance=SEARCH_X_TOLERANCE,
        relative_tolerance=None if se_fraction is None else se_fraction**2 / max(dof, 1),
    )
    theta, gain = fits[best]
    interior = min(best - lo, hi - best) > EDGE_TOLERANCE
    return BorderNoiseCorrection(
        k_uncorrected=k_hat,
        k=float(theta[0]),
        theta=theta,
        noise_gain=gain,
        evaluations=len(cache),
        interior=interior,
    )


def noise_energy_projected(
    problem: OutputErrorProblem, solution: ProfileSolution, probes: list[Tensor], settings: ProjectionSettings
) -> float:
    """``E ||(I - Pi_w)(F_k z_B - z_G)||_D^2`` for unit white noise ``z`` on every cell (the denominator
    of :func:`correct_border_noise_weighted`), by Hutchinson over ``probes`` (N, T_train) each, matrix-free.

    ``solution``: a weighted profile solution without the box
    (:func:`~calcium_gnn.physics.variable_projection.profile_solve`); its operator's preconditioner is
    then exact, so each projection is one conjugate-gradient iteration. The general route, for what
    :class:`~calcium_gnn.physics.weighted_profile.ModalWeightedProfile` cannot separate.
    """
    theta, operator = solution.theta, solution.operator
    weights = operator.weights.reshape(-1, 1)
    border = [z * (~problem.modelled).reshape(-1, 1).to(z.dtype) for z in probes]
    responses = probe_responses(problem, theta[0], border, problem.unpack(theta).leak)
    free = solution.free[problem.n_nonlinear :]
    total = 0.0
    for z, fz in zip(probes, responses, strict=True):
        noise = fz - z[problem.index]
        products = operator.transpose(noise)
        explained, _ = conjugate_gradients(operator, products, free, settings)
        total += float((weights * noise.pow(2)).sum()) - float(products @ explained)
    return total / len(probes)


def weighted_objective(
    problem: OutputErrorProblem, n_probes: int, seed: int, settings: ProjectionSettings
) -> tuple[Callable[[float], tuple[float, float]], ModalWeightedProfile | None]:
    """``k -> (RSS_w(k), noise energy(k))`` of the weighted profile, and the modal profile that computes
    it mode by mode (O(G T) per ``k``) where the problem separates; ``None`` where conjugate gradients
    do (:func:`noise_energy_projected`)."""
    if weighted_profile_unavailable(problem) is None:
        profile = ModalWeightedProfile(problem, n_probes, seed)
        return profile.evaluate, profile
    weights = problem.degrees()
    theta_hat = problem.theta()
    gen = torch.Generator().manual_seed(seed)
    shape = tuple(problem.drive_train.shape)
    probes = [
        torch.randn(shape, generator=gen, dtype=torch.float64).to(problem.drive_train.device)
        for _ in range(n_probes)
    ]

    def evaluate(k: float) -> tuple[float, float]:
        theta = theta_hat.clone()
        theta[0] = k
        solution = profile_solve(problem, theta, settings, weights, box=False)
        rss = float((weights.reshape(-1, 1) * solution.residuals.pow(2)).sum())
        return rss, noise_energy_projected(problem, solution, probes, settings)

    return evaluate, None


@torch.no_grad()
def correct_border_noise_weighted(
    problem: OutputErrorProblem,
    n_probes: int = 8,
    seed: int = 0,
    settings: ProjectionSettings | None = None,
    n_replicates: int = 0,
) -> BorderNoiseCorrection:
    """The border-noise correction for cultures too large for the normal equations (the
    variable-projection fit): :func:`correct_border_noise` in the degree-weighted metric.

    The loss is ``||r||_D^2 = sum_i |N_i| sum_n r_in^2``, whose profile at fixed ``k`` (the feeds' box not
    imposed) the eigenbasis solves exactly (``V^T D V = I``). With unit white noise ``z`` on every cell
    (border inputs and observed traces of G, as for every cell of one movie) the residual noise after
    profiling is ``(I - Pi_w)(F_k z_B - z_G)``, ``Pi_w`` the ``D``-orthogonal projection on the linear
    parameters' columns, and

    .. math::
        R_w(k) = \\frac{\\min_{\\gamma, y_0} \\|r(k, \\gamma, y_0)\\|_D^2}
        {\\mathbb E \\|(I - \\Pi_w)(F_k z_B - z_G)\\|_D^2}

    has expectation ``sigma^2 + ||r*||_D^2 / denominator``: minimal where the clean misfit is. Both are
    computed mode by mode where the problem separates
    (:class:`~calcium_gnn.physics.weighted_profile.ModalWeightedProfile`, O(G T) per ``k``), else with
    conjugate gradients and ``n_probes`` Hutchinson probes on all cells (:func:`noise_energy_projected`).
    The search on ``log k`` (:func:`~calcium_gnn.physics.line_search.bracketed_minimum`) starts at the
    problem's ``k`` and walks downhill until the minimum is bracketed: the bias is not bounded by a fixed
    factor (about 2 at 2,000 cells at 5% noise). The returned ``theta`` is the fit's own (unweighted,
    box-constrained) profile at the corrected ``k``; ``interior`` is False when the minimum runs to the
    box of ``k`` (``k`` barely identified: the correction is then not applied).

    ``n_replicates`` > 0 (modal route only): a parametric bootstrap of the corrected estimator. Each
    replicate is the weighted fit at the corrected ``k`` observed again with white noise of the estimated
    level ``sigma^2 = R_w(k)`` on every cell (its border inputs too, on top of the observed ones), and
    gets the same search; their ``k`` (``replicates``) give the estimator's spread and bias where the
    Gauss-Newton information does not: it counts the border noise that reaches G as information about
    ``k``. Cost per replicate: one O(T G^2) change of basis and a search at O(G T) per point.
    """
    settings = settings or ProjectionSettings()
    theta_hat = problem.theta()
    k_hat = float(theta_hat[0])
    evaluate, profile = weighted_objective(problem, n_probes, seed, settings)
    energies: dict[float, float] = {}

    def objective(log_k: float) -> float:
        rss, energy = evaluate(math.exp(log_k))
        energies[log_k] = energy
        return rss / energy

    lower, upper = (math.log(b) for b in problem.conv.k_bounds)
    best, cache = bracketed_minimum(objective, math.log(k_hat), lower, upper)
    interior = min(best - lower, upper - best) > EDGE_TOLERANCE
    theta = theta_hat.clone()
    theta[0] = math.exp(best)
    final = profile_solve(problem, theta, settings)
    replicates = None
    if profile is not None and n_replicates > 0 and interior:
        replicates = bootstrap_corrected_k(profile, math.exp(best), cache[best], n_replicates, seed,
                                           (lower, upper))
    return BorderNoiseCorrection(
        k_uncorrected=k_hat,
        k=float(final.theta[0]),
        theta=final.theta,
        noise_gain=energies[best],
        evaluations=len(cache),
        interior=interior,
        replicates=replicates,
        solution=final,
    )


def bootstrap_corrected_k(
    profile: ModalWeightedProfile,
    k: float,
    sigma2: float,
    n_replicates: int,
    seed: int,
    log_bounds: tuple[float, float],
) -> list[float]:
    """The corrected ``k`` of ``n_replicates`` parametric-bootstrap replicates (the fit at ``k`` observed
    with noise ``sigma2`` on every cell, :meth:`ModalWeightedProfile.replicate`), each found as the data's
    own (:func:`correct_border_noise_weighted`)."""
    generator = torch.Generator().manual_seed(seed + 1)
    sigma = math.sqrt(max(sigma2, 0.0))
    fitted = profile.fitted(k)
    out = []
    for _ in range(n_replicates):
        target, drive = profile.replicate(fitted, sigma, generator)

        def ratio(log_k: float, target: Tensor = target, drive: Tensor = drive) -> float:
            rss, energy = profile.evaluate(math.exp(log_k), target, drive)
            return rss / energy

        best, _ = bracketed_minimum(ratio, math.log(k), *log_bounds)
        out.append(math.exp(best))
    return out
