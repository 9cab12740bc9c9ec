"""The ``masks`` segmentation backend: use a label image the user already has."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from calcium_gnn.errors import ConfigError
from calcium_gnn.imaging.segmentation.cleanup import check_labels_match
from calcium_gnn.io.masks import read_labels


def segment_masks(image: np.ndarray | None, *, path: str | Path | None = None) -> np.ndarray:
    """Read the user's label image (TIFF, ``.npy`` or Cellpose ``*_seg.npy``) for this movie.

    Args:
        image: the (Y, X) reference image, only used to check the label image's shape (may be None).
        path: the label image file (config key ``segmentation.path``).

    Returns:
        (Y, X) int32 labels as stored in the file.

    Raises:
        ConfigError: no ``path`` given.
        MasksError: the file is missing / not a label image / empty / a different shape.
    """
    if path is None:
        raise ConfigError("segmentation.path", "the 'masks' backend needs path=<label image file>")
    labels = read_labels(path)
    if image is not None:
        check_labels_match(labels, np.shape(image), path)
    return labels
