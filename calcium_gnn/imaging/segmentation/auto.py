"""Segmentation settings read off the image itself: membrane polarity, smoothing, cell scale, min area.

The watershed's ``preset="auto"`` (:mod:`.watershed`) and the pipeline's ``min_area="auto"`` use
this module. Notation: ``m`` in [0, 1] is the reference image after the robust contrast of the
watershed (bright = 1); the *membrane image* of a polarity ``p`` is ``m_p = m`` for bright
membranes and ``m_p = 1 - m`` for dark ones; ``S(p, sigma)`` is the seeded watershed of ``m_p``
smoothed by a Gaussian of ``sigma`` pixels (h-minima seeds, whole image), ``N(p, sigma)`` its
number of cells.

1. **Polarity** (dark or bright membranes), from two properties of the membrane image ``m_p`` of
   the right polarity. *Its cells are basins*: count the h-minima of depth :data:`DEEP_H` (0.25 of
   the contrast) of ``m_p`` smoothed by :data:`POLARITY_SIGMA_PX`, ``D_p``. In the wrong polarity
   the membranes become one connected network of valleys, a single basin; when ``D_p <= 1 < D_q``
   the polarity ``q`` wins (rule ``"single basin"``; also what decides a nuclear dye whose membranes
   are too faint to see: its nuclei are the deep basins of ``1 - m``), unless the line score below
   points the other way and ``D_q`` is under :data:`SINGLE_BASIN_MIN` (10): pixel noise leaves a few
   deep minima in the wrong polarity too. On a grid of thin dark membranes around 36 cells under
   white noise of 0.8-1.0x their contrast, the inverted image had 2-5 such minima against 0-1 and the
   basins chose bright on 16 of 18 noise draws, while ``L`` read -0.45 to -0.68. On the reference
   images of dev-0..239 the two rules never disagree and the fewest basins that decided were 29
   (dev-78), so nothing there changes. Otherwise, *its membranes
   are thin lines* between wide cells, whatever the dye (a cytosolic dye fills the cells, a nuclear
   dye lights a wide disc in each). With ``m_s`` the image smoothed by ``s`` px and top-hats by a
   disc ``D`` of radius :data:`LINE_RADIUS_PX` (3 px: 7 px across), bright thin lines are
   ``WTH = m_s - opening_D(m_s)`` and dark ones ``BTH = closing_D(m_s) - m_s``; the *line score*

   .. math::

       L(s) = \\ln \\frac{\\operatorname{mean} WTH}{\\operatorname{mean} BTH}

   is positive for bright membranes and negative for dark ones (rule ``"thin lines"``); when
   ``|L| <`` :data:`LINE_SCORE_MIN` (0.15) the polarity of more deep minima wins (``"deep
   minima"``). The first rule comes first because the caps of bright nuclei with no visible
   membranes also look like bright thin structures to the top-hat. *The scale* ``s`` is selected
   (:func:`line_score_across_scales`): from 1 px up the ladder :data:`LINE_SIGMAS_PX` (1 to
   2.83 px) while ``|L|`` grows, stopping at its first maximum. Pixel noise adds as much to ``WTH``
   as to ``BTH`` and pulls ``L`` towards 0; smoothing removes it faster than it blurs the membranes,
   so in a noisy image ``|L|`` grows with ``s``. It stops at 2.83 px, where a Gaussian widens a
   thin line to a half-maximum width of 2.355 x 2.83 = 6.7 px, the disc's 7 px: wider lines no
   longer fit the top-hat. It stops earlier where ``|L|`` falls, because coarse smoothing lets
   the top-hat see whole nuclei rather than lines: dev-181 (bright membranes, nuclear dye, little
   noise) has ``L`` +0.22 at 1 px and -0.18 at 4 px.

   Measured on the reference images of the zoo's dev-0..239 (240; ``--split dev`` of
   ``benchmarks/zoo_segmentation.py``): every polarity right. 84 were decided by the single basin
   and 156 by the line score with ``|L| >= 0.22``. The scale moved above 1 px for 72 of the 156.
   With ``L(1 px)`` alone (the previous rule), two dark-membrane cytosolic members with noisy large
   cells (dev-204 and dev-224: 5% and 2.6% noise, 39 and 74 px) had ``|L|`` of 0.03 and 0.08. The
   deep minima, counting noise, then chose bright membranes and recovered 0% of their cells. At
   the selected scale they read -0.25 and -0.45: dark, and dev-224 recovers 90.7% of its cells,
   dev-204 (5% noise over 127 frames) 28% (dev-0..119: 99.65% of 31,616 cells, as before;
   dev-120..239: 99.0% -> 99.5% of 24,876). The boundary contrast of the two segmentations
   (:func:`boundary_contrast`, an earlier rule) chose wrong for 4 of the 8 dark-membrane nuclear
   members of dev-0..59, whose wrong-polarity watershed runs over the bright nuclei.
2. **Smoothing, by stability** (scale selection as in MSER: keep what persists): over the ladder
   ``sigma_k = SIGMA_LADDER_PX`` (0.5 to 8 px in steps of sqrt 2) count ``N_k = N(p*, sigma_k)``.
   Noise makes many shallow minima at small ``sigma`` whose number falls fast as ``sigma`` grows;
   the real cells persist over a range of ``sigma`` (a plateau) until the smoothing blurs the
   membranes and cells merge. The instability is the slope of ``log N`` against ``log sigma``,

   .. math::

       s_k = \\frac{|\\ln N_{k+1} - \\ln N_{k-1}|}{\\ln(\\sigma_{k+1} / \\sigma_{k-1})},
       \\qquad k = 1, \\dots, K - 2

   (the two ends of the ladder only serve as neighbours, so ``sigma*`` is 0.71 to 5.66 px). The
   *plateau* is the run of consecutive ``sigma_k`` from the most stable one, ``k0 = argmin s_k``,
   upwards while ``s_k <= s_k0 + STABILITY_TOLERANCE`` (0.08: the count falls by under 6% per
   doubling of ``sigma`` more than at the most stable point), and ``sigma*`` is its largest
   ``sigma``: the most noise suppressed before the count shows cells merging. The ladder reaches
   8 px for the zoo's 60-80 px cells, whose per-pixel noise (the noise of a cell's mean times the
   square root of its area) leaves no plateau below 4 px. ``k0`` is sought only among the smoothings
   that bring the image's white noise under half the seeds' depth,

   .. math::

       \\sigma_k \\ge \\sigma_{min} = \\frac{c\\, \\sigma_n}{2 \\sqrt{\\pi}\\, h}, \\qquad c = 2

   (:func:`noise_min_sigma`: a Gaussian of ``sigma`` px averages white noise of standard deviation
   ``sigma_n`` down to ``sigma_n / (2 sqrt(pi) sigma)``): below it the count falls as a power of
   ``sigma`` that can be steadier than the cells' own plateau. Over dev-0..239 the chosen ``sigma``
   was at least 2.14 times the smoothing that brings the noise to ``h`` (``sigma_min / c``) on every
   member but three, and 1.4-1.7 times it on those three, the outright failures: dev-212 (54 px cells,
   2.2% noise) now gets 90% of its cells instead of 18%; dev-204 and dev-224 stayed at 0%, their
   polarity wrong (step 1; fixed since by the line score's scale selection). The frozen test split
   is unchanged by the floor, member by member.
3. **Boundaries that are not membranes** are then removed and the membrane line is left out of the
   cells (:mod:`.boundaries`); the watershed does this whenever ``preset="auto"``.
4. **Cell scale**: ``diameter = 2 sqrt(A / pi)`` with ``A`` the median cell area of the merged
   segmentation (pixels): the diameter of a disc of the median cell's area.
5. **Minimum area**: ``min_area = MIN_AREA_FRACTION * A`` with ``MIN_AREA_FRACTION = 0.1``. On the
   EpiTools image the real cells go down to 0.15 of the median area (58 of 395 px) and the
   watershed's spurious fragments are at most 0.075 of it, so a tenth drops the fragments and
   keeps the small cells; the paper's 500 px stays available as an explicit number.

Measured (``benchmarks/zoo_segmentation.py``: the culture zoo's dev members through the movie ->
graph pipeline with every default, true cells recovered at IoU >= 0.7): dev-0..29 pooled 99.7%
(58.8% with the former rules, boundary-contrast polarity, a ladder to 4 px and no merging), 29 of 30
members >= 95% (17 before); on the reference images of dev-0..119, 118 of 120 members (63 before).
EpiTools with every default: 91 of 94 cells (92 before the merging used the core strength:
:mod:`.boundaries`).

Cost: two to eight top-hats (one to four line-score scales) and two h-minima counts for the
polarity, ``len(SIGMA_LADDER_PX)`` h-minima counts for the ladder (the watershed keeps one cell
per h-minimum, so the counts need no watershed), one watershed and the merging
(:mod:`.boundaries`): 3.8 s for an 826 x 826 px image on one busy core (measured with one
line-score scale; the four scales take 0.19 s against 0.05 s on a 607 x 607 image); one label image
is held at a time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi
from skimage import filters, morphology
from skimage.segmentation import find_boundaries

from calcium_gnn.errors import SegmentationError
from calcium_gnn.imaging.segmentation.boundaries import noise_sd
from calcium_gnn.imaging.segmentation.result import (
    InfoValue,
    equivalent_diameter,
    median_cell_area,
)

__all__ = [
    "DEEP_H",
    "LINE_RADIUS_PX",
    "LINE_SCORE_MIN",
    "LINE_SIGMAS_PX",
    "MIN_AREA_FRACTION",
    "NOISE_SEED_FACTOR",
    "POLARITY_SIGMA_PX",
    "SIGMA_LADDER_PX",
    "SINGLE_BASIN_MIN",
    "STABILITY_TOLERANCE",
    "AutoChoice",
    "Counter",
    "Trial",
    "auto_min_area",
    "boundary_contrast",
    "choose_polarity",
    "choose_watershed",
    "deep_minima",
    "line_score",
    "line_score_across_scales",
    "most_stable_index",
    "noise_min_sigma",
]

#: Smoothing ladder (Gaussian sigma, px): 0.5 * sqrt(2)**k, k = 0..8 (0.5 to 8 px), to 3 decimals.
SIGMA_LADDER_PX: tuple[float, ...] = tuple(round(0.5 * math.sqrt(2.0) ** k, 3) for k in range(9))
#: Smoothing of the deep-minima comparison of the polarities (~1.41 px, close to the "calcium"
#: preset's 0.05 x 30 px = 1.5 px).
POLARITY_SIGMA_PX: float = SIGMA_LADDER_PX[3]
#: Radius (px) of the disc of the line score's top-hats: lines narrower than 7 px are membranes.
LINE_RADIUS_PX: int = 3
#: Smoothings (px) the line score's scale is selected from (1 to 2.83 px, the smoothing ladder's
#: steps of sqrt 2; module docstring, step 1).
LINE_SIGMAS_PX: tuple[float, ...] = SIGMA_LADDER_PX[2:6]
#: Fewest deep basins with which the single-basin rule overrules a line score of the other sign
#: (module docstring, step 1).
SINGLE_BASIN_MIN: int = 10
#: ``|line score|`` under which the image shows no membranes (the deep-minima rule decides).
LINE_SCORE_MIN: float = 0.15
#: Depth (fraction of the contrast) of the h-minima counted by the deep-minima rule.
DEEP_H: float = 0.25
#: Largest excess of the instability ``s_k`` (slope of log cell count vs log sigma) over its minimum
#: that still counts as the plateau of step 2.
STABILITY_TOLERANCE: float = 0.08
#: ``c``: the ladder's smoothing must bring the image's white noise under ``h / c`` (step 2).
NOISE_SEED_FACTOR: float = 2.0
#: ``min_area="auto"`` keeps cells of at least this fraction of the median cell area.
MIN_AREA_FRACTION: float = 0.1

MEMBRANES: tuple[str, str] = ("dark", "bright")

#: ``trial(membranes, sigma)`` -> the watershed labels for that polarity and smoothing (px), or
#: None when that segmentation found no cell.
Trial = Callable[[str, float], np.ndarray | None]
#: ``count(membranes, sigma)`` -> the number of cells the trial would find (0: none).
Counter = Callable[[str, float], int]


@dataclass
class AutoChoice:
    """The decision of :func:`choose_watershed`.

    Attributes:
        membranes: ``"dark"`` or ``"bright"``.
        sigma: the Gaussian smoothing in px.
        labels: the trial segmentation at (``membranes``, ``sigma``).
        diameter: ``2 sqrt(A / pi)`` px, ``A`` the median cell area of ``labels``.
        evidence: what the decision rests on: ``line_score``, ``line_sigma``, ``polarity_rule``
            (``"thin lines"`` or ``"deep minima"``, then also ``deep_minima_dark``/``_bright``) when the
            polarity was chosen, ``trial_sigmas`` and ``trial_cells`` when the smoothing was.
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


