"""Evaluation figures (matplotlib, Agg backend, PNG), after the paper's figures.

* :func:`plot_error_map`: per-cell MSE painted over the cells (paper Fig. 14). With a label image
  each cell's pixels get its MSE; without one the cells are approximated by the Voronoi regions of
  their centroids (nearest-centroid raster, cut off at ``max_distance_factor`` times the median
  neighbour spacing). Border cells are grey, other cells outside the group light grey.
* :func:`plot_traces`: observed vs simulated trace of chosen cells, training and test windows marked
  (paper Figs. 9-12, 15-16, 19).
* :func:`plot_parameters`: histogram of the fitted ``gamma_i`` and, with ground truth, fitted vs
  true ``gamma_i``, with ``k`` (and the true ``k``) in the title.

Every function writes one PNG and returns its path.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from scipy.spatial import cKDTree  # noqa: E402

from calcium_gnn.errors import MasksError  # noqa: E402
from calcium_gnn.io.figure_files import save_figure as _save  # noqa: E402

BORDER_GREY = 0.55
OTHER_GREY = 0.88


#: error maps write each cell's id on it up to this many cells (at 1,000 cells the ids overlap, and
#: drawing them took 4 s of the 5 s of a map)
MAX_LABELLED_CELLS: int = 300

def _paint_labels(labels: np.ndarray, cell_id: np.ndarray, per_cell: np.ndarray) -> np.ndarray:
    """(H, W) image holding ``per_cell[i]`` on the pixels labelled ``cell_id[i]``, NaN elsewhere."""
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise MasksError("labels", f"expected a 2-D integer label image, got {labels.dtype} {labels.shape}")
    top = int(max(labels.max(initial=0), cell_id.max(initial=0))) + 1
    lut = np.full(top, np.nan)
    lut[cell_id] = per_cell
    out = np.full(labels.shape, np.nan)
    inside = labels > 0
    out[inside] = lut[labels[inside]]
    return out


def _voronoi_raster(
    pos: np.ndarray, per_cell: np.ndarray, resolution: int, max_distance_factor: float
) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """Nearest-centroid raster of ``per_cell`` over the centroids' bounding box (with a margin)."""
    tree = cKDTree(pos)
    if len(pos) > 1:
        spacing = float(np.median(tree.query(pos, k=2)[0][:, 1]))
    else:
        spacing = 1.0
    lo, hi = pos.min(axis=0) - spacing, pos.max(axis=0) + spacing
    step = float(max(hi - lo)) / resolution
    xs = np.arange(lo[0], hi[0] + step, step)
    ys = np.arange(lo[1], hi[1] + step, step)
    gx, gy = np.meshgrid(xs, ys)
    dist, nearest = tree.query(np.column_stack([gx.ravel(), gy.ravel()]))
    image = per_cell[nearest].astype(float)
    image[dist > max_distance_factor * spacing] = np.nan
    return image.reshape(gx.shape), (xs[0], xs[-1], ys[-1], ys[0])


def plot_error_map(
    path: str | Path,
    per_cell_mse: np.ndarray,
    pos: np.ndarray,
    cell_id: np.ndarray,
    modelled: np.ndarray,
    border: np.ndarray,
    *,
    labels: np.ndarray | None = None,
    title: str = "per-cell MSE",
    cmap: str = "viridis",
    resolution: int = 400,
    max_distance_factor: float = 1.0,
    dpi: int = 120,
) -> Path:
    """Per-cell error map (paper Fig. 14).

    Args:
        path: PNG to write.
        per_cell_mse: (N,) MSE of each cell (only modelled cells are coloured).
        pos: (N, 2) centroids (x, y) in pixels.
        cell_id: (N,) labels of the cells in ``labels``.
        modelled: (N,) bool, the group G.
        border: (N,) bool, border cells (drawn grey).
        labels: optional (H, W) integer label image (0 = background).
        title: figure title.
        cmap: matplotlib colormap for the MSE.
        resolution: pixels along the longer side of the Voronoi raster (no label image).
        max_distance_factor: Voronoi cut-off, in median centroid spacings.
        dpi: resolution of the PNG.

    Returns:
        the written path.
    """
    per_cell_mse = np.asarray(per_cell_mse, dtype=float)
    pos = np.asarray(pos, dtype=float)
    cell_id = np.asarray(cell_id, dtype=np.int64)
    modelled = np.asarray(modelled, dtype=bool)
    border = np.asarray(border, dtype=bool)
    value = np.where(modelled, per_cell_mse, np.nan)
    # category: 0 background, 1 other cell, 2 border cell (painted beneath the MSE colours)
    category = np.where(border, 2.0, 1.0)
    if labels is not None:
        labels = np.asarray(labels)
        mse_image = _paint_labels(labels, cell_id, value)
        cat_image = _paint_labels(labels, cell_id, category)
        extent = None
    else:
        mse_image, extent = _voronoi_raster(pos, value, resolution, max_distance_factor)
        cat_image, _ = _voronoi_raster(pos, category, resolution, max_distance_factor)
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    greys = ListedColormap([(OTHER_GREY,) * 3, (BORDER_GREY,) * 3])
    ax.imshow(np.ma.masked_invalid(cat_image), cmap=greys, vmin=1, vmax=2, extent=extent,
              interpolation="nearest")
    finite = value[np.isfinite(value)]
    vmax = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    shown = ax.imshow(np.ma.masked_invalid(mse_image), cmap=cmap, vmin=0.0, vmax=vmax, extent=extent,
                      interpolation="nearest")
    fig.colorbar(shown, ax=ax, label="MSE")
    shown_ids = np.flatnonzero(modelled | border)
    if shown_ids.size <= MAX_LABELLED_CELLS:  # beyond that the ids overlap and only cost time
        for i in shown_ids:
            ax.text(pos[i, 0], pos[i, 1], str(cell_id[i]), fontsize=5, ha="center", va="center",
                    color="white")
    ax.set_title(f"{title} (grey: border cells)")
    ax.set_xlabel("x (px)")
    ax.set_ylabel("y (px)")
    return _save(fig, path, dpi)


