"""Calcium waves from activation times: radial and planar speed, and observed vs simulated maps.

The activation time :math:`\\tau_i` of each cell (s, :func:`calcium_gnn.graphs.activation.activation_times`)
and its centroid :math:`p_i = (x_i, y_i)` (px) give the wave:

* **Radial wave** from a known stimulus point :math:`q`: :math:`\\tau_i = t_0 + s\\,r_i`,
  :math:`r_i = |p_i - q|`, slowness :math:`s` (s/px), speed :math:`v = 1/s` (px/s; times the pixel
  size in um/s when it is known). Also the Pearson correlation of :math:`\\tau_i` with :math:`r_i` on
  the cells of the fit and Spearman's rank correlation on every activated cell.
* **Planar wave** (no point): :math:`\\tau_i = a + g \\cdot p_i`, gradient :math:`g = (g_x, g_y)`
  (s/px); the wave travels along :math:`g` at speed :math:`1/|g|`, direction
  :math:`\\operatorname{atan2}(g_y, g_x)` in degrees in image coordinates (x to the right, y down,
  so positive angles turn clockwise on screen; 0 = towards +x, 90 = down the image).

**The fit and its intervals.** Ordinary least squares on the cells kept by a robust screen (when
``robust``): start from the least-absolute-deviation fit (iteratively reweighted), then repeatedly
drop cells whose residual exceeds :data:`TRIM_SIGMAS` robust standard deviations (1.4826 MAD) and
refit, until the kept set is stable. Cells activated by something other than the wave (a drifting
trace, an unrelated event) are dropped instead of bending the fit; ``n_used`` of ``n_cells`` say
how many stayed. The intervals are OLS intervals on the kept cells at level ``level`` (default 90 %):
``estimate +- t_{(1+level)/2, n-p} * SE`` with the OLS standard errors (conditional on the kept set).
The speed interval is the inverse of the slowness interval (:math:`|g|` for the planar wave, by the
delta method :math:`\\operatorname{SE}|g| = \\sqrt{\\hat g^T \\Sigma_g \\hat g}/|\\hat g|`), with no upper
bound (``null``) when the slowness interval reaches 0; the direction's interval is
:math:`\\pm t\\,\\sqrt{\\hat g_\\perp^T \\Sigma_g \\hat g_\\perp}/|\\hat g|^2` (delta method). A slowness
that is not positive means the times do not increase away from the point: no speed is reported.

**Comparing two maps** (observed vs the fitted model's simulation), on the modelled cells:
per-cell difference :math:`(\\tau^{sim}_i - \\tau^{obs}_i)/\\Delta t` in frames, the share of cells
activated in both within :data:`WITHIN_FRAMES` frame, the median absolute difference, and the cells
activated in one map and not the other. The observed times carry the noise: each has a standard error
:math:`\\sigma_i / \\dot y_i` (:func:`calcium_gnn.graphs.activation.timing_se`, the slope read off the
smooth simulation at its crossing), and ``share_within_noise`` counts the cells whose difference is
within ``max(WITHIN_FRAMES dt, z se_i)``, ``z`` = :data:`WITHIN_NOISE_Z` (a two-sided 90 % band). A
simulation that times every cell right scores about 90 % or more there however slow the rises (97-99 %
on slow noisy test waves, where "within one frame" gives 18-24 %).

:func:`wave_report` runs all of it on a graph and returns a JSON-ready dict (``null`` for anything not
defined, never NaN; cell ids as strings), and draws the activation map
(:func:`calcium_gnn.evaluation.wave_figures.plot_activation_map`) when given a folder.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats
from torch_geometric.data import Data

from calcium_gnn.errors import ConfigError, GraphError
from calcium_gnn.evaluation.wave_figures import plot_activation_map
from calcium_gnn.graphs.activation import (
    MAD_TO_SIGMA,
    ActivationRule,
    activation_times,
    crossing_levels,
    crossing_slopes,
    timing_se,
    trace_noise,
)

__all__ = [
    "TRIM_SIGMAS",
    "WITHIN_FRAMES",
    "WITHIN_NOISE_Z",
    "RadialWave",
    "PlanarWave",
    "ActivationComparison",
    "radial_fit",
    "planar_fit",
    "compare_activation",
    "wave_report",
]

#: robust screen: a cell whose residual exceeds this many robust SDs (1.4826 MAD) is left out
TRIM_SIGMAS: float = 3.0
#: rounds of least-absolute-deviation reweighting for the robust start, and of screening
LAD_ITERATIONS: int = 50
TRIM_ITERATIONS: int = 20
#: a fit needs this many more cells than parameters (residual degrees of freedom for its intervals)
MIN_DOF: int = 2
#: default interval level
LEVEL: float = 0.9
#: two activations count as agreeing within this many frames
WITHIN_FRAMES: float = 1.0
#: ... or within this many standard errors of the observed time (two-sided 90 %: Phi^-1(0.95))
WITHIN_NOISE_Z: float = 1.645
#: file name of the activation-map figure written by :func:`wave_report`
FIGURE_NAME: str = "activation_map.png"
INTERVAL_METHOD: str = (
    "OLS on the cells kept by a robust screen (LAD start, residuals beyond {trim:g} robust SD dropped); "
    "t-interval at level {level:g} from the OLS standard errors; speed = 1 / slowness"
)


def _json(value: float | None) -> float | None:
    """A float for JSON: None for None / NaN / infinite."""
    return None if value is None or not math.isfinite(float(value)) else float(value)


@dataclass(frozen=True)
class _LinearFit:
    """OLS on the kept rows: coefficients (p,), covariance (p, p), kept mask (n,), t quantile."""

    beta: np.ndarray
    cov: np.ndarray
    kept: np.ndarray
    quantile: float


def _robust_ols(design: np.ndarray, y: np.ndarray, level: float, robust: bool) -> _LinearFit:
    """OLS of ``y`` (n,) on ``design`` (n, p) after the robust screen (module docstring)."""
    if not 0.0 < float(level) < 1.0:
        raise ConfigError("level", f"an interval level must lie in (0, 1), got {level!r}")
    n, p = design.shape
    kept = np.ones(n, dtype=bool)
    beta = np.linalg.lstsq(design, y, rcond=None)[0]
    if robust:
        floor = np.finfo(float).eps * (1.0 + float(np.abs(y).max()))
        for _ in range(LAD_ITERATIONS):  # least absolute deviations by reweighting
            root_w = 1.0 / np.sqrt(np.maximum(np.abs(y - design @ beta), floor))
            beta = np.linalg.lstsq(design * root_w[:, None], y * root_w, rcond=None)[0]
        for _ in range(TRIM_ITERATIONS):
            res = y - design @ beta
            scale = MAD_TO_SIGMA * float(np.median(np.abs(res - np.median(res))))
            new = np.abs(res) <= TRIM_SIGMAS * scale if scale > floor else np.ones(n, dtype=bool)
            if new.sum() < p + MIN_DOF:
                break
            beta = np.linalg.lstsq(design[new], y[new], rcond=None)[0]
            if (new == kept).all():
                break
            kept = new
    a, b = design[kept], y[kept]
    dof = int(kept.sum()) - p
    res = b - a @ beta
    sigma2 = float(res @ res) / dof
    cov = sigma2 * np.linalg.pinv(a.T @ a)
    quantile = float(stats.t.ppf(0.5 + level / 2.0, dof))
    return _LinearFit(beta=beta, cov=cov, kept=kept, quantile=quantile)


def _speed_interval(slowness: float, half_width: float) -> tuple[float | None, float | None]:
    """Speed interval ``[1/(s + h), 1/(s - h)]``; upper end None when ``s - h <= 0``."""
    lo_s, hi_s = slowness - half_width, slowness + half_width
    low = 1.0 / hi_s if hi_s > 0 else None
    high = 1.0 / lo_s if lo_s > 0 else None
    return low, high


def _um(value: float | None, pixel_size: float | None) -> float | None:
    """A px/s value in um/s (None without a finite pixel size)."""
    if value is None or pixel_size is None or not math.isfinite(pixel_size):
        return None
    return value * pixel_size


def _checked(times: ArrayLike, pos: ArrayLike, p: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``times`` (N,), ``pos`` (N, 2) as float64 and the mask of activated cells (enough of them)."""
    times = np.asarray(times, dtype=np.float64)
    pos = np.asarray(pos, dtype=np.float64)
    if times.ndim != 1 or pos.shape != (times.shape[0], 2):
        raise GraphError("pos", f"expected times (N,) and centroids (N, 2), got {times.shape}, {pos.shape}")
    ok = np.isfinite(times)
    if ok.sum() < p + MIN_DOF:
        raise GraphError("activation times", f"{int(ok.sum())} activated cells: the fit needs {p + MIN_DOF}")
    return times, pos, ok