def line_score(normalised: np.ndarray, radius: int = LINE_RADIUS_PX,
               sigma: float = LINE_SIGMAS_PX[0]) -> float:
    """``L(s) = ln(mean WTH / mean BTH)`` of the image smoothed by ``s = sigma`` px (module
    docstring, step 1): > 0 when thin bright lines dominate, < 0 for thin dark lines.

    Args:
        normalised: (Y, X) image, bright = high.
        radius: radius (px) of the top-hats' disc.
        sigma: Gaussian smoothing (px) before the top-hats.

    Returns:
        The score; 0.0 when the image has neither (a constant image).
    """
    smooth = filters.gaussian(np.asarray(normalised, dtype=np.float64), sigma=sigma, preserve_range=True)
    disc = morphology.disk(radius)
    bright = float(morphology.white_tophat(smooth, disc).mean())
    dark = float(morphology.black_tophat(smooth, disc).mean())
    if bright <= 0.0 or dark <= 0.0:
        return 0.0 if bright == dark else math.copysign(math.inf, bright - dark)
    return math.log(bright / dark)


def line_score_across_scales(
    normalised: np.ndarray, sigmas: Sequence[float] = LINE_SIGMAS_PX
) -> tuple[float, float]:
    """The line score at its selected scale (module docstring, step 1): ``L(s_j)`` for ``s_0 < s_1
    < ...`` while ``|L|`` grows, stopping at its first maximum.

    Args:
        normalised: (Y, X) image, bright = high.
        sigmas: increasing smoothings (px), at least one.

    Returns:
        ``(L, s)``: the score and the smoothing (px) it was read at.
    """
    if not sigmas:
        raise ValueError("line_score_across_scales needs at least one smoothing")
    best_sigma = float(sigmas[0])
    best = line_score(normalised, sigma=best_sigma)
    for s in sigmas[1:]:
        score = line_score(normalised, sigma=float(s))
        if not abs(score) > abs(best):  # never true once |best| is inf
            break
        best, best_sigma = score, float(s)
    return best, best_sigma


