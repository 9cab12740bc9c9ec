"""Anomalous cells: a feed ``gamma_i`` or a misfit far from the rest of the culture.

Two per-cell features of a fitted consensus model, over the modelled cells ``G``:

* the feed ``gamma_i`` (eq. 3), anomalous in either direction;
* the residual level ``rho_i = log RMS_t(y_sim - x)_i`` on the training window, anomalous when high
  (a cell that does not follow the consensus law, e.g. one firing on its own). The log makes the
  right-skewed RMS roughly symmetric.

Each is scored by the robust z-score (Iglewicz and Hoaglin's modified z-score)

.. math::
    z_i = c \\, \\frac{v_i - \\operatorname{median}_G v}{\\operatorname{MAD}_G v}, \\qquad
    \\operatorname{MAD} = \\operatorname{median}_G |v - \\operatorname{median} v|, \\quad
    c = \\Phi^{-1}(3/4) \\approx 0.6745,

which for Gaussian values is a standard z-score but is not pulled by the outliers themselves. When the
MAD is 0 the mean absolute deviation times ``sqrt(pi/2)`` replaces it (``c`` dropped: it is already
a sigma estimate for Gaussians), and when both are 0 every score is 0. The anomaly score is

.. math::
    s_i = \\max(|z^\\gamma_i|, \\max(z^\\rho_i, 0))

and a cell is flagged when ``s_i > threshold`` (default 3.5, Iglewicz and Hoaglin's recommendation).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from calcium_gnn.errors import ConfigError

MAD_CONSISTENCY: float = 0.6745
DEFAULT_THRESHOLD: float = 3.5


@dataclass(frozen=True)
class AnomalyRule:
    """The flagging rule (module docstring).

    Attributes:
        threshold: a cell is flagged when its score exceeds this (default 3.5).
        consistency: ``c`` of the modified z-score (default 0.6745 = Phi^{-1}(0.75)).
    """

    threshold: float = DEFAULT_THRESHOLD
    consistency: float = MAD_CONSISTENCY

    def __post_init__(self) -> None:
        if not (self.threshold > 0 and math.isfinite(self.threshold)):
            raise ConfigError("model.anomaly_threshold", f"must be a positive number, got {self.threshold!r}")
        if not self.consistency > 0:
            raise ConfigError("model.anomaly_consistency", f"must be > 0, got {self.consistency!r}")

    def statement(self) -> str:
        """The rule in one sentence (stored in results.json)."""
        return (
            f"robust z-score z = {self.consistency:g} (v - median) / MAD over the modelled cells, for v = "
            "gamma_i (both tails) and v = log RMS of the training residual (high tail); score = "
            f"max(|z_gamma|, z_residual); flagged when score > {self.threshold:g}"
        )

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "statement": self.statement()}


def robust_z(values: Tensor, cells: Tensor, consistency: float = MAD_CONSISTENCY) -> Tensor:
    """Modified z-scores of ``values`` (N,) against the cells in the (N,) bool mask ``cells``.

    Returns:
        (N,) float64; NaN outside ``cells`` (module docstring for the MAD = 0 fallbacks).
    """
    v = torch.as_tensor(values, dtype=torch.float64).reshape(-1)
    mask = torch.as_tensor(cells, dtype=torch.bool).reshape(-1)
    out = torch.full_like(v, math.nan)
    if not bool(mask.any()):
        return out
    ref = v[mask]
    centre = ref.median()
    mad = (ref - centre).abs().median()
    if float(mad) > 0:
        z = consistency * (v - centre) / mad
    else:
        mean_ad = (ref - ref.mean()).abs().mean() * math.sqrt(math.pi / 2.0)
        z = (v - centre) / mean_ad if float(mean_ad) > 0 else torch.zeros_like(v)
    out[mask] = z[mask]
    return out


@dataclass
class AnomalyScores:
    """Per-cell scores (N,) (NaN outside the scored cells) and the flags.

    Attributes:
        z_gamma, z_residual: the two robust z-scores.
        score: ``max(|z_gamma|, max(z_residual, 0))``.
        flagged: (N,) bool, ``score > rule.threshold``.
        rule: the :class:`AnomalyRule`.
    """

    z_gamma: Tensor
    z_residual: Tensor
    score: Tensor
    flagged: Tensor
    rule: AnomalyRule

    def as_results(self, cell_id: Tensor, cells: Tensor) -> dict[str, Any]:
        """The results.json entry ``anomaly``: rule, per-cell scores and the flagged cell ids."""
        ids = cell_id.reshape(-1).tolist()
        idx = cells.reshape(-1).nonzero().reshape(-1).tolist()
        return {
            "rule": self.rule.as_dict(),
            "flagged": [int(ids[i]) for i in idx if bool(self.flagged[i])],
            "per_cell": {
                str(ids[i]): {
                    "score": float(self.score[i]),
                    "z_gamma": float(self.z_gamma[i]),
                    "z_residual": float(self.z_residual[i]),
                }
                for i in idx
            },
        }


def residual_level(residuals: Tensor, floor: float = 1e-300) -> Tensor:
    """``log RMS`` over time of (N, T) residuals -> (N,) (``floor`` keeps the log finite)."""
    r = torch.as_tensor(residuals, dtype=torch.float64)
    return r.pow(2).mean(dim=1).clamp(min=floor).sqrt().log()


def anomaly_scores(
    gamma: Tensor, residuals: Tensor, cells: Tensor, rule: AnomalyRule | None = None
) -> AnomalyScores:
    """Score every cell of ``cells`` (module docstring).

    Args:
        gamma: (N,) fitted feeds.
        residuals: (N, T) residuals ``y_sim - x`` on the training window.
        cells: (N,) bool, the modelled cells (the reference population).
        rule: the :class:`AnomalyRule` (default threshold 3.5).

    Returns:
        :class:`AnomalyScores`.
    """
    rule = rule if rule is not None else AnomalyRule()
    mask = torch.as_tensor(cells, dtype=torch.bool).reshape(-1)
    z_gamma = robust_z(gamma, mask, rule.consistency)
    z_residual = robust_z(residual_level(residuals), mask, rule.consistency)
    score = torch.maximum(z_gamma.abs(), z_residual.clamp(min=0))
    flagged = mask & (score > rule.threshold)
    return AnomalyScores(z_gamma=z_gamma, z_residual=z_residual, score=score, flagged=flagged, rule=rule)
