"""The reference image a movie is segmented on: a temporal projection or one frame."""

from __future__ import annotations

from typing import Literal

import numpy as np

from calcium_gnn.errors import ConfigError

ReferenceMethod = Literal["mean", "max", "std", "frame"]


def reference_image(
    frames: np.ndarray,
    method: ReferenceMethod = "mean",
    frame: int = 0,
    *,
    chunk_frames: int = 32,
) -> np.ndarray:
    """Project a movie (T, Y, X) to one image (Y, X), ``chunk_frames`` frames at a time.

    ``"mean"``: ``(1/T) sum_t x_t``; ``"max"``: ``max_t x_t``; ``"std"``: the population standard
    deviation ``sqrt((1/T) sum_t (x_t - mean)^2)`` (accumulated with Welford/Chan merges, stable in
    one pass); ``"frame"``: ``x_frame`` (negative indices count from the end).

    Args:
        frames: (T, Y, X) array or memmap; not modified.
        method: the projection.
        frame: the frame index for ``method="frame"``.
        chunk_frames: frames per chunk.

    Returns:
        (Y, X) float32 (float64 accumulators inside).

    Raises:
        ConfigError: unknown ``method`` (key ``reference.method``) or ``frame`` out of range.
    """
    if frames.ndim != 3:
        raise ConfigError("reference.frames", f"expected a movie (T, Y, X), got shape {frames.shape}")
    if chunk_frames < 1:
        raise ConfigError("chunk_frames", f"must be >= 1, got {chunk_frames!r}")
    n = frames.shape[0]
    if method == "frame":
        if not -n <= frame < n:
            raise ConfigError("reference.frame", f"frame {frame} is outside the movie's {n} frames")
        return np.asarray(frames[frame], dtype=np.float32)
    if method not in ("mean", "max", "std"):
        raise ConfigError("reference.method", f"must be 'mean', 'max', 'std' or 'frame', got {method!r}")
    shape = frames.shape[1:]
    if method == "max":
        acc = np.full(shape, -np.inf)
        for start in range(0, n, chunk_frames):
            np.maximum(acc, np.asarray(frames[start : start + chunk_frames]).max(axis=0), out=acc)
        return acc.astype(np.float32)
    count = 0
    mean = np.zeros(shape)
    m2 = np.zeros(shape)  # sum of squared deviations from the mean
    for start in range(0, n, chunk_frames):
        block = np.asarray(frames[start : start + chunk_frames], dtype=np.float64)
        nb = block.shape[0]
        block_mean = block.mean(axis=0)
        delta = block_mean - mean
        total = count + nb
        mean += delta * (nb / total)
        if method == "std":
            m2 += ((block - block_mean) ** 2).sum(axis=0) + delta**2 * (count * nb / total)
        count = total
    if method == "mean":
        return mean.astype(np.float32)
    return np.sqrt(m2 / count).astype(np.float32)