@dataclass(frozen=True)
class RadialWave:
    """A radial wave ``tau_i = t0 + r_i / v`` from ``point`` (module docstring).

    Attributes:
        point: (x, y) px. t0: onset at the point (s). slowness, slowness_se: ``s = 1/v`` (s/px).
        speed: ``v`` (px/s), None when the slowness is not positive.
        speed_interval: (low, high) px/s at ``level``; either end None when unbounded / undefined.
        pixel_size: um per px (NaN if unknown). correlation: Pearson r(tau, r) on the kept cells.
        rank_correlation: Spearman r(tau, r) on every activated cell.
        n_cells: activated cells; n_used: cells kept by the robust screen; used: (N,) bool.
    """

    point: tuple[float, float]
    t0: float
    slowness: float
    slowness_se: float
    speed: float | None
    speed_interval: tuple[float | None, float | None]
    level: float
    pixel_size: float
    correlation: float
    rank_correlation: float
    n_cells: int
    n_used: int
    used: np.ndarray

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary (px/s and, with a pixel size, um/s)."""
        low, high = self.speed_interval
        return {
            "point": [float(self.point[0]), float(self.point[1])],
            "t0_s": _json(self.t0),
            "slowness_s_per_px": _json(self.slowness),
            "slowness_se": _json(self.slowness_se),
            "speed_px_s": _json(self.speed),
            "speed_interval_px_s": [_json(low), _json(high)],
            "speed_um_s": _json(_um(self.speed, self.pixel_size)),
            "speed_interval_um_s": [_json(_um(low, self.pixel_size)), _json(_um(high, self.pixel_size))],
            "level": self.level,
            "correlation": _json(self.correlation),
            "rank_correlation": _json(self.rank_correlation),
            "n_cells": self.n_cells,
            "n_used": self.n_used,
            "interval_method": INTERVAL_METHOD.format(trim=TRIM_SIGMAS, level=self.level),
        }


def radial_fit(
    times: ArrayLike,
    pos: ArrayLike,
    point: tuple[float, float] | ArrayLike,
    *,
    pixel_size: float = float("nan"),
    level: float = LEVEL,
    robust: bool = True,
) -> RadialWave:
    """Fit ``tau_i = t0 + s |p_i - point|`` to the activated cells (module docstring).

    Args:
        times: (N,) activation times (s), NaN for cells that never activate.
        pos: (N, 2) centroids (x, y) in px.
        point: (x, y) of the stimulus in px.
        pixel_size: um per px (NaN if unknown) for the speed in um/s.
        level: interval level in (0, 1).
        robust: screen out cells off the wave (module docstring); False: plain OLS on all.

    Raises:
        GraphError: bad shapes, fewer than 4 activated cells.
        ConfigError: a level outside (0, 1).
    """
    times, pos, ok = _checked(times, pos, 2)
    q = np.asarray(point, dtype=np.float64).reshape(-1)
    r = np.linalg.norm(pos - q[None, :], axis=1)
    design = np.column_stack([np.ones(int(ok.sum())), r[ok]])
    fit = _robust_ols(design, times[ok], level, robust)
    slowness, se = float(fit.beta[1]), float(math.sqrt(max(fit.cov[1, 1], 0.0)))
    used = np.zeros(times.shape[0], dtype=bool)
    used[np.flatnonzero(ok)[fit.kept]] = True
    positive = slowness > 0
    return RadialWave(
        point=(float(q[0]), float(q[1])),
        t0=float(fit.beta[0]),
        slowness=slowness,
        slowness_se=se,
        speed=1.0 / slowness if positive else None,
        speed_interval=_speed_interval(slowness, fit.quantile * se) if positive else (None, None),
        level=float(level),
        pixel_size=float(pixel_size),
        correlation=_correlation(r[used], times[used], stats.pearsonr),
        rank_correlation=_correlation(r[ok], times[ok], stats.spearmanr),
        n_cells=int(ok.sum()),
        n_used=int(used.sum()),
        used=used,
    )


def _correlation(a: np.ndarray, b: np.ndarray, method: Any) -> float:
    """Correlation of two samples (NaN when one is constant)."""
    if a.size < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(method(a, b)[0])


@dataclass(frozen=True)
class PlanarWave:
    """A planar wave ``tau_i = a + g . p_i`` (module docstring).

    Attributes:
        offset: ``a`` (s). gradient: ``g`` (s/px). speed: ``1/|g|`` (px/s).
        speed_interval: (low, high) px/s (high None when unbounded).
        direction: degrees, ``atan2(g_y, g_x)`` in image coordinates (y down).
        direction_interval: (low, high) degrees (None when wider than a half-turn).
        pixel_size, level, n_cells, n_used, used: as :class:`RadialWave`.
    """

    offset: float
    gradient: tuple[float, float]
    speed: float | None
    speed_interval: tuple[float | None, float | None]
    direction: float | None
    direction_interval: tuple[float | None, float | None]
    level: float
    pixel_size: float
    n_cells: int
    n_used: int
    used: np.ndarray

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary (px/s and, with a pixel size, um/s)."""
        low, high = self.speed_interval
        return {
            "offset_s": _json(self.offset),
            "gradient_s_per_px": [_json(self.gradient[0]), _json(self.gradient[1])],
            "speed_px_s": _json(self.speed),
            "speed_interval_px_s": [_json(low), _json(high)],
            "speed_um_s": _json(_um(self.speed, self.pixel_size)),
            "speed_interval_um_s": [_json(_um(low, self.pixel_size)), _json(_um(high, self.pixel_size))],
            "direction_deg": _json(self.direction),
            "direction_interval_deg": [_json(v) for v in self.direction_interval],
            "direction_convention": "atan2(g_y, g_x) in image coordinates (x right, y down): clockwise",
            "level": self.level,
            "n_cells": self.n_cells,
            "n_used": self.n_used,
            "interval_method": INTERVAL_METHOD.format(trim=TRIM_SIGMAS, level=self.level)
            + "; |g| and the direction by the delta method",
        }


