"""The PINN's loss terms for the consensus problem: physics residual (eq. 21) and data misfit (eq. 22).

For the modelled cells ``i in G`` with trial solution ``y_hat_i(t)`` (a network of time) and the
observed traces ``x_j(t)`` (linearly interpolated between frames) of the other cells,

.. math::
    r_i(t) = \\dot{\\hat y}_i(t) - \\frac{k}{|N_i|} \\sum_{j \\in N(i)} w_{ij} (z_j(t) - \\hat y_i(t))
    - \\gamma_i, \\qquad z_j = \\hat y_j \\ (j \\in G), \\quad z_j = x_j \\ (j \\notin G)

(the summand of eq. 21, with ``K_ij = k w_ij`` and ``w_ij = u_ij l_ij / s``), and the data misfit
``e_i(t_n) = y_hat_i(t_n) - x_i(t_n)`` (the summand of eq. 22). :func:`mean_square` reduces either
one as the paper does (``1/T sum_t sum_i``, ``cells="sum"``) or as a plain mean (``cells="mean"``),
optionally divided by a scale first so both terms are O(1).
"""

from __future__ import annotations

import torch
from torch import Tensor

from calcium_gnn.errors import ConfigError
from calcium_gnn.nn.consensus import ConsensusConv

CELL_REDUCTIONS: tuple[str, ...] = ("mean", "sum")


def interpolate_at(t_frames: Tensor, x: Tensor, t: Tensor) -> Tensor:
    """Linear interpolation of traces at arbitrary times (clamped to the first / last frame).

    For ``t_n <= t <= t_{n+1}``: ``x(t) = x_n + (t - t_n) / (t_{n+1} - t_n) * (x_{n+1} - x_n)``;
    times before ``t_0`` (after ``t_{T-1}``) take ``x_0`` (``x_{T-1}``).

    Args:
        t_frames: (T,) strictly increasing frame times, T >= 2.
        x: (N, T) traces at the frames.
        t: (B,) query times.

    Returns:
        (N, B) interpolated traces (differentiable in ``x``).
    """
    t = t.to(t_frames.dtype)
    right = torch.searchsorted(t_frames, t.contiguous(), right=True).clamp(1, t_frames.numel() - 1)
    left = right - 1
    t0, t1 = t_frames[left], t_frames[right]
    theta = ((t - t0) / (t1 - t0)).clamp(0.0, 1.0).to(x.dtype)
    return x[:, left] + theta * (x[:, right] - x[:, left])


def consensus_residual(
    conv: ConsensusConv,
    y_hat: Tensor,
    dy_hat: Tensor,
    x: Tensor,
    edge_index: Tensor,
    edge_weight: Tensor,
    modelled: Tensor,
    k: Tensor | None = None,
    gamma: Tensor | None = None,
) -> Tensor:
    """The physics residual ``r_i(t)`` of eq. (21) for the modelled cells at B collocation times.

    Args:
        conv: the consensus layer (holds k and gamma unless ``k`` / ``gamma`` are given).
        y_hat: (G, B) trial solution of the modelled cells (rows in the order of ``modelled``'s
            True entries).
        dy_hat: (G, B) its time derivative (1/s).
        x: (N, B) observed traces of all cells at the same times (only rows outside G are used).
        edge_index: (2, E); edge_weight: (E,) normalised ``w_ij``.
        modelled: (N,) bool mask of G.
        k, gamma: optional overrides passed to :meth:`ConsensusConv.forward` (used as is).

    Returns:
        (G, B) residual ``dy_hat - rhs``.
    """
    y_full = x.clone()
    y_full[modelled] = y_hat.to(x.dtype)
    rhs = conv(y_full, x, edge_index, edge_weight, modelled, k=k, gamma=gamma)
    return dy_hat - rhs[modelled]


def mean_square(residual: Tensor, scale: Tensor | float = 1.0, cells: str = "mean") -> Tensor:
    """``1/B sum_t sum_i (r_i(t)/s_i)^2`` (``cells="sum"``, eqs. 21-22) or the mean over cells too.

    Args:
        residual: (G, B).
        scale: a scalar or (G,) / (G, 1) divisor ``s_i`` (1 = the paper's raw units).
        cells: ``"sum"`` (the paper) or ``"mean"`` over the G cells.
    """
    if cells not in CELL_REDUCTIONS:
        raise ConfigError(
            "model.cell_reduction", f"unknown reduction '{cells}' (use one of {CELL_REDUCTIONS})"
        )
    scale = torch.as_tensor(scale, dtype=residual.dtype, device=residual.device)
    if scale.dim() == 1:
        scale = scale.reshape(-1, 1)
    per_cell = (residual / scale).pow(2).mean(dim=1)
    return per_cell.sum() if cells == "sum" else per_cell.mean()
