"""What a segmentation backend returns: the label image and a record of how it was made."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: A value of :attr:`Segmentation.info`: plain Python, so it can be logged, written as JSON and kept
#: in a graph file read back by ``torch.load(weights_only=True)``.
InfoValue = str | int | float | bool | list[Any] | None


@dataclass
class Segmentation:
    """A label image and the record of the choices that made it.

    Attributes:
        labels: (Y, X) int32 labels, 0 = background, cells 1..N.
        info: plain values (str, int, float, bool, lists of them): ``backend``, the options the
            backend used (for the watershed: ``preset``, ``membranes``, ``diameter``,
            ``smoothing``, ``sigma``, and for ``preset="auto"`` where each came from and the
            evidence, see :mod:`.auto`), and the measured ``n_cells``, ``median_area`` (px) and
            ``median_diameter`` (px, the diameter of a disc of the median area) of ``labels``.
    """

    labels: np.ndarray
    info: dict[str, InfoValue] = field(default_factory=dict)


def cell_areas(labels: np.ndarray) -> np.ndarray:
    """(N,) pixel areas of the cells present in ``labels`` (labels absent from the image skipped)."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64).ravel())[1:]
    return counts[counts > 0]


def median_cell_area(labels: np.ndarray) -> float:
    """Median pixel area of the cells of ``labels``; NaN when there is no cell."""
    areas = cell_areas(labels)
    return float(np.median(areas)) if areas.size else math.nan


def equivalent_diameter(area: float) -> float:
    """Diameter of the disc of area ``area``: ``d = 2 sqrt(A / pi)`` (px for an area in px)."""
    return 2.0 * math.sqrt(area / math.pi) if area > 0 else math.nan


def plain_info(values: Mapping[str, Any]) -> dict[str, InfoValue]:
    """``values`` with numpy scalars and arrays turned into Python numbers and lists, paths and
    anything else unusual into strings (so the record pickles without numpy and prints as JSON)."""
    return {str(key): _plain(value) for key, value in values.items()}


def _plain(value: Any) -> InfoValue:
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(value)
    if isinstance(value, list | tuple | np.ndarray):
        return [_plain(item) for item in value]
    if isinstance(value, Path):
        return str(value)
    return str(value)


def describe_labels(labels: np.ndarray) -> dict[str, InfoValue]:
    """The measured part of :attr:`Segmentation.info`: ``n_cells``, ``median_area``,
    ``median_diameter``."""
    area = median_cell_area(labels)
    return {"n_cells": int(cell_areas(labels).size), "median_area": area,
            "median_diameter": equivalent_diameter(area)}
