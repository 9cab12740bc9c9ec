"""Cells the fitted law cannot explain: the ``unexplained`` rule of ``setup.auto_drivers``.

A driver the setup missed (a relay cell that fires when a wave reaches it, a pacemaker) is modelled
with the law anyway; its calcium rises without a neighbour pulling it, and the simulation of the
fitted law misses it far more than the other cells. Over the modelled cells G, with the training
window's simulation ``y`` of the fitted parameters (:func:`calcium_gnn.evaluation.report.simulate_windows`,
started from the first observed frame, not the fitted ``y0``: the thresholds below were set on these
residuals, and from the fitted ``y0`` they take ordinary cells too, e.g. 2 of 40 on zoo member stimulus-25)

.. math::
    m_i = \\operatorname{mean}_t (y_i - x_i)^2, \\qquad \\rho_i = \\tfrac12 \\log m_i, \\qquad
    z_i = 0.6745 \\, \\frac{\\rho_i - \\operatorname{median}_G \\rho}{\\operatorname{MAD}_G \\rho}

(the robust z-score of :mod:`calcium_gnn.inference.anomaly`). Each round (:func:`find_unexplained`):

1. the cells with ``z_i > threshold`` (``setup.unexplained_z``, default 3: for Gaussian scores one cell
   in 740) become drivers, and the law is fitted again;
2. when no cell is that far out, the cells with ``z > try_z`` (default 2; at most ``trial_share`` of
   G, the highest first) are tried together: the law is fitted with them as drivers, and they stay
   drivers when the mean ``m_i`` of the *other* modelled cells falls by at least ``gain`` (default
   20%). Missed drivers can spoil the whole fit (``k`` collapses to a bound), which flattens every
   score; taking them out restores the others, while taking out ordinary cells changes the others' fit
   by about their share of G. Missed drivers are often many, each spoiling its own neighbourhood, so
   they are tried together rather than one by one.

At most ``setup.unexplained_rounds`` such rounds; each driver found is recorded with its z-score, its
round and, for a tried cell, the gain.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch_geometric.data import Data

from calcium_gnn.evaluation.report import simulate_windows
from calcium_gnn.inference.anomaly import robust_z
from calcium_gnn.physics.edge_weights import edge_weights
from calcium_gnn.physics.interpolation import time_split
from calcium_gnn.physics.parameters import FittedParameters
from calcium_gnn.physics.setups import Setup

log = logging.getLogger(__name__)

#: how a driver of this rule is recorded (the start of its reason)
UNEXPLAINED_REASON = "the fitted law cannot explain it"


@dataclass(frozen=True)
class UnexplainedRule:
    """Thresholds of the rule (module docstring)."""

    threshold: float = 3.0
    try_z: float = 2.0
    gain: float = 0.2
    rounds: int = 4
    #: at most this share of the modelled cells is tried at once
    trial_share: float = 0.25


@dataclass
class FitOutcome:
    """What the rule needs of one fit: the parameters, the training share, a learned law's field."""

    fitted: FittedParameters
    train_fraction: float
    field: torch.nn.Module | None = None


def residual_scores(
    data: Data, setup: Setup, fit: FitOutcome, *, substeps: int = 10
) -> dict[int, tuple[float, float]]:
    """``{cell id: (z_i, m_i)}`` over the modelled cells (module docstring); empty below 3 cells."""
    data = data.cpu()
    modelled = setup.modelled.detach().cpu().bool()
    if int(modelled.sum()) < 3:
        return {}
    fitted = fit.fitted
    train, _ = time_split(data.x.shape[1], fit.train_fraction)
    w, _ = edge_weights(data.edge_attr.double(), scale=fitted.edge_weight_scale)
    no_test = slice(train.stop, train.stop)
    sim = simulate_windows(data, modelled, fitted.k, fitted.feeds(data.t.double()), w, train, no_test,
                           substeps=substeps, field=fit.field, leak=fitted.leak)
    residual = (sim - data.x.double())[modelled][:, train.start + 1 : train.stop]
    mse = residual.pow(2).mean(dim=1).clamp_min(1e-300)
    z = robust_z(0.5 * mse.log(), torch.ones_like(mse, dtype=torch.bool))
    ids = data.cell_id[modelled].tolist()
    return {int(c): (float(z[i]), float(mse[i])) for i, c in enumerate(ids)}


def find_unexplained(
    data: Data,
    setup_with: Callable[[dict[int, str]], Setup],
    fit: Callable[[Setup], FitOutcome],
    rule: UnexplainedRule | None = None,
    *,
    substeps: int = 10,
) -> dict[int, str]:
    """The drivers of the rule ``{cell id: reason}`` (module docstring).

    Args:
        data: the cell graph.
        setup_with: the run's setup with these extra drivers (``{cell id: reason}``).
        fit: fits the run's model on a setup.
        rule: the thresholds. substeps: integrator sub-steps per frame.
    """
    rule = rule if rule is not None else UnexplainedRule()
    extra: dict[int, str] = {}
    setup = setup_with(extra)
    scores = residual_scores(data, setup, fit(setup), substeps=substeps)
    for round_ in range(1, rule.rounds + 1):
        found = {c: z for c, (z, _) in scores.items() if z > rule.threshold}
        if found:
            extra.update({c: f"{UNEXPLAINED_REASON} (round {round_}: residual z = {z:.1f})"
                          for c, z in found.items()})
            log.info("unexplained-driver round %d: %d cell(s) with z > %g", round_, len(found),
                     rule.threshold)
            setup = setup_with(extra)
            scores = residual_scores(data, setup, fit(setup), substeps=substeps)
            continue
        if not scores:
            break
        # no cell stands out: try the cells that stand out a little, together (missed drivers are often
        # many, each spoiling the fit of its own neighbourhood, and only together restore the others)
        limit = max(1, int(rule.trial_share * len(scores)))
        trial_cells = sorted((c for c, (z, _) in scores.items() if z > rule.try_z),
                             key=lambda c: -scores[c][0])[:limit]
        if not trial_cells:
            break
        trial = setup_with({**extra, **{c: "" for c in trial_cells}})
        trial_scores = residual_scores(data, trial, fit(trial), substeps=substeps)
        common = [c for c in trial_scores if c in scores]
        before = statistics.fmean(scores[c][1] for c in common) if common else 0.0
        after = statistics.fmean(trial_scores[c][1] for c in common) if common else 0.0
        drop = 1.0 - after / before if before > 0 else 0.0
        log.info("unexplained-driver round %d: trying %d cell(s) with z > %g: the others' residual falls by "
                 "%.0f%%", round_, len(trial_cells), rule.try_z, 100 * drop)
        if drop < rule.gain:
            break
        extra.update({c: f"{UNEXPLAINED_REASON} (round {round_}: residual z = {scores[c][0]:.1f}; as drivers "
                      f"with {len(trial_cells) - 1} other(s) the others' residual falls by {100 * drop:.0f}%)"
                      for c in trial_cells})
        setup, scores = setup_with(extra), trial_scores
    return extra
