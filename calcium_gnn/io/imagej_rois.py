"""ImageJ / Fiji ROI sets (``RoiSet.zip`` from the ROI Manager, or a single ``.roi``) as a label image.

Read with the ``roifile`` package. Every ROI must enclose an area: polygon, freehand and traced
ROIs (their outline, also rotated rectangles and ellipses, stored as polygons), rectangles, ovals
and composite (shape) ROIs, whose sub-paths are combined even-odd (holes stay holes). Lines, points
and angles are refused.

Rasterisation follows ImageJ's own convention: coordinates are in pixels with ``(0, 0)`` the top-left
corner of the image, pixel ``(row r, column c)`` covers ``[c, c+1) x [r, r+1)``, and it belongs to a
ROI when its centre ``(c + 0.5, r + 0.5)`` lies inside the outline (a rectangle ``left, top, right,
bottom`` covers columns ``left..right-1`` and rows ``top..bottom-1``; an oval is the ellipse
inscribed in its bounding box).

Cell order = ROI order: ROI ``k`` (0-based, the order of the set, i.e. of the ROI Manager) gets
label ``k + 1``, so the columns of an ImageJ Multi-Measure table (``Mean1, Mean2, ...``) are the cells
in order. A pixel inside several ROIs goes to the first of them; a ROI left without any pixel (outside
the image, thinner than a pixel, or hidden under earlier ROIs) is an error.

The image shape is given (``image_shape``), or else the bounding box of all ROIs from ``(0, 0)``
(then a ROI reaching that box is flagged as touching the image edge by the graph builder: give the
real shape when the ROIs do not cover the image).
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from skimage.draw import polygon as fill_polygon

from calcium_gnn.errors import ConfigError, MasksError

__all__ = ["RoiLabels", "read_imagej_rois", "rasterise_rois", "check_image_shape"]

_AREA_TYPES = ("POLYGON", "FREEHAND", "TRACED", "RECT", "OVAL")


@dataclass(frozen=True)
class RoiLabels:
    """A ROI set rasterised.

    Attributes:
        labels: (Y, X) int32, ROI ``k`` (0-based, set order) has label ``k + 1``, 0 = outside every ROI.
        names: (N,) the ROI names (``#k`` for unnamed ones).
        path: the file read.
    """

    labels: np.ndarray
    names: list[str]
    path: Path


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:200]}" if lines else type(exc).__name__


def _read_rois(path: Path) -> list[Any]:
    """The ROIs of a ``.zip`` (entries ending in ``.roi``, in the zip's order) or of one ``.roi``."""
    from roifile import ImagejRoi

    if not path.exists():
        raise MasksError(path, "file not found")
    if path.is_dir():
        raise MasksError(path, "is a folder, expected an ImageJ RoiSet.zip or a .roi file")
    suffix = path.suffix.lower()
    if suffix not in (".zip", ".roi"):
        raise MasksError(
            path, f"unsupported file type '{path.suffix}': expected an ImageJ RoiSet .zip or .roi"
        )
    try:
        if suffix == ".roi":
            return [ImagejRoi.frombytes(path.read_bytes())]
        rois = []
        with zipfile.ZipFile(path) as zf:
            for name in zf.namelist():
                if name.lower().endswith(".roi") and not name.startswith("__MACOSX/"):
                    rois.append(ImagejRoi.frombytes(zf.read(name)))
        return rois
    except Exception as exc:  # noqa: BLE001 - zipfile and roifile raise many kinds of errors
        kind = "ImageJ ROI" if suffix == ".roi" else "zip of ImageJ ROIs"
        raise MasksError(path, f"not a readable {kind} ({_one_line(exc)})") from None


def read_imagej_rois(path: str | Path, *, image_shape: Sequence[int] | None = None) -> RoiLabels:
    """Read an ImageJ ROI set and rasterise it (module docstring).

    Args:
        path: ``RoiSet.zip`` or a ``.roi`` file. Never modified.
        image_shape: ``(height, width)`` in pixels, or None for the ROIs' bounding box.

    Returns:
        A :class:`RoiLabels`.

    Raises:
        MasksError: naming the file: unreadable, an empty set, a ROI that is not an area (naming it),
            or a ROI without any pixel of its own.
        ConfigError: ``image_shape`` is not two positive integers (``data.image_shape``).
    """
    path = Path(path)
    rois = _read_rois(path)
    if not rois:
        raise MasksError(path, "empty ROI set: no .roi entry")
    return RoiLabels(
        rasterise_rois(rois, image_shape, source=path), [_name(r, k) for k, r in enumerate(rois)], path
    )


def _name(roi: Any, k: int) -> str:
    return str(roi.name) if getattr(roi, "name", "") else f"#{k + 1}"


def check_image_shape(image_shape: Sequence[int] | None) -> tuple[int, int] | None:
    """``image_shape`` as ``(height, width)`` of positive ints, or None.

    Raises:
        ConfigError: naming ``data.image_shape``.
    """
    if image_shape is None:
        return None
    try:
        shape = tuple(int(v) for v in image_shape)
        whole = all(float(v) == int(v) for v in image_shape)
    except (TypeError, ValueError):
        shape, whole = (), False
    if len(shape) != 2 or not whole or min(shape) < 1:
        raise ConfigError("data.image_shape", f"must be [height, width] in pixels, got {image_shape!r}")
    return shape  # type: ignore[return-value]


def rasterise_rois(
    rois: Sequence[Any], image_shape: Sequence[int] | None = None, *, source: str | Path = "rois"
) -> np.ndarray:
    """Label image of ImageJ ROIs (``roifile.ImagejRoi``), ROI ``k`` -> label ``k + 1``.

    Args:
        rois: the ROIs, in cell order.
        image_shape: ``(height, width)``, or None for the ROIs' bounding box from ``(0, 0)``.
        source: named in error messages.

    Returns:
        (Y, X) int32 label image.

    Raises:
        MasksError: a ROI that is not an area, or one left without a pixel.
    """
    shapes = [_outline(roi, k, source) for k, roi in enumerate(rois)]
    shape = check_image_shape(image_shape)
    if shape is None:
        bottom = max(math.ceil(s[1]) for s in (_extent(o) for o in shapes))
        right = max(math.ceil(s[0]) for s in (_extent(o) for o in shapes))
        if bottom < 1 or right < 1:
            raise MasksError(source, "every ROI lies above or left of the image origin")
        shape = (bottom, right)
    labels = np.zeros(shape, dtype=np.int32)
    for k, outline in enumerate(shapes):
        rr, cc = _pixels(outline, shape)
        free = labels[rr, cc] == 0
        labels[rr[free], cc[free]] = k + 1
    present = np.zeros(len(rois) + 1, dtype=bool)
    present[np.unique(labels)] = True
    lost = np.nonzero(~present[1:])[0]
    if lost.size:
        k = int(lost[0])
        raise MasksError(
            source,
            f"ROI {k + 1} ({_name(rois[k], k)!r}) covers no pixel of its own in the "
            f"{shape[0]} x {shape[1]} image (outside it, thinner than a pixel, or under earlier ROIs)",
        )
    return labels


# an outline: ("rect", (left, top, right, bottom)) | ("oval", (left, top, right, bottom)) |
# ("paths", [ (n, 2) float arrays of x, y ])
_Outline = tuple[str, Any]


def _outline(roi: Any, k: int, source: str | Path) -> _Outline:
    from roifile import ROI_TYPE

    kind = ROI_TYPE(roi.roitype).name if roi.roitype in list(ROI_TYPE) else str(roi.roitype)
    if roi.composite and roi.multi_coordinates is not None:
        paths = [np.asarray(p, dtype=np.float64) for p in roi.coordinates(multi=True)]
        paths = [p for p in paths if p.shape[0] >= 3]
        if not paths:
            raise MasksError(source, f"ROI {k + 1} ({_name(roi, k)!r}): composite ROI without an area")
        return ("paths", paths)
    if kind not in _AREA_TYPES:
        raise MasksError(
            source,
            f"ROI {k + 1} ({_name(roi, k)!r}) is a {kind.lower()} ROI, not an area: "
            "cells need polygon, freehand, traced, rectangle or oval ROIs",
        )
    box = (float(roi.left), float(roi.top), float(roi.right), float(roi.bottom))
    if kind == "RECT":
        return ("rect", box)
    if kind == "OVAL":
        return ("oval", box)
    xy = np.asarray(roi.coordinates(), dtype=np.float64)
    if xy.ndim != 2 or xy.shape[0] < 3:
        raise MasksError(source, f"ROI {k + 1} ({_name(roi, k)!r}): an outline needs at least 3 points")
    return ("paths", [xy])


def _extent(outline: _Outline) -> tuple[float, float]:
    """Largest ``(x, y)`` an outline reaches."""
    kind, geometry = outline
    if kind in ("rect", "oval"):
        return geometry[2], geometry[3]
    return max(float(p[:, 0].max()) for p in geometry), max(float(p[:, 1].max()) for p in geometry)


def _pixels(outline: _Outline, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of the pixels whose centres lie inside the outline (module docstring)."""
    kind, geometry = outline
    height, width = shape
    if kind == "rect":
        left, top, right, bottom = (int(round(v)) for v in geometry)
        rows = np.arange(max(top, 0), min(bottom, height))
        cols = np.arange(max(left, 0), min(right, width))
        rr, cc = np.meshgrid(rows, cols, indexing="ij")
        return rr.ravel(), cc.ravel()
    if kind == "oval":
        left, top, right, bottom = geometry
        a, b = (right - left) / 2.0, (bottom - top) / 2.0
        if a <= 0 or b <= 0:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        cx, cy = (left + right) / 2.0, (top + bottom) / 2.0
        rows = np.arange(max(int(math.floor(top)), 0), min(int(math.ceil(bottom)), height))
        cols = np.arange(max(int(math.floor(left)), 0), min(int(math.ceil(right)), width))
        rr, cc = np.meshgrid(rows, cols, indexing="ij")
        inside = ((cc + 0.5 - cx) / a) ** 2 + ((rr + 0.5 - cy) / b) ** 2 <= 1.0
        return rr[inside], cc[inside]
    if len(geometry) == 1:  # skimage tests pixel centres at integer (row, column)
        xy = geometry[0]
        return fill_polygon(xy[:, 1] - 0.5, xy[:, 0] - 0.5, shape)
    top = max(int(math.floor(min(float(p[:, 1].min()) for p in geometry))), 0)
    left = max(int(math.floor(min(float(p[:, 0].min()) for p in geometry))), 0)
    bottom = min(int(math.ceil(max(float(p[:, 1].max()) for p in geometry))), height)
    right = min(int(math.ceil(max(float(p[:, 0].max()) for p in geometry))), width)
    if bottom <= top or right <= left:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    inside = np.zeros((bottom - top, right - left), dtype=bool)
    for xy in geometry:  # even-odd: a pixel inside an odd number of sub-paths
        rr, cc = fill_polygon(xy[:, 1] - 0.5 - top, xy[:, 0] - 0.5 - left, inside.shape)
        inside[rr, cc] ^= True
    rr, cc = np.nonzero(inside)
    return rr + top, cc + left
