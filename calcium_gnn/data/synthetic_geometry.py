"""The geometry of a synthetic culture: a confluent tiling of irregular polygonal cells.

Cells are the Voronoi cells of ``n_cells`` seeded random points in the image square, made regular
by Lloyd relaxation (each point moves to the centroid of its cell, repeated). The true geometry of
every adjacent pair is computed exactly from the polygons with shapely, independently of any
pixel-based graph builder:

* ``l_ij``: the length (px) of the shared Voronoi edge, i.e. the membrane midline between cells
  ``i`` and ``j``; the pair is adjacent when ``l_ij >= min_shared_border``;
* ``u_ij``: the distance (px) between the centroids of the two cell *polygons*;
* ``area_i``: the polygon area (px**2), membrane half-widths included.

Coordinates: ``(x, y)`` with pixel ``(row r, column c)`` centred at ``(x=c, y=r)``, so the image
square is ``[-0.5, size - 0.5]**2`` (the convention of scikit-image ``regionprops``).

The label image (Y, X) is the rasterised tiling: a pixel belongs to the cell of its nearest seed
(that is the Voronoi cell holding the pixel centre) unless its centre lies closer than
``membrane_width / 2`` to a Voronoi edge, in which case it is membrane (label 0). Cell ``i``
(0-based node index) has label ``i + 1``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely
from scipy.spatial import cKDTree

from calcium_gnn.errors import ConfigError


@dataclass
class Tiling:
    """A confluent tiling of ``N`` cells in a ``size`` x ``size`` image, with its exact geometry.

    Attributes:
        seeds: (N, 2) float, the Voronoi seeds ``(x, y)`` after Lloyd relaxation.
        polygons: (N,) shapely Polygons, cell ``i`` is ``polygons[i]``.
        labels: (size, size) int32 label image, 0 = membrane, ``i + 1`` = cell ``i``.
        centroids: (N, 2) float, polygon centroids ``(x, y)`` in px.
        areas: (N,) float, polygon areas in px**2.
        touches_edge: (N,) bool, the polygon shares a segment of positive length with the image border.
        edge_index: (2, E) int64, undirected adjacent pairs ``i < j``, sorted lexicographically.
        l: (E,) float, shared border length ``l_ij`` in px.
        u: (E,) float, centroid distance ``u_ij`` in px.
    """

    seeds: np.ndarray
    polygons: np.ndarray
    labels: np.ndarray
    centroids: np.ndarray
    areas: np.ndarray
    touches_edge: np.ndarray
    edge_index: np.ndarray
    l: np.ndarray
    u: np.ndarray


def image_box(size: int) -> shapely.Polygon:
    """The image square ``[-0.5, size - 0.5]**2`` in the pixel-centre convention of this module."""
    return shapely.box(-0.5, -0.5, size - 0.5, size - 0.5)


def voronoi_cells(seeds: np.ndarray, size: int) -> np.ndarray:
    """The Voronoi cells of ``seeds`` (N, 2) clipped to the image square; (N,) Polygons, in seed order."""
    box = image_box(size)
    cells = shapely.voronoi_polygons(shapely.MultiPoint(seeds), extend_to=box, ordered=True)
    return shapely.intersection(np.asarray(cells.geoms, dtype=object), box)


def lloyd_relaxation(seeds: np.ndarray, size: int, iterations: int) -> np.ndarray:
    """Move every seed to the centroid of its clipped Voronoi cell, ``iterations`` times; (N, 2)."""
    for _ in range(iterations):
        seeds = shapely.get_coordinates(shapely.centroid(voronoi_cells(seeds, size)))
    return seeds


def rasterise(seeds: np.ndarray, size: int, membrane_width: float, n_candidates: int = 4) -> np.ndarray:
    """The label image (size, size) int32 of the Voronoi tiling of ``seeds`` with membranes.

    The distance from a pixel centre ``p`` (nearest seed ``a``) to the bisector of ``a`` and another
    seed ``b`` is ``(|p-b|**2 - |p-a|**2) / (2 |a-b|)``; the distance to the cell boundary is the
    minimum over the ``n_candidates - 1`` next-nearest seeds (exact for the Voronoi edges near ``p``).
    Pixels closer than ``membrane_width / 2`` to the boundary are membrane (0).
    """
    n_candidates = min(n_candidates, len(seeds))
    rows, cols = np.mgrid[0:size, 0:size]
    centres = np.column_stack([cols.ravel(), rows.ravel()]).astype(float)
    _, idx = cKDTree(seeds).query(centres, k=n_candidates)
    idx = idx.reshape(len(centres), n_candidates)
    nearest = idx[:, 0]
    labels = nearest.astype(np.int32) + 1
    if n_candidates > 1:
        squared = ((seeds[idx] - centres[:, None, :]) ** 2).sum(axis=-1)  # exact, not sqrt-ed
        gap = np.linalg.norm(seeds[idx[:, 1:]] - seeds[nearest][:, None, :], axis=-1)
        to_edge = (squared[:, 1:] - squared[:, :1]) / (2.0 * gap)
        labels[to_edge.min(axis=1) < membrane_width / 2.0] = 0
    return labels.reshape(size, size)


def shared_borders(polygons: np.ndarray, tolerance: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """Every pair ``i < j`` of polygons that share a border of positive length, and that length.

    The shared border is the part of ``i``'s boundary within ``tolerance`` px of polygon ``j``
    (robust to round-off in the clipped Voronoi vertices).

    Returns:
        pairs: (2, P) int64, sorted lexicographically; lengths: (P,) float in px.
    """
    tree = shapely.STRtree(polygons)
    left, right = tree.query(polygons, predicate="intersects")
    keep = left < right
    left, right = left[keep], right[keep]
    grown = shapely.buffer(polygons[right], tolerance)
    lengths = shapely.length(shapely.intersection(shapely.boundary(polygons[left]), grown))
    order = np.lexsort((right, left))
    pairs = np.vstack([left[order], right[order]]).astype(np.int64)
    return pairs, np.asarray(lengths[order], dtype=float)


def make_tiling(
    n_cells: int,
    size: int,
    rng: np.random.Generator,
    *,
    lloyd_iterations: int = 6,
    membrane_width: float = 2.0,
    min_shared_border: float = 5.0,
    min_cell_pixels: int = 20,
    geometry_tolerance: float = 1e-6,
) -> Tiling:
    """Draw a Lloyd-relaxed Voronoi tiling and compute its exact geometry.

    Args:
        n_cells: number of cells N.
        size: image side in px (the image is ``size`` x ``size``).
        rng: the random generator for the seeds.
        lloyd_iterations: Lloyd relaxation steps (0 = raw Voronoi; more = rounder, more even cells).
        membrane_width: thickness (px) of the membrane band (label 0) around the Voronoi edges.
        min_shared_border: two cells are adjacent when their shared border ``l_ij`` (px) is at
            least this long (the paper's adjacency threshold).
        min_cell_pixels: every cell must keep at least this many labelled pixels.
        geometry_tolerance: px; boundaries closer than this coincide (round-off of clipped
            Voronoi vertices). A cell touches the image edge when more than 4x this length of its
            boundary lies on the border (a corner contact alone gives about 2x).

    Raises:
        ConfigError: when the parameters cannot give a usable tiling.
    """
    if n_cells < 2:
        raise ConfigError("n_cells", f"need at least 2 cells, got {n_cells}")
    if size < 8:
        raise ConfigError("size", f"image side must be at least 8 px, got {size}")
    if membrane_width < 0:
        raise ConfigError("membrane_width", f"must be >= 0, got {membrane_width}")
    seeds = rng.uniform(-0.5, size - 0.5, size=(n_cells, 2))
    seeds = lloyd_relaxation(seeds, size, lloyd_iterations)
    polygons = voronoi_cells(seeds, size)
    labels = rasterise(seeds, size, membrane_width)
    counts = np.bincount(labels.ravel(), minlength=n_cells + 1)[1:]
    if counts.min() < min_cell_pixels:
        raise ConfigError(
            "n_cells",
            f"{n_cells} cells in {size}x{size} px leaves a cell with {counts.min()} pixels "
            f"(< {min_cell_pixels}); use fewer cells or a larger image",
        )
    geometry = polygon_geometry(polygons, size, min_shared_border, geometry_tolerance)
    return Tiling(seeds, polygons, labels, *geometry)


def polygon_geometry(
    polygons: np.ndarray, size: int, min_shared_border: float, geometry_tolerance: float = 1e-6
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The exact geometry of a tiling of the ``size`` x ``size`` image by ``polygons`` (N,).

    A cell touches the image edge when more than ``4 * geometry_tolerance`` px of its boundary lies
    on the border (a corner contact alone gives about 2x); two cells are adjacent when they share at
    least ``min_shared_border`` px of border (:func:`shared_borders`).

    Returns:
        ``(centroids (N, 2), areas (N,), touches_edge (N,) bool, edge_index (2, E), l (E,), u (E,))``
        as the fields of :class:`Tiling`.
    """
    centroids = shapely.get_coordinates(shapely.centroid(polygons))
    areas = shapely.area(polygons)
    border = shapely.buffer(shapely.boundary(image_box(size)), geometry_tolerance)
    on_border = shapely.length(shapely.intersection(shapely.boundary(polygons), border))
    touches_edge = on_border > 4.0 * geometry_tolerance  # more than the corner's buffer crossing
    pairs, lengths = shared_borders(polygons, geometry_tolerance)
    adjacent = lengths >= min_shared_border
    edge_index, l = pairs[:, adjacent], lengths[adjacent]
    u = np.linalg.norm(centroids[edge_index[0]] - centroids[edge_index[1]], axis=1)
    return centroids, areas, touches_edge, edge_index, l, u
