"""Nonlinear coupling laws of the culture zoo, and their numerical integration.

The zoo's ``linear`` and ``leak`` members follow the paper's eq. (3) (:mod:`calcium_gnn.data.zoo_dynamics`).
The members made here follow a law that is NOT the paper's; they exist so that a learned coupling
(``model=gnn_ode``) has something to learn. For a modelled cell ``i`` with neighbours ``N_i``

.. math::
    \\dot y_i = \\frac{k}{|N_i|} \\sum_{j \\in N_i} w_{ij}\\, f(\\Delta_{ij}, z_j) + \\gamma_i
        + \\pi_i, \\qquad \\Delta_{ij} = z_j - y_i, \\quad w_{ij} = u_{ij} l_{ij} / s,

with ``z_j`` the neighbour's level (its data for a driver) and ``pi_i = 0`` except for ``paracrine``:

==============  ============================================================  =========================
law             message ``f(Delta, z_j)`` (per unit weight) and extra term      parameters (drawn)
==============  ============================================================  =========================
``saturating``  ``sigma tanh(Delta / sigma)``: a gap-junction flux that         ``sigma = saturation x``
                saturates at ``sigma`` (linear for ``|Delta| << sigma``)        drivers' range,
                                                                                ``saturation`` 0.05-0.2
``threshold``   ``Delta (1 + a S((z_j - theta) / epsilon))``, ``S`` the         ``theta`` = the
                logistic: calcium-induced release, the flux out of a cell       ``threshold_quantile``
                rises ``1 + a``-fold once its level crosses ``theta``           (0.6-0.9) of the drivers'
                                                                                levels, ``a`` 2-5,
                                                                                ``epsilon`` = 5% of range
``rectifying``  ``max(Delta, 0) + r min(Delta, 0)``: a junction that passes     ``r`` 0.1-0.3
                calcium into a cell more readily than out of it
``paracrine``   ``Delta`` and ``pi_i = k_p / |P_i| sum_{j in P_i}               ``k_p / k`` 0.3-1,
                exp(-d_ij / lambda) (z_j - y_i)``: a diffusing messenger (ATP)  ``lambda`` 1-2 cell
                reaching the cells ``P_i`` within ``3 lambda`` that are NOT     diameters
                neighbours (a message over the cell graph cannot express it)
==============  ============================================================  =========================

Integration. No closed form: classical RK4 with the drivers linear between frames (the convention of
``calcium_gnn.physics.simulate``) and ``n`` steps per frame interval, ``n`` from the stiffness,
``h rho <= STEP_RATE`` with ``rho`` an upper bound of the Jacobian's spectral radius
(:meth:`NonlinearLaw.rate_bound`), so the integration error is far below any observation noise
(:data:`STEP_RATE` = 0.1: RK4's relative error per step about ``(h rho)^5 / 120``, 1e-7). The start is
the steady state for the drivers frozen at ``t_0`` (``scipy.optimize.root`` from the linear law's; see
:func:`steady_state` for a rectifier's kink).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.optimize as so
from scipy.spatial import cKDTree

from calcium_gnn.errors import ConfigError

NONLINEAR_LAWS: tuple[str, ...] = ("saturating", "threshold", "rectifying", "paracrine")
#: each law's drawn parameters: name -> (low, high) (uniform)
LAW_RANGES: dict[str, dict[str, tuple[float, float]]] = {
    "saturating": {"saturation": (0.05, 0.2)},
    "threshold": {"threshold_quantile": (0.6, 0.9), "threshold_gain": (2.0, 5.0)},
    "rectifying": {"rectification": (0.1, 0.3)},
    "paracrine": {"paracrine_ratio": (0.3, 1.0), "paracrine_length": (1.0, 2.0)},
}
#: the threshold's width epsilon, a fraction of the drivers' range
THRESHOLD_WIDTH: float = 0.05
#: paracrine partners lie within this many decay lengths
PARACRINE_CUTOFF: float = 3.0
#: RK4 step: ``h rho <= STEP_RATE`` (module docstring)
STEP_RATE: float = 0.1
#: the steady state is accepted when ``max |dy/dt| <= STEADY_TOLERANCE * rho * range``
STEADY_TOLERANCE: float = 1e-9
#: root finders tried in turn for the steady state (MINPACK's hybrid Powell, then Levenberg-Marquardt)
ROOT_METHODS: tuple[str, ...] = ("hybr", "lm")
#: one-line equations for results and reports
DESCRIPTIONS: dict[str, str] = {
    "saturating": "f = sigma tanh(Delta / sigma): saturating junction flux",
    "threshold": "f = Delta (1 + a S((z_j - theta) / epsilon)): calcium-induced release above theta",
    "rectifying": "f = max(Delta, 0) + r min(Delta, 0): rectifying junction",
    "paracrine": "f = Delta, plus k_p/|P_i| sum_{j in P_i} exp(-d_ij/lambda) (z_j - y_i) beyond neighbours",
}


def draw_law_params(law: str, rng: np.random.Generator) -> dict[str, float]:
    """The law's parameters (:data:`LAW_RANGES`) drawn from ``rng``, rounded to 4 significant digits."""
    if law not in NONLINEAR_LAWS:
        raise ConfigError("zoo law", f"unknown nonlinear law {law!r} (use one of {NONLINEAR_LAWS})")
    return {name: float(f"{rng.uniform(*bounds):.4g}") for name, bounds in LAW_RANGES[law].items()}


