"""Segmentation of a reference image into cells: one entry point, three backends.

- ``"watershed"`` (default): classical seeded watershed, no weights (:mod:`.watershed`); its
  default ``preset="auto"`` reads the membrane polarity and the cell scale off the image
  (:mod:`.auto`), removes the boundaries that are not membranes and leaves a 1-2 px membrane line
  between the cells (:mod:`.boundaries`);
- ``"cellpose"``: the Cellpose library (paper sec. 3.1, ref. [22]) (:mod:`.cellpose_backend`);
- ``"masks"``: a label image the user already has (:mod:`.masks`).

:func:`segment` returns the label image; :func:`segment_with_info` also returns the record of how it
was made (:class:`~.result.Segmentation`: the options used, what ``preset="auto"`` decided, the
median cell area). After segmentation, :func:`filter_small_cells` drops cells under ``min_area``
px (the paper's 500 px, or :func:`auto_min_area`: a tenth of the median cell area) and relabels
1..N; :func:`check_labels_match` checks the labels fit the movie's frames.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from calcium_gnn.errors import ConfigError, SegmentationError
from calcium_gnn.imaging.segmentation.auto import MIN_AREA_FRACTION, auto_min_area
from calcium_gnn.imaging.segmentation.cellpose_backend import segment_cellpose
from calcium_gnn.imaging.segmentation.cleanup import check_labels_match, filter_small_cells
from calcium_gnn.imaging.segmentation.masks import segment_masks
from calcium_gnn.imaging.segmentation.matching import iou_matrix, matched_fraction
from calcium_gnn.imaging.segmentation.result import Segmentation, describe_labels, plain_info
from calcium_gnn.imaging.segmentation.watershed import (
    PRESET_NAMES,
    PRESETS,
    segment_watershed,
    watershed_segmentation,
)

BACKENDS = {"watershed": segment_watershed, "cellpose": segment_cellpose, "masks": segment_masks}

__all__ = [
    "BACKENDS",
    "MIN_AREA_FRACTION",
    "PRESETS",
    "PRESET_NAMES",
    "Segmentation",
    "auto_min_area",
    "check_labels_match",
    "filter_small_cells",
    "iou_matrix",
    "matched_fraction",
    "segment",
    "segment_cellpose",
    "segment_masks",
    "segment_watershed",
    "segment_with_info",
    "watershed_segmentation",
]


def segment(image: np.ndarray | None, backend: str = "watershed", **options: Any) -> np.ndarray:
    """Segment a reference image (Y, X) into cells with the chosen backend.

    Args:
        image: (Y, X) reference image (see :func:`calcium_gnn.imaging.reference.reference_image`);
            for ``backend="masks"`` it is only used to check the label image's shape.
        backend: ``"watershed"``, ``"cellpose"`` or ``"masks"``.
        **options: the backend's keyword options (:func:`segment_watershed`,
            :func:`segment_cellpose`, :func:`segment_masks`).

    Returns:
        (Y, X) int32 labels, 0 = background, at least one cell.

    Raises:
        ConfigError: unknown backend or option (key ``segmentation.backend`` / ``segmentation.<option>``).
        SegmentationError: the backend could not run or found no cell.
        MasksError: (``masks``) the label file is missing, invalid, empty or the wrong shape.
    """
    return segment_with_info(image, backend, **options).labels


def segment_with_info(image: np.ndarray | None, backend: str = "watershed", **options: Any) -> Segmentation:
    """:func:`segment`, also returning the record of how the labels were made.

    Returns:
        A :class:`~.result.Segmentation`. Its ``info`` always holds ``backend``, ``n_cells``,
        ``median_area`` and ``median_diameter`` (px); the watershed adds every option it used and
        what ``preset="auto"`` decided (:func:`watershed_segmentation`); the other backends add
        the options they were given.

    Raises:
        As :func:`segment`.
    """
    if backend not in BACKENDS:
        raise ConfigError("segmentation.backend", f"unknown backend {backend!r}; one of {sorted(BACKENDS)}")
    run: Callable[..., Any] = watershed_segmentation if backend == "watershed" else BACKENDS[backend]
    try:
        result = run(image, **options)
    except TypeError as exc:
        if "unexpected keyword argument" in str(exc):
            name = str(exc).split("'")[1] if "'" in str(exc) else "?"
            raise ConfigError(f"segmentation.{name}", f"not an option of the {backend!r} backend") from None
        raise
    if not isinstance(result, Segmentation):
        result = Segmentation(labels=result, info=plain_info({"backend": backend, **options,
                                                               **describe_labels(result)}))
    if int(result.labels.max(initial=0)) == 0:
        raise SegmentationError(f"segmentation.{backend}", "no cells found in the reference image")
    return result
