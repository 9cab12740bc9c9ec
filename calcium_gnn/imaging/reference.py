"""The reference image a movie is segmented on: a temporal projection or one frame."""

from __future__ import annotations

from typing import Literal

import numpy as np

from calcium_gnn.errors import ConfigError
from calcium_gnn.io.movie import iter_frame_chunks

ReferenceMethod = Literal["mean", "max", "std", "frame"]


def reference_image(
    frames: np.ndarray,
    method: ReferenceMethod = "mean",
    frame: int = 0,
    *,
    chunk_frames: int = 32,
    merge_frames: int | None = None,
) -> np.ndarray:
    """Project a movie (T, Y, X) to one image (Y, X), ``chunk_frames`` frames at a time.

    ``"mean"``: ``(1/T) sum_t x_t``; ``"max"``: ``max_t x_t``; ``"std"``: the population standard
    deviation ``sqrt((1/T) sum_t (x_t - mean)^2)`` (accumulated with Welford/Chan merges, stable in
    one pass); ``"frame"``: ``x_frame`` (negative indices count from the end).

    Memory: one chunk of ``frames`` (a memmap's pages are released after each chunk) and four
    float64 (Y, X) images. ``"mean"`` sums each group of ``merge_frames`` frames in float64, one
    frame at a time, and merges the groups' means, so it does not depend on ``chunk_frames``: the
    memory of a streaming pass can shrink its chunks without changing a bit of the result.
    ``"std"`` merges per chunk (its deviations need the chunk's mean first).

    Args:
        frames: (T, Y, X) array, memmap, or array-like sliced on axis 0 (e.g. a
            :class:`calcium_gnn.imaging.preprocess.PreprocessedMovie`); not modified.
        method: the projection.
        frame: the frame index for ``method="frame"``.
        chunk_frames: frames per chunk read.
        merge_frames: frames per merged group of ``"mean"`` (default ``chunk_frames``).

    Returns:
        (Y, X) float32 (float64 accumulators inside).

    Raises:
        ConfigError: unknown ``method`` (key ``reference.method``) or ``frame`` out of range.
    """
    if frames.ndim != 3:
        raise ConfigError("reference.frames", f"expected a movie (T, Y, X), got shape {frames.shape}")
    if chunk_frames < 1:
        raise ConfigError("chunk_frames", f"must be >= 1, got {chunk_frames!r}")
    group = chunk_frames if merge_frames is None else int(merge_frames)
    if group < 1:
        raise ConfigError("merge_frames", f"must be >= 1, got {merge_frames!r}")
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
        for _, _, block in iter_frame_chunks(frames, chunk_frames):
            np.maximum(acc, block.max(axis=0), out=acc)
        return acc.astype(np.float32)
    # Chan's merge of the statistics of groups of frames; each group's sums run frame by frame in
    # float64 (the same sums, in the same order, as a float64 copy of the whole group: memory is one
    # frame, not a group)
    count = 0
    mean = np.zeros(shape)
    m2 = np.zeros(shape)  # sum of squared deviations from the mean
    block_mean = np.empty(shape)
    deviation = np.empty(shape)

    def merge(nb: int) -> np.ndarray:  # block_mean holds the group's sum; returns delta
        nonlocal count
        np.divide(block_mean, nb, out=block_mean)
        delta = block_mean - mean
        mean[...] += delta * (nb / (count + nb))
        count += nb
        return delta

    filled = 0  # frames summed into block_mean ("mean")
    for _, _, block in iter_frame_chunks(frames, chunk_frames):
        if method == "mean":
            for frame in block:
                if filled:
                    block_mean += frame
                else:
                    block_mean[...] = frame
                filled += 1
                if filled == group:
                    merge(filled)
                    filled = 0
            continue
        nb, before = block.shape[0], count
        block_mean[...] = block[0]
        for frame in block[1:]:
            block_mean += frame
        delta = merge(nb)
        block_m2 = np.zeros(shape)
        for frame in block:
            np.subtract(frame, block_mean, out=deviation)
            deviation *= deviation
            block_m2 += deviation
        m2 += block_m2 + delta**2 * (before * nb / count)
    if filled:
        merge(filled)
    if method == "mean":
        return mean.astype(np.float32)
    return np.sqrt(m2 / count).astype(np.float32)