def logistic(x: np.ndarray) -> np.ndarray:
    """``1 / (1 + e^{-x})`` without overflow."""
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=float)))


def message(law: str, constants: dict[str, float], delta: np.ndarray, source: np.ndarray) -> np.ndarray:
    """``f(Delta, z_j)`` of the module table, elementwise (the direct-neighbour message per unit weight).

    Args:
        law: ``"linear"``, ``"leak"`` or one of :data:`NONLINEAR_LAWS`.
        constants: the resolved constants (:attr:`NonlinearLaw.constants`: ``sigma``, ``theta``,
            ``epsilon``, ``a``, ``r``).
        delta: ``z_j - y_i``; source: ``z_j`` (same shape).
    """
    delta = np.asarray(delta, dtype=float)
    if law == "saturating":
        sigma = constants["sigma"]
        return sigma * np.tanh(delta / sigma)
    if law == "threshold":
        gate = logistic((np.asarray(source, dtype=float) - constants["theta"]) / constants["epsilon"])
        return delta * (1.0 + constants["a"] * gate)
    if law == "rectifying":
        return np.maximum(delta, 0.0) + constants["r"] * np.minimum(delta, 0.0)
    return delta


@dataclass
class NonlinearLaw:
    """A nonlinear law on one culture's graph (module docstring); states are (N,) over every cell.

    Attributes:
        name: one of :data:`NONLINEAR_LAWS`. k: coupling constant (1/s).
        constants: resolved constants (``sigma``; ``theta``, ``epsilon``, ``a``; ``r``; ``k_p``,
            ``lambda``), in calcium units, 1/s and px.
        target, source: (2E,) directed edges ``source -> target`` (both directions of each pair).
        weight: (2E,) ``w_ij``. degree: (N,) ``|N_i|``.
        far_target, far_source, far_weight: (F,) paracrine pairs (non-neighbours within the cutoff)
            with ``exp(-d / lambda)``; far_count: (N,) ``|P_i|`` (empty for other laws).
    """

    name: str
    k: float
    constants: dict[str, float]
    target: np.ndarray
    source: np.ndarray
    weight: np.ndarray
    degree: np.ndarray
    far_target: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    far_source: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    far_weight: np.ndarray = field(default_factory=lambda: np.zeros(0))
    far_count: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def derivative(self, z: np.ndarray, feed: np.ndarray) -> np.ndarray:
        """``dy/dt`` (N,) of every cell at levels ``z`` (N,) (rows of drivers are meaningless)."""
        n = len(z)
        delta = z[self.source] - z[self.target]
        flux = self.weight * message(self.name, self.constants, delta, z[self.source])
        out = self.k * np.bincount(self.target, weights=flux, minlength=n) / np.maximum(self.degree, 1) + feed
        if len(self.far_target):
            far = self.far_weight * (z[self.far_source] - z[self.far_target])
            paracrine = np.bincount(self.far_target, weights=far, minlength=n)
            out += self.constants["k_p"] * paracrine / np.maximum(self.far_count, 1)
        return out

    def rate_bound(self) -> float:
        """A bound (1/s) of the Jacobian's spectral radius: Gershgorin with the largest conductance
        ``df/dDelta`` (``1 + a`` for ``threshold``; the gate's own slope acts only within ``epsilon`` of
        ``theta`` and is left out, the step-halving test shows the integration converged)."""
        slope = 1.0 + self.constants.get("a", 0.0)
        n = len(self.degree)
        row = np.bincount(self.target, weights=self.weight, minlength=n) / np.maximum(self.degree, 1)
        bound = 2.0 * self.k * slope * float(row.max())
        if len(self.far_target):
            bound += 2.0 * self.constants["k_p"]
        return bound


