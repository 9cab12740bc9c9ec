"""The driver cells of a zoo member and their prescribed calcium levels at the frame times.

Drivers are the cells whose level is prescribed instead of following the law. In every family the
cells touching the image edge are drivers (they stand for the unseen culture beyond the field of
view, the paper's border cells); the families differ in the interior drivers:

=============  ==========================================================================================
family         drivers
=============  ==========================================================================================
``border``     the edge cells only, with the member's signal (transients with calcium waves that sweep
               over them, slow oscillations or plateaus): the paper's setting
``stimulus``   quiet edge cells, ``n_stimuli`` central cells hit by a point stimulus at
               ``stimulus_time``, and *relay* cells: each interior cell within ``wave_radius`` px of a
               stimulus fires, with probability ``relay_fraction``, when the radial wave reaches it
               (``distance / (wave_speed * cell_diameter)`` s later); the cells between them carry
               the wave by the law alone
``pacemaker``  quiet edge cells and ``pacemaker_fraction`` of the interior cells (at least one) that
               fire or oscillate spontaneously with period about ``period``
=============  ==========================================================================================

Levels (calcium units). Each driver ``j`` has ``d_j(t) = b_j + a_j sin(2 pi t / P_j + phi_j) + events``
(baseline :data:`~calcium_gnn.data.zoo_params.BASELINE`, slow drift of amplitude ``a_j`` and period
``P_j`` longer than the recording). Event shapes, all scaled to a unit peak:

* ``transient``: ``g(s) = (1 - e^{-s/tau_r})^2 e^{-s/tau_d} / g_max`` (``transient_shape``), decay
  ``tau_d ~ timescale``, rise ``tau_r = rise_fraction * tau_d``;
* ``plateau``: ``(1 - e^{-s/tau_r}) / (1 - e^{-H/tau_r})`` up to the hold time ``H ~ timescale``, then
  ``e^{-(s - H)/tau_d}``;
* ``oscillation``: ``(1 - cos(2 pi s / P)) / 2`` from the onset on (a slow oscillation of period ``P``).

Only the values at the frame times are used: between frames a driver's level is the linear
interpolation of its frame values (the convention of ``calcium_gnn.physics.simulate``), so a
simulator fed with the observed driver traces and the true parameters reproduces the truth.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from calcium_gnn.data import zoo_params as zp
from calcium_gnn.data.synthetic_dynamics import transient_shape

#: codes of ``ZooCulture.driver_kind`` / the graph's ``truth_driver_kind``
DRIVER_KINDS: tuple[str, ...] = ("modelled", "edge", "stimulus", "relay", "pacemaker")
MODELLED, EDGE, STIMULUS, RELAY, PACEMAKER = range(len(DRIVER_KINDS))
#: the slow drift's period is this many times the recording, at least
DRIFT_PERIOD_FACTOR: tuple[float, float] = (1.0, 4.0)
#: each event's time constants are the member's, times a factor in this range
SHAPE_JITTER: tuple[float, float] = (0.8, 1.25)
#: plateau hold / timescale and plateau decay / timescale
PLATEAU_HOLD: tuple[float, float] = (1.0, 3.0)
PLATEAU_DECAY: tuple[float, float] = (0.3, 1.0)
#: a pacemaker's burst lasts at most this fraction of its period
BURST_FRACTION: float = 1.0 / 3.0
#: stimulated cells are drawn among this fraction of the interior cells closest to the image centre
CENTRAL_FRACTION: float = 0.25
#: a second stimulus follows the first by this fraction of the recording
SECOND_STIMULUS_DELAY: tuple[float, float] = (0.1, 0.3)


@dataclass
class DriverPlan:
    """Which cells are drivers, and their levels.

    Attributes:
        kind: (N,) int64 codes of :data:`DRIVER_KINDS` (0 = modelled, follows the law).
        levels: (N, T) prescribed levels at the frame times (rows of modelled cells are zero).
    """

    kind: np.ndarray
    levels: np.ndarray

    @property
    def is_driver(self) -> np.ndarray:
        """(N,) bool, the cell's level is prescribed."""
        return self.kind != MODELLED


