"""Cleaning label images: drop small cells, relabel 1..N, check the shape against the movie."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from calcium_gnn.errors import ConfigError, MasksError


def filter_small_cells(
    labels: np.ndarray, min_area: int = 500, *, return_mapping: bool = False
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Drop cells smaller than ``min_area`` pixels (paper sec. 3.1: 500 px) and relabel 1..N.

    Surviving cells keep their order: the smallest old label becomes 1, and so on. Dropped cells
    become background (0).

    Args:
        labels: (Y, X) non-negative integer label image; not modified.
        min_area: minimum cell area in pixels (a cell with exactly ``min_area`` pixels is kept).
        return_mapping: also return ``old_ids`` (N,) int64, with ``old_ids[new - 1] = old``.

    Returns:
        (Y, X) int32 labels 1..N, and ``old_ids`` when asked.
    """
    if min_area < 0:
        raise ConfigError("min_area", f"must be >= 0, got {min_area!r}")
    labels = np.asarray(labels)
    if labels.dtype.kind not in "ui" or (labels.size and labels.min() < 0):
        raise ConfigError("labels", "expected a non-negative integer label image")
    area = np.bincount(labels.ravel())
    keep = area >= min_area
    keep[0] = False
    old_ids = np.flatnonzero(keep).astype(np.int64)
    lut = np.zeros(area.shape[0], dtype=np.int32)
    lut[old_ids] = np.arange(1, old_ids.size + 1, dtype=np.int32)
    out = lut[labels]
    return (out, old_ids) if return_mapping else out


def check_labels_match(labels: np.ndarray, frame_shape: tuple[int, ...], source: str | Path) -> None:
    """Check a label image (Y, X) fits the movie's frames (Y, X).

    Raises:
        MasksError: naming ``source`` when the shapes differ.
    """
    shape = tuple(int(s) for s in np.shape(labels))
    frame = tuple(int(s) for s in frame_shape)
    if shape != frame:
        raise MasksError(source, f"label image shape {shape} differs from the movie's frames {frame} (Y, X)")
