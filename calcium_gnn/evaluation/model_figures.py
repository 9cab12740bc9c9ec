"""Figures of the model-specific results: parameter intervals and the anomaly map.

The statistics themselves live in :mod:`calcium_gnn.inference` (below the models in the layering);
these functions draw them, at the evaluation boundary (:func:`calcium_gnn.evaluation.report.evaluate_fit`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from calcium_gnn.inference.anomaly import AnomalyScores
from calcium_gnn.inference.uncertainty import ParameterIntervals
from calcium_gnn.io.figure_files import save_figure

#: above this many modelled cells the intervals are drawn as a band over the sorted cells, not as
#: one error bar each (a whole-well culture would otherwise need a figure metres wide)
MAX_ERROR_BARS: int = 150


def plot_intervals(
    intervals: ParameterIntervals,
    cell_id: Tensor,
    cells: Tensor,
    path: str | Path,
    truth_gamma: Tensor | None = None,
    truth_k: float | None = None,
) -> Path:
    """Error-bar figure of ``gamma_i`` per modelled cell (and ``k`` in the title); PNG at ``path``.

    Cells are sorted by their estimate; the true values are drawn as crosses when given. Above
    :data:`MAX_ERROR_BARS` cells the intervals are a shaded band and the figure keeps a fixed width.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    idx = cells.reshape(-1).nonzero().reshape(-1)
    order = idx[intervals.gamma[idx].argsort()]
    xs = torch.arange(order.numel())
    est = intervals.gamma[order]
    many = order.numel() > MAX_ERROR_BARS
    fig, ax = plt.subplots(figsize=(14.0 if many else max(6.0, 0.08 * order.numel() + 3), 4))
    label = f"fit, {intervals.level:.0%} interval"
    if many:
        ax.fill_between(xs, intervals.gamma_lower[order], intervals.gamma_upper[order], color="C0", alpha=0.3,
                        lw=0, label=label)
        ax.plot(xs, est, color="C0", lw=1)
    else:
        yerr = [est - intervals.gamma_lower[order], intervals.gamma_upper[order] - est]
        ax.errorbar(xs, est, yerr=yerr, fmt="o", ms=3, lw=1, capsize=2, label=label)
    if truth_gamma is not None:
        true = torch.as_tensor(truth_gamma, dtype=torch.float64)[order]
        marker, size = (".", 2) if many else ("x", 4)
        ax.plot(xs, true, marker, color="C3", ms=size, label="truth")
    ax.set_xticks(xs[:: max(1, order.numel() // 20)])
    ax.set_xticklabels([str(int(cell_id[i])) for i in order[:: max(1, order.numel() // 20)]], fontsize=7)
    ax.set_xlabel("cell id (sorted by fitted gamma)")
    ax.set_ylabel("gamma (1/s)")
    title = (
        f"k = {intervals.k:.4g} [{intervals.k_interval[0]:.4g}, {intervals.k_interval[1]:.4g}] "
        f"({intervals.level:.0%})"
    )
    if truth_k is not None:
        title += f", true k = {truth_k:.4g}"
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_anomaly_map(
    scores: AnomalyScores,
    cell_id: Tensor,
    pos: Tensor,
    path: str | Path,
    labels: np.ndarray | None = None,
) -> Path:
    """Map of the anomaly scores: cells painted by score on the label image, else dots at the centroids.

    Flagged cells are outlined / ringed in red; cells without a score are grey.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    score = scores.score.detach().double().numpy()
    finite = np.isfinite(score)
    vmax = max(scores.rule.threshold * 1.5, float(np.nanmax(score)) if finite.any() else 1.0)
    fig, ax = plt.subplots(figsize=(6, 5.5))
    cmap = plt.get_cmap("magma").with_extremes(bad="lightgrey")
    ids = cell_id.reshape(-1).numpy()
    xy = pos.detach().double().numpy()
    if labels is not None:
        lut = np.full(int(max(ids.max(), labels.max())) + 1, np.nan)
        lut[ids] = score
        image = lut[np.asarray(labels)]
        image[np.asarray(labels) == 0] = np.nan
        shown = ax.imshow(np.ma.masked_invalid(image), cmap=cmap, vmin=0, vmax=vmax)
    else:
        shown = ax.scatter(xy[finite, 0], xy[finite, 1], c=score[finite], cmap=cmap, vmin=0, vmax=vmax, s=60)
        ax.scatter(xy[~finite, 0], xy[~finite, 1], c="lightgrey", s=30)
        ax.invert_yaxis()
        ax.set_aspect("equal")
    flagged = scores.flagged.numpy()
    ax.scatter(
        xy[flagged, 0],
        xy[flagged, 1],
        facecolors="none",
        edgecolors="red",
        s=160,
        linewidths=1.5,
        label=f"flagged (score > {scores.rule.threshold:g})",
    )
    fig.colorbar(shown, ax=ax, label="anomaly score")
    ax.set_title("anomaly score per cell", fontsize=10)
    if flagged.any():
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return save_figure(fig, path)
