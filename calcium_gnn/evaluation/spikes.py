"""Calcium spikes: does a cell light up, and does the simulation light it up at the same time?

The paper (section 3.2) stresses that calcium signalling is close to binary: what matters most is
whether a cell fires, not the exact intensity. This module detects peaks in an observed trace and in
its simulated counterpart and matches them one to one within a tolerance window.

Detection rule (:class:`SpikeRule`), applied to one trace ``v`` of T frames:

* the robust range of the trace is ``R = P_hi(v) - P_lo(v)`` (percentiles ``range_percentiles``,
  default 5 and 95), which ignores a few outlier frames;
* a peak is a local maximum found by :func:`scipy.signal.find_peaks` whose prominence is at least
  ``rel_prominence * R`` and that lies at least ``min_distance_frames`` frames from a higher peak;
* a constant trace (``R == 0``) has no peaks.

Matching: an observed peak at time ``t_a`` and a simulated peak at ``t_b`` may be paired when
``|t_a - t_b| <= tolerance_s``. Each peak is used at most once; among the pairings with the most pairs
we take the one with the smallest total timing error (a rectangular assignment problem). With ``tp``
matched pairs, ``fp`` unmatched simulated peaks and ``fn`` unmatched observed peaks:

.. math::
    \\mathrm{precision} = \\frac{tp}{tp + fp},\\quad \\mathrm{recall} = \\frac{tp}{tp + fn},\\quad
    F_1 = \\frac{2\\,tp}{2\\,tp + fp + fn}

each ``None`` when its denominator is 0 (nothing to score). The timing error of a pair is
``t_b - t_a`` in seconds (positive: the simulation fires late).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.signal import find_peaks

from calcium_gnn.errors import ConfigError


@dataclass(frozen=True)
class SpikeRule:
    """Parameters of the peak-detection and matching rule (see the module docstring).

    Attributes:
        rel_prominence: minimum peak prominence as a fraction of the trace's robust range.
        range_percentiles: (low, high) percentiles defining the robust range.
        min_distance_frames: minimum number of frames between two peaks of one trace (>= 1).
        tolerance_s: an observed and a simulated peak match when their times differ by at most this
            many seconds.
    """

    rel_prominence: float = 0.25
    range_percentiles: tuple[float, float] = (5.0, 95.0)
    min_distance_frames: int = 3
    tolerance_s: float = 30.0

    def __post_init__(self) -> None:
        lo, hi = self.range_percentiles
        if not (self.rel_prominence > 0 and np.isfinite(self.rel_prominence)):
            raise ConfigError(
                "spikes.rel_prominence", f"must be a positive number, got {self.rel_prominence}"
            )
        if not (0 <= lo < hi <= 100):
            raise ConfigError(
                "spikes.range_percentiles", f"must satisfy 0 <= low < high <= 100, got {(lo, hi)}"
            )
        if int(self.min_distance_frames) != self.min_distance_frames or self.min_distance_frames < 1:
            raise ConfigError(
                "spikes.min_distance_frames", f"must be an integer >= 1, got {self.min_distance_frames}"
            )
        if not (self.tolerance_s >= 0 and np.isfinite(self.tolerance_s)):
            raise ConfigError("spikes.tolerance_s", f"must be a number >= 0, got {self.tolerance_s}")

    def as_dict(self) -> dict:
        """The rule as a JSON-ready dict (recorded in results.json)."""
        d = asdict(self)
        d["range_percentiles"] = list(self.range_percentiles)
        return d


@dataclass
class SpikeCounts:
    """Matching outcome for one or several traces (counts add up across cells)."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    timing_errors_s: list[float] = field(default_factory=list)

    def __iadd__(self, other: SpikeCounts) -> SpikeCounts:
        self.tp += other.tp
        self.fp += other.fp
        self.fn += other.fn
        self.timing_errors_s.extend(other.timing_errors_s)
        return self

    @property
    def precision(self) -> float | None:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else None

    @property
    def recall(self) -> float | None:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else None

    @property
    def f1(self) -> float | None:
        denominator = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / denominator if denominator else None

    @property
    def median_timing_error_s(self) -> float | None:
        """Median of the signed timing errors (simulated minus observed), seconds."""
        return float(np.median(self.timing_errors_s)) if self.timing_errors_s else None

    def as_dict(self) -> dict:
        """JSON-ready summary: precision, recall, f1, median timing error and the raw counts."""
        return {
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "median_timing_error_s": self.median_timing_error_s,
            "median_abs_timing_error_s": (
                float(np.median(np.abs(self.timing_errors_s))) if self.timing_errors_s else None
            ),
            "n_observed": self.tp + self.fn,
            "n_simulated": self.tp + self.fp,
            "n_matched": self.tp,
        }


