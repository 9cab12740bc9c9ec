"""Segmentation of the project's synthetic calcium cultures (calcium_gnn.data.synthetic).

The true label image has 0 on the membranes; the watershed gives every pixel to a cell, so a
perfect segmentation reaches IoU = 1 - (membrane share of the cell), well above 0.7.
"""

from __future__ import annotations

import pytest

from calcium_gnn.imaging.preprocess import preprocess
from calcium_gnn.imaging.reference import reference_image
from calcium_gnn.imaging.segmentation import filter_small_cells, matched_fraction, segment


def test_small_culture_default_watershed_on_mean(small_culture):
    labels = segment(reference_image(small_culture.movie, "mean"))
    assert matched_fraction(small_culture.labels, labels, iou_threshold=0.7) >= 0.95


@pytest.mark.slow
def test_make_culture_defaults_108_cells():
    from calcium_gnn.data.synthetic import make_culture

    culture = make_culture()
    assert culture.n_cells == 108
    raw = segment(reference_image(culture.movie, "mean"))
    assert matched_fraction(culture.labels, raw, iou_threshold=0.7) >= 0.95
    pre = segment(reference_image(preprocess(culture.movie, progress=False), "mean"))
    assert matched_fraction(culture.labels, pre, iou_threshold=0.7) >= 0.95
    # the paper's 500 px area filter keeps every cell of this culture (areas >= 1372 px)
    assert filter_small_cells(raw).max() == raw.max()