def planar_fit(
    times: ArrayLike,
    pos: ArrayLike,
    *,
    pixel_size: float = float("nan"),
    level: float = LEVEL,
    robust: bool = True,
) -> PlanarWave:
    """Fit ``tau_i = a + g . p_i`` to the activated cells (module docstring).

    Args:
        times: (N,) activation times (s), NaN for cells that never activate.
        pos: (N, 2) centroids (x, y) in px.
        pixel_size: um per px (NaN if unknown). level: interval level. robust: as :func:`radial_fit`.

    Raises:
        GraphError: bad shapes, fewer than 5 activated cells.
        ConfigError: a level outside (0, 1).
    """
    times, pos, ok = _checked(times, pos, 3)
    design = np.column_stack([np.ones(int(ok.sum())), pos[ok]])
    fit = _robust_ols(design, times[ok], level, robust)
    g = fit.beta[1:]
    cov_g = fit.cov[1:, 1:]
    norm = float(np.linalg.norm(g))
    used = np.zeros(times.shape[0], dtype=bool)
    used[np.flatnonzero(ok)[fit.kept]] = True
    speed, speed_interval = None, (None, None)
    direction, direction_interval = None, (None, None)
    if norm > 0:
        norm_se = math.sqrt(max(float(g @ cov_g @ g), 0.0)) / norm
        speed, speed_interval = 1.0 / norm, _speed_interval(norm, fit.quantile * norm_se)
        normal = np.array([-g[1], g[0]])
        angle_se = math.sqrt(max(float(normal @ cov_g @ normal), 0.0)) / norm**2  # radians
        angle_half = math.degrees(fit.quantile * angle_se)
        direction = math.degrees(math.atan2(g[1], g[0]))
        if angle_half < 180.0:
            direction_interval = (direction - angle_half, direction + angle_half)
    return PlanarWave(
        offset=float(fit.beta[0]),
        gradient=(float(g[0]), float(g[1])),
        speed=speed,
        speed_interval=speed_interval,
        direction=direction,
        direction_interval=direction_interval,
        level=float(level),
        pixel_size=float(pixel_size),
        n_cells=int(ok.sum()),
        n_used=int(used.sum()),
        used=used,
    )


