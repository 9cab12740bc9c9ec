"""Ground-truth calcium dynamics of a synthetic culture (numpy / scipy.sparse).

Driver cells (those touching the image edge) follow prescribed transients; every other cell
follows the paper's consensus ODE with a per-cell feed (eq. 3)

.. math::
    \\dot y_i(t) = \\frac{k}{|N_i|} \\sum_{j \\in N_i} w_{ij} (z_j(t) - y_i(t)) + \\gamma_i,
    \\qquad w_{ij} = u_{ij} l_{ij} / s,

with ``z_j = y_j`` for ODE cells and ``z_j = d_j(t)`` (the driver's prescribed level) for drivers,
``|N_i|`` the number of neighbours of ``i`` and ``s`` the edge-weight scale. Splitting the nodes into
ODE cells ``o`` and drivers ``d`` this is the linear system

.. math::
    \\dot y_o = A y_o + B d(t) + \\gamma_o, \\qquad
    A = \\frac{k}{|N|} (W_{oo} - \\mathrm{diag}(W \\mathbf 1))_{o}, \\quad B = \\frac{k}{|N|} W_{od},

integrated with classical fourth-order Runge-Kutta (RK4) on ``substeps`` sub-steps per frame,
evaluating the drivers at the sub-step times. This is a separate implementation from the model
code (``calcium_gnn.nn`` / ``calcium_gnn.physics``), which is what makes it a useful ground truth.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from calcium_gnn.errors import ConfigError

DriverSignal = Callable[[np.ndarray], np.ndarray]
"""``d(t)``: times (M,) in s -> driver levels (D, M)."""


@dataclass
class DriverTransients:
    """Prescribed calcium levels of the ``D`` driver cells, a smooth function of time.

    .. math::
        d_j(t) = b_j + a_j \\sin(2\\pi t / P_j + \\phi_j)
                 + \\sum_{e \\in E_j} A_e\\, g(t - t_e; \\tau^r_e, \\tau^d_e),
        \\qquad g(s) = \\frac{(1 - e^{-s/\\tau^r})^2 e^{-s/\\tau^d}}{g_{\\max}} \\; (s \\ge 0),
        \\quad g(s) = 0 \\; (s < 0),

    a baseline ``b``, a slow drift (amplitude ``a``, period ``P``, phase ``phi``) and calcium
    transients at Poisson times ``t_e`` (independent per driver, plus calcium waves that sweep
    over the drivers) with amplitude ``A_e`` (the peak height: ``g`` is scaled to
    peak at 1), a fast rise (time to peak ``tau_r * ln(1 + 2 tau_d / tau_r)``) and a slow exponential
    decay ``tau_d``. ``g`` is continuously differentiable, so RK4 keeps its order.

    Attributes:
        baseline, drift_amplitude, drift_period, drift_phase: (D,) per driver.
        event_driver: (E,) int, which driver each transient belongs to.
        event_time, event_amplitude, event_rise, event_decay: (E,) transient onset (s), peak
            height, rise constant ``tau_r`` (s) and decay constant ``tau_d`` (s).
    """

    baseline: np.ndarray
    drift_amplitude: np.ndarray
    drift_period: np.ndarray
    drift_phase: np.ndarray
    event_driver: np.ndarray
    event_time: np.ndarray
    event_amplitude: np.ndarray
    event_rise: np.ndarray
    event_decay: np.ndarray

    @property
    def n_drivers(self) -> int:
        return len(self.baseline)

    def __call__(self, t: np.ndarray) -> np.ndarray:
        """Driver levels at times ``t`` (M,) -> (D, M)."""
        t = np.asarray(t, dtype=float)
        phase = 2.0 * np.pi * t[None, :] / self.drift_period[:, None] + self.drift_phase[:, None]
        levels = self.baseline[:, None] + self.drift_amplitude[:, None] * np.sin(phase)
        order = np.argsort(t, kind="stable")
        t_sorted = t[order]
        for e in range(len(self.event_time)):  # each transient only where it has started
            first = np.searchsorted(t_sorted, self.event_time[e], side="right")
            at = order[first:]
            s = t[at] - self.event_time[e]
            levels[self.event_driver[e], at] += self.event_amplitude[e] * transient_shape(
                s, self.event_rise[e], self.event_decay[e]
            )
        return levels


def transient_shape(s: np.ndarray, rise: np.ndarray, decay: np.ndarray) -> np.ndarray:
    """Unit-peak transient ``g(s) = (1 - exp(-s/rise))**2 exp(-s/decay) / g_max`` for ``s >= 0``, else 0.

    The peak is at ``s* = rise * ln(1 + 2 decay / rise)``, where ``exp(-s*/rise) = rise / (rise + 2 decay)``.
    """
    a_star = rise / (rise + 2.0 * decay)
    g_max = (1.0 - a_star) ** 2 * a_star ** (rise / decay)
    s_pos = np.maximum(s, 0.0)
    g = (-np.expm1(-s_pos / rise)) ** 2 * np.exp(-s_pos / decay) / g_max
    return np.where(s > 0, g, 0.0)


def draw_driver_transients(
    n_drivers: int,
    duration: float,
    rng: np.random.Generator,
    *,
    positions: np.ndarray | None = None,
    wave_rate: float = 0.0,
    wave_speed: float = 10.0,
    wave_participation: float = 0.8,
    baseline_range: tuple[float, float] = (0.2, 0.4),
    drift_amplitude_range: tuple[float, float] = (0.0, 0.05),
    drift_period_range: tuple[float, float] = (1800.0, 7200.0),
    event_rate: float = 1.0 / 300.0,
    amplitude_range: tuple[float, float] = (0.3, 1.0),
    rise_range: tuple[float, float] = (3.0, 6.0),
    decay_range: tuple[float, float] = (40.0, 120.0),
) -> DriverTransients:
    """Draw the random driver signals over ``[0, duration]`` s.

    Args:
        n_drivers: number of driver cells D.
        duration: length of the recording in s (transients start uniformly in ``[0, duration)``).
        rng: the random generator.
        positions: (D, 2) driver centroids in px, needed for waves.
        wave_rate: calcium waves per second (Poisson process; 0 = none). A wave starts at a uniform
            random time at a random driver and reaches driver ``j`` after ``|p_j - p_origin| /
            wave_speed`` s, where each driver joins it with probability ``wave_participation``
            with a transient of its own random shape. Waves make neighbouring drivers fire
            together, so their transients reach deep into the interior.
        wave_speed: px/s.
        wave_participation: probability that a driver fires in a given wave.
        baseline_range: per-driver baseline ``b`` (calcium units), uniform.
        drift_amplitude_range: slow drift amplitude ``a``, uniform.
        drift_period_range: slow drift period ``P`` (s), uniform; the phase is uniform in [0, 2 pi).
        event_rate: transients per second per driver (Poisson process; default one per 5 min).
        amplitude_range: transient peak height ``A``, uniform.
        rise_range: rise constant ``tau_r`` (s), uniform; (3, 6) s gives a time to peak of ~11-18 s.
        decay_range: exponential decay constant ``tau_d`` (s), uniform.
    """
    if event_rate < 0:
        raise ConfigError("event_rate", f"must be >= 0, got {event_rate}")
    if wave_rate < 0:
        raise ConfigError("wave_rate", f"must be >= 0, got {wave_rate}")
    if wave_rate > 0 and positions is None:
        raise ConfigError("positions", "driver positions are needed for calcium waves")
    baseline = rng.uniform(*baseline_range, size=n_drivers)
    drift = (
        rng.uniform(*drift_amplitude_range, size=n_drivers),
        rng.uniform(*drift_period_range, size=n_drivers),
        rng.uniform(0.0, 2.0 * np.pi, size=n_drivers),
    )
    counts = rng.poisson(event_rate * duration, size=n_drivers)
    event_driver = np.repeat(np.arange(n_drivers), counts)
    event_time = rng.uniform(0.0, duration, size=len(event_driver))
    n_waves = int(rng.poisson(wave_rate * duration)) if n_drivers else 0
    for _ in range(n_waves):
        start, origin = rng.uniform(0.0, duration), positions[rng.integers(n_drivers)]
        joins = np.flatnonzero(rng.random(n_drivers) < wave_participation)
        arrival = start + np.linalg.norm(positions[joins] - origin, axis=1) / wave_speed
        event_driver = np.concatenate([event_driver, joins])
        event_time = np.concatenate([event_time, arrival])
    n_events = len(event_driver)
    return DriverTransients(
        baseline=baseline,
        drift_amplitude=drift[0],
        drift_period=drift[1],
        drift_phase=drift[2],
        event_driver=event_driver,
        event_time=event_time,
        event_amplitude=rng.uniform(*amplitude_range, size=n_events),
        event_rise=rng.uniform(*rise_range, size=n_events),
        event_decay=rng.uniform(*decay_range, size=n_events),
    )


def coupling_matrix(n_nodes: int, edge_index: np.ndarray, weight: np.ndarray, k: float) -> sp.csr_matrix:
    """The (N, N) matrix ``C = k/|N_i| * W``, ``W_ij = W_ji = w_ij`` over the undirected pairs.

    Args:
        n_nodes: N.
        edge_index: (2, E) undirected pairs (each pair once).
        weight: (E,) normalised edge weights ``w_ij = u_ij l_ij / s``.
        k: the coupling constant (1/s).
    """
    src = np.concatenate([edge_index[0], edge_index[1]])
    dst = np.concatenate([edge_index[1], edge_index[0]])
    w = np.concatenate([weight, weight])
    degree = np.bincount(src, minlength=n_nodes).astype(float)
    scale = np.divide(k, degree, out=np.zeros(n_nodes), where=degree > 0)
    return sp.csr_matrix((scale[src] * w, (src, dst)), shape=(n_nodes, n_nodes))


@dataclass
class ConsensusSystem:
    """The linear ODE of the modelled (ODE) cells: ``dy_o/dt = A y_o + B d(t) + gamma_o`` (eq. 3).

    Attributes:
        A: (M, M) sparse, ``C_oo - diag(C 1)_o`` with ``C = k/|N| W``.
        B: (M, D) sparse, ``C_od``.
        gamma: (M,) feed of the ODE cells (1/s, in calcium units per second).
        ode_nodes: (M,) node indices of the ODE cells; driver_nodes: (D,) of the drivers.
    """

    A: sp.csr_matrix
    B: sp.csr_matrix
    gamma: np.ndarray
    ode_nodes: np.ndarray
    driver_nodes: np.ndarray

    def rhs(self, y: np.ndarray, d: np.ndarray) -> np.ndarray:
        """``A y + B d + gamma`` for states ``y`` (M,) or (M, K) and driver levels ``d`` (D,) or (D, K)."""
        forcing = self.B @ d + (self.gamma if y.ndim == 1 else self.gamma[:, None])
        return self.A @ y + forcing

    def steady_state(self, d: np.ndarray) -> np.ndarray:
        """The fixed point ``y* = -A^{-1} (B d + gamma)`` for frozen driver levels ``d`` (D,); (M,)."""
        return spla.spsolve(self.A.tocsc(), -(self.B @ d + self.gamma))


def consensus_system(
    n_nodes: int,
    edge_index: np.ndarray,
    weight: np.ndarray,
    k: float,
    gamma: np.ndarray,
    is_driver: np.ndarray,
) -> ConsensusSystem:
    """Assemble eq. (3) for the ODE cells ``~is_driver`` given drivers ``is_driver`` (N,) bool.

    Raises:
        ConfigError: when an ODE cell has no neighbour, or a group of ODE cells is not connected
            to any driver (then ``A`` is singular: no steady state, the levels drift forever).
    """
    C = coupling_matrix(n_nodes, edge_index, weight, k)
    ode_nodes = np.flatnonzero(~is_driver)
    driver_nodes = np.flatnonzero(is_driver)
    degree = np.diff(C.indptr)
    if np.any(degree[ode_nodes] == 0):
        raise ConfigError("min_shared_border", "an ODE (interior) cell has no neighbour")
    row_sum = np.asarray(C.sum(axis=1)).ravel()
    A = (C[ode_nodes][:, ode_nodes] - sp.diags(row_sum[ode_nodes])).tocsr()
    B = C[ode_nodes][:, driver_nodes].tocsr()
    n_comp, comp = sp.csgraph.connected_components(A, directed=False)
    fed = np.zeros(n_comp, dtype=bool)
    fed[comp[np.asarray(B.sum(axis=1)).ravel() > 0]] = True
    if not fed.all():
        raise ConfigError("n_cells", "a group of interior cells is not connected to any driver cell")
    return ConsensusSystem(A, B, np.asarray(gamma, dtype=float)[ode_nodes], ode_nodes, driver_nodes)


def rk4(
    system: ConsensusSystem,
    drivers: DriverSignal,
    y0: np.ndarray,
    t: np.ndarray,
    substeps: int = 20,
    dense_below: int = 2000,
) -> np.ndarray:
    """Integrate ``dy/dt = A y + B d(t) + gamma`` with classical RK4; states at the times ``t``.

    Each interval ``[t_n, t_{n+1}]`` is split into ``substeps`` steps of ``h = (t_{n+1} - t_n) /
    substeps``; with ``f(s, y) = A y + B d(s) + gamma``,
    ``y += h/6 (f(s, y) + 2 f(s + h/2, y + h/2 k1) + 2 f(s + h/2, y + h/2 k2) + f(s + h, y + h k3))``.
    The driver levels at all stage times are evaluated in one call.

    Args:
        system: the linear system (M ODE cells, D drivers).
        drivers: ``d(t)``: times (K,) -> (D, K).
        y0: (M,) state at ``t[0]``.
        t: (T,) output times in s, strictly increasing.
        substeps: RK4 steps per output interval (>= 1).
        dense_below: use a dense ``A`` when there are fewer ODE cells than this (faster for small M).

    Returns:
        (M, T) states at the times ``t`` (column 0 is ``y0``).
    """
    if substeps < 1:
        raise ConfigError("substeps", f"must be >= 1, got {substeps}")
    t = np.asarray(t, dtype=float)
    fractions = np.arange(2 * substeps + 1) / (2.0 * substeps)  # sub-step starts, mid-points, ends
    stage_times = t[:-1, None] + np.diff(t)[:, None] * fractions[None, :]
    forcing = system.B @ drivers(stage_times.ravel()) + system.gamma[:, None]
    forcing = forcing.reshape(len(system.gamma), len(t) - 1, 2 * substeps + 1)
    A = system.A.toarray() if system.A.shape[0] < dense_below else system.A
    out = np.empty((len(y0), len(t)))
    y = np.asarray(y0, dtype=float).copy()
    out[:, 0] = y
    for n in range(len(t) - 1):
        h = (t[n + 1] - t[n]) / substeps
        f_n = forcing[:, n, :]
        for m in range(substeps):
            f0, f_half, f1 = f_n[:, 2 * m], f_n[:, 2 * m + 1], f_n[:, 2 * m + 2]
            k1 = A @ y + f0
            k2 = A @ (y + 0.5 * h * k1) + f_half
            k3 = A @ (y + 0.5 * h * k2) + f_half
            k4 = A @ (y + h * k3) + f1
            y = y + (h / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
        out[:, n + 1] = y
    return out


def simulate_culture(
    system: ConsensusSystem,
    drivers: DriverSignal,
    t: np.ndarray,
    substeps: int = 20,
) -> np.ndarray:
    """Clean traces (N, T) of all cells: drivers from ``d(t)``, ODE cells by RK4 from the steady state.

    The ODE cells start at the steady state of eq. (3) for the driver levels at ``t[0]`` (one sparse
    linear solve).
    """
    t = np.asarray(t, dtype=float)
    d = drivers(t)
    y0 = system.steady_state(d[:, 0])
    n = len(system.ode_nodes) + len(system.driver_nodes)
    traces = np.empty((n, len(t)))
    traces[system.driver_nodes] = d
    traces[system.ode_nodes] = rk4(system, drivers, y0, t, substeps)
    return traces
