"""The ground truth of a zoo member: geometry, drivers, feeds and clean traces (no rendering).

:func:`make_zoo_culture` follows the member's parameters (:mod:`calcium_gnn.data.zoo_params`):

1. geometry: a Lloyd-relaxed Voronoi tiling of ``n_cells`` seeds in a ``side`` x ``side`` image, its
   exact polygons, ``l_ij``, ``u_ij``, areas and edge cells
   (:func:`calcium_gnn.data.synthetic_geometry.polygon_geometry`); the label image is rasterised only
   when a movie is rendered. A tiling in which a modelled cell has no neighbour or a group of interior
   cells touches no edge cell is redrawn from the same stream (deterministic);
2. drivers and their levels at the frame times (:mod:`calcium_gnn.data.zoo_drivers`);
3. feeds ``gamma_i = r_min * feed_offset * u_i`` with ``u_i`` uniform in ``[0.2, 1]``, ``[-1, -0.2]`` or
   ``[-1, 1]`` (``feed_sign`` positive, negative or mixed) and ``r_min`` the slowest decay rate of the
   modelled cells, so a feed moves the steady state by about ``feed_offset`` calcium units at most,
   whatever ``k`` and the culture's size;
4. the modelled cells' traces by the exact modal solution (:mod:`calcium_gnn.data.zoo_dynamics`), or,
   for a member of a nonlinear law, by RK4 from the law's steady state (:mod:`calcium_gnn.data.zoo_laws`;
   the feeds' scale still comes from the linear law's slowest rate).

Randomness: ``numpy.random.SeedSequence(ZOO_ENTROPY, spawn_key=member.key)`` spawns the member's
streams (:data:`STREAMS`), so the traces do not depend on whether the movie is rendered and the
observation noise does not depend on the imaging.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from calcium_gnn.data import zoo_params as zp
from calcium_gnn.data.synthetic_dynamics import consensus_system
from calcium_gnn.data.synthetic_geometry import lloyd_relaxation, polygon_geometry, rasterise, voronoi_cells
from calcium_gnn.data.zoo_drivers import DriverPlan, draw_drivers
from calcium_gnn.data.zoo_dynamics import LawSystem, integrate_exact, law_system
from calcium_gnn.data.zoo_laws import NONLINEAR_LAWS, integrate_rk4, resolve_law, steady_state
from calcium_gnn.errors import ConfigError

#: the root entropy of every zoo draw (disjoint from ``make_culture(seed)``'s ``SeedSequence(seed)``)
ZOO_ENTROPY: int = 0x5EED_200
STREAMS: tuple[str, ...] = ("params", "geometry", "drivers", "feeds", "observation", "imaging")
#: geometry redraws before giving up
MAX_TILINGS: int = 20
#: a tiling whose smallest cell is below this fraction of the mean area is redrawn
MIN_AREA_FRACTION: float = 0.1


def member_streams(key: tuple[int, ...]) -> dict[str, np.random.Generator]:
    """The member's independent random streams (:data:`STREAMS`) from its spawn key."""
    children = np.random.SeedSequence(ZOO_ENTROPY, spawn_key=key).spawn(len(STREAMS))
    return {name: np.random.default_rng(child) for name, child in zip(STREAMS, children, strict=True)}


@dataclass
class ZooCulture:
    """A member's ground truth: ``N`` cells (node ``i`` has label ``i + 1``), ``T`` frames, ``E`` edges.

    Attributes:
        params: the member's parameters.
        seeds: (N, 2) Voronoi seeds ``(x, y)`` (px); ``side``: image side (px).
        centroids: (N, 2) polygon centroids (px); areas: (N,) polygon areas (px**2).
        touches_edge: (N,) bool; edge_index: (2, E) pairs ``i < j``; l, u: (E,) px.
        edge_weight_scale: ``s = mean(u * l)``; ``w = u * l / s``.
        t: (T,) frame times (s); traces: (N, T) clean levels.
        drivers: which cells are drivers (``kind``) and their prescribed levels.
        gamma: (N,) true feeds (1/s), NaN for drivers.
        k, leak, leak_baseline: the law's constants (``leak = 0`` for the linear law).
        system: the diagonalised linear law of the modelled cells (eq. 3, with the leak).
        law: the member's law; law_constants: a nonlinear law's resolved constants
            (:attr:`calcium_gnn.data.zoo_laws.NonlinearLaw.constants`), empty for ``linear`` / ``leak``.
    """

    params: dict[str, Any]
    seeds: np.ndarray
    side: int
    centroids: np.ndarray
    areas: np.ndarray
    touches_edge: np.ndarray
    edge_index: np.ndarray
    l: np.ndarray
    u: np.ndarray
    edge_weight_scale: float
    t: np.ndarray
    traces: np.ndarray
    drivers: DriverPlan
    gamma: np.ndarray
    k: float
    leak: float
    leak_baseline: float
    system: LawSystem
    law: str = "linear"
    law_constants: dict[str, float] = field(default_factory=dict)

    @property
    def is_driver(self) -> np.ndarray:
        """(N,) bool, the cells with prescribed levels."""
        return self.drivers.is_driver

    @property
    def weight(self) -> np.ndarray:
        """(E,) ``w_ij = u_ij l_ij / s``."""
        return self.u * self.l / self.edge_weight_scale

    def labels(self) -> np.ndarray:
        """(side, side) int32 label image, 0 = membrane (rasterised now: the costly part of a movie)."""
        return rasterise(self.seeds, self.side, self.params["membrane_width"])


