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
(``gamma``, ``y0``) profiled out and ``Pi_theta`` the projection on their Jacobian columns. The last
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
part, ``Pi`` uses the normal equations of the fit. ``k`` is found by a bounded Brent search on
``log k`` around the plain output-error optimum.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import minimize_scalar
from torch import Tensor

from calcium_gnn.physics.levenberg_marquardt import profile_fit, ridged_block
from calcium_gnn.physics.modal import input_response
from calcium_gnn.physics.output_error import OutputErrorProblem

SEARCH_FACTOR: float = 1.5
"""The Brent search for ``k`` spans ``[k_hat / SEARCH_FACTOR, k_hat * SEARCH_FACTOR]`` (inside the box)."""

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
    """

    k_uncorrected: float
    k: float
    theta: Tensor | np.ndarray
    noise_gain: float
    evaluations: int
    interior: bool

    def on_host(self) -> BorderNoiseCorrection:
        """The same result with ``theta`` as a numpy array (what a module keeps after the fit: no tensor
        outside its parameters and buffers)."""
        theta = self.theta.detach().cpu().numpy() if isinstance(self.theta, Tensor) else self.theta
        return BorderNoiseCorrection(
            self.k_uncorrected, self.k, theta, self.noise_gain, self.evaluations, self.interior
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

    In the eigenbasis (:func:`calcium_gnn.physics.modal.input_response`, all probes at once) when the
    fit has one, else one simulation per probe (``problem.simulate_window``). ``leak``: the leak rate of a
    leak law (default: the one the problem's layer holds).
    """
    zero = torch.zeros_like(problem.drive_train[:, 0])
    leak = problem.conv.leak.detach() if leak is None else leak
    basis = problem.modal_basis()
    if basis is None:
        return [problem.simulate_window(k, zero, zero, drive=z, leak=leak)[problem.index] for z in probes]
    stacked = torch.cat(probes, dim=1)  # (N, K T): the probes side by side as features
    drive = problem.conv(
        torch.zeros_like(stacked),
        stacked,
        problem.edge_index,
        problem.edge_weight,
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
    problem: OutputErrorProblem, n_probes: int = 8, seed: int = 0
) -> BorderNoiseCorrection:
    """Minimise the noise-normalised profile loss ``R(k)`` (module docstring) around the model's ``k``.

    The problem's parameters are left unchanged; the caller stores ``result.theta``.
    """
    theta_hat = problem.theta()
    k_hat = float(theta_hat[0])
    m = problem.n_residuals
    probes = border_probes(problem, n_probes, seed)
    cache: dict[float, tuple[float, Tensor, float]] = {}
    start = {"theta": theta_hat}

    def objective(log_k: float) -> float:
        theta = start["theta"].clone()
        theta[0] = math.exp(log_k)
        theta, free = profile_fit(problem, theta)
        start["theta"] = theta
        rss = float(problem.residuals_theta(theta).pow(2).sum())
        gain = noise_gain(problem, theta, free, probes)
        value = rss / (m - int(free.sum()) + gain)
        cache[log_k] = (value, theta, gain)
        return value

    lo = math.log(max(problem.conv.k_bounds[0], k_hat / SEARCH_FACTOR))
    hi = math.log(min(problem.conv.k_bounds[1], k_hat * SEARCH_FACTOR))
    objective(math.log(k_hat))
    minimize_scalar(objective, bounds=(lo, hi), method="bounded", options={"xatol": 1e-4})
    best = min(cache, key=lambda key: cache[key][0])
    _, theta, gain = cache[best]
    interior = min(best - lo, hi - best) > EDGE_TOLERANCE
    return BorderNoiseCorrection(
        k_uncorrected=k_hat,
        k=float(theta[0]),
        theta=theta,
        noise_gain=gain,
        evaluations=len(cache),
        interior=interior,
    )
