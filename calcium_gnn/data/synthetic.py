"""Synthetic calcium cultures with known ground truth.

:func:`make_culture` draws a confluent tiling of irregular cells (``synthetic_geometry``), makes the
cells touching the image edge *drivers* with prescribed calcium transients, lets every other cell
follow the paper's consensus ODE with a per-cell feed (eq. 3, ``synthetic_dynamics``)

.. math::
    \\dot y_i = \\frac{k}{|N_i|} \\sum_{j \\in N_i} w_{ij} (z_j - y_i) + \\gamma_i,
    \\qquad w_{ij} = \\frac{u_{ij} l_{ij}}{s}, \\quad s = \\operatorname{mean}_{\\text{edges}}(u l),

and renders the fluorescence movie (``synthetic_imaging``). :func:`truth_graph` turns the ground
truth into a cell graph that follows ``calcium_gnn.io.graph_schema``. Saving, loading and the cache of
generated cultures: ``calcium_gnn.data.synthetic_files`` (the file format: ``calcium_gnn.io.culture_files``).

Randomness: one ``numpy.random.SeedSequence(seed)`` spawns four independent streams (geometry,
dynamics, hot pixels, imaging noise), so the traces do not depend on whether the movie is rendered.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from calcium_gnn.data.synthetic_dynamics import consensus_system, draw_driver_transients, simulate_culture
from calcium_gnn.data.synthetic_geometry import make_tiling
from calcium_gnn.data.synthetic_imaging import draw_hot_pixels, render_movie
from calcium_gnn.errors import ConfigError

if TYPE_CHECKING:  # torch is imported where a graph is built, so generating files stays light
    import torch
    from torch_geometric.data import Data

N_STREAMS = 4
GEOMETRY, DYNAMICS, HOT_PIXELS, IMAGING = range(N_STREAMS)


@dataclass
class SyntheticCulture:
    """A synthetic culture and its ground truth. ``N`` cells, ``T`` frames, ``E`` undirected edges.

    Node ``i`` is the cell with label ``cell_ids[i] = i + 1``.

    Attributes:
        labels: (Y, X) int32 label image, 0 = membrane.
        traces: (N, T) float64 clean calcium levels.
        t: (T,) frame times in s (``arange(T) * dt``).
        dt: frame interval in s.
        k: the true coupling constant (1/s).
        gamma: (N,) true feed terms (1/s); NaN for drivers.
        is_driver: (N,) bool, cells with prescribed transients (the cells touching the image edge).
        touches_edge: (N,) bool, the cell's polygon shares a segment with the image border.
        edge_index: (2, E) int64 undirected adjacent pairs ``i < j`` (node indices), sorted.
        l: (E,) shared border length ``l_ij`` in px (the Voronoi edge, i.e. the membrane midline).
        u: (E,) centroid distance ``u_ij`` in px (between polygon centroids).
        centroids: (N, 2) polygon centroids ``(x, y)`` in px, pixel ``(r, c)`` centred at ``(c, r)``.
        areas: (N,) polygon areas in px**2.
        cell_ids: (N,) int64 labels, ``arange(1, N + 1)``.
        edge_weight_scale: ``s = mean(u * l)`` over the edges; ``w = u * l / s``.
        seed: the seed everything was drawn from.
        params: every generation parameter (the keyword arguments of :func:`make_culture`).
        hot_pixels: (H, 3) int64 rows ``(frame, y, x)`` of the movie's hot pixels.
        path: the directory the culture was saved to / loaded from, if any.
    """

    labels: np.ndarray
    traces: np.ndarray
    t: np.ndarray
    dt: float
    k: float
    gamma: np.ndarray
    is_driver: np.ndarray
    touches_edge: np.ndarray
    edge_index: np.ndarray
    l: np.ndarray
    u: np.ndarray
    centroids: np.ndarray
    areas: np.ndarray
    cell_ids: np.ndarray
    edge_weight_scale: float
    seed: int
    params: dict[str, Any]
    hot_pixels: np.ndarray
    path: Path | None = None
    _movie: np.ndarray | None = field(default=None, repr=False)

    @property
    def n_cells(self) -> int:
        return self.traces.shape[0]

    @property
    def n_frames(self) -> int:
        return self.traces.shape[1]

    @property
    def weight(self) -> np.ndarray:
        """(E,) normalised edge weights ``w_ij = u_ij l_ij / s``."""
        return self.u * self.l / self.edge_weight_scale

    @property
    def movie(self) -> np.ndarray:
        """(T, Y, X) uint16 fluorescence movie.

        On first access it is read from ``path/movie.tif`` when the culture was loaded without its
        movie, else rendered (deterministic for the seed and params).
        """
        if self._movie is None:
            saved = None if self.path is None else Path(self.path) / "movie.tif"
            if saved is not None and saved.is_file():
                from calcium_gnn.io.culture_files import read_culture_movie

                self._movie = read_culture_movie(saved, (self.n_frames,) + self.labels.shape)
            else:
                self._movie = render_culture_movie(self)
        return self._movie

    @property
    def has_movie(self) -> bool:
        """Whether the movie is already rendered / loaded (accessing ``movie`` renders it)."""
        return self._movie is not None


def _streams(seed: int) -> list[np.random.Generator]:
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(N_STREAMS)]


def make_culture(
    seed: int = 0,
    n_cells: int = 108,
    size: int = 512,
    n_frames: int = 361,
    dt: float = 10.0,
    k: float = 0.02,
    gamma_range: tuple[float, float] = (2e-4, 1e-3),
    substeps: int = 20,
    lloyd_iterations: int = 6,
    membrane_width: float = 2.0,
    min_shared_border: float = 5.0,
    baseline_range: tuple[float, float] = (0.2, 0.4),
    drift_amplitude_range: tuple[float, float] = (0.0, 0.05),
    drift_period_range: tuple[float, float] = (1800.0, 7200.0),
    event_rate: float = 1.0 / 300.0,
    amplitude_range: tuple[float, float] = (0.3, 1.0),
    rise_range: tuple[float, float] = (3.0, 6.0),
    decay_range: tuple[float, float] = (40.0, 120.0),
    wave_rate: float = 1.0 / 600.0,
    wave_speed: float = 10.0,
    wave_participation: float = 0.8,
    imaging_noise: float = 1.0,
    f_min: float = 300.0,
    f_max: float = 3000.0,
    k_d: float = 5.0,
    f_membrane: float = 100.0,
    blur_sigma: float = 1.0,
    bleach_time: float = 300000.0,
    read_noise: float = 3.0,
    gain: float = 1.0,
    offset: float = 100.0,
    hot_frames: int = 4,
    hot_pixels_per_frame: tuple[int, int] = (1, 3),
    hot_value: int = 60000,
    poisson_normal_above: float = 50.0,
    render: bool = True,
) -> SyntheticCulture:
    """Generate a synthetic culture with ground truth.

    Geometry (``synthetic_geometry.make_tiling``):
        seed: seed of every random draw. n_cells: N. size: image side in px.
        lloyd_iterations: Lloyd relaxation steps of the Voronoi tiling.
        membrane_width: membrane thickness in px (label 0).
        min_shared_border: adjacency threshold on ``l_ij`` in px.

    Dynamics (``synthetic_dynamics``; eq. 3; drivers = cells touching the image edge):
        n_frames: T. dt: frame interval in s (default 10 s, 361 frames = one hour as in the paper).
        k: the coupling constant in 1/s (inside the paper's CRLSM bounds [0.001, 0.1]).
        gamma_range: per-cell feed ``gamma_i`` drawn uniformly (1/s; inside [-3e-5, 0.1]).
        substeps: RK4 steps per frame.
        baseline_range, drift_amplitude_range, drift_period_range, event_rate, amplitude_range,
        rise_range, decay_range, wave_rate, wave_speed, wave_participation: the drivers' baseline,
        slow drift, Poisson transients and calcium waves (``synthetic_dynamics.draw_driver_transients``).

    Imaging (``synthetic_imaging.render_movie``):
        imaging_noise: multiplier of the shot and read noise (0 = noiseless except rounding).
        f_min, f_max, k_d: dye response; f_membrane: membrane brightness; blur_sigma: PSF (px);
        bleach_time: photobleaching time constant (s); read_noise, gain, offset: camera.
        poisson_normal_above: mean photon count above which shot noise uses the normal
            approximation of the Poisson law (1e9 = exact Poisson everywhere).
        hot_frames, hot_pixels_per_frame, hot_value: hot pixels (positions drawn here, recorded in
        ``hot_pixels``; independent of ``imaging_noise``: set ``hot_frames=0`` for none).
        render: render the movie now (else on first access of ``culture.movie``).

    Raises:
        ConfigError: naming the parameter when the values cannot give a valid culture.
    """
    params = {name: _plain(value) for name, value in locals().items() if name not in ("render", "seed")}
    _check_params(params)
    rng = _streams(seed)
    tiling = make_tiling(
        n_cells,
        size,
        rng[GEOMETRY],
        lloyd_iterations=lloyd_iterations,
        membrane_width=membrane_width,
        min_shared_border=min_shared_border,
    )
    if tiling.edge_index.shape[1] == 0:
        raise ConfigError("min_shared_border", "no pair of cells shares a long enough border")
    is_driver = tiling.touches_edge.copy()
    if is_driver.all():
        raise ConfigError("n_cells", "every cell touches the image edge: no interior cell to model")
    product = tiling.u * tiling.l
    scale = float(product.mean())
    t = np.arange(n_frames) * float(dt)
    gamma = rng[DYNAMICS].uniform(*gamma_range, size=n_cells)
    gamma[is_driver] = np.nan
    drivers = draw_driver_transients(
        int(is_driver.sum()),
        float(t[-1]),
        rng[DYNAMICS],
        positions=tiling.centroids[is_driver],
        wave_rate=wave_rate,
        wave_speed=wave_speed,
        wave_participation=wave_participation,
        baseline_range=baseline_range,
        drift_amplitude_range=drift_amplitude_range,
        drift_period_range=drift_period_range,
        event_rate=event_rate,
        amplitude_range=amplitude_range,
        rise_range=rise_range,
        decay_range=decay_range,
    )
    system = consensus_system(n_cells, tiling.edge_index, product / scale, k, np.nan_to_num(gamma), is_driver)
    traces = simulate_culture(system, drivers, t, substeps)
    hot = draw_hot_pixels(
        n_frames, size, rng[HOT_PIXELS], hot_frames=hot_frames, hot_pixels_per_frame=hot_pixels_per_frame
    )
    culture = SyntheticCulture(
        labels=tiling.labels,
        traces=traces,
        t=t,
        dt=float(dt),
        k=float(k),
        gamma=gamma,
        is_driver=is_driver,
        touches_edge=tiling.touches_edge,
        edge_index=tiling.edge_index,
        l=tiling.l,
        u=tiling.u,
        centroids=tiling.centroids,
        areas=tiling.areas,
        cell_ids=np.arange(1, n_cells + 1, dtype=np.int64),
        edge_weight_scale=scale,
        seed=int(seed),
        params=params,
        hot_pixels=hot,
    )
    if render:
        _ = culture.movie
    return culture


def render_culture_movie(culture: SyntheticCulture) -> np.ndarray:
    """Render ``culture``'s movie (T, Y, X) uint16 from its traces, labels, hot pixels and params."""
    p = culture.params
    return render_movie(
        culture.labels,
        culture.traces,
        culture.t,
        _streams(culture.seed)[IMAGING],
        hot_pixels=culture.hot_pixels,
        f_min=p["f_min"],
        f_max=p["f_max"],
        k_d=p["k_d"],
        f_membrane=p["f_membrane"],
        blur_sigma=p["blur_sigma"],
        bleach_time=p["bleach_time"],
        noise=p["imaging_noise"],
        read_noise=p["read_noise"],
        gain=p["gain"],
        offset=p["offset"],
        hot_value=p["hot_value"],
        poisson_normal_above=p["poisson_normal_above"],
    )


def culture_params(**params: Any) -> dict[str, Any]:
    """All generation parameters of :func:`make_culture` (defaults filled in), as plain JSON values.

    Raises:
        ConfigError: for a name that is not a parameter of :func:`make_culture`.
    """
    signature = inspect.signature(make_culture)
    for name in params:
        if name not in signature.parameters or name == "render":
            raise ConfigError(name, "not a parameter of the synthetic culture (make_culture)")
    full = {name: p.default for name, p in signature.parameters.items() if name != "render"}
    full.update(params)
    return {name: _plain(value) for name, value in full.items()}


def truth_graph(
    culture: SyntheticCulture,
    noise: float = 0.0,
    seed: int = 0,
    dtype: torch.dtype | None = None,
) -> Data:
    """The cell graph of the ground truth, following ``calcium_gnn.io.graph_schema``.

    ``x = truth_x + sigma * N(0, 1)`` i.i.d. per entry, with ``sigma = noise * (max - min)`` over all
    clean traces (the observation noise is a fraction of the dynamic range). Nodes are ordered by
    ``cell_id``; edges are both directions of every adjacent pair, sorted by (source, target), no
    self loops; ``edge_attr = u * l`` (E, 1). ``pos`` holds the polygon centroids ``(x, y)``.

    Args:
        culture: the synthetic culture.
        noise: observation noise as a fraction of the traces' dynamic range (>= 0).
        seed: seed of the observation noise.
        dtype: floating dtype of the tensors (default ``torch.float32``).

    Returns:
        ``Data`` with the schema fields (``unit="px"``, ``pixel_size=nan``) plus ``truth_k``,
        ``truth_gamma`` (N,) (NaN for drivers), ``truth_edge_weight_scale``, ``truth_x`` (N, T),
        ``is_driver`` (N,).
    """
    import torch

    from calcium_gnn.io.graph_schema import validate_graph

    if not noise >= 0:
        raise ConfigError("noise", f"must be >= 0, got {noise}")
    dtype = torch.float32 if dtype is None else dtype
    clean = culture.traces
    sigma = float(noise) * float(clean.max() - clean.min())
    observed = clean + sigma * np.random.default_rng(seed).standard_normal(clean.shape)
    data = true_geometry_graph(
        observed, clean, culture.t, culture.centroids, culture.areas, culture.touches_edge,
        culture.edge_index, culture.u, culture.l, culture.cell_ids, dt=float(culture.dt),
        image_shape=(int(culture.labels.shape[0]), int(culture.labels.shape[1])), k=float(culture.k),
        gamma=culture.gamma, edge_weight_scale=float(culture.edge_weight_scale),
        is_driver=culture.is_driver, dtype=dtype,
    )
    return validate_graph(data, "synthetic culture")


def true_geometry_graph(
    observed: np.ndarray,
    clean: np.ndarray,
    t: np.ndarray,
    centroids: np.ndarray,
    areas: np.ndarray,
    touches_edge: np.ndarray,
    edge_index: np.ndarray,
    u: np.ndarray,
    l: np.ndarray,
    cell_ids: np.ndarray,
    *,
    dt: float,
    image_shape: tuple[int, int],
    k: float,
    gamma: np.ndarray,
    edge_weight_scale: float,
    is_driver: np.ndarray,
    dtype: torch.dtype,
) -> Data:
    """The (unvalidated) cell graph of a synthetic culture from its exact geometry and traces.

    Both directions of every adjacent pair (``edge_index`` (2, P) holds each pair once, ``u``, ``l``
    (P,)), sorted by (source, target); ``edge_attr = u * l`` (E, 1); float tensors of ``dtype``; px
    units. ``observed`` / ``clean`` (N, T) become ``x`` / ``truth_x``; ``truth_k``, ``truth_gamma``,
    ``truth_edge_weight_scale`` and ``is_driver`` carry the truth.
    """
    import torch
    from torch_geometric.data import Data

    src = np.concatenate([edge_index[0], edge_index[1]])
    dst = np.concatenate([edge_index[1], edge_index[0]])
    order = np.lexsort((dst, src))
    src, dst = src[order], dst[order]
    u = np.concatenate([u, u])[order]
    l = np.concatenate([l, l])[order]

    def f(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(a, dtype=float), dtype=dtype)

    return Data(
        x=f(observed),
        t=f(t),
        pos=f(centroids),
        edge_index=torch.as_tensor(np.vstack([src, dst]), dtype=torch.long),
        edge_attr=f(u * l)[:, None],
        u=f(u),
        l=f(l),
        area=f(areas),
        touches_edge=torch.as_tensor(touches_edge, dtype=torch.bool),
        cell_id=torch.as_tensor(cell_ids, dtype=torch.long),
        dt=float(dt),
        pixel_size=float("nan"),
        unit="px",
        image_shape=image_shape,
        truth_k=float(k),
        truth_gamma=f(gamma),
        truth_edge_weight_scale=float(edge_weight_scale),
        truth_x=f(clean),
        is_driver=torch.as_tensor(is_driver, dtype=torch.bool),
    )


def _plain(value: Any) -> Any:
    """JSON-ready copy of a parameter value (tuples / Hydra ListConfigs become lists)."""
    if isinstance(value, (str, bool, int, float)) or value is None:
        return value
    if isinstance(value, np.generic):
        return value.item()
    try:
        return [_plain(v) for v in value]
    except TypeError:
        return value


def _check_params(p: dict[str, Any]) -> None:
    """One-line ConfigErrors for values that cannot give a valid culture."""
    checks = [
        ("n_frames", p["n_frames"] >= 2, "need at least 2 frames"),
        ("dt", p["dt"] > 0, "frame interval must be > 0 s"),
        ("k", p["k"] > 0, "coupling constant must be > 0"),
        ("substeps", p["substeps"] >= 1, "need at least 1 RK4 step per frame"),
        (
            "gamma_range",
            len(p["gamma_range"]) == 2 and p["gamma_range"][0] <= p["gamma_range"][1],
            "must be [low, high] with low <= high",
        ),
        ("bleach_time", p["bleach_time"] > 0, "must be > 0 s"),
        ("k_d", p["k_d"] > 0, "must be > 0"),
        ("imaging_noise", p["imaging_noise"] >= 0, "must be >= 0"),
    ]
    for key, ok, problem in checks:
        if not ok:
            raise ConfigError(key, f"{problem}, got {p[key]!r}")
