"""Grouping modelled cells by how well the simulation fits them (paper section 4, Fig. 19).

The paper sorts the cells of setup I into three groups: (1) good fit in behaviour and magnitude,
(2) good magnitude but some peaks missed, (3) peaks captured but the wrong magnitude. We make the
rule explicit (:class:`QualityRule`, recorded in results.json) from three per-cell tests:

* **behaviour**: Pearson correlation ``r_i >= min_correlation``
  (:func:`calcium_gnn.evaluation.metrics.pearson_per_cell`);
* **magnitude**: relative bias ``|b_i| <= max_relative_bias``
  (:func:`calcium_gnn.evaluation.metrics.relative_bias_per_cell`);
* **peaks**: spike recall ``>= min_spike_recall`` (:mod:`calcium_gnn.evaluation.spikes`); a cell
  with no observed peak passes when the simulation has no peak either.

The rule has no time scale of its own: the peak test inherits the
:class:`~calcium_gnn.evaluation.spikes.SpikeRule` of the spike counts it is given, whose time rules
are in frames (or in seconds checked against the frame interval), so the grouping means the same at
0.5 s and at 20 s frames.

Groups (each modelled cell lands in exactly one):

* ``"1_good"``: behaviour, magnitude and peaks all pass;
* ``"2_magnitude_misses_peaks"``: magnitude passes, peaks fail;
* ``"3_peaks_wrong_magnitude"``: peaks pass, magnitude fails;
* ``"other"``: everything else (both fail, or magnitude and peaks pass but the correlation is low).

A NaN correlation or bias (constant trace) fails its test.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from torch import Tensor

from calcium_gnn.errors import ConfigError
from calcium_gnn.evaluation.metrics import pearson_per_cell, relative_bias_per_cell
from calcium_gnn.evaluation.spikes import SpikeCounts

GROUPS: tuple[str, ...] = ("1_good", "2_magnitude_misses_peaks", "3_peaks_wrong_magnitude", "other")


@dataclass(frozen=True)
class QualityRule:
    """Thresholds of the fit-quality grouping (see the module docstring).

    Attributes:
        min_correlation: behaviour passes when the Pearson correlation is at least this.
        max_relative_bias: magnitude passes when |mean offset| / observed robust range is at most this.
        min_spike_recall: peaks pass when this fraction of the observed peaks is matched.
        range_percentiles: percentiles defining the observed robust range for the bias.
    """

    min_correlation: float = 0.5
    max_relative_bias: float = 0.25
    min_spike_recall: float = 0.5
    range_percentiles: tuple[float, float] = (5.0, 95.0)

    def __post_init__(self) -> None:
        if not -1.0 <= self.min_correlation <= 1.0:
            raise ConfigError("quality.min_correlation", f"must lie in [-1, 1], got {self.min_correlation}")
        if not (self.max_relative_bias >= 0 and math.isfinite(self.max_relative_bias)):
            raise ConfigError("quality.max_relative_bias", f"must be >= 0, got {self.max_relative_bias}")
        if not 0.0 <= self.min_spike_recall <= 1.0:
            raise ConfigError("quality.min_spike_recall", f"must lie in [0, 1], got {self.min_spike_recall}")
        lo, hi = self.range_percentiles
        if not 0 <= lo < hi <= 100:
            raise ConfigError(
                "quality.range_percentiles", f"must satisfy 0 <= low < high <= 100, got {(lo, hi)}"
            )

    def statement(self) -> str:
        """The rule in one sentence, as stored in results.json."""
        return (
            f"behaviour: Pearson r >= {self.min_correlation}; magnitude: |mean(sim - obs)| / "
            f"(P{self.range_percentiles[1]:g} - P{self.range_percentiles[0]:g} of obs) <= "
            f"{self.max_relative_bias}; peaks: spike recall >= {self.min_spike_recall} (no observed "
            "peak: passes iff no simulated peak). Group 1 = all three pass; 2 = magnitude passes, "
            "peaks fail; 3 = peaks pass, magnitude fails; other = the rest"
        )

    def as_dict(self) -> dict:
        d = asdict(self)
        d["range_percentiles"] = list(self.range_percentiles)
        d["statement"] = self.statement()
        return d


def peaks_pass(counts: SpikeCounts, min_recall: float) -> bool:
    """Peak test of one cell: recall >= ``min_recall``; with no observed peak, no simulated peak."""
    recall = counts.recall
    if recall is None:
        return counts.fp == 0
    return recall >= min_recall


def quality_groups(
    observed: Tensor,
    simulated: Tensor,
    cells: list[int],
    spikes: dict[int, SpikeCounts],
    rule: QualityRule | None = None,
) -> tuple[dict[str, list[int]], dict[int, dict]]:
    """Sort ``cells`` into the groups of the module docstring.

    Args:
        observed: (N, T) observed traces.
        simulated: (N, T) simulated traces on the same frames.
        cells: row indices of the cells to group (the modelled cells).
        spikes: ``{row: SpikeCounts}`` for at least those cells (see
            :func:`calcium_gnn.evaluation.spikes.spike_counts_per_cell`).
        rule: thresholds; defaults to :class:`QualityRule()`.

    Returns:
        ``(groups, per_cell)``: ``groups`` maps every name in :data:`GROUPS` to a list of row indices;
        ``per_cell`` maps each row to its ``correlation``, ``relative_bias``, ``spike_recall`` and the
        three test outcomes.
    """
    rule = rule if rule is not None else QualityRule()
    r = pearson_per_cell(observed, simulated)
    bias = relative_bias_per_cell(observed, simulated, range_percentiles=rule.range_percentiles)
    groups: dict[str, list[int]] = {name: [] for name in GROUPS}
    per_cell: dict[int, dict] = {}
    for i in cells:
        ri, bi = float(r[i]), float(bias[i])
        behaviour = math.isfinite(ri) and ri >= rule.min_correlation
        magnitude = math.isfinite(bi) and abs(bi) <= rule.max_relative_bias
        peaks = peaks_pass(spikes[i], rule.min_spike_recall)
        if behaviour and magnitude and peaks:
            name = GROUPS[0]
        elif magnitude and not peaks:
            name = GROUPS[1]
        elif peaks and not magnitude:
            name = GROUPS[2]
        else:
            name = GROUPS[3]
        groups[name].append(int(i))
        per_cell[int(i)] = {
            "correlation": ri if math.isfinite(ri) else None,
            "relative_bias": bi if math.isfinite(bi) else None,
            "spike_recall": spikes[i].recall,
            "behaviour_ok": behaviour,
            "magnitude_ok": magnitude,
            "peaks_ok": peaks,
            "group": name,
        }
    return groups, per_cell
