"""Calcium spikes: does a cell light up, and does the simulation light it up at the same time?

The paper (section 3.2) stresses that calcium signalling is close to binary: what matters most is
whether a cell fires, not the exact intensity. This module detects peaks in an observed trace and in
its simulated counterpart and matches them one to one within a tolerance window.

Time rules work at any frame interval. The two rules that involve time, the minimum distance between
two peaks and the matching tolerance, are each given **either in frames** (the default: 3 frames
each, i.e. 30 s at the paper's 10 s frames) **or in seconds**, never both. A rule in frames means the
same thing at 0.5 s and at 20 s frames (the same peak train, sampled on any grid, gives the same
result); a rule in seconds is converted with the frame interval ``dt`` of the traces it scores,
taken as the median step of the frame times ``t`` (:func:`frame_interval`), and checked against it
(:meth:`SpikeRule.resolve`):

* tolerance: ``tol_frames = tolerance_s / dt``. Peak times are known only to the frame, so a
  tolerance strictly between 0 and one frame interval would accept only peaks on the same frame
  while claiming more: it is refused (:class:`~calcium_gnn.errors.ConfigError`), as is
  ``0 < tolerance_frames < 1``. A tolerance of 0 (same frame only) is allowed;
* minimum distance: ``d = max(1, ceil(min_distance_s / dt))`` frames (peaks at least
  ``min_distance_s`` apart). Below one frame it is 1, i.e. no constraint beyond the frame grid, which
  is what a refractory period shorter than a frame means.

``SpikeRule.as_dict(dt)`` records the rule as given and both values, in frames and in seconds, at the
run's ``dt`` (results.json ``spikes.rule``).

Detection rule (:class:`SpikeRule`), applied to one trace ``v`` of T frames:

* the robust range of the trace is ``R = P_hi(v) - P_lo(v)`` (percentiles ``range_percentiles``,
  default 5 and 95), which ignores a few outlier frames;
* a peak is a local maximum found by :func:`scipy.signal.find_peaks` whose prominence is at least
  ``rel_prominence * R`` and that lies at least ``d`` frames from a higher peak;
* a constant trace (``R == 0``) has no peaks.

Matching: an observed peak at time ``t_a`` and a simulated peak at ``t_b`` may be paired when
``|t_a - t_b| <= tol_frames * dt`` (seconds; a slack of :data:`FRAME_SLACK` frames absorbs the
rounding of float frame times). Each peak is used at most once; among the pairings with the most
pairs we take the one with the smallest total timing error (a rectangular assignment problem). With
``tp`` matched pairs, ``fp`` unmatched simulated peaks and ``fn`` unmatched observed peaks:

.. math::
    \\mathrm{precision} = \\frac{tp}{tp + fp},\\quad \\mathrm{recall} = \\frac{tp}{tp + fn},\\quad
    F_1 = \\frac{2\\,tp}{2\\,tp + fp + fn}

each ``None`` when its denominator is 0 (nothing to score). The timing error of a pair is
``t_b - t_a`` in seconds (positive: the simulation fires late).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.signal import find_peaks

from calcium_gnn.errors import ConfigError

#: Default matching tolerance in frames (30 s at the paper's 10 s frames, the former default).
DEFAULT_TOLERANCE_FRAMES: float = 3.0
#: Default minimum distance between two peaks of one trace, in frames.
DEFAULT_MIN_DISTANCE_FRAMES: int = 3
#: Slack, in frames, added to the matching tolerance so that the rounding of float frame times
#: (``1.3 - 1.0 != 3 * 0.1``) never splits a pair exactly at the tolerance. Peaks lie on the frame
#: grid, so any slack below half a frame changes nothing else.
FRAME_SLACK: float = 1e-6
#: Fewest frames in which :func:`scipy.signal.find_peaks` can find a local maximum.
MIN_PEAK_FRAMES: int = 3


def frame_interval(t: Sequence[float] | np.ndarray) -> float:
    """The frame interval ``dt`` (s) of frame times ``t``: the median of ``t[n+1] - t[n]``.

    The median ignores a few dropped or doubled frames.

    Args:
        t: (T,) frame times in seconds, T >= 2, finite and strictly increasing.

    Raises:
        ValueError: fewer than two frames, or times that are not finite and strictly increasing.
    """
    times = np.asarray(t, dtype=np.float64).reshape(-1)
    if times.size < 2:
        raise ValueError(f"a frame interval needs at least two frame times, got {times.size}")
    steps = np.diff(times)
    if not (np.isfinite(steps).all() and (steps > 0).all()):
        raise ValueError("frame times must be finite and strictly increasing")
    return float(np.median(steps))


@dataclass(frozen=True)
class ResolvedSpikeRule:
    """A :class:`SpikeRule`'s time rules at one frame interval, in frames and in seconds.

    Attributes:
        frame_interval_s: ``dt``, seconds per frame.
        min_distance_frames: ``d``, the ``distance`` given to :func:`scipy.signal.find_peaks`.
        min_distance_s: ``d * dt``.
        tolerance_frames: ``tol_frames``, largest gap of a matched pair in frames (may be fractional:
            pairs on the frame grid are at most ``floor(tol_frames)`` frames apart).
        tolerance_s: ``tol_frames * dt``.
    """

    frame_interval_s: float
    min_distance_frames: int
    min_distance_s: float
    tolerance_frames: float
    tolerance_s: float

    def as_dict(self) -> dict:
        """JSON-ready values."""
        return {
            "frame_interval_s": self.frame_interval_s,
            "min_distance_frames": self.min_distance_frames,
            "min_distance_s": self.min_distance_s,
            "tolerance_frames": self.tolerance_frames,
            "tolerance_s": self.tolerance_s,
        }


def _one_of(key: str, frames: float | None, seconds: float | None) -> None:
    if frames is not None and seconds is not None:
        raise ConfigError(
            f"spikes.{key}", f"give {key}_frames or {key}_s, not both (got {frames} frames and {seconds} s)"
        )


def _check_dt(dt: float) -> float:
    if not (isinstance(dt, numbers.Real) and math.isfinite(dt) and dt > 0):
        raise ValueError(f"the frame interval dt must be a positive number of seconds, got {dt!r}")
    return float(dt)


def _finite_at_least(key: str, value: float, low: float, strict: bool = False) -> None:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < low or (strict and value == low):
        bound = f"> {low:g}" if strict else f">= {low:g}"
        raise ConfigError(f"spikes.{key}", f"must be a number {bound}, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class SpikeRule:
    """Parameters of the peak-detection and matching rule (see the module docstring).

    Each time rule is given in frames or in seconds, not both; with neither, the default in frames
    applies (:data:`DEFAULT_MIN_DISTANCE_FRAMES`, :data:`DEFAULT_TOLERANCE_FRAMES`) and is filled in.

    Attributes:
        rel_prominence: minimum peak prominence as a fraction of the trace's robust range.
        range_percentiles: (low, high) percentiles defining the robust range.
        min_distance_frames: minimum number of frames between two peaks of one trace (integer >= 1).
        min_distance_s: the same in seconds (> 0), converted with the traces' frame interval.
        tolerance_frames: an observed and a simulated peak match when they are at most this many
            frames apart (0: same frame only; otherwise >= 1).
        tolerance_s: the same in seconds (0, or at least one frame interval of the scored traces).

    Raises:
        ConfigError: a value out of range, or a time rule given both in frames and in seconds.
    """

    rel_prominence: float = 0.25
    range_percentiles: tuple[float, float] = (5.0, 95.0)
    min_distance_frames: int | None = None
    min_distance_s: float | None = None
    tolerance_frames: float | None = None
    tolerance_s: float | None = None

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
        _one_of("min_distance", self.min_distance_frames, self.min_distance_s)
        _one_of("tolerance", self.tolerance_frames, self.tolerance_s)
        if self.min_distance_s is not None:
            _finite_at_least("min_distance_s", self.min_distance_s, 0.0, strict=True)
        else:
            distance = (
                DEFAULT_MIN_DISTANCE_FRAMES if self.min_distance_frames is None else self.min_distance_frames
            )
            _finite_at_least("min_distance_frames", distance, 1.0)
            if int(distance) != distance:
                raise ConfigError("spikes.min_distance_frames", f"must be an integer >= 1, got {distance!r}")
            object.__setattr__(self, "min_distance_frames", int(distance))
        if self.tolerance_s is not None:
            _finite_at_least("tolerance_s", self.tolerance_s, 0.0)
        else:
            tolerance = DEFAULT_TOLERANCE_FRAMES if self.tolerance_frames is None else self.tolerance_frames
            _finite_at_least("tolerance_frames", tolerance, 0.0)
            if 0 < tolerance < 1:
                raise ConfigError(
                    "spikes.tolerance_frames",
                    f"{tolerance:g} frames is below one frame: peak times are known only to the frame, so "
                    "it would accept only peaks on the same frame; use 0 (same frame) or a value >= 1",
                )
            object.__setattr__(self, "tolerance_frames", float(tolerance))
        object.__setattr__(self, "range_percentiles", (float(lo), float(hi)))

    def min_distance_at(self, dt: float) -> int:
        """``d``, the minimum distance between two peaks in frames at frame interval ``dt`` (s):
        ``min_distance_frames``, or ``max(1, ceil(min_distance_s / dt))``."""
        dt = _check_dt(dt)
        if self.min_distance_s is None:
            return int(self.min_distance_frames)
        return max(1, math.ceil(self.min_distance_s / dt - FRAME_SLACK))

    def tolerance_at(self, dt: float) -> float:
        """``tol_frames``, the matching tolerance in frames at frame interval ``dt`` (s):
        ``tolerance_frames``, or ``tolerance_s / dt``.

        Raises:
            ConfigError: ``tolerance_s`` strictly between 0 and ``dt`` (module docstring).
        """
        dt = _check_dt(dt)
        if self.tolerance_s is None:
            return float(self.tolerance_frames)
        if 0 < self.tolerance_s < dt:
            raise ConfigError(
                "spikes.tolerance_s",
                f"{self.tolerance_s:g} s is below one frame interval (dt = {dt:g} s): peak times are "
                "known only to the frame, so it would accept only peaks on the same frame; use 0 (same "
                f"frame), a tolerance >= {dt:g} s, or give the rule in frames (tolerance_frames)",
            )
        return self.tolerance_s / dt

    def resolve(self, dt: float) -> ResolvedSpikeRule:
        """Both time rules at frame interval ``dt`` (module docstring), checked against it.

        Args:
            dt: seconds per frame (:func:`frame_interval` of the scored frame times), > 0.

        Raises:
            ConfigError: ``tolerance_s`` strictly between 0 and ``dt``.
            ValueError: ``dt`` not a positive finite number.
        """
        dt = _check_dt(dt)
        distance = self.min_distance_at(dt)
        tolerance = self.tolerance_at(dt)
        return ResolvedSpikeRule(
            frame_interval_s=dt,
            min_distance_frames=distance,
            min_distance_s=distance * dt,
            tolerance_frames=tolerance,
            tolerance_s=tolerance * dt,
        )

    def as_dict(self, dt: float | None = None) -> dict:
        """The rule as a JSON-ready dict (recorded in results.json).

        Holds the rule as given (of ``min_distance_frames`` / ``min_distance_s`` and of
        ``tolerance_frames`` / ``tolerance_s`` one is None) and, under ``resolved``, both values in
        frames and in seconds at frame interval ``dt`` (None without ``dt``).
        """
        return {
            "rel_prominence": self.rel_prominence,
            "range_percentiles": list(self.range_percentiles),
            "min_distance_frames": self.min_distance_frames,
            "min_distance_s": self.min_distance_s,
            "tolerance_frames": self.tolerance_frames,
            "tolerance_s": self.tolerance_s,
            "resolved": None if dt is None else self.resolve(dt).as_dict(),
        }


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


def detect_spikes(
    trace: Sequence[float] | np.ndarray, rule: SpikeRule = SpikeRule(), dt: float | None = None
) -> np.ndarray:
    """Frame indices of the peaks of one trace under ``rule``.

    Args:
        trace: (T,) calcium level of one cell.
        rule: the detection rule.
        dt: the frame interval in seconds; needed only when ``rule.min_distance_s`` is given.

    Returns:
        (P,) int array of peak frame indices, increasing.

    Raises:
        ValueError: a trace that is not 1-D, or a rule in seconds without ``dt``.
    """
    v = np.asarray(trace, dtype=np.float64)
    if v.ndim != 1:
        raise ValueError(f"detect_spikes expects a 1-D trace, got shape {v.shape}")
    if rule.min_distance_s is not None:
        if dt is None:
            raise ValueError("the rule gives min_distance_s in seconds: pass the frame interval dt")
        distance = rule.min_distance_at(dt)
    else:
        distance = int(rule.min_distance_frames)
    if v.size < MIN_PEAK_FRAMES or not np.isfinite(v).all():
        return np.zeros(0, dtype=np.int64)
    lo, hi = np.percentile(v, rule.range_percentiles)
    robust_range = hi - lo
    if robust_range <= 0:
        return np.zeros(0, dtype=np.int64)
    peaks, _ = find_peaks(v, prominence=rule.rel_prominence * robust_range, distance=distance)
    return peaks.astype(np.int64)


def match_spikes(t_observed: np.ndarray, t_simulated: np.ndarray, tolerance_s: float) -> SpikeCounts:
    """Pair observed and simulated peak times one to one within ``tolerance_s``.

    Maximises the number of pairs, then minimises the total ``|t_sim - t_obs|`` (see module docstring).
    This is the bare matching in seconds: :func:`spike_counts_per_cell` turns a :class:`SpikeRule`
    into ``tolerance_s`` at the traces' frame interval.

    Args:
        t_observed: (P,) times in seconds of the observed peaks.
        t_simulated: (Q,) times in seconds of the simulated peaks.
        tolerance_s: largest allowed timing difference of a pair (>= 0).

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

    The rule is resolved at the frame interval of ``t`` (:func:`frame_interval`,
    :meth:`SpikeRule.resolve`); peaks match when at most ``tolerance_frames`` frame intervals apart.

    Args:
        observed: (N, T) observed traces.
        simulated: (N, T) simulated traces on the same frames.
        t: (T,) frame times in seconds, strictly increasing.
        cells: row indices of the cells to score.
        rule: detection and matching rule.

    Returns:
        ``{row index: SpikeCounts}``.

    Raises:
        ConfigError: a rule in seconds that does not fit the frame interval (module docstring).
    """
    observed = np.asarray(observed, dtype=np.float64)
    simulated = np.asarray(simulated, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    if observed.shape != simulated.shape or observed.shape[-1] != t.shape[0]:
        raise ValueError(
            f"shape mismatch: observed {observed.shape}, simulated {simulated.shape}, t {t.shape}"
        )
    if t.shape[0] < MIN_PEAK_FRAMES:  # no peak can be found, and dt may be undefined
        return {int(i): SpikeCounts() for i in cells}
    dt = frame_interval(t)
    resolved = rule.resolve(dt)
    tolerance_s = resolved.tolerance_s + FRAME_SLACK * dt
    out: dict[int, SpikeCounts] = {}
    for i in cells:
        peaks_obs = detect_spikes(observed[i], rule, dt)
        peaks_sim = detect_spikes(simulated[i], rule, dt)
        out[int(i)] = match_spikes(t[peaks_obs], t[peaks_sim], tolerance_s)
    return out


def pool(counts: Iterable[SpikeCounts]) -> SpikeCounts:
    """Micro-average: add the counts and timing errors of several cells / windows."""
    total = SpikeCounts()
    for c in counts:
        total += c
    return total