def _tiling(p: dict[str, Any], rng: np.random.Generator) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """Seeds and exact geometry of a tiling in which every interior cell can follow the law."""
    n, side = p["n_cells"], p["side"]
    for _ in range(MAX_TILINGS):
        seeds = lloyd_relaxation(rng.uniform(-0.5, side - 0.5, size=(n, 2)), side, p["lloyd_iterations"])
        geometry = polygon_geometry(voronoi_cells(seeds, side), side, p["min_shared_border"])
        centroids, areas, touches_edge, edge_index, l, u = geometry
        if areas.min() < MIN_AREA_FRACTION * areas.mean() or touches_edge.all():
            continue
        try:
            consensus_system(n, edge_index, np.ones(len(l)), 1.0, np.zeros(n), touches_edge)
        except ConfigError:
            continue
        return seeds, geometry
    raise ConfigError("zoo n_cells", f"no valid tiling of {n} cells in {side} px after {MAX_TILINGS} draws")


def _feeds(p: dict[str, Any], system: LawSystem, rng: np.random.Generator) -> np.ndarray:
    """(M,) feeds of the modelled cells (module docstring, step 3)."""
    m = len(system.ode_nodes)
    low, high = {"positive": (zp.FEED_FLOOR, 1.0), "negative": (-1.0, -zp.FEED_FLOOR), "mixed": (-1.0, 1.0)}[
        p["feed_sign"]
    ]
    return system.slowest_rate * p["feed_offset"] * rng.uniform(low, high, size=m)


def make_zoo_culture(params: dict[str, Any], key: tuple[int, ...]) -> ZooCulture:
    """The ground truth of the member with parameters ``params`` and spawn key ``key`` (module docstring).

    Raises:
        ConfigError: when no valid tiling is found (parameters outside the zoo's ranges).
    """
    p = params
    rng = member_streams(key)
    seeds, (centroids, areas, touches_edge, edge_index, l, u) = _tiling(p, rng["geometry"])
    t = np.arange(p["n_frames"]) * float(p["dt"])
    plan = draw_drivers(p, touches_edge, centroids, t, rng["drivers"])
    scale = float((u * l).mean())
    system = law_system(len(areas), edge_index, u * l / scale, p["k"], plan.is_driver, p["leak"])
    gamma_o = _feeds(p, system, rng["feeds"])
    traces = plan.levels.copy()
    drive = plan.levels[system.driver_nodes]
    constants: dict[str, float] = {}
    if p["law"] in NONLINEAR_LAWS:
        law = resolve_law(p["law"], p, p["k"], edge_index, u * l / scale, len(areas), centroids, drive)
        feed = np.zeros(len(areas))
        feed[system.ode_nodes] = gamma_o
        start = plan.levels[:, 0].copy()
        start[system.ode_nodes] = integrate_exact(system, drive[:, :1], t[:1], gamma_o)[:, 0]
        start = steady_state(law, start, ~plan.is_driver, feed)
        traces = integrate_rk4(law, start, plan.levels, t, ~plan.is_driver, feed)
        constants = dict(law.constants)
    else:
        traces[system.ode_nodes] = integrate_exact(system, drive, t, gamma_o + p["leak"] * p["leak_baseline"])
    gamma = np.full(len(areas), np.nan)
    gamma[system.ode_nodes] = gamma_o
    return ZooCulture(
        params=p,
        seeds=seeds,
        side=p["side"],
        centroids=centroids,
        areas=areas,
        touches_edge=touches_edge,
        edge_index=edge_index,
        l=l,
        u=u,
        edge_weight_scale=scale,
        t=t,
        traces=traces,
        drivers=plan,
        gamma=gamma,
        k=float(p["k"]),
        leak=float(p["leak"]),
        leak_baseline=float(p["leak_baseline"]),
        system=system,
        law=str(p["law"]),
        law_constants=constants,
    )