def plateau_shape(s: np.ndarray, rise: float, hold: float, decay: float) -> np.ndarray:
    """Unit-peak plateau: ``(1 - e^{-s/rise}) / (1 - e^{-hold/rise})`` for ``0 <= s <= hold``, then
    ``e^{-(s - hold)/decay}``; 0 for ``s < 0``."""
    s = np.asarray(s, dtype=float)
    top = -np.expm1(-hold / rise)
    up = -np.expm1(-np.clip(s, 0.0, hold) / rise) / top
    down = np.exp(-np.maximum(s - hold, 0.0) / decay)
    return np.where(s > 0, np.where(s <= hold, up, down), 0.0)


def oscillation_shape(s: np.ndarray, period: float) -> np.ndarray:
    """``(1 - cos(2 pi s / period)) / 2`` for ``s >= 0`` (starts at 0 with zero slope), else 0."""
    s = np.asarray(s, dtype=float)
    return np.where(s > 0, 0.5 * (1.0 - np.cos(2.0 * np.pi * s / period)), 0.0)


class _Events:
    """Draws event shapes for one member (its signal, timescale and rise fraction)."""

    def __init__(self, p: dict[str, Any], rng: np.random.Generator) -> None:
        self.p, self.rng = p, rng

    def shape(self, s: np.ndarray, signal: str, cap: float = np.inf) -> np.ndarray:
        """One event of ``signal`` at times ``s`` since its onset, time constants at most ``cap`` s."""
        p, rng = self.p, self.rng
        scale = min(p["timescale"] * rng.uniform(*SHAPE_JITTER), cap)
        if signal == "plateau":
            hold = min(p["timescale"] * rng.uniform(*PLATEAU_HOLD), cap)
            return plateau_shape(s, scale * p["rise_fraction"], hold, scale * rng.uniform(*PLATEAU_DECAY))
        if signal == "oscillation":
            return oscillation_shape(s, p["period"] * rng.uniform(*SHAPE_JITTER))
        return transient_shape(s, scale * p["rise_fraction"], scale)


def _baselines(levels: np.ndarray, rows: np.ndarray, t: np.ndarray, rng: np.random.Generator) -> None:
    """Baseline plus slow drift for the driver ``rows`` of ``levels`` (in place)."""
    n, duration = len(rows), max(float(t[-1] - t[0]), float(np.diff(t).max()))
    base = rng.uniform(*zp.BASELINE, size=n)
    amplitude = rng.uniform(*zp.DRIFT_AMPLITUDE, size=n)
    period = duration * rng.uniform(*DRIFT_PERIOD_FACTOR, size=n)
    phase = rng.uniform(0.0, 2.0 * np.pi, size=n)
    levels[rows] = base[:, None] + amplitude[:, None] * np.sin(
        2.0 * np.pi * t[None, :] / period[:, None] + phase[:, None]
    )


def _poisson_events(
    levels: np.ndarray,
    rows: np.ndarray,
    t: np.ndarray,
    per_driver: float,
    amplitude: tuple[float, float],
    signal: str,
    events: _Events,
) -> None:
    """Add Poisson-timed events (mean ``per_driver`` per driver over the recording) to ``rows``."""
    rng = events.rng
    for row in rows:
        for onset in rng.uniform(t[0], t[-1], size=rng.poisson(per_driver)):
            levels[row] += rng.uniform(*amplitude) * events.shape(t - onset, signal)


def _edge_drivers(
    levels: np.ndarray, edge: np.ndarray, centroids: np.ndarray, t: np.ndarray, events: _Events
) -> None:
    """The ``border`` family's edge drivers: the member's signal, with waves for events."""
    p, rng = events.p, events.rng
    if p["signal"] == "oscillation":
        for row in edge:
            phase = rng.uniform(0.0, p["period"])
            levels[row] += rng.uniform(*zp.AMPLITUDE) * events.shape(t + phase, "oscillation")
        return
    _poisson_events(levels, edge, t, p["events_per_driver"], zp.AMPLITUDE, p["signal"], events)
    speed = p["wave_speed"] * p["cell_diameter"]
    for _ in range(rng.poisson(p["waves"])):
        start, origin = rng.uniform(t[0], t[-1]), centroids[edge[rng.integers(len(edge))]]
        for row in edge[rng.random(len(edge)) < p["wave_participation"]]:
            onset = start + np.linalg.norm(centroids[row] - origin) / speed
            levels[row] += rng.uniform(*zp.AMPLITUDE) * events.shape(t - onset, p["signal"])


