"""Small synthetic cultures for the imaging tests: Voronoi cells with dim membranes, blur, noise."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.segmentation import find_boundaries


def voronoi_culture(
    shape: tuple[int, int] = (160, 160),
    spacing: float = 26.0,
    *,
    n_frames: int = 20,
    blur: float = 1.5,
    noise: float = 0.08,
    membrane: float = 0.35,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """A confluent culture: returns (movie (T, Y, X) float32, true labels (Y, X) int32).

    Cell centres are a jittered grid (``spacing`` px apart); each pixel belongs to its nearest
    centre. Cytoplasm brightness varies per cell and over time; membranes (label boundaries,
    2 px wide) are dimmed to ``membrane`` of the cytoplasm; the frame is blurred by ``blur`` px and
    Gaussian noise of standard deviation ``noise`` is added.
    """
    rng = np.random.default_rng(seed)
    ys = np.arange(spacing / 2, shape[0], spacing)
    xs = np.arange(spacing / 2, shape[1], spacing)
    jitter = rng.uniform(-0.3, 0.3, (len(ys) * len(xs), 2)) * spacing
    centres = np.array([(y, x) for y in ys for x in xs]) + jitter
    centres = np.clip(np.round(centres), 0, np.array(shape) - 1).astype(int)
    seeds = np.zeros(shape, dtype=np.int32)
    seeds[centres[:, 0], centres[:, 1]] = np.arange(1, len(centres) + 1)
    _, (iy, ix) = ndi.distance_transform_edt(seeds == 0, return_indices=True)
    labels = seeds[iy, ix].astype(np.int32)
    walls = find_boundaries(labels, mode="inner")
    n = labels.max()
    base = rng.uniform(0.6, 1.0, n + 1)
    t = np.arange(n_frames)[:, None]
    level = base[None, :] * (1 + 0.3 * np.sin(2 * np.pi * t / 15 + rng.uniform(0, 6, n + 1)[None, :]))
    movie = level[:, labels]
    movie[:, walls] *= membrane
    movie = ndi.gaussian_filter(movie, sigma=(0, blur, blur))
    movie += rng.normal(0, noise, movie.shape)
    return (100 * (movie + 1)).astype(np.float32), labels


@pytest.fixture
def culture():
    return voronoi_culture
