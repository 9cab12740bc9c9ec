"""The watershed backend: EpiTools acceptance (bright membranes) and synthetic calcium cultures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from skimage.segmentation import find_boundaries

from calcium_gnn.errors import ConfigError, SegmentationError
from calcium_gnn.imaging.reference import reference_image
from calcium_gnn.imaging.segmentation import PRESETS, matched_fraction, segment, segment_watershed

EPITOOLS = Path(__file__).resolve().parents[2] / "data" / "epitools"


def test_epitools_preset_matches_90_percent_of_epitools_cells():
    image = tifffile.imread(EPITOOLS / "test_image-projected.tif")
    truth = tifffile.imread(EPITOOLS / "test_image-projected-segmented.tif").astype(np.int32)
    labels = segment(image, preset="epitools")
    assert labels.dtype == np.int32 and labels.shape == image.shape
    fraction = matched_fraction(truth, labels, iou_threshold=0.7)
    assert fraction >= 0.90, fraction
    assert PRESETS["epitools"]["membranes"] == "bright"


@pytest.mark.parametrize(("shape", "spacing", "seed"), [((160, 160), 26, 0), ((160, 160), 26, 1),
                                                          ((128, 128), 18, 2), ((300, 300), 50, 3)])
def test_default_watershed_on_synthetic_calcium_mean(culture, shape, spacing, seed):
    movie, truth = culture(shape, spacing, seed=seed, noise=0.15)
    labels = segment(reference_image(movie, "mean"))  # the defaults: preset "auto" finds the dark membranes
    # the cells without their 2 px walls, the dimmed membrane that a cell's trace leaves out (as the
    # zoo's true labels do); with the walls the 2 px membrane line of 18 px cells costs the IoU
    truth[find_boundaries(truth, mode="inner")] = 0
    assert matched_fraction(truth, labels, iou_threshold=0.7) >= 0.95


def test_distance_seeds(culture):
    movie, truth = culture((160, 160), 26, seed=4, noise=0.05)
    image = reference_image(movie)
    labels = segment_watershed(image, seeds="distance", diameter=26)
    assert matched_fraction(truth, labels, iou_threshold=0.7) >= 0.9
    compact = segment_watershed(image, seeds="distance", diameter=26, compactness=0.001)
    assert not np.array_equal(compact, labels)
    assert matched_fraction(truth, compact, iou_threshold=0.7) >= 0.8


def test_otsu_foreground_leaves_background_unlabelled(culture):
    movie, truth = culture((160, 160), 26, seed=5, noise=0.05)
    image = reference_image(movie)
    image[:, :40] = image.min()  # a cell-free dark strip
    labels = segment(image, foreground="otsu")
    assert (labels[:, :25] == 0).all()
    assert labels.max() > 10


@pytest.mark.parametrize(("shape", "spacing", "seed"), [((160, 160), 26, 0), ((300, 300), 50, 3)])
def test_calcium_preset_still_segments_synthetic_calcium_mean(culture, shape, spacing, seed):
    movie, truth = culture(shape, spacing, seed=seed, noise=0.15)
    labels = segment(reference_image(movie, "mean"), preset="calcium")  # the former default
    assert matched_fraction(truth, labels, iou_threshold=0.7) >= 0.95


def test_explicit_options_override_preset():
    image = tifffile.imread(EPITOOLS / "test_image-projected.tif")
    dark = segment_watershed(image, preset="epitools", membranes="dark")
    bright = segment_watershed(image, preset="epitools")
    assert not np.array_equal(dark, bright)


def test_errors():
    with pytest.raises(SegmentationError, match="constant"):
        segment(np.ones((20, 20)))
    with pytest.raises(SegmentationError, match="2-D"):
        segment(np.ones((2, 20, 20)))
    with pytest.raises(ConfigError, match="segmentation.membranes"):
        segment(np.random.default_rng(0).random((20, 20)), membranes="grey")
    with pytest.raises(ConfigError, match="segmentation.preset"):
        segment(np.random.default_rng(0).random((20, 20)), preset="nope")
    with pytest.raises(ConfigError, match="segmentation.backend"):
        segment(np.ones((20, 20)), backend="stardist")
    with pytest.raises(ConfigError, match="segmentation.bogus"):
        segment(np.random.default_rng(0).random((20, 20)), bogus=1)
