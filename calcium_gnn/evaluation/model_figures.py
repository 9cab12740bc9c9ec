"""Figures of the model-specific results: parameter intervals, the anomaly map, the learned message.

The statistics themselves live in :mod:`calcium_gnn.inference` (below the models in the layering);
these functions draw them, at the evaluation boundary (:func:`calcium_gnn.evaluation.report.evaluate_fit`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from calcium_gnn.inference.anomaly import AnomalyScores
from calcium_gnn.inference.learned_law import LearnedLaw, NodeTermSummary
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


#: at most this many message samples are drawn (a scatter of 20,000 points is slow to render and to read)
MAX_MESSAGE_POINTS: int = 4000


def plot_learned_message(law: LearnedLaw, path: str | Path) -> Path:
    """The learned flux per unit weight against ``Delta`` over the visited states, beside the true law's
    (when known) and the linear fit's; right: learned against true (or against the symbolic summary).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = law.samples
    keep = np.random.default_rng(0).permutation(len(s.delta))[:MAX_MESSAGE_POINTS]
    delta, source, learned = s.delta[keep], s.source[keep], s.learned[keep]
    node = law.node if law.node is not None and law.node.level is not None else None
    fig, axes = plt.subplots(1, 3 if node is not None else 2, figsize=(16 if node is not None else 11, 4.8))
    left, right = axes[0], axes[1]
    if s.true is not None:
        left.scatter(delta, s.true[keep], s=4, c="lightgrey", label=f"true law ({s.true_law})")
    shown = left.scatter(delta, learned, s=4, c=source, cmap="viridis", label="learned")
    if np.isfinite(s.linear_k):
        grid = np.linspace(delta.min(), delta.max(), 50)
        left.plot(grid, s.linear_k * grid, "r--", lw=1.2, label=f"linear fit, k = {s.linear_k:.4g}")
    fig.colorbar(shown, ax=left, label="source level z_j")
    left.set_xlabel("Delta = z_j - y_i")
    left.set_ylabel("flux per unit weight q (1/s x level)")
    left.legend(fontsize=8, markerscale=3)
    summary = law.summary
    reference = s.true[keep] if s.true is not None else None
    label = "true flux" if reference is not None else "symbolic summary"
    if reference is None:
        reference = summary.predict(delta, source)
    right.scatter(reference, learned, s=4, c="tab:blue")
    lim = [float(min(reference.min(), learned.min())), float(max(reference.max(), learned.max()))]
    right.plot(lim, lim, "k:", lw=1)
    right.tick_params(axis="x", labelrotation=30)
    right.set_xlabel(label)
    right.set_ylabel("learned flux")
    title = f"{summary.formula()}  explains {100 * summary.explained:.1f}%  -> {summary.law}"
    if node is not None:
        _plot_node_term(axes[2], node)
        title += f"\nnode term: {node.as_results()['formula']}  -> {node.law}"
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def _plot_node_term(ax: Any, node: NodeTermSummary) -> None:
    """The learned node term ``nu(y)`` about its mean against the level, with its line and the true leak's."""
    keep = np.random.default_rng(1).permutation(len(node.level))[:MAX_MESSAGE_POINTS]
    level, flux = node.level[keep], node.flux[keep]
    mean_level, mean_flux = float(node.level.mean()), float(node.flux.mean())
    ax.scatter(level, flux - mean_flux, s=4, c="tab:blue", label="learned nu(y), about its mean")
    grid = np.linspace(float(level.min()), float(level.max()), 50)
    ax.plot(grid, -node.leak_rate * (grid - mean_level), "r--", lw=1.2,
            label=f"line: leak rate {node.leak_rate:.4g}/s")
    if node.true_leak_rate is not None:
        ax.plot(grid, -node.true_leak_rate * (grid - mean_level), color="grey", lw=1.2,
                label=f"true leak rate {node.true_leak_rate:.4g}/s")
    ax.set_xlabel("level y_i")
    ax.set_ylabel("node term nu (level / s)")
    ax.legend(fontsize=8, markerscale=3)
