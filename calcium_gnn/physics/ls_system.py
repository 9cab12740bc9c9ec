"""The least-squares regression of the consensus problem (paper eqs. 4-16), and its normal equations.

Forward Euler (eq. 5) on the observed data, with every neighbour taken from the data, gives one row
per modelled cell ``i in G`` and time step ``n`` (spacing ``h``, the interpolated time step):

.. math::
    \\underbrace{x_i[n+1] - x_i[n]}_{b_i[n]} \\approx h \\, a_i[n] \\, k + h \\, \\gamma_{g(i)},
    \\qquad a_i[n] = \\frac{1}{|N_i|} \\sum_{j \\in N(i)} w_{ij} (x_j[n] - x_i[n])

which is eq. (6) rearranged (``y_t - e_p``, eq. 12 with ``e_p = y_{t-1}``): the ``k`` column is
``h/|N_i| * [y, x_1..x_{N_i}] . [-sum w, w_1..w_{N_i}]`` (eqs. 8-10, 14) and the ``gamma`` column is
``h/|N_i| * |N_i| = h`` (eqs. 11, 15). The unknowns ``theta = [k, gamma_1..gamma_m]`` are:
``m = G`` (``gamma_mode="per_cell"``, eq. 16), ``m = 1`` (``"shared"``, eq. 12) or ``m = 0``
(``"none"``: ``theta = [k]``, eq. 7 with no feed).

The solvers minimise (eq. 18, with the box of eq. 20 for CRLSM)

.. math::
    f(\\theta) = \\tfrac12 \\lVert A\\theta - b \\rVert^2 + \\tfrac{\\lambda}{2} \\lVert\\theta\\rVert^2,

the same minimiser as the stacked form of eq. (19)-(20) ``|| [A; sqrt(lambda) I] theta - [b; 0] ||^2``
(which is ``2 f``). Every row involves ``k`` and one ``gamma_g``, so the normal equations only need the
per-group sums of :class:`NormalStats`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor
from torch_geometric.data import Data

from calcium_gnn.errors import GraphError
from calcium_gnn.physics.edge_weights import edge_weights
from calcium_gnn.physics.interpolation import (
    DEFAULT_INTERPOLATION_FACTOR,
    DEFAULT_TRAIN_FRACTION,
    interpolate_frames,
    time_split,
)
from calcium_gnn.physics.setups import Setup


@dataclass
class LSSystem:
    """The rows of the regression for the modelled cells (see the module docstring).

    Attributes:
        drive: ``a_i[n]``, (G, S): consensus drive of modelled cell i at step n (data only).
        increment: ``b_i[n] = x_i[n+1] - x_i[n]``, (G, S).
        h: time step of the rows (frame interval / interpolation factor), seconds.
        gamma_group: (G,) long, the index of the gamma each modelled cell uses
            (``arange(G)`` per cell, zeros when shared; unused for ``"none"``).
        num_gamma: m, the number of gamma unknowns (G, 1 or 0).
        gamma_mode: ``"none"``, ``"shared"`` or ``"per_cell"``.
        modelled_index: (G,) node indices of the modelled cells.
        num_nodes: N.
        edge_weight_scale: the scale ``s`` of ``w = u*l / s`` used for ``drive``.
    """

    drive: Tensor
    increment: Tensor
    h: float
    gamma_group: Tensor
    num_gamma: int
    gamma_mode: str
    modelled_index: Tensor
    num_nodes: int
    edge_weight_scale: float

    @property
    def num_rows(self) -> int:
        """Rows of A: G * S."""
        return self.drive.numel()


@dataclass
class NormalStats:
    """Sufficient statistics of the normal equations ``(A^T A) theta = A^T b`` (arrow matrix).

    With rows ``h [a, e_g]`` and right-hand side ``b``:
    ``P = sum h^2 a^2`` (the k-k entry), ``C = sum h a b`` (k entry of ``A^T b``),
    ``Q_g = sum_{rows of g} h^2 a`` (k-gamma_g), ``R_g = sum_{rows of g} h^2`` (gamma_g-gamma_g),
    ``D_g = sum_{rows of g} h b`` (gamma_g entry of ``A^T b``), ``BB = sum b^2``. All float64,
    differentiable with respect to the system's tensors. Shapes: P, C, BB (); Q, R, D (m,).
    """

    P: Tensor
    C: Tensor
    Q: Tensor
    R: Tensor
    D: Tensor
    BB: Tensor


def consensus_drive(x: Tensor, edge_index: Tensor, w: Tensor, rows: Tensor) -> Tensor:
    """``a_i = 1/|N_i| sum_j w_ij (x_j - x_i)`` for the nodes ``rows``; x (N, T) -> (len(rows), T).

    Only the edges entering ``rows`` are touched (memory O(E_rows * T)).
    """
    n = x.shape[0]
    position = torch.full((n,), -1, dtype=torch.long, device=x.device)
    position[rows] = torch.arange(rows.numel(), device=x.device)
    src, dst = edge_index
    keep = position[dst] >= 0
    src, dst, w = src[keep], dst[keep], w[keep].to(x.dtype)
    target = position[dst]
    msg = w.unsqueeze(-1) * (x[src] - x[dst])  # (E_rows, T)
    total = torch.zeros(rows.numel(), x.shape[1], dtype=x.dtype, device=x.device).index_add(0, target, msg)
    degree = torch.zeros(rows.numel(), dtype=x.dtype, device=x.device).index_add(
        0, target, torch.ones_like(w)
    )
    return total / degree.clamp(min=1).unsqueeze(-1)


def build_system(
    data: Data,
    setup: Setup,
    *,
    interpolation_factor: int = DEFAULT_INTERPOLATION_FACTOR,
    train_fraction: float = DEFAULT_TRAIN_FRACTION,
    edge_weight_scale: float | str = "mean",
    x: Tensor | None = None,
) -> LSSystem:
    """The regression rows of eqs. (4)-(16) on the training window of ``data``.

    The training frames (:func:`~calcium_gnn.physics.interpolation.time_split`) are interpolated by
    ``interpolation_factor``; the drive is linear in the data, so it is computed on the frames and
    then interpolated (identical to computing it on interpolated data, and cheaper).

    Args:
        data: the cell graph (``x`` (N, T), ``dt``, ``edge_index``, ``edge_attr``).
        setup: the modelled cells and ``gamma_mode``.
        interpolation_factor: points per frame interval (paper: 10).
        train_fraction: see :func:`~calcium_gnn.physics.interpolation.time_split`.
        edge_weight_scale: ``"mean"`` or a positive number (see
            :func:`~calcium_gnn.physics.edge_weights.edge_weights`).
        x: optional replacement for ``data.x`` (N, T) (e.g. a tensor that requires grad).

    Returns:
        the :class:`LSSystem` with ``S = (n_train - 1) * interpolation_factor`` steps per cell; its
        tensors sit on the device of ``x`` (``setup`` may be a host setup).
    """
    x = data.x if x is None else x
    n, n_frames = x.shape
    if setup.modelled.shape != (n,):
        raise GraphError("setup", f"the setup is for {setup.modelled.shape[0]} cells, the graph has {n}")
    train, _ = time_split(n_frames, train_fraction)
    w, scale = edge_weights(data.edge_attr, edge_weight_scale)
    rows = setup.modelled_index.to(x.device)
    x_train = x[:, train]
    drive = interpolate_frames(consensus_drive(x_train, data.edge_index, w, rows), interpolation_factor)
    level = interpolate_frames(x_train[rows], interpolation_factor)
    g = rows.numel()
    num_gamma = {"none": 0, "shared": 1, "per_cell": g}[setup.gamma_mode]
    if setup.gamma_mode == "per_cell":
        group = torch.arange(g, device=x.device)
    else:
        group = torch.zeros(g, dtype=torch.long, device=x.device)
    return LSSystem(
        drive=drive[:, :-1],
        increment=level[:, 1:] - level[:, :-1],
        h=float(data.dt) / int(interpolation_factor),
        gamma_group=group,
        num_gamma=num_gamma,
        gamma_mode=setup.gamma_mode,
        modelled_index=rows,
        num_nodes=n,
        edge_weight_scale=scale,
    )


def normal_stats(system: LSSystem) -> NormalStats:
    """The sums of :class:`NormalStats` from the rows of ``system`` (float64, differentiable)."""
    a = system.drive.double()
    b = system.increment.double()
    h = system.h
    steps = a.shape[1]
    m = system.num_gamma
    sum_a = h * h * a.sum(dim=1)  # (G,)
    zeros = torch.zeros(m, dtype=torch.float64, device=a.device)
    group = system.gamma_group.to(a.device)
    return NormalStats(
        P=h * h * (a * a).sum(),
        C=h * (a * b).sum(),
        Q=zeros.index_add(0, group, sum_a) if m else zeros,
        R=zeros.index_add(0, group, torch.full_like(sum_a, h * h * steps)) if m else zeros,
        D=zeros.index_add(0, group, h * b.sum(dim=1)) if m else zeros,
        BB=(b * b).sum(),
    )


def assemble_sparse(system: LSSystem, lam: float = 0.0) -> tuple[sp.csr_matrix, np.ndarray]:
    """The stacked sparse system of eqs. (13)/(19): ``[A; sqrt(lam) I]`` and ``[b; 0]`` (float64).

    Rows are cell-major (row ``i * S + n``); column 0 is ``k``, column ``1 + g`` is ``gamma_g``.
    """
    a = system.drive.detach().double().cpu().numpy()
    b = system.increment.detach().double().cpu().numpy()
    g, steps = a.shape
    rows = np.arange(g * steps)
    m = system.num_gamma
    cols_k = np.zeros(g * steps, dtype=np.int64)
    data = [system.h * a.reshape(-1)]
    row_idx, col_idx = [rows], [cols_k]
    if m:
        gamma_col = 1 + np.repeat(system.gamma_group.cpu().numpy(), steps)
        data.append(np.full(g * steps, system.h))
        row_idx.append(rows)
        col_idx.append(gamma_col)
    rhs = b.reshape(-1)
    if lam > 0:
        diag = np.arange(1 + m)
        data.append(np.full(1 + m, np.sqrt(lam)))
        row_idx.append(g * steps + diag)
        col_idx.append(diag)
        rhs = np.concatenate([rhs, np.zeros(1 + m)])
    n_rows = g * steps + (1 + m if lam > 0 else 0)
    matrix = sp.csr_matrix(
        (np.concatenate(data), (np.concatenate(row_idx), np.concatenate(col_idx))), shape=(n_rows, 1 + m)
    )
    return matrix, rhs
