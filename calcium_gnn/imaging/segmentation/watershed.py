"""Classical seeded-watershed segmentation (scikit-image), needing no trained weights.

A cell culture image is a tiling of cells separated by membranes. Membranes are dark between
bright cytoplasm in our calcium movies (``membranes="dark"``) and bright in membrane-stained
epithelia such as the EpiTools images (``membranes="bright"``). The pipeline:

1. robust contrast: ``m = clip((I - p_lo) / (p_hi - p_lo), 0, 1)`` with the ``percentiles``
   (p_lo, p_hi) of the image; for dark membranes ``m = 1 - m``, so membranes are high in ``m``;
2. Gaussian smoothing of ``m`` with ``sigma = smoothing * diameter`` pixels (``diameter`` is the
   typical cell diameter in pixels);
3. seeds, one per cell: the regional minima of the smoothed membrane image deeper than ``h``
   (``seeds="hminima"``, h-minima transform, ``h`` in units of the normalised contrast), or the
   peaks of the distance transform of the cell interiors (pixels below a local Gaussian-weighted
   mean over a window one ``diameter`` wide: robust to cells of unequal brightness) at least
   ``seed_spacing * diameter`` apart (``seeds="distance"``);
4. optionally a foreground mask (``foreground="otsu"``: cytoplasm brighter than Otsu's threshold
   on a ``diameter / 4`` blur; ``"all"``: confluent culture, every pixel belongs to a cell);
5. watershed of the smoothed membrane image from the seeds (``compactness`` > 0 gives the
   compact watershed), relabelled 1..N.

:data:`PRESETS` holds tuned option sets: ``"calcium"`` (the defaults) and ``"epitools"``.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from scipy import ndimage as ndi
from skimage import feature, filters, morphology, segmentation

from calcium_gnn.errors import ConfigError, SegmentationError

PRESETS: dict[str, dict[str, Any]] = {
    # temporal mean of a calcium movie: bright cytoplasm, dim membranes, blur and noise
    "calcium": {"membranes": "dark", "diameter": 30.0, "smoothing": 0.05, "seeds": "hminima", "h": 0.05},
    # EpiTools projected epithelium (tests/data/epitools): bright membranes, cells ~22 px across;
    # matches 92 of EpiTools' 94 cells (97.9%) at IoU >= 0.7 (tests/unit/imaging/test_imaging_watershed.py)
    "epitools": {"membranes": "bright", "diameter": 22.0, "smoothing": 0.05, "seeds": "hminima", "h": 0.05},
}


def segment_watershed(
    image: np.ndarray,
    *,
    preset: str = "calcium",
    membranes: Literal["dark", "bright"] | None = None,
    diameter: float | None = None,
    smoothing: float | None = None,
    seeds: Literal["hminima", "distance"] | None = None,
    h: float | None = None,
    seed_spacing: float = 0.5,
    foreground: Literal["all", "otsu"] = "all",
    compactness: float = 0.0,
    percentiles: tuple[float, float] = (1.0, 99.0),
) -> np.ndarray:
    """Segment cells in a reference image (Y, X) by seeded watershed.

    Options left as ``None`` take their value from the ``preset`` (see :data:`PRESETS`; the
    default ``"calcium"`` preset is ``membranes="dark", diameter=30, smoothing=0.05,
    seeds="hminima", h=0.05``); explicit keywords win over the preset.

    Args:
        image: (Y, X) reference image (e.g. the temporal mean of the movie).
        preset: name in :data:`PRESETS` (``"calcium"`` or ``"epitools"``).
        membranes: ``"dark"`` (calcium movies) or ``"bright"`` (membrane stains).
        diameter: typical cell diameter in pixels; sets the smoothing and the seed spacing.
        smoothing: Gaussian sigma as a fraction of ``diameter``.
        seeds: ``"hminima"`` or ``"distance"`` (see the module docstring).
        h: depth of the h-minima, as a fraction of the normalised contrast (0..1).
        seed_spacing: minimum distance between distance-transform seeds, fraction of ``diameter``.
        foreground: ``"all"`` (confluent) or ``"otsu"`` (leave dark background unlabelled).
        compactness: compact-watershed weight (0 = classical watershed).
        percentiles: (low, high) percentiles mapped to 0 and 1 for the contrast.

    Returns:
        (Y, X) int32 labels, 0 = background, cells 1..N.

    Raises:
        SegmentationError: the image is not 2-D, not finite, constant, or no cell was found.
        ConfigError: an option is out of range (key ``segmentation.<option>``).
    """
    if preset not in PRESETS:
        raise ConfigError("segmentation.preset", f"unknown preset {preset!r}; known: {sorted(PRESETS)}")
    given = {"membranes": membranes, "diameter": diameter, "smoothing": smoothing, "seeds": seeds, "h": h}
    opts = {**PRESETS[preset], **{k: v for k, v in given.items() if v is not None}}
    opts.update(seed_spacing=seed_spacing, foreground=foreground, compactness=compactness,
                percentiles=tuple(percentiles))
    _check_options(opts)
    diameter, smoothing, h = float(opts["diameter"]), float(opts["smoothing"]), float(opts["h"])

    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2:
        raise SegmentationError("segmentation.image", f"expected a 2-D image (Y, X), got shape {img.shape}")
    if not np.isfinite(img).all():
        raise SegmentationError("segmentation.image", "the reference image holds NaN or Inf values")
    p_lo, p_hi = np.percentile(img, percentiles)
    if not p_hi > p_lo:
        p_lo, p_hi = float(img.min()), float(img.max())
        if not p_hi > p_lo:
            raise SegmentationError("segmentation.image", "the reference image is constant: no cells")
    m = np.clip((img - p_lo) / (p_hi - p_lo), 0.0, 1.0)
    if opts["membranes"] == "dark":
        m = 1.0 - m
    m = filters.gaussian(m, sigma=smoothing * diameter, preserve_range=True)

    mask = None
    if foreground == "otsu":
        cyto = filters.gaussian(1.0 - m, sigma=diameter / 4, preserve_range=True)
        mask = cyto > filters.threshold_otsu(cyto)

    if opts["seeds"] == "hminima":
        markers, _ = ndi.label(morphology.h_minima(m, h))
    else:
        block = int(diameter) // 2 * 2 + 1  # odd window about one cell across
        interior = m < filters.threshold_local(m, block_size=max(block, 3), method="gaussian")
        distance = ndi.distance_transform_edt(interior)
        regions, _ = ndi.label(interior)
        peaks = feature.peak_local_max(distance, min_distance=max(1, int(seed_spacing * diameter)),
                                       labels=regions, exclude_border=False)
        markers = np.zeros(m.shape, dtype=np.int32)
        markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    if mask is not None:
        markers[~mask] = 0
    if markers.max() == 0:
        raise SegmentationError("segmentation.watershed", "no cell seeds found; lower h or check the image")
    labels = segmentation.watershed(m, markers, mask=mask, compactness=compactness)
    labels, _, _ = segmentation.relabel_sequential(labels)
    return labels.astype(np.int32)


def _check_options(opts: dict[str, Any]) -> None:
    lo_hi = opts["percentiles"]
    checks = [
        ("membranes", opts["membranes"] in ("dark", "bright"), "must be 'dark' or 'bright'"),
        ("diameter", np.isfinite(opts["diameter"]) and opts["diameter"] > 0, "must be > 0 (pixels)"),
        ("smoothing", np.isfinite(opts["smoothing"]) and opts["smoothing"] >= 0, "must be >= 0"),
        ("seeds", opts["seeds"] in ("hminima", "distance"), "must be 'hminima' or 'distance'"),
        ("h", np.isfinite(opts["h"]) and 0 < opts["h"] < 1, "must be in (0, 1)"),
        ("seed_spacing", np.isfinite(opts["seed_spacing"]) and opts["seed_spacing"] > 0, "must be > 0"),
        ("foreground", opts["foreground"] in ("all", "otsu"), "must be 'all' or 'otsu'"),
        ("compactness", np.isfinite(opts["compactness"]) and opts["compactness"] >= 0, "must be >= 0"),
        ("percentiles", len(lo_hi) == 2 and 0 <= lo_hi[0] < lo_hi[1] <= 100,
         "must be (low, high) with 0 <= low < high <= 100"),
    ]
    for key, ok, problem in checks:
        if not ok:
            raise ConfigError(f"segmentation.{key}", f"{problem}, got {opts[key]!r}")