@dataclass(frozen=True)
class ActivationComparison:
    """Observed vs simulated activation times on a set of cells (module docstring).

    Attributes:
        diff_frames: (N,) ``(tau_sim - tau_obs) / dt``; NaN outside the cells or where either is NaN.
        share_within: share of the cells activated in both with ``|diff| <= WITHIN_FRAMES`` (None if none).
        median_abs_diff_frames: median ``|diff|`` over those cells (None if none).
        n_cells: cells compared; n_both: activated in both.
        only_observed, only_simulated: (N,) bool, activated in one map and not the other.
        timing_se: (N,) standard errors (s) of the observed times, or None when not given.
        share_within_noise: share of the cells activated in both with ``|tau_sim - tau_obs| <=
            max(WITHIN_FRAMES dt, WITHIN_NOISE_Z se_i)`` (None without ``timing_se`` or cells).
    """

    diff_frames: np.ndarray
    share_within: float | None
    median_abs_diff_frames: float | None
    n_cells: int
    n_both: int
    only_observed: np.ndarray
    only_simulated: np.ndarray
    timing_se: np.ndarray | None = None
    share_within_noise: float | None = None

    def as_dict(self, cell_id: ArrayLike) -> dict[str, Any]:
        """JSON-ready summary; per-cell values keyed by cell id (string)."""
        ids = np.asarray(cell_id).reshape(-1)
        both = np.isfinite(self.diff_frames)
        return {
            "diff_frames": {str(int(ids[i])): float(self.diff_frames[i]) for i in np.flatnonzero(both)},
            "within_frames": WITHIN_FRAMES,
            "share_within": _json(self.share_within),
            "median_abs_diff_frames": _json(self.median_abs_diff_frames),
            "n_cells": self.n_cells,
            "n_both": self.n_both,
            "only_observed": [int(ids[i]) for i in np.flatnonzero(self.only_observed)],
            "only_simulated": [int(ids[i]) for i in np.flatnonzero(self.only_simulated)],
            "within_noise_z": WITHIN_NOISE_Z,
            "share_within_noise": _json(self.share_within_noise),
            "timing_se_s": None if self.timing_se is None else {
                str(int(ids[i])): _json(float(self.timing_se[i])) for i in np.flatnonzero(both)
            },
        }


