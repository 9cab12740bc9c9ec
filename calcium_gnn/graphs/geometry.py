"""Per-cell geometry from a label image: area, centroid, image-edge flag and a shapely polygon.

A label image ``labels`` (Y, X) holds ``0`` for background / membranes and the cell's id
(``>= 1``) on each of its pixels. Cells are listed in ascending ``cell_id`` everywhere in
:mod:`calcium_gnn.graphs`, so row ``i`` of every per-cell array is the same cell.

For a cell :math:`C_i` (a set of pixels ``(r, c)``, pixel centres at integer coordinates):

.. math::

    A_i = |C_i|, \\qquad
    \\bar{x}_i = \\frac{1}{A_i} \\sum_{(r, c) \\in C_i} c, \\qquad
    \\bar{y}_i = \\frac{1}{A_i} \\sum_{(r, c) \\in C_i} r

(pixel-exact area and centroid, both in pixels; the paper's polygon area and centroid, section 3.1).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import shapely
from scipy import ndimage
from shapely.geometry import Polygon
from skimage.measure import find_contours

from calcium_gnn.errors import MasksError

__all__ = ["CellTable", "validate_labels", "dense_index", "cell_table", "cell_polygons"]


@dataclass(frozen=True)
class CellTable:
    """Per-cell geometry, one row per cell in ascending ``cell_id``.

    Attributes:
        cell_id: (N,) int64, the cell's value in the label image (>= 1).
        area: (N,) float64, number of pixels of the cell (px**2).
        centroid: (N, 2) float64, pixel centroid ``(x, y)`` = (column, row), in pixels.
        touches_edge: (N,) bool, the cell has a pixel within ``edge_margin`` px of the image border.
    """

    cell_id: np.ndarray
    area: np.ndarray
    centroid: np.ndarray
    touches_edge: np.ndarray

    def __len__(self) -> int:
        return int(self.cell_id.shape[0])


def validate_labels(labels: np.ndarray, source: str | Path = "labels") -> np.ndarray:
    """Check that ``labels`` is a 2-D non-negative integer label image; return it as a numpy array.

    Args:
        labels: (Y, X) integer array, 0 = background, values >= 1 = cell ids.
        source: the file or config key named in the error message.

    Raises:
        MasksError: wrong dimensionality, non-integer values, negative labels.
    """
    arr = np.asarray(labels)
    if arr.ndim != 2:
        raise MasksError(source, f"a label image must be 2-D (Y, X), got shape {arr.shape}")
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        integral = np.issubdtype(arr.dtype, np.floating) and bool(np.all(np.isfinite(arr)))
        if integral and bool(np.all(arr == np.round(arr))):
            arr = arr.astype(np.int64)
        else:
            raise MasksError(source, f"a label image must hold integer cell ids, got dtype {arr.dtype}")
    if arr.size and int(arr.min()) < 0:
        raise MasksError(source, "a label image must not hold negative values (0 = background)")
    return arr


def dense_index(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map cell ids to dense indices ``0..N-1`` (ascending ``cell_id``).

    Args:
        labels: (Y, X) non-negative integer label image.

    Returns:
        ``(cell_id, index)``: cell_id (N,) int64 ascending; index (Y, X) int64 with the row of each
        pixel's cell, ``-1`` on background.
    """
    flat = labels.ravel()
    max_label = int(flat.max()) if flat.size else 0
    if max_label <= 4 * flat.size + 1024:
        present = np.bincount(flat, minlength=max_label + 1) > 0
        present[0] = False
        cell_id = np.nonzero(present)[0].astype(np.int64)
        lookup = np.full(max_label + 1, -1, dtype=np.int64)
        lookup[cell_id] = np.arange(cell_id.size, dtype=np.int64)
        index = lookup[flat]
    else:  # sparse, very large ids: sort-based mapping
        values, inverse = np.unique(flat, return_inverse=True)
        shift = 1 if values.size and values[0] == 0 else 0
        cell_id = values[shift:].astype(np.int64)
        index = inverse.astype(np.int64) - shift
    return cell_id, index.reshape(labels.shape)