def resolve_law(
    name: str,
    params: dict[str, Any],
    k: float,
    edge_index: np.ndarray,
    weight: np.ndarray,
    n_nodes: int,
    centroids: np.ndarray,
    driver_levels: np.ndarray,
) -> NonlinearLaw:
    """The law of a member on its graph: constants resolved against the drivers' levels and geometry.

    Args:
        name: one of :data:`NONLINEAR_LAWS`. params: the member's parameters (with the law's).
        k: coupling constant. edge_index: (2, E) pairs (each once). weight: (E,) ``w_ij``.
        n_nodes: N. centroids: (N, 2) px. driver_levels: (D, T) the drivers' levels (sets the scale of
            ``sigma``, ``theta`` and ``epsilon``).
    """
    if name not in NONLINEAR_LAWS:
        raise ConfigError("zoo law", f"unknown nonlinear law {name!r} (use one of {NONLINEAR_LAWS})")
    levels = np.asarray(driver_levels, dtype=float)
    span = float(levels.max() - levels.min()) if levels.size else 1.0
    span = span if span > 0 else 1.0
    constants: dict[str, float] = {"range": span}
    if name == "saturating":
        constants["sigma"] = params["saturation"] * span
    elif name == "threshold":
        constants["theta"] = float(np.quantile(levels, params["threshold_quantile"]))
        constants["epsilon"] = THRESHOLD_WIDTH * span
        constants["a"] = float(params["threshold_gain"])
    elif name == "rectifying":
        constants["r"] = float(params["rectification"])
    target = np.concatenate([edge_index[1], edge_index[0]]).astype(np.int64)
    source = np.concatenate([edge_index[0], edge_index[1]]).astype(np.int64)
    law = NonlinearLaw(name, float(k), constants, target, source, np.concatenate([weight, weight]),
                       np.bincount(target, minlength=n_nodes).astype(float))
    if name == "paracrine":
        length = float(params["paracrine_length"]) * float(params["cell_diameter"])
        constants["k_p"], constants["lambda"] = float(params["paracrine_ratio"]) * float(k), length
        pairs = cKDTree(centroids).query_pairs(PARACRINE_CUTOFF * length, output_type="ndarray")
        neighbours = set(zip(edge_index.min(axis=0).tolist(), edge_index.max(axis=0).tolist(), strict=True))
        far = np.array([p for p in pairs.tolist() if (min(p), max(p)) not in neighbours], dtype=np.int64)
        far = far.reshape(-1, 2)
        distance = np.linalg.norm(centroids[far[:, 0]] - centroids[far[:, 1]], axis=1)
        law.far_target = np.concatenate([far[:, 1], far[:, 0]])
        law.far_source = np.concatenate([far[:, 0], far[:, 1]])
        law.far_weight = np.tile(np.exp(-distance / length), 2)
        law.far_count = np.bincount(law.far_target, minlength=n_nodes).astype(float)
    return law


def steady_state(law: NonlinearLaw, start: np.ndarray, modelled: np.ndarray, feed: np.ndarray) -> np.ndarray:
    """Levels (N,) with ``dy/dt = 0`` on the modelled cells, the drivers held at ``start``'s values.

    The root finders (:data:`ROOT_METHODS`) stop at :data:`STEADY_TOLERANCE`; where they do not reach it
    (the kink of a rectifier), the closest point they found is returned: the traces are the law's
    trajectory from that start either way, only not from rest (a small transient in the first frames).

    Raises:
        ConfigError: when every root finder returned a non-finite point.
    """
    idx = np.flatnonzero(modelled)
    z = np.array(start, dtype=float)

    def residual(y: np.ndarray) -> np.ndarray:
        z[idx] = y
        return law.derivative(z, feed)[idx]

    scale = law.rate_bound() * law.constants["range"]
    best, worst = z[idx].copy(), np.inf
    for method in ROOT_METHODS:  # hybr first; the kink of a rectifier can stall it, LM then finishes
        solution = so.root(residual, best, method=method)
        value = float(np.abs(residual(solution.x)).max()) if len(idx) else 0.0
        if value < worst:
            best, worst = solution.x, value
        if worst <= STEADY_TOLERANCE * scale:
            break
    if not np.isfinite(worst):
        raise ConfigError("zoo law", f"no start for the {law.name} law at t_0 (max |dy/dt| {worst})")
    z[idx] = best
    return z


def integrate_rk4(
    law: NonlinearLaw, start: np.ndarray, levels: np.ndarray, t: np.ndarray, modelled: np.ndarray,
    feed: np.ndarray,
) -> np.ndarray:
    """Levels (N, T) at the frame times: RK4 from ``start`` (N,), drivers linear between frames.

    Args:
        levels: (N, T) the drivers' levels at the frame times (rows of modelled cells ignored).
        t: (T,) frame times. modelled: (N,) bool. feed: (N,) constant feeds (0 on drivers).
    """
    t = np.asarray(t, dtype=float)
    out = np.array(levels, dtype=float, copy=True)
    z = np.array(start, dtype=float)
    driver = ~modelled
    out[modelled, 0] = z[modelled]
    rho = law.rate_bound()
    for n in range(len(t) - 1):
        dt = t[n + 1] - t[n]
        steps = max(1, math.ceil(dt * rho / STEP_RATE))
        h = dt / steps
        a, b = levels[driver, n], levels[driver, n + 1]
        for s in range(steps):
            stage = []
            for frac in (0.0, 0.5, 0.5, 1.0):
                zs = z + (frac * h) * stage[-1] if stage else z.copy()
                zs[driver] = a + (b - a) * ((s + frac) / steps)
                stage.append(law.derivative(zs, feed))
            z = z + (h / 6.0) * (stage[0] + 2.0 * stage[1] + 2.0 * stage[2] + stage[3])
        z[driver] = b
        out[modelled, n + 1] = z[modelled]
    return out