def compare_activation(
    observed: ArrayLike, simulated: ArrayLike, dt: float, *, cells: ArrayLike | None = None,
    timing_se: ArrayLike | None = None,
) -> ActivationComparison:
    """Compare two activation maps (N,) (s) on ``cells`` (N,) bool (default all), in frames of ``dt`` s;
    ``timing_se`` (N,) s, the observed times' standard errors, adds ``share_within_noise``.

    Raises:
        GraphError: maps or mask of different shapes, a non-positive ``dt``.
    """
    obs = np.asarray(observed, dtype=np.float64).reshape(-1)
    sim = np.asarray(simulated, dtype=np.float64).reshape(-1)
    mask = np.ones_like(obs, dtype=bool) if cells is None else np.asarray(cells, dtype=bool).reshape(-1)
    if sim.shape != obs.shape or mask.shape != obs.shape:
        raise GraphError("activation times", f"shapes differ: {obs.shape}, {sim.shape}, mask {mask.shape}")
    if not float(dt) > 0:
        raise GraphError("dt", f"must be positive, got {dt!r}")
    fo, fs = np.isfinite(obs) & mask, np.isfinite(sim) & mask
    both = fo & fs
    diff = np.full(obs.shape, np.nan)
    diff[both] = (sim[both] - obs[both]) / float(dt)
    n_both = int(both.sum())
    absolute = np.abs(diff[both])
    se = within_noise = None
    if timing_se is not None:
        se = np.asarray(timing_se, dtype=np.float64).reshape(-1)
        if se.shape != obs.shape:
            raise GraphError("timing_se", f"expected shape {obs.shape}, got {se.shape}")
        band = np.maximum(WITHIN_FRAMES, WITHIN_NOISE_Z * np.nan_to_num(se[both], nan=0.0) / float(dt))
        within_noise = float(np.mean(absolute <= band)) if n_both else None
    return ActivationComparison(
        diff_frames=diff,
        share_within=float(np.mean(absolute <= WITHIN_FRAMES)) if n_both else None,
        median_abs_diff_frames=float(np.median(absolute)) if n_both else None,
        n_cells=int(mask.sum()),
        n_both=n_both,
        only_observed=fo & ~fs,
        only_simulated=fs & ~fo,
        timing_se=se,
        share_within_noise=within_noise,
    )


