"""Render a zoo member's fluorescence movie (T, H, W) uint16 and its true label image.

Per frame, in photoelectrons (then blur, shot and read noise and the camera, as
:func:`calcium_gnn.data.synthetic_imaging.render_levels`):

* dye pixels of cell ``i``: ``F(c_i(t)) = F_min + (F_max - F_min) c / (c + K_d)``. A ``cytosolic`` dye
  fills the whole cell; a ``nuclear`` dye only its nucleus, a disc of radius ``nucleus_fraction *
  sqrt(area_i / pi)`` around the cell's Voronoi seed, and the rest of the cell (cytoplasm) is dim,
  ``cytoplasm_level * F_min``;
* membrane pixels (label 0): ``membrane_factor`` times the dimmest cell level (``dark`` membranes,
  factor < 1) or times ``F_max`` (``bright`` membranes, factor > 1);
* photobleaching: everything times ``exp(-t / bleach_time)``, ``bleach_time`` such that the last frame
  has lost ``bleach_loss`` of its fluorescence (no bleaching when ``bleach_loss = 0``);
* hot pixels in ``hot_frames`` frames.

The imaging noise is scaled so that a cell's mean intensity has about the member's observation
noise (``noise`` times the traces' dynamic range, in calcium units, at the median level): per pixel
``sigma_F = m sqrt(F + read_noise^2)``, and averaged over the ``P`` dye pixels of a cell and turned into
calcium units with the slope ``F'(c)``, ``m = noise * range * F'(c) sqrt(P) / sqrt(F(c) + read_noise^2)``.
This is approximate (blur correlates neighbouring pixels, the dye saturates, bleaching dims);
``noise = 0`` gives a noiseless movie (rounding only).

The label image is the truth of the graph: whole cells, 0 = membrane, cell ``i`` = ``i + 1``. With a
nuclear dye ``nuclei`` holds the nuclei (same ids, 0 elsewhere), what a nuclear segmentation finds.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from calcium_gnn.data.synthetic_imaging import bleaching, draw_hot_pixels, dye_response, render_levels
from calcium_gnn.data.zoo_culture import ZooCulture

#: ADU of a hot pixel
HOT_VALUE: int = 60000
#: mean photon count above which shot noise uses its normal approximation (as make_culture)
POISSON_NORMAL_ABOVE: float = 50.0
HOT_PER_FRAME: tuple[int, int] = (1, 3)


class ZooMovie(NamedTuple):
    """A rendered member.

    Attributes:
        movie: (T, H, W) uint16 fluorescence movie.
        labels: (H, W) int32 true cells, 0 = membrane, node ``i`` = ``i + 1``.
        nuclei: (H, W) int32 true nuclei with the cells' ids (nuclear dye), else None.
        hot_pixels: (H', 3) int64 rows ``(frame, y, x)`` set to :data:`HOT_VALUE`.
    """

    movie: np.ndarray
    labels: np.ndarray
    nuclei: np.ndarray | None
    hot_pixels: np.ndarray


def nucleus_mask(labels: np.ndarray, seeds: np.ndarray, areas: np.ndarray, fraction: float) -> np.ndarray:
    """(H, W) bool, pixels within ``fraction * sqrt(area / pi)`` of their own cell's seed ``(x, y)``."""
    rows, cols = np.nonzero(labels)
    cell = labels[rows, cols] - 1
    radius = fraction * np.sqrt(areas / np.pi)
    inside = np.hypot(cols - seeds[cell, 0], rows - seeds[cell, 1]) <= radius[cell]
    mask = np.zeros(labels.shape, dtype=bool)
    mask[rows[inside], cols[inside]] = True
    return mask


def noise_multiplier(culture: ZooCulture, dye_pixels: float) -> float:
    """The imaging-noise multiplier ``m`` of the module docstring."""
    p, traces = culture.params, culture.traces
    if p["noise"] <= 0:
        return 0.0
    level = float(np.median(np.maximum(traces, 0.0)))
    slope = (p["f_max"] - p["f_min"]) * p["k_d"] / (level + p["k_d"]) ** 2
    photons = float(dye_response(np.array(level), p["f_min"], p["f_max"], p["k_d"]))
    sigma = p["noise"] * float(traces.max() - traces.min())
    return sigma * slope * np.sqrt(dye_pixels) / np.sqrt(photons + p["read_noise"] ** 2)


def render_zoo_movie(culture: ZooCulture, rng: np.random.Generator) -> ZooMovie:
    """Render ``culture``'s movie with the member's imaging parameters (module docstring)."""
    p = culture.params
    labels = culture.labels()
    n = len(culture.areas)
    cells = dye_response(culture.traces, p["f_min"], p["f_max"], p["k_d"])  # (N, T)
    levels, nuclei, paint = [cells], None, labels
    dimmest = p["f_min"]
    if p["dye"] == "nuclear":
        inside = nucleus_mask(labels, culture.seeds, culture.areas, p["nucleus_fraction"])
        nuclei = np.where(inside, labels, 0).astype(np.int32)
        paint = np.where(inside, labels, np.where(labels > 0, n + 1, 0)).astype(np.int32)
        dimmest = p["cytoplasm_level"] * p["f_min"]
        levels.append(np.full((1, cells.shape[1]), dimmest))
    membrane = p["membrane_factor"] * (dimmest if p["membrane"] == "dark" else p["f_max"])
    lut = np.vstack([np.full((1, cells.shape[1]), membrane), *levels])
    duration = float(culture.t[-1] - culture.t[0])
    bleach_time = duration / -np.log1p(-p["bleach_loss"]) if p["bleach_loss"] > 0 else np.inf
    lut = (lut * bleaching(culture.t, bleach_time)[None, :]).astype(np.float32)
    counts = np.bincount((nuclei if nuclei is not None else labels).ravel(), minlength=n + 1)[1:]
    movie = render_levels(
        paint,
        lut,
        rng,
        blur_sigma=p["blur_sigma"],
        noise=noise_multiplier(culture, float(np.median(counts))),
        read_noise=p["read_noise"],
        gain=p["gain"],
        offset=p["offset"],
        poisson_normal_above=POISSON_NORMAL_ABOVE,
    )
    hot = draw_hot_pixels(
        movie.shape[0], culture.side, rng, hot_frames=p["hot_frames"], hot_pixels_per_frame=HOT_PER_FRAME
    )
    if len(hot):
        movie[hot[:, 0], hot[:, 1], hot[:, 2]] = HOT_VALUE
    return ZooMovie(movie=movie, labels=labels, nuclei=nuclei, hot_pixels=hot)