def detect_spikes(trace: Sequence[float] | np.ndarray, rule: SpikeRule = SpikeRule()) -> np.ndarray:
    """Frame indices of the peaks of one trace under ``rule``.

    Args:
        trace: (T,) calcium level of one cell.
        rule: the detection rule.

    Returns:
        (P,) int array of peak frame indices, increasing.
    """
    v = np.asarray(trace, dtype=np.float64)
    if v.ndim != 1:
        raise ValueError(f"detect_spikes expects a 1-D trace, got shape {v.shape}")
    if v.size < 3 or not np.isfinite(v).all():
        return np.zeros(0, dtype=np.int64)
    lo, hi = np.percentile(v, rule.range_percentiles)
    robust_range = hi - lo
    if robust_range <= 0:
        return np.zeros(0, dtype=np.int64)
    peaks, _ = find_peaks(
        v, prominence=rule.rel_prominence * robust_range, distance=int(rule.min_distance_frames)
    )
    return peaks.astype(np.int64)


def match_spikes(t_observed: np.ndarray, t_simulated: np.ndarray, tolerance_s: float) -> SpikeCounts:
    """Pair observed and simulated peak times one to one within ``tolerance_s``.

    Maximises the number of pairs, then minimises the total ``|t_sim - t_obs|`` (see module docstring).

    Args:
        t_observed: (P,) times in seconds of the observed peaks.
        t_simulated: (Q,) times in seconds of the simulated peaks.
        tolerance_s: largest allowed timing difference of a pair.

    Returns:
        The counts and the signed timing errors of the pairs.
    """
    a = np.asarray(t_observed, dtype=np.float64).reshape(-1)
    b = np.asarray(t_simulated, dtype=np.float64).reshape(-1)
    if a.size == 0 or b.size == 0:
        return SpikeCounts(tp=0, fp=int(b.size), fn=int(a.size))
    gap = np.abs(a[:, None] - b[None, :])
    feasible = gap <= tolerance_s
    # Any infeasible pair costs more than all feasible pairs together, so the assignment first
    # maximises the number of feasible pairs, then minimises their total timing error.
    penalty = (tolerance_s + 1.0) * (a.size + b.size + 1)
    rows, cols = linear_sum_assignment(np.where(feasible, gap, penalty))
    keep = feasible[rows, cols]
    rows, cols = rows[keep], cols[keep]
    tp = int(keep.sum())
    return SpikeCounts(
        tp=tp,
        fp=int(b.size) - tp,
        fn=int(a.size) - tp,
        timing_errors_s=[float(b[j] - a[i]) for i, j in zip(rows, cols, strict=True)],
    )


def spike_counts_per_cell(
    observed: np.ndarray,
    simulated: np.ndarray,
    t: np.ndarray,
    cells: Iterable[int],
    rule: SpikeRule = SpikeRule(),
) -> dict[int, SpikeCounts]:
    """Detect and match peaks for each listed cell.

    Args:
        observed: (N, T) observed traces.
        simulated: (N, T) simulated traces on the same frames.
        t: (T,) frame times in seconds.
        cells: row indices of the cells to score.
        rule: detection and matching rule.

    Returns:
        ``{row index: SpikeCounts}``.
    """
    observed = np.asarray(observed, dtype=np.float64)
    simulated = np.asarray(simulated, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    if observed.shape != simulated.shape or observed.shape[-1] != t.shape[0]:
        raise ValueError(
            f"shape mismatch: observed {observed.shape}, simulated {simulated.shape}, t {t.shape}"
        )
    out: dict[int, SpikeCounts] = {}
    for i in cells:
        peaks_obs = detect_spikes(observed[i], rule)
        peaks_sim = detect_spikes(simulated[i], rule)
        out[int(i)] = match_spikes(t[peaks_obs], t[peaks_sim], rule.tolerance_s)
    return out


def pool(counts: Iterable[SpikeCounts]) -> SpikeCounts:
    """Micro-average: add the counts and timing errors of several cells / windows."""
    total = SpikeCounts()
    for c in counts:
        total += c
    return total
