"""Segmentation settings read off the image itself: membrane polarity, smoothing, cell scale, min area.

The watershed's ``preset="auto"`` (:mod:`.watershed`) and the pipeline's ``min_area="auto"`` use
this module. Notation: ``m`` in [0, 1] is the reference image after the robust contrast of the
watershed (bright = 1); the *membrane image* of a polarity ``p`` is ``m_p = m`` for bright
membranes and ``m_p = 1 - m`` for dark ones; ``S(p, sigma)`` is the seeded watershed of ``m_p``
smoothed by a Gaussian of ``sigma`` pixels (h-minima seeds, whole image), ``N(p, sigma)`` its
number of cells.

1. **Polarity** (dark or bright membranes): membranes are thin lines between wide cells, so in the
   right polarity the watershed lines of ``S`` run along the membranes, and in the wrong one they
   cut through the cytoplasm, which is also what most of every region holds. The *boundary
   contrast*

   .. math::

       C(p) = \\operatorname{median}_{x \\in \\partial S} m_p(x)
              - \\operatorname{median}_{x \\in S \\setminus \\partial S} m_p(x)

   (``dS``: the pixels of a cell next to another cell) is the membrane-to-cytoplasm contrast in
   the right polarity and near 0 in the wrong one; ``p* = argmax_p C(p)``, measured at
   ``sigma = POLARITY_SIGMA_PX`` (or the smoothing the caller fixed). Measured on the EpiTools
   epithelium (bright): ``C(bright) = 0.37`` vs ``C(dark) = 0.26``; on synthetic cultures of
   12-80 px cells (make_culture, both polarities) and noisy Voronoi cultures (18-50 px, dark):
   right polarity 0.29-0.94, wrong one -0.00-0.47, always the lower of the two.
2. **Smoothing, by stability** (scale selection as in MSER: keep what persists): over the ladder
   ``sigma_k = SIGMA_LADDER_PX`` (0.5 to 4 px in steps of sqrt 2) count ``N_k = N(p*, sigma_k)``.
   Noise makes many shallow minima at small ``sigma`` whose number falls fast as ``sigma`` grows;
   the real cells persist over a range of ``sigma`` (a plateau) until the smoothing blurs the
   membranes and cells merge. The instability is the slope of ``log N`` against ``log sigma``,

   .. math::

       s_k = \\frac{|\\ln N_{k+1} - \\ln N_{k-1}|}{\\ln(\\sigma_{k+1} / \\sigma_{k-1})},
       \\qquad k = 1, \\dots, K - 2

   (the two ends of the ladder only serve as neighbours, so ``sigma*`` is 0.71 to 2.83 px). The
   *plateau* is the run of consecutive ``sigma_k`` from the most stable one, ``k0 = argmin s_k``,
   upwards while ``s_k <= s_k0 + STABILITY_TOLERANCE`` (0.08: the count falls by under 6% per
   doubling of ``sigma`` more than at the most stable point), and ``sigma*`` is its largest
   ``sigma``: the most noise suppressed before the count shows cells merging.
   Measured (true cells matched at IoU >= 0.7 by ``S(p, sigma*)``, right polarity, 136 images
   of which 12 + 12 EpiTools 8-frame movies with Poisson noise): EpiTools 92 of 94 in every draw
   (the smallest ``sigma`` of least ``s_k`` instead: 89-92; a tolerance of 0.05: 90-92); EpiTools
   inverted (dark membranes) 87-91 (the best ``sigma`` of the ladder: 89-92); make_culture with
   15-80 px cells, both polarities, 1x and 4x imaging noise, 6 seeds each: 0.96-1.00, except 15
   px cells with dark membranes and 4x noise: 0.88-1.00; noisy Voronoi cultures (18-50 px,
   tests/unit/imaging/conftest.py): 0.97-1.00.
3. **Cell scale**: ``diameter = 2 sqrt(A / pi)`` with ``A`` the median cell area of
   ``S(p*, sigma*)`` (pixels): the diameter of a disc of the median cell's area.
4. **Minimum area**: ``min_area = MIN_AREA_FRACTION * A`` with ``MIN_AREA_FRACTION = 0.1``. On the
   EpiTools image the real cells go down to 0.15 of the median area (58 of 395 px) and the
   watershed's spurious fragments are at most 0.075 of it, so a tenth drops the fragments and
   keeps the small cells; the paper's 500 px stays available as an explicit number.

Cost: at most ``len(SIGMA_LADDER_PX) + 2`` watershed runs on the reference image (about 0.12 s
each for 512 x 512 px on one core), fewer when the caller fixes the polarity or the smoothing; one
label image is held at a time (the trials keep only their cell counts).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from skimage.segmentation import find_boundaries

from calcium_gnn.errors import SegmentationError
from calcium_gnn.imaging.segmentation.result import (
    InfoValue,
    equivalent_diameter,
    median_cell_area,
)

__all__ = [
    "MIN_AREA_FRACTION",
    "POLARITY_SIGMA_PX",
    "SIGMA_LADDER_PX",
    "STABILITY_TOLERANCE",
    "AutoChoice",
    "Trial",
    "auto_min_area",
    "boundary_contrast",
    "choose_watershed",
    "most_stable_index",
]

#: Smoothing ladder (Gaussian sigma, px): 0.5 * sqrt(2)**k, k = 0..6 (0.5 to 4 px), to 3 decimals.
SIGMA_LADDER_PX: tuple[float, ...] = tuple(round(0.5 * math.sqrt(2.0) ** k, 3) for k in range(7))
#: Smoothing at which the two polarities are compared: the middle of the ladder (~1.41 px, close to
#: the "calcium" preset's 0.05 x 30 px = 1.5 px).
POLARITY_SIGMA_PX: float = SIGMA_LADDER_PX[len(SIGMA_LADDER_PX) // 2]
#: Largest excess of the instability ``s_k`` (slope of log cell count vs log sigma) over its minimum
#: that still counts as the plateau of step 2.
STABILITY_TOLERANCE: float = 0.08
#: ``min_area="auto"`` keeps cells of at least this fraction of the median cell area.
MIN_AREA_FRACTION: float = 0.1

MEMBRANES: tuple[str, str] = ("dark", "bright")

#: ``trial(membranes, sigma)`` -> the watershed labels for that polarity and smoothing (px), or
#: None when that segmentation found no cell.
Trial = Callable[[str, float], np.ndarray | None]


@dataclass
class AutoChoice:
    """The decision of :func:`choose_watershed`.

    Attributes:
        membranes: ``"dark"`` or ``"bright"``.
        sigma: the Gaussian smoothing in px.
        labels: the trial segmentation at (``membranes``, ``sigma``).
        diameter: ``2 sqrt(A / pi)`` px, ``A`` the median cell area of ``labels``.
        evidence: what the decision rests on: ``boundary_contrast_dark``/``_bright`` (when the
            polarity was chosen), ``trial_sigmas`` and ``trial_cells`` (when the smoothing was).
    """

    membranes: str
    sigma: float
    labels: np.ndarray
    diameter: float
    evidence: dict[str, InfoValue] = field(default_factory=dict)


def boundary_contrast(membrane: np.ndarray, labels: np.ndarray) -> float:
    """``C = median(membrane on the cells' inner boundaries) - median(membrane inside the cells)``.

    Args:
        membrane: (Y, X) membrane image ``m_p`` (membranes high), unsmoothed.
        labels: (Y, X) labels of the same shape, 0 = background.

    Returns:
        The contrast (in the units of ``membrane``); ``-inf`` when the labels have no boundary or
        no interior pixel (a single cell filling the image, or only one-pixel cells).
    """
    cells = labels > 0
    boundary = find_boundaries(labels, mode="inner") & cells
    interior = cells & ~boundary
    if not boundary.any() or not interior.any():
        return -math.inf
    return float(np.median(membrane[boundary]) - np.median(membrane[interior]))


def most_stable_index(
    counts: Sequence[int], sigmas: Sequence[float], tolerance: float = STABILITY_TOLERANCE
) -> int:
    """Index of the largest ``sigma_k`` of the plateau of least instability (module docstring, step 2).

    Args:
        counts: (K,) number of cells ``N_k`` at each smoothing (0 = that segmentation failed).
        sigmas: (K,) increasing smoothings in px, K >= 3.
        tolerance: the plateau holds the ``k`` from ``k0 = argmin s_k`` upwards while
            ``s_k <= s_k0 + tolerance``.

    Returns:
        k in ``1..K-2``; a window that holds a failed segmentation is never chosen, unless every
        window does (then the ``k`` of most cells, in ``0..K-1``).

    Raises:
        ValueError: fewer than 3 smoothings, or ``counts`` and ``sigmas`` of different lengths.
    """
    n = np.asarray(counts, dtype=np.float64)
    if len(n) < 3 or len(sigmas) != len(n):
        raise ValueError(f"need K >= 3 counts and as many smoothings, got {len(n)} and {len(sigmas)}")
    log_sigma = np.log(np.asarray(sigmas, dtype=np.float64))
    with np.errstate(divide="ignore"):
        log_n = np.log(n)
    last = len(n) - 1
    instability = np.full(len(n), np.inf)  # the two ends stay inf: neighbours only
    for k in range(1, last):
        if n[k - 1] > 0 and n[k] > 0 and n[k + 1] > 0:
            instability[k] = abs(log_n[k + 1] - log_n[k - 1]) / (log_sigma[k + 1] - log_sigma[k - 1])
    if np.isinf(instability).all():
        return int(np.argmax(n))
    k = int(np.argmin(instability))
    limit = instability[k] + tolerance
    while k + 1 < last and instability[k + 1] <= limit:
        k += 1
    return k


def choose_watershed(
    normalised: np.ndarray,
    trial: Trial,
    *,
    membranes: str | None = None,
    sigma: float | None = None,
    ladder: Sequence[float] = SIGMA_LADDER_PX,
    polarity_sigma: float = POLARITY_SIGMA_PX,
) -> AutoChoice:
    """Decide what the caller left open: the membrane polarity and/or the smoothing (module docstring).

    Args:
        normalised: (Y, X) reference image after the robust contrast, in [0, 1], bright = 1.
        trial: ``trial(membranes, sigma) -> labels | None`` runs the watershed.
        membranes: the polarity when the caller fixed it, else None (chosen by boundary contrast).
        sigma: the smoothing (px) when the caller fixed it, else None (chosen by stability).
        ladder: the smoothings (px) tried when ``sigma`` is None, increasing.
        polarity_sigma: the smoothing (px) of the polarity comparison when ``sigma`` is None.

    Returns:
        An :class:`AutoChoice`.

    Raises:
        SegmentationError: no trial segmentation found a cell.
    """
    evidence: dict[str, InfoValue] = {}
    counts: dict[tuple[str, float], int] = {}  # cells of every trial run (0: none found)
    latest: dict[tuple[str, float], np.ndarray | None] = {}  # the labels of the last run only (memory)

    def run(p: str, s: float) -> np.ndarray | None:
        if (p, s) not in latest:
            latest.clear()
            latest[(p, s)] = labels = trial(p, s)
            counts[(p, s)] = 0 if labels is None else int(labels.max(initial=0))
        return latest[(p, s)]

    def count(p: str, s: float) -> int:
        if (p, s) not in counts:
            run(p, s)
        return counts[(p, s)]

    if membranes is None:
        at = polarity_sigma if sigma is None else sigma
        contrast = {}
        for p in MEMBRANES:
            labels = run(p, at)
            membrane = normalised if p == "bright" else 1.0 - normalised
            contrast[p] = -math.inf if labels is None else boundary_contrast(membrane, labels)
            evidence[f"boundary_contrast_{p}"] = contrast[p] if math.isfinite(contrast[p]) else None
        if all(counts[(p, at)] == 0 for p in MEMBRANES):
            raise SegmentationError("segmentation.watershed", "no cell seeds found in either polarity")
        membranes = max(MEMBRANES, key=lambda p: contrast[p])
    if sigma is None:
        ladder_cells = [count(membranes, s) for s in ladder]
        evidence["trial_sigmas"] = [float(s) for s in ladder]
        evidence["trial_cells"] = ladder_cells
        if max(ladder_cells) == 0:
            raise SegmentationError("segmentation.watershed", "no cell seeds found at any smoothing")
        sigma = float(ladder[most_stable_index(ladder_cells, ladder)])
    labels = run(membranes, sigma)
    if labels is None:
        raise SegmentationError("segmentation.watershed", "no cell seeds found; lower h or check the image")
    diameter = equivalent_diameter(median_cell_area(labels))
    return AutoChoice(membranes=membranes, sigma=float(sigma), labels=labels, diameter=diameter,
                      evidence=evidence)


def auto_min_area(labels: np.ndarray, fraction: float = MIN_AREA_FRACTION) -> float:
    """``min_area="auto"``: ``fraction`` times the median area (px) of the cells of ``labels``.

    Args:
        labels: (Y, X) labels, 0 = background.
        fraction: the share of the median cell area below which a cell is a fragment (default
            :data:`MIN_AREA_FRACTION`, 0.1; see the module docstring for the measurement).

    Returns:
        The area threshold in px (0.0 when ``labels`` holds no cell).
    """
    area = median_cell_area(labels)
    return 0.0 if math.isnan(area) else float(fraction * area)