def _point(point: ArrayLike | None) -> tuple[float, float] | None:
    """``point`` as two finite floats, or None."""
    if point is None:
        return None
    try:
        values = [float(v) for v in np.asarray(point, dtype=object).reshape(-1)]
    except (TypeError, ValueError):
        values = []
    if len(values) != 2 or not all(math.isfinite(v) for v in values):
        raise ConfigError("point", f"expected two numbers (x, y) in px, got {point!r}")
    return values[0], values[1]


def _fits(times: np.ndarray, pos: np.ndarray, point: tuple[float, float] | None, pixel_size: float) -> dict:
    """Radial (with a point) and planar fit blocks of one map; ``{"reason": ...}`` when undefined."""
    out: dict[str, Any] = {}
    n = int(np.isfinite(times).sum())
    if point is not None:
        out["radial"] = (
            radial_fit(times, pos, point, pixel_size=pixel_size).as_dict()
            if n >= 2 + MIN_DOF
            else {"reason": f"{n} activated cells: a radial fit needs {2 + MIN_DOF}"}
        )
    out["planar"] = (
        planar_fit(times, pos, pixel_size=pixel_size).as_dict()
        if n >= 3 + MIN_DOF
        else {"reason": f"{n} activated cells: a planar fit needs {3 + MIN_DOF}"}
    )
    return out


def _host(value: Any) -> np.ndarray:
    """A tensor or array as a float64 numpy array on the host."""
    detach = getattr(value, "detach", None)
    return np.asarray(detach().cpu().numpy() if callable(detach) else value, dtype=np.float64)