def cell_table(labels: np.ndarray, *, edge_margin: int = 0, source: str | Path = "labels") -> CellTable:
    """Area, centroid and image-edge flag of every cell, in one vectorised pass (``np.bincount``).

    Args:
        labels: (Y, X) label image, 0 = background.
        edge_margin: a cell touches the image edge when one of its pixels lies within this many
            pixels of the border (0: on the first/last row or column).
        source: named in error messages.

    Returns:
        A :class:`CellTable` (areas and centroids in pixels).
    """
    labels = validate_labels(labels, source)
    cell_id, index = dense_index(labels)
    n = cell_id.size
    flat = index.ravel()
    inside = flat >= 0
    rows, cols = np.divmod(np.nonzero(inside)[0], labels.shape[1])
    owner = flat[inside]
    area = np.bincount(owner, minlength=n).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        cx = np.bincount(owner, weights=cols, minlength=n) / area
        cy = np.bincount(owner, weights=rows, minlength=n) / area
    y, x = labels.shape
    m = int(edge_margin)
    on_edge = (rows <= m) | (rows >= y - 1 - m) | (cols <= m) | (cols >= x - 1 - m)
    touches_edge = np.bincount(owner[on_edge], minlength=n) > 0
    centroid = np.stack([cx, cy], axis=1)
    return CellTable(cell_id=cell_id, area=area, centroid=centroid, touches_edge=touches_edge)


def _mask_polygon(mask: np.ndarray, row0: int, col0: int) -> Polygon | shapely.MultiPolygon:
    """Outline of a binary crop (padded by one background pixel) by marching squares at level 0.5.

    Contours are closed rings through the pixel-edge midpoints; several rings (holes, pieces) are
    combined by symmetric difference, which is exact for nested, non-crossing rings.
    """
    rings = find_contours(mask, 0.5)
    geoms = []
    for ring in rings:
        if ring.shape[0] < 4:
            continue
        xy = np.column_stack([ring[:, 1] + col0, ring[:, 0] + row0])
        geoms.append(Polygon(xy))
    if not geoms:
        return Polygon()
    if len(geoms) == 1:
        geom = geoms[0]
    else:
        geoms.sort(key=lambda g: -g.area)
        geom = geoms[0]
        for g in geoms[1:]:
            geom = geom.symmetric_difference(g)
    if not geom.is_valid:
        geom = shapely.make_valid(geom)
    return geom


def cell_polygons(
    labels: np.ndarray, *, simplify_tolerance: float = 0.0, source: str | Path = "labels"
) -> list[Polygon | shapely.MultiPolygon]:
    """One shapely polygon per cell (ascending ``cell_id``), coordinates ``(x, y)`` in pixels.

    Each outline is the marching-squares contour of the cell mask at level 0.5 (it passes through
    the midpoints of the cell's outer pixel edges), computed on the cell's bounding box only, so the
    cost is proportional to the cells' perimeters. A cell made of several pieces gives a
    MultiPolygon; holes are kept.

    Args:
        labels: (Y, X) label image, 0 = background.
        simplify_tolerance: Douglas-Peucker tolerance in pixels (0 keeps every contour vertex).
        source: named in error messages.

    Returns:
        A list of N geometries, row ``i`` = the ``i``-th smallest cell id.
    """
    labels = validate_labels(labels, source)
    cell_id, index = dense_index(labels)
    slices = ndimage.find_objects(index + 1, max_label=cell_id.size)
    polygons: list[Polygon | shapely.MultiPolygon] = []
    for i, sl in enumerate(slices):
        if sl is None:  # cannot happen for ids taken from the image; keep the row aligned anyway
            polygons.append(Polygon())
            continue
        crop = index[sl] == i
        mask = np.pad(crop, 1).astype(np.uint8)
        geom = _mask_polygon(mask, sl[0].start - 1, sl[1].start - 1)
        if simplify_tolerance > 0:
            geom = geom.simplify(simplify_tolerance, preserve_topology=True)
        polygons.append(geom)
    return polygons