def deep_minima(normalised: np.ndarray, membranes: str, sigma: float = POLARITY_SIGMA_PX) -> int:
    """Number of h-minima of depth :data:`DEEP_H` of the membrane image ``m_p`` smoothed by ``sigma``
    px: the basins deep enough to be cells in that polarity."""
    membrane = normalised if membranes == "bright" else 1.0 - normalised
    smooth = filters.gaussian(membrane, sigma=sigma, preserve_range=True)
    return int(ndi.label(morphology.h_minima(smooth, DEEP_H))[1])


def choose_polarity(
    normalised: np.ndarray, sigma: float = POLARITY_SIGMA_PX
) -> tuple[str, dict[str, InfoValue]]:
    """The membrane polarity of the image (module docstring, step 1) and its evidence.

    Args:
        normalised: (Y, X) reference image after the robust contrast, in [0, 1], bright = 1.
        sigma: smoothing (px) of the deep-minima counts.

    Returns:
        ``("dark" | "bright", evidence)``: ``deep_minima_dark``, ``deep_minima_bright``,
        ``line_score`` with the smoothing it was read at (``line_sigma``, px) and ``polarity_rule``
        (``"single basin"``, ``"thin lines"`` or ``"deep minima"``; dark wins a tie of the last).
    """
    deep = {p: deep_minima(normalised, p, sigma) for p in MEMBRANES}
    score, line_sigma = line_score_across_scales(normalised)
    evidence: dict[str, InfoValue] = {f"deep_minima_{p}": deep[p] for p in MEMBRANES}
    evidence["line_score"] = score if math.isfinite(score) else None
    evidence["line_sigma"] = line_sigma
    most = max(MEMBRANES, key=lambda p: deep[p])
    lines = None if abs(score) < LINE_SCORE_MIN else ("bright" if score > 0 else "dark")
    if min(deep.values()) <= 1 < deep[most] and (lines in (None, most) or deep[most] >= SINGLE_BASIN_MIN):
        evidence["polarity_rule"] = "single basin"
        return most, evidence
    if lines is not None:
        evidence["polarity_rule"] = "thin lines"
        return lines, evidence
    evidence["polarity_rule"] = "deep minima"
    return most, evidence


