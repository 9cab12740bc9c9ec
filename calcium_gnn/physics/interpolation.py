"""Linear interpolation of the frames and the paper's train/test split in time (section 3.2).

The paper interpolates the 361 frames of its movie linearly ("~3600 points") and fits on the first
2110 points, testing on the last 1500. Here the split is made on *frames*, so no interpolated point
ever mixes train and test data:

* :func:`time_split`: frames ``[0, n_train)`` are the training window and ``[n_train, n_frames)``
  the test window, with ``n_train = round(train_fraction * n_frames)``. The default
  ``train_fraction = 2110 / 3610`` gives the paper's 211 train / 150 test frames of 361.
* :func:`interpolate_frames`: a window of ``T`` frames interpolated by an integer ``factor`` has
  ``(T - 1) * factor + 1`` points at spacing ``h = dt / factor``; frame ``m`` is point
  ``m * factor`` exactly, and point ``m * factor + r`` (``0 <= r < factor``) is
  ``x_m + (r / factor) (x_{m+1} - x_m)``. The paper's 211 training frames at factor 10 give 2101
  points, i.e. 2100 forward-Euler steps (eq. 5) per modelled cell.
"""

from __future__ import annotations

import torch
from torch import Tensor

from calcium_gnn.errors import ConfigError

DEFAULT_TRAIN_FRACTION: float = 2110 / 3610
DEFAULT_INTERPOLATION_FACTOR: int = 10


def time_split(n_frames: int, train_fraction: float = DEFAULT_TRAIN_FRACTION) -> tuple[slice, slice]:
    """Split ``n_frames`` frames into a training and a test window (contiguous, in this order).

    Args:
        n_frames: T, the number of frames of the movie.
        train_fraction: fraction of the frames used for training, in (0, 1]
            (default 2110/3610, the paper's split: 211 of 361 frames).

    Returns:
        ``(train, test)`` slices over the frame axis: ``slice(0, n_train)`` and
        ``slice(n_train, n_frames)`` (empty when ``train_fraction`` is 1).

    Raises:
        ConfigError (``model.train_fraction``): the fraction is outside (0, 1] or leaves fewer than
            two training frames (no time step to fit).
    """
    fraction = float(train_fraction)
    if not 0 < fraction <= 1:
        raise ConfigError("model.train_fraction", f"expected a fraction in (0, 1], got {train_fraction!r}")
    n_train = min(int(round(fraction * n_frames)), int(n_frames))
    if n_train < 2:
        raise ConfigError(
            "model.train_fraction",
            f"{train_fraction!r} of {n_frames} frames leaves {n_train} training frame(s); 2 are needed",
        )
    return slice(0, n_train), slice(n_train, int(n_frames))


def _check_factor(factor: int) -> int:
    if isinstance(factor, bool) or int(factor) != factor or int(factor) < 1:
        raise ConfigError("model.interpolation_factor", f"expected a positive integer, got {factor!r}")
    return int(factor)


def interpolate_frames(x: Tensor, factor: int = DEFAULT_INTERPOLATION_FACTOR) -> Tensor:
    """Linearly interpolate traces along time (the last axis) by an integer factor.

    Args:
        x: traces, (..., T) with T >= 1.
        factor: points per frame interval (1 returns ``x``; paper: 10).

    Returns:
        (..., (T - 1) * factor + 1); point ``m * factor + r`` is ``x_m + (r/factor)(x_{m+1} - x_m)``.
        Differentiable with respect to ``x``.
    """
    f = _check_factor(factor)
    if f == 1 or x.shape[-1] < 2:
        return x
    frac = torch.arange(f, dtype=x.dtype, device=x.device) / f  # (f,)
    start, delta = x[..., :-1], x[..., 1:] - x[..., :-1]  # (..., T-1)
    inner = start.unsqueeze(-1) + delta.unsqueeze(-1) * frac  # (..., T-1, f)
    return torch.cat([inner.flatten(-2), x[..., -1:]], dim=-1)


def interpolate_times(t: Tensor, factor: int = DEFAULT_INTERPOLATION_FACTOR) -> Tensor:
    """Frame times (T,) interpolated like :func:`interpolate_frames`: ((T - 1) * factor + 1,)."""
    return interpolate_frames(t, factor)