def wave_report(
    data: Data,
    simulated: ArrayLike | None,
    *,
    modelled: ArrayLike,
    point: ArrayLike | None = None,
    after: float | None = None,
    labels: np.ndarray | None = None,
    out_dir: str | Path | None = None,
    threshold_fraction: float = 0.5,
) -> dict[str, Any]:
    """Activation maps, wave speed and direction, and observed vs simulated comparison of a cell graph.

    Args:
        data: cell graph with ``x`` (N, T), ``t`` (T,), ``pos`` (N, 2) px, ``cell_id`` (N,), ``dt`` and
            ``pixel_size`` (um/px, NaN if unknown).
        simulated: (N, T) simulation of the fitted model (rows outside G follow the data), or None.
        modelled: (N,) bool, the group G: the maps are compared on these cells.
        point: (x, y) px of the stimulus, for the radial fit (None: planar fit only).
        after: only activations after this time (s), e.g. the stimulus time.
        labels: optional (Y, X) label image (values ``cell_id``) for the figure's filled cells.
        out_dir: folder for ``activation_map.png`` (None: no figure).
        threshold_fraction: crossing level between baseline and peak (0.5: half-maximum).

    Returns:
        JSON-serialisable dict: ``rule``, ``point``, ``activation_s`` ({"observed", "simulated"}: {cell
        id: s | null}), ``n_activated``, ``observed`` / ``simulated`` ({"radial", "planar"} fit blocks),
        ``comparison`` (or null), ``figures`` (file names). The simulated map is timed at the levels
        the observed traces crossed (:func:`~calcium_gnn.graphs.activation.crossing_levels`): both maps
        measure when each cell reaches the same level, so they differ by timing alone.

    Raises:
        GraphError: shapes of ``simulated`` / ``modelled`` that do not match the graph.
        ConfigError: a ``point`` that is not two numbers, a bad rule parameter.
    """
    x, t = _host(data.x), _host(data.t)
    pos = _host(data.pos)
    cell_id = np.asarray(_host(data.cell_id), dtype=np.int64)
    n = x.shape[0]
    mask = np.asarray(_host(modelled), dtype=bool).reshape(-1)
    if mask.shape != (n,):
        raise GraphError("modelled", f"expected shape ({n},), got {mask.shape}")
    q = _point(point)
    dt = float(getattr(data, "dt", float(np.median(np.diff(t)))))
    pixel_size = float(getattr(data, "pixel_size", float("nan")))
    noise = trace_noise(x)
    observed = activation_times(x, t, after=after, threshold_fraction=threshold_fraction, noise=noise)
    sim_times = None
    if simulated is not None:
        sim = _host(simulated)
        if sim.shape != x.shape:
            raise GraphError("simulated", f"expected shape {x.shape}, got {sim.shape}")
        # the simulation is timed at the levels the data crossed (their own noise rule chose the cells)
        levels = crossing_levels(x, t, after=after, threshold_fraction=threshold_fraction, noise=noise)
        sim_times = activation_times(sim, t, after=after, threshold_fraction=threshold_fraction, noise=noise,
                                     levels=levels)

    def per_cell(times: np.ndarray) -> dict[str, float | None]:
        return {str(int(c)): _json(v) for c, v in zip(cell_id, times, strict=True)}

    report: dict[str, Any] = {
        "rule": ActivationRule(threshold_fraction=threshold_fraction, after=after).as_dict(),
        "point": None if q is None else [q[0], q[1]],
        "activation_s": {"observed": per_cell(observed), "simulated": None},
        "n_activated": {"observed": int(np.isfinite(observed).sum()), "simulated": None},
        "observed": _fits(observed, pos, q, pixel_size),
        "simulated": None,
        "comparison": None,
        "figures": [],
    }
    if sim_times is not None:
        report["activation_s"]["simulated"] = per_cell(sim_times)
        report["n_activated"]["simulated"] = int(np.isfinite(sim_times).sum())
        report["simulated"] = _fits(sim_times, pos, q, pixel_size)
        se = timing_se(noise, crossing_slopes(sim, t, sim_times))
        report["comparison"] = compare_activation(observed, sim_times, dt, cells=mask, timing_se=se).as_dict(
            cell_id)
    if out_dir is not None:
        path = plot_activation_map(
            Path(out_dir) / FIGURE_NAME, pos, cell_id, observed, simulated=sim_times, labels=labels,
            point=q, modelled=mask,
        )
        report["figures"].append(path.name)
    return report