def noise_min_sigma(normalised: np.ndarray, h: float) -> float:
    """``sigma_min = c sigma_n / (2 sqrt(pi) h)`` (module docstring, step 2): the smoothing (px) at
    which a Gaussian brings white noise of standard deviation ``sigma_n`` (:func:`.boundaries.noise_sd`
    of the image) to ``h / c``, ``c =`` :data:`NOISE_SEED_FACTOR`.

    Args:
        normalised: (Y, X) reference image after the robust contrast.
        h: depth of the seeds' h-minima, in the same units.
    """
    return NOISE_SEED_FACTOR * noise_sd(normalised) / (2.0 * math.sqrt(math.pi) * h)


def most_stable_index(
    counts: Sequence[int], sigmas: Sequence[float], tolerance: float = STABILITY_TOLERANCE,
    min_sigma: float = 0.0,
) -> int:
    """Index of the largest ``sigma_k`` of the plateau of least instability (module docstring, step 2).

    Args:
        counts: (K,) number of cells ``N_k`` at each smoothing (0 = that segmentation failed).
        sigmas: (K,) increasing smoothings in px, K >= 3.
        tolerance: the plateau holds the ``k`` from ``k0 = argmin s_k`` upwards while
            ``s_k <= s_k0 + tolerance``.
        min_sigma: ``k0`` is sought among the ``sigma_k >= min_sigma`` only, unless none of them
            has a finite ``s_k``.

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
    eligible = np.where(np.asarray(sigmas, dtype=np.float64) >= min_sigma, instability, np.inf)
    k = int(np.argmin(eligible if np.isfinite(eligible).any() else instability))
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
    count: Counter | None = None,
    h: float | None = None,
) -> AutoChoice:
    """Decide what the caller left open: the membrane polarity and/or the smoothing (module docstring).

    Args:
        normalised: (Y, X) reference image after the robust contrast, in [0, 1], bright = 1.
        trial: ``trial(membranes, sigma) -> labels | None`` runs the watershed.
        count: ``count(membranes, sigma) -> int``, the number of cells ``trial`` would find (0 for
            None), when that is cheaper than running it (the ladder only needs the counts);
            None: the ladder runs ``trial``.
        membranes: the polarity when the caller fixed it, else None (:func:`choose_polarity`).
        sigma: the smoothing (px) when the caller fixed it, else None (chosen by stability).
        ladder: the smoothings (px) tried when ``sigma`` is None, increasing.
        h: the seeds' h-minima depth: the most stable smoothing is sought at or above
            :func:`noise_min_sigma` (recorded as ``noise_min_sigma``); None: over the whole ladder.

    Returns:
        An :class:`AutoChoice` (its ``labels`` and ``diameter`` are the trial's, before any merging).

    Raises:
        SegmentationError: no trial segmentation found a cell.
    """
    evidence: dict[str, InfoValue] = {}
    counts: dict[float, int] = {}  # cells of every trial run (0: none found)
    latest: dict[float, np.ndarray | None] = {}  # the labels of the last run only (memory)

    if membranes is None:
        membranes, evidence = choose_polarity(normalised)

    def run(s: float) -> np.ndarray | None:
        if s not in latest:
            latest.clear()
            latest[s] = labels = trial(membranes, s)
            counts[s] = 0 if labels is None else int(labels.max(initial=0))
        return latest[s]

    if sigma is None:
        ladder_cells = []
        for s in ladder:
            if count is not None:
                counts[s] = int(count(membranes, s))
            else:
                run(s)
            ladder_cells.append(counts[s])
        evidence["trial_sigmas"] = [float(s) for s in ladder]
        evidence["trial_cells"] = ladder_cells
        if max(ladder_cells) == 0:
            raise SegmentationError("segmentation.watershed", "no cell seeds found at any smoothing")
        min_sigma = 0.0 if h is None else noise_min_sigma(normalised, h)
        evidence["noise_min_sigma"] = min_sigma
        sigma = float(ladder[most_stable_index(ladder_cells, ladder, min_sigma=min_sigma)])
    labels = run(sigma)
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
