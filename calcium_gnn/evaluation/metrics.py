"""Per-cell error metrics between observed traces ``x`` and simulated traces ``y``.

All functions take traces as (N, T) tensors (nodes first, time last) and a set of frames
(a ``slice`` or index tensor over T). With ``F`` the chosen frames:

.. math::
    \\mathrm{MSE}_i = \\frac{1}{|F|} \\sum_{t \\in F} (y_{i,t} - x_{i,t})^2, \\qquad
    \\mathrm{MSE} = \\frac{1}{|G|} \\sum_{i \\in G} \\mathrm{MSE}_i

where ``G`` are the modelled cells (the paper's accuracy measure, section 3.2; all cells share the
same frames, so the overall MSE is also the mean squared error over all modelled (cell, frame) pairs).

The fit-quality rule of :mod:`calcium_gnn.evaluation.quality` also uses the Pearson correlation
``r_i`` of the two traces (behaviour) and their relative bias (magnitude):

.. math::
    b_i = \\frac{\\overline{y_i} - \\overline{x_i}}{P_{95}(x_i) - P_{5}(x_i)}

(mean offset over the observed trace's robust range; percentiles configurable).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

Frames = slice | Tensor


def _check_pair(observed: Tensor, simulated: Tensor) -> None:
    if observed.shape != simulated.shape or observed.dim() != 2:
        raise ValueError(
            f"observed and simulated must be (N, T) of one shape, got {tuple(observed.shape)} "
            f"and {tuple(simulated.shape)}"
        )


def scored_frames(window: slice) -> slice | None:
    """The frames of a simulated window that are scored: all but its first (the initial condition,
    exact by construction); None when that leaves none."""
    return slice(window.start + 1, window.stop) if window.stop - window.start >= 2 else None


def mse_per_cell(observed: Tensor, simulated: Tensor, frames: Frames = slice(None)) -> Tensor:
    """``MSE_i`` of every cell over ``frames``.

    Args:
        observed: (N, T) observed traces ``x``.
        simulated: (N, T) simulated traces ``y``.
        frames: the frames ``F`` (slice or index tensor over T), at least one.

    Returns:
        (N,) tensor (differentiable w.r.t. ``simulated``).
    """
    _check_pair(observed, simulated)
    diff = (simulated - observed.to(simulated.dtype))[:, frames]
    if diff.shape[1] == 0:
        raise ValueError("mse_per_cell needs at least one frame")
    return diff.pow(2).mean(dim=1)


def overall_mse(per_cell: Tensor, cells: Tensor) -> float:
    """Mean of ``per_cell`` over the cells selected by the (N,) bool mask ``cells``; NaN if none."""
    if not bool(cells.any()):
        return math.nan
    return float(per_cell[cells].mean())


def pearson_per_cell(observed: Tensor, simulated: Tensor, frames: Frames = slice(None)) -> Tensor:
    """Pearson correlation ``r_i`` of each cell's observed and simulated traces over ``frames``.

    Returns:
        (N,) tensor; NaN for a cell whose observed or simulated trace is constant on ``frames``.
    """
    _check_pair(observed, simulated)
    x = observed.to(torch.float64)[:, frames]
    y = simulated.detach().to(torch.float64)[:, frames]
    xc = x - x.mean(dim=1, keepdim=True)
    yc = y - y.mean(dim=1, keepdim=True)
    denominator = torch.sqrt((xc * xc).sum(dim=1) * (yc * yc).sum(dim=1))
    r = (xc * yc).sum(dim=1) / denominator
    return torch.where(denominator > 0, r, torch.full_like(r, math.nan))


def relative_bias_per_cell(
    observed: Tensor,
    simulated: Tensor,
    frames: Frames = slice(None),
    *,
    range_percentiles: tuple[float, float] = (5.0, 95.0),
) -> Tensor:
    """Relative bias ``b_i`` (module docstring): mean offset over the observed robust range.

    Args:
        observed: (N, T) observed traces.
        simulated: (N, T) simulated traces.
        frames: frames to use.
        range_percentiles: (low, high) percentiles of the observed trace defining its robust range.

    Returns:
        (N,) tensor; NaN for a cell whose observed robust range is 0.
    """
    _check_pair(observed, simulated)
    x = observed.to(torch.float64)[:, frames]
    y = simulated.detach().to(torch.float64)[:, frames]
    lo, hi = range_percentiles
    q = torch.tensor([lo / 100.0, hi / 100.0], dtype=torch.float64)
    bounds = torch.quantile(x, q, dim=1)  # (2, N)
    robust_range = bounds[1] - bounds[0]
    bias = (y.mean(dim=1) - x.mean(dim=1)) / robust_range
    return torch.where(robust_range > 0, bias, torch.full_like(bias, math.nan))
