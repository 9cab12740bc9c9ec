"""Activation-time map (matplotlib, Agg backend, PNG): cells coloured by when they activate.

With a label image (Y, X) every cell's pixels are filled with its activation time; without one each
cell is a dot at its centroid. Cells that never activate are grey, the stimulus point a red cross. With a
simulated map the observed and simulated maps stand side by side on one colour scale; cells outside
the modelled group follow their data in the simulation, and are hatched there (label image) or drawn
as squares (dots). Coordinates are pixels, ``(x, y)`` = (column, row), y pointing down as in the image.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from numpy.typing import ArrayLike  # noqa: E402

from calcium_gnn.errors import MasksError  # noqa: E402
from calcium_gnn.io.figure_files import save_figure as _save  # noqa: E402

__all__ = ["plot_activation_map"]

#: grey level of cells that never activate
INACTIVE_GREY: float = 0.8
#: dot size (points^2) of a cell without a label image
DOT_SIZE: float = 30.0
#: size of the cross marking the stimulus point (points^2; open, so the cell beneath stays visible)
POINT_SIZE: float = 120.0
#: inches per panel
PANEL_INCHES: float = 5.5


def _cell_image(labels: np.ndarray, cell_id: np.ndarray, per_cell: np.ndarray) -> np.ndarray:
    """(Y, X) image holding ``per_cell[i]`` on the pixels labelled ``cell_id[i]``, NaN elsewhere."""
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise MasksError("labels", f"expected a 2-D integer label image, got {labels.dtype} {labels.shape}")
    lookup = np.full(int(max(labels.max(initial=0), cell_id.max(initial=0))) + 1, np.nan)
    lookup[cell_id] = per_cell
    out = np.full(labels.shape, np.nan)
    inside = labels > 0
    out[inside] = lookup[labels[inside]]
    return out


def _panel(ax, times, pos, cell_id, labels, followed, norm, cmap) -> None:
    """Draw one map on ``ax``."""
    active = np.isfinite(times)
    if labels is not None:
        grey = _cell_image(labels, cell_id, np.where(active, np.nan, 1.0))
        ax.imshow(np.ma.masked_invalid(grey), cmap=ListedColormap([(INACTIVE_GREY,) * 3]),
                  interpolation="nearest")
        ax.imshow(np.ma.masked_invalid(_cell_image(labels, cell_id, times)), cmap=cmap, norm=norm,
                  interpolation="nearest")
        if followed is not None and followed.any():
            hatch = _cell_image(labels, cell_id, np.where(followed, 1.0, np.nan))
            ax.contourf(np.isfinite(hatch).astype(float), levels=[0.5, 1.5], colors="none", hatches=["////"])
        return
    marker_of = np.full(times.shape, "o", dtype=object)
    if followed is not None:
        marker_of[followed] = "s"
    for marker in ("o", "s"):
        rows = marker_of == marker
        ax.scatter(pos[rows & ~active, 0], pos[rows & ~active, 1], s=DOT_SIZE, marker=marker,
                   color=(INACTIVE_GREY,) * 3, edgecolors="0.5", linewidths=0.4)
        ax.scatter(pos[rows & active, 0], pos[rows & active, 1], c=times[rows & active], s=DOT_SIZE,
                   marker=marker, cmap=cmap, norm=norm, edgecolors="0.2", linewidths=0.4)
    ax.set_aspect("equal")
    if not ax.yaxis_inverted():
        ax.invert_yaxis()


def plot_activation_map(
    path: str | Path,
    pos: ArrayLike,
    cell_id: ArrayLike,
    observed: ArrayLike,
    *,
    simulated: ArrayLike | None = None,
    labels: np.ndarray | None = None,
    point: tuple[float, float] | None = None,
    modelled: ArrayLike | None = None,
    cmap: str = "viridis",
    dpi: int = 120,
) -> Path:
    """Cells coloured by activation time; observed and simulated side by side when both are given.

    Args:
        path: PNG to write.
        pos: (N, 2) centroids (x, y) in px.
        cell_id: (N,) labels of the cells in ``labels``.
        observed: (N,) activation times (s), NaN for cells that never activate.
        simulated: optional (N,) activation times of the fitted model's simulation.
        labels: optional (Y, X) integer label image (0 = background): cells are filled.
        point: optional (x, y) of the stimulus, marked by a star.
        modelled: optional (N,) bool, the group G (cells outside it are marked on the simulated map).
        cmap: colormap of the times. dpi: resolution of the PNG.

    Returns:
        the written path.
    """
    pos = np.asarray(pos, dtype=float)
    cell_id = np.asarray(cell_id, dtype=np.int64).reshape(-1)
    maps = [("observed", np.asarray(observed, dtype=float).reshape(-1))]
    if simulated is not None:
        maps.append(("simulated", np.asarray(simulated, dtype=float).reshape(-1)))
    labels = None if labels is None else np.asarray(labels)
    followed = None if modelled is None else ~np.asarray(modelled, dtype=bool).reshape(-1)
    finite = np.concatenate([m[np.isfinite(m)] for _, m in maps])
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    norm = plt.Normalize(vmin=low, vmax=high if high > low else low + 1.0)
    fig, axes = plt.subplots(1, len(maps), figsize=(PANEL_INCHES * len(maps), PANEL_INCHES), squeeze=False)
    for ax, (name, times) in zip(axes[0], maps, strict=True):
        _panel(ax, times, pos, cell_id, labels, followed if name == "simulated" else None, norm, cmap)
        if point is not None:
            ax.scatter([point[0]], [point[1]], marker="x", s=POINT_SIZE, color="red", linewidths=2.0,
                       zorder=5, label="stimulus point")
            ax.legend(loc="upper right", fontsize=7)
        active = int(np.isfinite(times).sum())
        title = f"{name}: {active} of {times.size} cells activate (grey: never)"
        if name == "simulated" and followed is not None and followed.any():
            marked = "hatched" if labels is not None else "squares"
            title += f"\n{marked}: cells that follow their data"
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("x (px)")
        ax.set_ylabel("y (px)")
    scale = plt.cm.ScalarMappable(norm=norm, cmap=cmap)
    fig.colorbar(scale, ax=list(axes[0]), label="activation time (s)", shrink=0.8)
    return _save(fig, path, dpi)
