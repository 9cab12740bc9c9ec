"""The figure of a multi-dish comparison (``conditions.png``): every dish's ``k`` with its interval,
grouped by condition, and each condition's estimate from the hierarchical model with its interval."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from calcium_gnn.inference.conditions import ConditionComparison
from calcium_gnn.io.figure_files import save_figure

__all__ = ["plot_conditions"]


def plot_conditions(
    comparison: ConditionComparison,
    conditions: Sequence[str],
    values: Sequence[float | None],
    intervals: Sequence[tuple[float, float] | None],
    path: str | Path,
    *,
    flagged: Sequence[bool] | None = None,
) -> Path:
    """Per-dish estimates (dots, their intervals as thin bars; flagged fits hollow) and the conditions'
    estimates (wide bars with their intervals), one column per condition; log axis for ``k``.

    Args:
        comparison: the fitted model (:func:`calcium_gnn.inference.conditions.compare_conditions`).
        conditions, values, intervals: (n,) per dish (``None`` values are not drawn).
        path: the PNG to write. flagged: (n,) the dish's fit was flagged (``fit_ok`` false).
    """
    order = [c.condition for c in comparison.conditions]
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(order), 4.0))
    rng = np.random.default_rng(0)
    flagged = list(flagged) if flagged is not None else [False] * len(values)
    for j, (cond, value) in enumerate(zip(conditions, values, strict=True)):
        if value is None or cond not in order:
            continue
        x = order.index(cond) + rng.uniform(-0.18, 0.18)
        if intervals[j] is not None:
            ax.plot([x, x], intervals[j], color="0.6", lw=0.8)
        ax.plot(x, value, "o", ms=5, color="C0", mfc="white" if flagged[j] else "C0")
    for i, est in enumerate(comparison.conditions):
        ax.plot([i - 0.32, i + 0.32], [est.estimate] * 2, color="C3", lw=2.5)
        ax.fill_between([i - 0.3, i + 0.3], *est.interval, color="C3", alpha=0.15, lw=0)
    ax.set_xticks(range(len(order)), [f"{c}\n(n={e.n_dishes})" for c, e in zip(order, comparison.conditions,
                                                                             strict=True)])
    if comparison.log_scale:
        ax.set_yscale("log")
    ax.set_ylabel(f"{comparison.quantity} per dish" + (" (1/s)" if comparison.quantity == "k" else ""))
    lines = [f"{c.condition} / {c.reference}: ratio {c.ratio:.3g} "
             f"[{c.interval[0]:.3g}, {c.interval[1]:.3g}], p = {c.p_value:.2g}"
             if c.ratio is not None else
             f"{c.condition} - {c.reference}: {c.difference:.3g} [{c.interval[0]:.3g}, {c.interval[1]:.3g}], "
             f"p = {c.p_value:.2g}" for c in comparison.contrasts]
    ax.set_title("\n".join(lines) if lines else comparison.quantity, fontsize=8)
    ax.set_xlim(-0.6, len(order) - 0.4)
    ax.set_xlabel(f"dots: dishes and their intervals (hollow: fit flagged)\nred: the condition's estimate "
                  f"and {comparison.level:.0%} interval (hierarchical model)", fontsize=7)
    return save_figure(fig, path)