def _stimulus_drivers(
    kind: np.ndarray, levels: np.ndarray, centroids: np.ndarray, t: np.ndarray, events: _Events
) -> None:
    """Stimulated central cells and the relay cells of their radial waves (``stimulus`` family)."""
    p, rng = events.p, events.rng
    interior = np.flatnonzero(kind == MODELLED)
    centre = np.full(2, (p["side"] - 1) / 2.0)
    by_centre = interior[np.argsort(np.linalg.norm(centroids[interior] - centre, axis=1), kind="stable")]
    central = by_centre[: max(1, int(np.ceil(CENTRAL_FRACTION * len(interior))))]
    stimulated = rng.choice(central, size=min(p["n_stimuli"], len(central), len(interior) - 1), replace=False)
    speed = p["wave_speed"] * p["cell_diameter"]
    relay_signal = "transient" if p["signal"] == "oscillation" else p["signal"]
    for number, cell in enumerate(stimulated):
        onset = p["stimulus_time"] + number * (t[-1] - t[0]) * rng.uniform(*SECOND_STIMULUS_DELAY)
        kind[cell] = STIMULUS
        _baselines(levels, np.array([cell]), t, rng)
        levels[cell] += p["stimulus_amplitude"] * events.shape(t - onset, p["signal"])
        candidates = np.flatnonzero(kind == MODELLED)
        distance = np.linalg.norm(centroids[candidates] - centroids[cell], axis=1)
        relays = rng.random(len(candidates)) < p["relay_fraction"]
        reached = candidates[(distance <= p["wave_radius"]) & relays]
        if len(reached) >= len(candidates):  # keep at least one cell following the law
            reached = reached[:-1]
        for row in reached:
            arrival = onset + np.linalg.norm(centroids[row] - centroids[cell]) / speed
            kind[row] = RELAY
            _baselines(levels, np.array([row]), t, rng)
            levels[row] += rng.uniform(*zp.AMPLITUDE) * events.shape(t - arrival, relay_signal)


def _pacemakers(kind: np.ndarray, levels: np.ndarray, t: np.ndarray, events: _Events) -> None:
    """Spontaneous pacemakers among the interior cells (``pacemaker`` family)."""
    p, rng = events.p, events.rng
    interior = np.flatnonzero(kind == MODELLED)
    count = min(max(1, int(round(p["pacemaker_fraction"] * len(interior)))), len(interior) - 1)
    for row in rng.choice(interior, size=count, replace=False):
        kind[row] = PACEMAKER
        _baselines(levels, np.array([row]), t, rng)
        period = p["period"] * rng.uniform(*SHAPE_JITTER)
        amplitude = rng.uniform(*zp.AMPLITUDE)
        first = t[0] - rng.uniform(0.0, period)
        if p["signal"] == "oscillation":
            levels[row] += amplitude * oscillation_shape(t - first, period)
            continue
        for onset in np.arange(first, t[-1], period):
            levels[row] += amplitude * events.shape(t - onset, p["signal"], cap=BURST_FRACTION * period)


def draw_drivers(
    p: dict[str, Any],
    touches_edge: np.ndarray,
    centroids: np.ndarray,
    t: np.ndarray,
    rng: np.random.Generator,
) -> DriverPlan:
    """The drivers of a member with parameters ``p`` and their levels at the frame times ``t`` (T,).

    Args:
        p: the member's parameters (:func:`calcium_gnn.data.zoo_params.member_params`).
        touches_edge: (N,) bool, the cells touching the image edge (always drivers).
        centroids: (N, 2) cell centroids ``(x, y)`` in px.
        t: (T,) frame times in s.
        rng: the member's driver stream.
    """
    t = np.asarray(t, dtype=float)
    kind = np.where(touches_edge, EDGE, MODELLED).astype(np.int64)
    levels = np.zeros((len(kind), len(t)))
    edge = np.flatnonzero(touches_edge)
    events = _Events(p, rng)
    _baselines(levels, edge, t, rng)
    if p["family"] == "border":
        _edge_drivers(levels, edge, centroids, t, events)
    else:
        quiet = p["quiet_events_per_driver"]
        _poisson_events(levels, edge, t, quiet, zp.QUIET_AMPLITUDE, "transient", events)
        if p["family"] == "stimulus":
            _stimulus_drivers(kind, levels, centroids, t, events)
        else:
            _pacemakers(kind, levels, t, events)
    return DriverPlan(kind=kind, levels=levels)
