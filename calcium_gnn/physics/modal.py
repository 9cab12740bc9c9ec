"""Gauss-Newton normal equations of the output-error fit in the eigenbasis of the consensus operator.

The output-error fit (:mod:`calcium_gnn.models.neural_ode`) needs ``J^T J`` and ``J^T r`` for the
residuals ``r = y(theta) - x`` (G cells x T frames) and ``theta = (k, gamma, y0)``. Forming ``J``
(GT x P) costs P tangents of the simulation and GT P memory: 2.6 GB and an O(P G^3) propagator
derivative at 1,000 cells. This module gets the same two quantities in O(G^3 + T G^2) from the
structure of eq. (3).

Structure. On the modelled group ``dy/dt = k A_1 y + b(t)`` (:mod:`calcium_gnn.physics.simulate`),
``A_1 = D^{-1} S`` with ``D = diag(|N_i|)`` and ``S`` symmetric (``w_ij = w_ji``), so
``D^{1/2} A_1 D^{-1/2} = Q Lambda Q^T`` (``Q`` orthogonal) and ``A_1 = V Lambda V^{-1}`` with
``V = D^{-1/2} Q``, ``V^{-1} = Q^T D^{1/2}``. Every matrix of the discrete scheme (RK4 or Euler,
``substeps`` steps per interval, :func:`~calcium_gnn.physics.simulate.interval_propagator`) is then a
function of ``k Lambda``: interval ``n`` maps mode ``m`` by ``phi_{n,m}`` and feeds a constant forcing
in with ``psi_{n,m}``. ``gamma`` and ``y0`` enter linearly:

.. math::
    \\frac{\\partial y_n}{\\partial y_0} = V \\operatorname{diag}(E_n) V^{-1}, \\quad
    \\frac{\\partial y_n}{\\partial \\gamma} = V \\operatorname{diag}(F_n) V^{-1}, \\quad
    E_{n+1} = \\phi_n E_n,\\ E_0 = 1, \\quad F_{n+1} = \\phi_n F_n + \\psi_n,\\ F_0 = 0.

With ``K = V^T V`` and ``X, Y`` (T, G) any two of ``E, F``, the blocks are Hadamard products:

.. math::
    \\sum_n \\Big(\\frac{\\partial y_n}{\\partial a}\\Big)^\\top \\frac{\\partial y_n}{\\partial b}
    = V^{-\\top} \\big[K \\circ (X^\\top Y)\\big] V^{-1}, \\qquad
    \\sum_n \\Big(\\frac{\\partial y_n}{\\partial a}\\Big)^\\top r_n
    = V^{-\\top} \\sum_n X_n \\circ (V^\\top r_n).

The columns that are not modal (``k``, and a shared ``gamma``) are formed explicitly (G, T) and enter
through ``V^T c_n`` the same way. The result equals ``J^T J`` and ``J^T r`` of the dense Jacobian to
rounding (tested); it is used when ``S`` is symmetric (the graph builder's weights are), else
:func:`modal_basis` returns ``None`` and the dense Jacobian is used.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from calcium_gnn.physics.steps import STEPS

SYMMETRY_RTOL: float = 1e-9
"""``D A_1`` counts as symmetric when ``|S - S^T| <= SYMMETRY_RTOL * max|S|``."""


@dataclass
class ModalBasis:
    """``A_1 = V diag(lam) V^{-1}`` (module docstring); all (G, G) except ``lam`` (G,)."""

    lam: Tensor
    v: Tensor
    v_inv: Tensor
    gram: Tensor


def modal_basis(a1: Tensor, degree: Tensor) -> ModalBasis | None:
    """Eigenbasis of the consensus operator ``A_1`` (G, G) with in-degrees ``degree`` (G,) = |N_i|.

    Returns ``None`` when ``diag(degree) A_1`` is not symmetric (asymmetric weights).
    """
    a1 = a1.double()
    d = degree.double().clamp(min=1.0)
    s = d.reshape(-1, 1) * a1
    scale = float(s.abs().max()) if s.numel() else 0.0
    if scale > 0 and float((s - s.T).abs().max()) > SYMMETRY_RTOL * scale:
        return None
    root = d.sqrt()
    sym = 0.5 * (s + s.T) / (root.reshape(-1, 1) * root.reshape(1, -1))
    lam, q = torch.linalg.eigh(sym)
    v = q / root.reshape(-1, 1)
    v_inv = q.T * root.reshape(1, -1)
    return ModalBasis(lam=lam, v=v, v_inv=v_inv, gram=v.T @ v)


def interval_coefficients(
    rate: Tensor, delta: Tensor, substeps: int, method: str = "rk4"
) -> tuple[Tensor, Tensor, Tensor]:
    """``(phi, psi0, psi1)`` (G,) of one frame interval for the scalar modes ``dz/dt = rate z + c(t)``.

    ``c(t_n + tau) = c_n + (tau / delta) (c_{n+1} - c_n)`` (linear inside the interval, as the border
    data between frames); ``substeps`` steps of ``method`` (the simulation's own step functions) give
    ``z_{n+1} = phi z_n + psi0 c_n + psi1 (c_{n+1} - c_n)``: the diagonal of
    :func:`~calcium_gnn.physics.simulate.interval_propagator` in the eigenbasis.
    """
    h = delta / substeps
    ones = torch.ones_like(rate)

    def f(y: Tensor, tau: Tensor) -> Tensor:  # columns: free response, constant and ramp forcing
        forcing = torch.stack([torch.zeros_like(rate), ones, (tau / delta) * ones], dim=1)
        return rate.reshape(-1, 1) * y + forcing

    state = torch.stack([ones, torch.zeros_like(rate), torch.zeros_like(rate)], dim=1)
    step = STEPS[method]
    for s in range(substeps):
        state = step(f, state, s * h, h)
    return state[:, 0], state[:, 1], state[:, 2]


def modal_trajectory(
    basis: ModalBasis,
    k: Tensor,
    lengths: Tensor,
    which: Tensor,
    substeps: int,
    forcing: Tensor,
    y0: Tensor,
    method: str = "rk4",
    leak: Tensor | float = 0.0,
) -> Tensor:
    """States (G, T) of ``dy/dt = (k A_1 - delta I) y + b(t)`` from ``y(t_0) = y0`` (G,), for the forcing
    ``b`` (G, T) (``delta = leak``, 0 for the paper's law: the leak shifts every mode's rate).

    ``b`` is linear in time between frames (the border drive plus the feeds); each mode follows the
    simulation's own scheme (``substeps`` steps of ``method`` per interval, :func:`interval_coefficients`):
    ``xi_{n+1} = phi xi_n + psi_0 beta_n + psi_1 (beta_{n+1} - beta_n)`` with ``beta = V^{-1} b``,
    ``xi_0 = V^{-1} y0``, ``y = V xi``. Equal to the dense interval propagators to rounding, in
    O(T G^2) instead of O(substeps G^3). Differentiable in ``k``, ``b`` and ``y0`` (forward and
    reverse mode: no in-place writes).

    Args:
        basis: the eigenbasis of ``A_1`` (:func:`modal_basis`).
        k: coupling constant (0-d tensor or float).
        lengths: (U,) interval lengths; which: (T - 1,) the length group of each interval.
        substeps, method: the scheme.
        forcing: (G, T) ``b`` at the frames.
        y0: (G,) initial states.
        leak: the leak rate ``delta`` (0-d tensor or float; default 0).
    """
    rate = k * basis.lam - leak
    coefficients = [interval_coefficients(rate, lengths[u], substeps, method) for u in range(lengths.numel())]
    beta = basis.v_inv @ forcing
    xi = basis.v_inv @ y0
    states = [xi]
    for n, group in enumerate(which.tolist()):
        phi, psi0, psi1 = coefficients[group]
        xi = phi * xi + psi0 * beta[:, n] + psi1 * (beta[:, n + 1] - beta[:, n])
        states.append(xi)
    return basis.v @ torch.stack(states, dim=1)


def input_response(
    basis: ModalBasis,
    k: float,
    lengths: Tensor,
    which: Tensor,
    substeps: int,
    forcing: Tensor,
    method: str = "rk4",
    leak: float = 0.0,
) -> Tensor:
    """States (G, T, K) of ``dy/dt = (k A_1 - delta I) y + b(t)``, ``y(t_0) = 0``, for K forcings ``b``
    (G, T, K), ``delta = leak``.

    ``b`` is linear in time between frames (as the border drive); the simulation's scheme, per mode.
    """
    beta = torch.einsum("gh,htk->gtk", basis.v_inv, forcing.double())
    xi = modal_input_response(k * basis.lam - leak, lengths, which, substeps, beta, method)
    return torch.einsum("gh,htk->gtk", basis.v, xi)


def modal_input_response(
    rate: Tensor, lengths: Tensor, which: Tensor, substeps: int, beta: Tensor, method: str = "rk4"
) -> Tensor:
    """Modal states ``xi`` (G, T, K) of ``dxi_m/dt = rate_m xi_m + beta_m(t)``, ``xi(t_0) = 0``, for K
    modal forcings ``beta`` (G, T, K) (linear in time between frames; the simulation's scheme per mode,
    :func:`interval_coefficients`). O(G T K): no change of basis.

    The recursion ``xi_{n+1} = phi xi_n + (psi_0 - psi_1) beta_n + psi_1 beta_{n+1}`` runs over frames, so
    it works on a frame-major copy (T, G, K) where each frame is one contiguous block (no copy when
    ``beta`` is already a frame-major view, as :func:`frame_major` makes); the result is a (G, T, K)
    view of frame-major storage. Against stepping the (G, T, K) layout (2,806 modes, 9 forcings, 325
    frames, ``benchmarks/bench_projection_kernels.py``): 2.3x faster for stored frame-major forcings,
    1.2x with the copy."""
    coefficients = []
    for u in range(lengths.numel()):
        phi, psi0, psi1 = interval_coefficients(rate, lengths[u], substeps, method)
        phi, psi0, psi1 = phi.reshape(-1, 1), psi0.reshape(-1, 1), psi1.reshape(-1, 1)
        coefficients.append((phi, psi0 - psi1, psi1))
    b = beta.transpose(0, 1).contiguous()  # (T, G, K)
    xi = torch.empty_like(b)
    xi[0] = 0.0
    for n, group in enumerate(which.tolist()):  # one host copy of the groups, no sync per frame
        phi, before, after = coefficients[group]
        xi[n + 1] = phi * xi[n] + before * b[n] + after * b[n + 1]
    return xi.transpose(0, 1)


def frame_major(values: Tensor) -> Tensor:
    """``values`` (G, T, K) as a view of frame-major (T, G, K) storage: what :func:`modal_input_response`
    steps through without a copy."""
    return values.transpose(0, 1).contiguous().transpose(0, 1)


def modal_responses(
    basis: ModalBasis, k: float, lengths: Tensor, which: Tensor, substeps: int, method: str = "rk4",
    leak: float = 0.0, switch: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """``E``, ``F`` and ``S`` (T, G): the modal responses to a unit initial state, a unit constant feed
    and a unit feed switched on at the stimulus, for ``dy/dt = (k A_1 - delta I) y + b``.

    ``switch`` (T,) is the switched feed's level at the frames (0 before the stimulus, 1 after, the
    switching frame interval linear in between, as every input); ``S`` is None without it.
    """
    rate = k * basis.lam - leak
    coefficients = [interval_coefficients(rate, lengths[u], substeps, method) for u in range(lengths.numel())]
    n_frames = which.numel() + 1
    e = torch.empty(n_frames, rate.numel(), dtype=torch.float64, device=rate.device)
    f = torch.empty_like(e)
    s = None if switch is None else torch.empty_like(e)
    on = None if switch is None else switch.double().tolist()  # one host copy, no sync per frame
    e[0], f[0] = 1.0, 0.0
    if s is not None:
        s[0] = 0.0
    for n, group in enumerate(which.tolist()):
        phi, psi, psi1 = coefficients[group]
        e[n + 1] = phi * e[n]
        f[n + 1] = phi * f[n] + psi
        if s is not None:
            s[n + 1] = phi * s[n] + psi * on[n] + psi1 * (on[n + 1] - on[n])
    return e, f, s


def transpose_product(
    basis: ModalBasis, modal_blocks: list[Tensor], dense_columns: list[Tensor], vector: Tensor
) -> Tensor:
    """``J^T v`` (P,) for a (G, T) ``vector`` (parameters ordered as in :func:`normal_equations`)."""
    v_inv_t = basis.v_inv.T
    rot = basis.v.T @ vector.double()  # (G, T): V^T v_n
    parts = [(c.double() * vector.double()).sum().reshape(1) for c in dense_columns]
    parts += [v_inv_t @ (x.T * rot).sum(dim=1) for x in modal_blocks]
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64, device=vector.device)


def normal_equations(
    basis: ModalBasis,
    modal_blocks: list[Tensor],
    dense_columns: list[Tensor],
    residuals: Tensor,
) -> tuple[Tensor, Tensor]:
    """``J^T J`` (P, P) and ``J^T r`` (P,) from modal blocks and dense columns (module docstring).

    Args:
        basis: the eigenbasis of ``A_1``.
        modal_blocks: per block of G parameters its response ``X`` (T, G) (``E`` for ``y0``, ``F`` for
            per-cell ``gamma``).
        dense_columns: per single parameter its Jacobian column as a (G, T) tensor.
        residuals: (G, T) residuals ``y - x``.

    Returns:
        ``(jtj, jtr)`` with the parameters ordered dense columns first, then the modal blocks.
    """
    v_inv_t, gram = basis.v_inv.T, basis.gram
    g = basis.v.shape[0]
    rot_c = [basis.v.T @ c.double() for c in dense_columns]
    q = len(dense_columns)
    p = q + g * len(modal_blocks)
    jtj = torch.zeros(p, p, dtype=torch.float64, device=gram.device)
    for a, ca in enumerate(dense_columns):
        for b in range(a, q):
            jtj[a, b] = jtj[b, a] = (ca.double() * dense_columns[b].double()).sum()
    for i, x in enumerate(modal_blocks):
        si = slice(q + i * g, q + (i + 1) * g)
        for a in range(q):
            jtj[si, a] = v_inv_t @ (x.T * rot_c[a]).sum(dim=1)
            jtj[a, si] = jtj[si, a]
        for j in range(i, len(modal_blocks)):
            sj = slice(q + j * g, q + (j + 1) * g)
            block = v_inv_t @ (gram * (x.T @ modal_blocks[j])) @ v_inv_t.T
            jtj[si, sj] = block
            jtj[sj, si] = block.T
    jtr = transpose_product(basis, modal_blocks, dense_columns, residuals)
    return 0.5 * (jtj + jtj.T), jtr
