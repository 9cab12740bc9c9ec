"""Centroids -> label image: a bounded Voronoi tessellation, for labs that only have cell positions.

Cell ``i`` (centroid :math:`c_i`, pixel coordinates ``(x, y)``, pixel ``(row r, column c)`` centred at
``(x=c, y=r)``) gets every pixel :math:`p` of the image that is nearer to it than to any other
centroid and within the clip distance :math:`\\rho`:

.. math::

    C_i = \\{ p : \\|p - c_i\\| \\le \\|p - c_j\\| \\;\\forall j, \\; \\|p - c_i\\| \\le \\rho \\},

other pixels are background (0). In a confluent layer this is the Voronoi tiling the cells
approximate; :math:`\\rho` only bounds the cells on the outside of the layer, whose Voronoi regions
are unbounded.

**Default clip** :math:`\\rho = 1.5\\, \\tilde d` with :math:`\\tilde d` the median nearest-neighbour
distance between centroids (about one cell diameter in a confluent layer). An interior cell's region
is bounded by its Voronoi vertices. Measured on the centroids of confluent tilings (three synthetic
cultures of 108 cells and the zoo's members ``dev-0`` to ``dev-3``, 82 to 282 cells), the farthest
vertex of an interior cell lies at most :math:`1.15\\, \\tilde d` from its centroid (median
:math:`0.8\\, \\tilde d`; a factor of 0.75 would clip 60 to 80 % of the interior cells, 1.0 up to
4 %, 1.25 none). 1.5 leaves interior cells whole with a margin, while a cell on the outside of the
layer is cut to about a cell's reach instead of running to the image frame (which would give it a
huge area and long borders with its outer neighbours). The clip does not touch the borders between
an unclipped cell and its neighbours.

**Clipped cells.** A cell whose region is cut, by the clip distance (its Voronoi region is unbounded
or has a vertex further than :math:`\\rho`) or by the image frame (a vertex outside
``[-0.5, width - 0.5] x [-0.5, height - 0.5]``), is reported in ``clipped``: its shape and borders
are not its own, so setup I must treat it as a border cell (the graph marks it ``touches_edge``).
The test is exact (Qhull's Voronoi vertices), not pixel-based.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.spatial import QhullError, Voronoi, cKDTree

from calcium_gnn.errors import ConfigError, MasksError
from calcium_gnn.io.imagej_rois import check_image_shape

__all__ = [
    "DEFAULT_CLIP_FACTOR",
    "VoronoiTessellation",
    "median_neighbour_distance",
    "default_clip",
    "clipped_regions",
    "voronoi_labels",
]

#: the default clip distance in median nearest-neighbour distances (module docstring)
DEFAULT_CLIP_FACTOR = 1.5
#: pixels per nearest-neighbour query chunk (bounds the memory of a large image)
_CHUNK_PIXELS = 1 << 20


@dataclass(frozen=True)
class VoronoiTessellation:
    """A bounded Voronoi tessellation rasterised.

    Attributes:
        labels: (Y, X) int32 label image, cell ``i`` has label ``ids[i]``, 0 = background.
        clipped: (N,) bool, in the centroids' order: the cell's region is cut by the clip distance or
            the image frame.
        clip: the clip distance used, in px.
        clip_rule: how the clip was chosen (``"given"`` or ``"1.5 x median nearest-neighbour distance"``).
    """

    labels: np.ndarray
    clipped: np.ndarray
    clip: float
    clip_rule: str


def median_neighbour_distance(centroids: np.ndarray) -> float:
    """Median over cells of the distance to the nearest other centroid, px; ``centroids`` (N >= 2, 2)."""
    distance, _ = cKDTree(centroids).query(centroids, k=2)
    return float(np.median(distance[:, 1]))


def default_clip(centroids: np.ndarray) -> float:
    """The default clip distance :data:`DEFAULT_CLIP_FACTOR` x the median nearest-neighbour distance."""
    return DEFAULT_CLIP_FACTOR * median_neighbour_distance(centroids)


def clipped_regions(centroids: np.ndarray, clip: float, image_shape: tuple[int, int]) -> np.ndarray:
    """Which cells' Voronoi regions the clip distance or the image frame cut (module docstring).

    Args:
        centroids: (N, 2) distinct ``(x, y)`` in px.
        clip: the clip distance in px.
        image_shape: ``(height, width)``.

    Returns:
        (N,) bool. With fewer than 3 centroids, or all on a line, every region is unbounded: all True.
    """
    n = centroids.shape[0]
    if n < 3:
        return np.ones(n, dtype=bool)
    try:
        vor = Voronoi(centroids)
    except QhullError:  # degenerate (collinear) input: every region is unbounded
        return np.ones(n, dtype=bool)
    height, width = image_shape
    vertices = vor.vertices
    outside = (
        (vertices[:, 0] < -0.5)
        | (vertices[:, 0] > width - 0.5)
        | (vertices[:, 1] < -0.5)
        | (vertices[:, 1] > height - 0.5)
    )
    clipped = np.zeros(n, dtype=bool)
    for i, region_index in enumerate(vor.point_region):
        region = vor.regions[region_index]
        if not region or -1 in region:
            clipped[i] = True
            continue
        far = np.linalg.norm(vertices[region] - centroids[i], axis=1).max()
        clipped[i] = bool(far > clip * (1 + 1e-9) or outside[region].any())
    return clipped


def voronoi_labels(
    centroids: np.ndarray,
    image_shape: Sequence[int] | None = None,
    *,
    clip: float | None = None,
    ids: np.ndarray | None = None,
    source: str | Path = "centroids",
) -> VoronoiTessellation:
    """Rasterise the bounded Voronoi tessellation of ``centroids`` (module docstring).

    Args:
        centroids: (N, 2) ``(x, y)`` in px, N >= 2, distinct.
        image_shape: ``(height, width)``; None: from ``(0, 0)`` to the furthest centroid plus the clip
            distance (every pixel a cell can reach).
        clip: the clip distance in px (> 0); None: :func:`default_clip`.
        ids: (N,) distinct label ids >= 1 of the cells; None: ``1..N``.
        source: named in error messages (the centroids file).

    Returns:
        A :class:`VoronoiTessellation`.

    Raises:
        MasksError: fewer than 2 centroids, centroids outside the image, or a cell without a pixel
            (centroids closer than a pixel).
        ConfigError: a clip that is not a positive number (``data.voronoi_clip``), a bad
            ``image_shape`` (``data.image_shape``).
    """
    centroids = np.asarray(centroids, dtype=np.float64)
    if centroids.ndim != 2 or centroids.shape[1] != 2:
        raise MasksError(source, f"centroids must be (N, 2) (x, y), got shape {centroids.shape}")
    n = centroids.shape[0]
    if n < 2:
        raise MasksError(source, f"a tessellation needs at least 2 centroids, got {n}")
    ids = np.arange(1, n + 1, dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
    if ids.shape != (n,) or ids.min() < 1 or np.unique(ids).size != n or ids.max() > np.iinfo(np.int32).max:
        raise MasksError(source, "cell ids must be N distinct integers >= 1")
    rule = "given"
    if clip is None:
        clip, rule = default_clip(centroids), f"{DEFAULT_CLIP_FACTOR} x median nearest-neighbour distance"
    try:
        clip = float(clip)
    except (TypeError, ValueError):
        raise ConfigError("data.voronoi_clip", f"must be a positive number of pixels, got {clip!r}") from None
    if not (math.isfinite(clip) and clip > 0):
        raise ConfigError("data.voronoi_clip", f"must be a positive number of pixels, got {clip!r}")
    shape = check_image_shape(image_shape)
    if shape is None:
        far = centroids.max(axis=0) + clip
        shape = (int(math.floor(far[1])) + 1, int(math.floor(far[0])) + 1)
    height, width = shape
    beyond = (
        (centroids[:, 0] > width - 0.5) | (centroids[:, 1] > height - 0.5) | (centroids < -0.5).any(axis=1)
    )
    if beyond.any():
        i = int(np.nonzero(beyond)[0][0])
        raise MasksError(
            source,
            f"cell {int(ids[i])} at ({centroids[i, 0]:g}, {centroids[i, 1]:g}) lies outside the "
            f"{height} x {width} image (x is the column, y the row)",
        )
    tree = cKDTree(centroids)
    lookup = np.concatenate([ids, [0]]).astype(np.int32)  # query gives index n beyond the clip
    labels = np.empty(height * width, dtype=np.int32)
    rows_per_chunk = max(1, _CHUNK_PIXELS // width)
    cols = np.arange(width, dtype=np.float64)
    for top in range(0, height, rows_per_chunk):
        rows = np.arange(top, min(top + rows_per_chunk, height), dtype=np.float64)
        xy = np.column_stack([np.tile(cols, rows.size), np.repeat(rows, width)])
        _, index = tree.query(xy, k=1, distance_upper_bound=clip * (1 + 1e-12))
        labels[top * width : top * width + xy.shape[0]] = lookup[index]
    labels = labels.reshape(height, width)
    lost = np.setdiff1d(ids, np.unique(labels))
    if lost.size:
        raise MasksError(
            source, f"cell {int(lost[0])} got no pixel (its centroid is within a pixel of another's)"
        )
    return VoronoiTessellation(labels, clipped_regions(centroids, clip, shape), clip, rule)