def plot_traces(
    path: str | Path,
    t: np.ndarray,
    observed: np.ndarray,
    simulated: np.ndarray,
    rows: Sequence[int],
    cell_id: np.ndarray,
    train: slice,
    test: slice,
    *,
    mse: dict[int, dict[str, float | None]] | None = None,
    truth: np.ndarray | None = None,
    dpi: int = 120,
) -> Path:
    """Observed vs simulated traces of the cells ``rows`` (paper Figs. 9-12, 15-16, 19).

    Args:
        path: PNG to write.
        t: (T,) frame times in seconds.
        observed: (N, T) observed traces.
        simulated: (N, T) simulation (train window simulated from its first frame, test window from
            its own first frame).
        rows: node indices of the cells to draw (one panel each).
        cell_id: (N,) cell labels, for the panel titles.
        train: frames of the training window; test: frames of the test window (shaded).
        mse: optional ``{row: {"train": mse, "test": mse}}`` shown in the titles.
        truth: optional (N, T) clean traces (synthetic data), drawn dashed.
        dpi: resolution of the PNG.

    Returns:
        the written path.
    """
    t = np.asarray(t, dtype=float)
    rows = list(rows)
    fig, axes = plt.subplots(len(rows), 1, figsize=(8, 2.2 * max(len(rows), 1)), sharex=True, squeeze=False)
    for ax, i in zip(axes[:, 0], rows, strict=True):
        ax.plot(t, observed[i], color="0.3", lw=0.9, label="observed")
        if truth is not None:
            ax.plot(t, truth[i], color="tab:green", lw=0.9, ls="--", label="clean (truth)")
        windows = ((train, "tab:blue", "simulated (train)"), (test, "tab:red", "simulated (test)"))
        for window, colour, name in windows:
            frames = np.arange(len(t))[window]
            if frames.size:
                ax.plot(t[frames], simulated[i, frames], color=colour, lw=1.2, label=name)
        test_frames = np.arange(len(t))[test]
        if test_frames.size:
            ax.axvspan(t[test_frames[0]], t[test_frames[-1]], color="tab:red", alpha=0.07, lw=0)
        title = f"cell {int(cell_id[i])}"
        if mse is not None and i in mse:
            parts = [f"{k} MSE = {v:.3g}" for k, v in mse[i].items() if v is not None]
            title += (": " + ", ".join(parts)) if parts else ""
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("calcium")
    axes[0, 0].legend(fontsize=7, loc="upper right")
    axes[-1, 0].set_xlabel("time (s)")
    return _save(fig, path, dpi)


def plot_parameters(
    path: str | Path,
    gamma: np.ndarray,
    modelled: np.ndarray,
    k: float,
    *,
    truth_k: float | None = None,
    truth_gamma: np.ndarray | None = None,
    bins: int = 30,
    dpi: int = 120,
) -> Path:
    """Fitted parameters: histogram of ``gamma_i`` over G, fitted vs true ``gamma_i`` with truth.

    Args:
        path: PNG to write.
        gamma: (N,) fitted feed terms.
        modelled: (N,) bool, the group G.
        k: fitted coupling constant (1/s).
        truth_k: true k in the fit's weight scale, if known.
        truth_gamma: (N,) true feed terms (NaN where undefined), if known.
        bins: histogram bins.
        dpi: resolution of the PNG.

    Returns:
        the written path.
    """
    modelled = np.asarray(modelled, dtype=bool)
    g = np.asarray(gamma, dtype=float)[modelled]
    panels = 2 if truth_gamma is not None else 1
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 3.8), squeeze=False)
    axes[0, 0].hist(g, bins=bins, color="tab:blue", alpha=0.8)
    axes[0, 0].set_xlabel(r"fitted $\gamma_i$")
    axes[0, 0].set_ylabel("cells")
    if truth_gamma is not None:
        true = np.asarray(truth_gamma, dtype=float)[modelled]
        ok = np.isfinite(true)
        ax = axes[0, 1]
        ax.scatter(true[ok], g[ok], s=10)
        if ok.any():
            lo, hi = float(min(true[ok].min(), g[ok].min())), float(max(true[ok].max(), g[ok].max()))
            ax.plot([lo, hi], [lo, hi], color="0.5", lw=0.8, ls="--")
        ax.set_xlabel(r"true $\gamma_i$")
        ax.set_ylabel(r"fitted $\gamma_i$")
    title = f"k = {k:.4g} 1/s"
    if truth_k is not None:
        title += f" (true {truth_k:.4g})"
    fig.suptitle(title)
    return _save(fig, path, dpi)
