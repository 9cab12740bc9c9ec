"""Boundaries between watershed regions: which are membranes, merging those that are not, and
leaving the membrane line itself out of the cells.

Notation: ``m`` is the membrane image (membranes high, in [0, 1]; :mod:`.watershed`), ``m_1`` the
same smoothed by a Gaussian of :data:`EDGE_SIGMA_PX` px, and the *thin-ridge image*

.. math::

    R = m_1 - \\gamma_{D_r}(m_1)

its white top-hat: ``gamma_D`` is the grey opening by a disc of radius ``r =``
:data:`EDGE_RADIUS_PX` px (9 px across). The opening keeps what is wider than the disc (cell
interiors, nuclei, bright or dim cells) and removes what is narrower, so ``R`` holds the thin
bright lines of ``m`` only: the membranes. The boundary between two adjacent regions ``i, j`` of a
watershed has the *strength*

.. math::

    c_{ij} = \\frac{1}{|B_{ij}|} \\sum_{(x, y) \\in B_{ij}} \\max(R(x), R(y)),

``B_ij`` the pairs of 4-neighbour pixels with one pixel in ``i`` and the other in ``j``. Its *core
strength* ``c'_ij`` is the same mean over the pairs of ``B_ij`` away from the junctions (neither pixel
within one pixel, 8-connected, of a *junction pixel*, whose 3 x 3 neighbourhood holds three or more
regions), or ``c_ij`` when no pair is (a boundary of a few pixels). A boundary that the watershed drew
across a nucleus runs from the nucleus to the membrane and meets it at a junction, where it picks up
the membrane's own crest; leaving the junctions out keeps only what lies between them.

1. **Merging** (:func:`merge_weak_boundaries`): a watershed from h-minima over-segments where the
   cells hold structure of their own: a nucleus in a cell of a nuclear dye (its bright disc splits
   the dark cytoplasm around it into several basins) or noise in large cells. Such boundaries cross
   wide structures or noise, not a thin membrane, so ``c'_ij`` is low. With the typical membrane
   core strength ``C'*`` (the length-weighted median of ``c'`` over the boundaries at or above the
   threshold, iterated from the 90th percentile of ``c'``; a membrane is then strong by definition,
   whatever the image's contrast) a boundary is weak when

   .. math::

       c'_{ij} < t = \\max(f\\, C'^*,\\; k\\, \\sigma_R), \\qquad f = 0.45,\\ k = 4,

   ``sigma_R`` the noise of ``m_1`` (:func:`noise_sd` of ``m`` over ``2 sqrt(pi) sigma_1``): a
   ridge under 4 noise standard deviations is no evidence of a membrane. Weak boundaries are removed
   weakest first (by ``c'_ij``), each only if the two regions it separates together cover at most
   :data:`MERGE_AREA_FACTOR` (1.5) times the typical cell area ``A`` (the median area after
   removing every weak boundary), unless it is very weak over its whole length, ``c_ij < f_0 C*``
   with ``f_0 = 0.3`` and ``C*`` the typical strength ``c`` (computed as ``C'*``), or in its core
   beyond its noise,

   .. math::

       c'_{ij} + z\\, \\sigma_R \\sqrt{2 \\sqrt{\\pi}\\, \\sigma_1 / n'_{ij}} < f_0\\, C'^*, \\qquad z = 2

   (``n'_ij`` the pairs of ``B_ij`` away from the junctions, at least one; the noise of ``R`` is
   correlated over ``2 sqrt(pi) sigma_1`` px along a line, so that is the standard error of
   ``c'_ij``; a boundary with no such pair has no core to judge): two real cells of unequal
   membranes are not fused into one twice the usual size. The core rule is for large cells cut across their
   nucleus: such a cut meets the membranes at both ends and takes their crest there, so its whole
   strength looks like a faint membrane while its core does not. On the zoo's dev-578 (bright
   membranes, nuclear dye, cells of 0.5-2.3 times the median area) 19 of the largest cells were cut so,
   with ``c`` at 0.33-0.46 of ``C*`` and ``c'`` at 0.13-0.28 of ``C'*`` (true membranes: ``c'`` >= 0.43),
   and the cells recovered went from 91.4% to 99.5%. Without the standard error (``c' < max(f_0 C'*,
   k sigma_R)``) faint true membranes under noise merged: on the noisy synthetic grids of
   ``tests/unit/imaging/test_imaging_watershed.py`` their cores were 0.26-0.33 of ``C'*`` over
   9-10 pairs, with a floor of 0.30-0.35. Judged without the junction-free count (``n_ij`` all pairs,
   and the core of a boundary lying wholly in junctions taken as its whole strength), a 3 px contact
   between two true cells of EpiTools' projected epithelium merged (90 of 93 -> 89). Decided on dev
   (dev-0..479 and the 116 bright-membrane nuclear members of dev-480..1199): the core rule changes 32
   of 596 members, 30 recover more cells and none fewer (+197 cells); those 116 members at >= 95%: 107
   -> 112 (98.68% -> 99.36% of 24,076 cells). The test split, run once after: test-18 99.91% -> 100%,
   nothing else moves.

   **Cannot-link**: removing weak boundaries one at a time can join two true cells through a chain.
   A cell cut across its nucleus is merged back, while one of its halves touched a neighbour
   through a short faint stretch of membrane and the other half's membrane with the same neighbour
   is clear. So a weak boundary is not removed when a membrane separates the two merged regions
   somewhere else: a boundary that is not weak, judged on its core (one with no pair away from a
   junction is no evidence, as above; ``boundaries_kept_apart`` in the record counts the weak
   boundaries kept so). On dev-743 and dev-1168 (bright membranes, nuclear dye, 52 and 71 px
   cells) pairs of cells fused through contacts of ``c'`` 0.13-0.36 of ``C'*`` while their other
   boundaries were at 0.58-0.96. Counting the boundaries without a core as membranes kept the
   fragments of single cells apart (short boundaries between three parts of one cut cell, ``c``
   0.46-0.57 of ``C*``): 19 of 596 dev members gained cells and 5 lost some (dev-451 98.0% ->
   97.0%). Judged on the core, decided on the 596 dev members (dev-0..479 and the 116
   bright-membrane nuclear members of dev-480..1199): 19 members change, all gaining cells (+43
   cells, 99.658% -> 99.689% of 137,464, 579 -> 581 at >= 95%; dev-1168 87.6% -> 100%, dev-743
   94.7% -> 100%). The test split, run once after: test-17 61% -> 95.7%, nothing else moves, 59 of
   60 members at >= 95%, 99.88% of 13,607 cells.

   **Splitting** (:func:`split_lost_membranes`): the watershed's seeds are h-minima of ``m``
   smoothed by ``sigma``, an absolute depth ``h``. A dim cell of a cytosolic dye beside a dark
   membrane (``m`` high in both) sits almost as high as the membrane, so it gets no seed and floods
   into its brighter neighbour, although the top-hat ``R``, which removes each cell's own level,
   still shows the membrane between them. A second watershed smoothed by ``sigma / sqrt 2`` (one
   step of the ladder) draws it; a region is split along such a boundary when its core strength is

   .. math::

       c'_{ij} \\ge t_s = \\max(f_s\\, C'^*,\\; k\\, \\sigma_R), \\qquad f_s = 0.75,

   and each part covers at least ``a_s A`` with ``a_s = 0.4`` (the finer watershed's noise fragments
   are small, its other boundaries weaker). On the dev members dev-57 and dev-89 (dark membranes,
   cytosolic dye, 37 and 74 px cells), the true membranes lost inside a region have core strengths
   0.65-1.16 and 0.72-0.99 of ``C'*`` and the finer watershed's noise boundaries inside a region at
   most 0.70 and 0.61.
2. **The membrane line** (:func:`carve_membranes`): a watershed gives every pixel to a cell, the
   membrane too. The pixel on the crest of each boundary (of the two 4-neighbours across it, the one
   where ``m_1`` is higher) becomes background (0), and so does the pixel across the boundary from it
   where the membrane covers it too (``m_1`` at or above half way from that cell's median ``m_1`` to
   the crest's): a line of 1 or 2 px that the graph builder bridges (``max_gap >= 2``, the default)
   and that keeps the membranes out of the cells' traces and areas. A 1 px line left the outer ring
   of a wide membrane in the cells: on the zoo's dev-882 (bright membranes 2.9 px wide, cells of
   17 px) 60 cells were recovered at IoU 0.66-0.70 only, their regions holding all of the true cell
   and a ring of membrane around it. Decided on 596 dev members (dev-0..479 and the 116
   bright-membrane nuclear members of dev-480..1199): 26 gain cells, 4 lose one each, 99.54% ->
   99.66% of 137,464 cells, 577 -> 579 members at >= 95% (dev-882 89.1% -> 98.7%); the test split,
   run once after: test-29 86% -> 100%, none lower, 58 of 60.

Measured on the culture zoo's dev-0..119 (the pipeline's reference images, every other default of
``preset="auto"``; ``benchmarks/zoo_segmentation.py``): 118 of the 120 members recover >= 95% of their
cells at IoU >= 0.7, pooled 99.65% of 31,616 cells. Without the splitting 117 and 99.57% (dev-89 89.7%
instead of 96.6%, dev-57 84.4% instead of 93.9%, dev-105 99.2% instead of 100%; no member lower with it;
``f_s = 0.65`` gives 118 and 99.66%). When the weak test used the whole strength ``c``, 116 and 99.50%
(dev-78, a bright-membrane nuclear member, 67.5% instead of 97.5%, dev-37 95.2% instead of 98.2%;
dev-117 100% instead of 97.5%). Without the merging 94 members reached 95% (the bright-membrane nuclear
members drop to 3-21%: their nuclei split the cells) and without the membrane line 97 (the true cells
exclude their 1.5-3 px membranes, which costs cells of 15-25 px the IoU); both measured with the whole
strength. On the frozen test split (run once after each change): 57 of 60 members, 99.37% of 13,607
cells (99.32% without the splitting: test-28 and test-51, dark membranes and a cytosolic dye, 99.3% and
97.5% instead of 100%; 99.3% and 57 of 60 with the whole strength; the three members below 95%, bright
membranes and a nuclear dye, are the same three with and without either change). At the smoothing the
ladder chose, 99% of the boundaries across nuclei of the 25 bright-membrane nuclear members of
dev-0..119 have a core strength under 0.02-0.43 of ``C'*`` (a whole strength under 0.11-0.55 of ``C*``),
while the weakest 1% of their true membranes are at 0.48-0.83 of it (0.49-0.86): the ranges no longer
overlap, hence ``f = 0.45``. The cost is on EpiTools' projected epithelium, whose weakest 1% of true
membranes are at 0.47 of ``C'*`` (0.53 of ``C*``): one true pair (109 + 362 px, core strength 0.45 of
``C'*``) merges, 91 of 94 cells recovered instead of 92; the splitting changes nothing there (91 on
the noise seeds 0-4 of ``tests/integration/test_movie_to_graph.py``'s movie).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi
from scipy import sparse
from scipy.sparse.csgraph import connected_components
from skimage import filters, morphology

from calcium_gnn.imaging.segmentation.result import InfoValue

__all__ = [
    "EDGE_RADIUS_PX",
    "EDGE_SIGMA_PX",
    "MERGE_AREA_FACTOR",
    "MERGE_FRACTION",
    "MERGE_FREE_CORE_Z",
    "MERGE_FREE_FRACTION",
    "MERGE_NOISE_FLOOR",
    "SPLIT_AREA_FRACTION",
    "SPLIT_FRACTION",
    "SPLIT_SIGMA_RATIO",
    "boundary_strengths",
    "junction_zone",
    "carve_membranes",
    "merge_weak_boundaries",
    "noise_sd",
    "ridge_image",
    "split_lost_membranes",
]

#: Gaussian smoothing (px) of the membrane image before the top-hat, and for the crest of a boundary.
EDGE_SIGMA_PX: float = 1.0
#: Radius (px) of the disc of the top-hat: lines narrower than 2 r + 1 = 9 px are membranes.
EDGE_RADIUS_PX: int = 4
#: ``f``: a boundary under this fraction of the typical membrane strength is weak.
MERGE_FRACTION: float = 0.45
#: ``f_0``: a boundary under this fraction is removed whatever the size of the merged region.
MERGE_FREE_FRACTION: float = 0.3
#: ``k``: a boundary under this many noise standard deviations of ``m_1`` is weak.
MERGE_NOISE_FLOOR: float = 4.0
#: ``z``: a boundary whose core strength is under ``f_0 C'*`` by this many of its standard errors is very
#: weak too.
MERGE_FREE_CORE_Z: float = 2.0
#: ``2 sqrt(pi) sigma_1``: the length (px) over which the noise of ``R`` is correlated along a line.
_NOISE_STRETCH_PX: float = 2.0 * math.sqrt(math.pi) * EDGE_SIGMA_PX
#: A weak (not very weak) boundary is removed only if the merged region is at most this many
#: typical cell areas.
MERGE_AREA_FACTOR: float = 1.5
#: ``f_s``: a boundary of the finer watershed inside one region, with a core strength at or above this
#: fraction of ``C'*``, is a membrane that the smoother seeds lost.
SPLIT_FRACTION: float = 0.75
#: ``a_s``: a region is split only if every part covers at least this many typical cell areas.
SPLIT_AREA_FRACTION: float = 0.4
#: The finer watershed's smoothing is the region's ``sigma`` over this (one step of the ladder).
SPLIT_SIGMA_RATIO: float = math.sqrt(2.0)
_ITERATIONS = 5


def noise_sd(image: np.ndarray) -> float:
    """Robust standard deviation of white pixel noise: ``1.4826 MAD(dI) / sqrt(2)`` of the
    differences ``dI`` of horizontal neighbours (edges are few, so the median ignores them)."""
    d = np.diff(np.asarray(image, dtype=np.float64), axis=1).ravel()
    if d.size == 0:
        return 0.0
    return float(1.4826 * np.median(np.abs(d - np.median(d))) / math.sqrt(2.0))


def ridge_image(membrane: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(m_1, R)``: the membrane image smoothed by :data:`EDGE_SIGMA_PX` and its white top-hat by a
    disc of :data:`EDGE_RADIUS_PX` (module docstring), both (Y, X) float64."""
    smooth = filters.gaussian(np.asarray(membrane, dtype=np.float64), sigma=EDGE_SIGMA_PX,
                              preserve_range=True)
    return smooth, morphology.white_tophat(smooth, morphology.disk(EDGE_RADIUS_PX))


def junction_zone(labels: np.ndarray) -> np.ndarray:
    """The pixels near a junction (module docstring): (Y, X) bool, True within one pixel
    (8-connected) of a pixel whose 3 x 3 neighbourhood holds three or more labels (0 counts as one).

    Args:
        labels: (Y, X) int labels.
    """
    labels = np.asarray(labels)
    high = ndi.maximum_filter(labels, size=3, mode="nearest")
    low = ndi.minimum_filter(labels, size=3, mode="nearest")
    padded = np.pad(labels, 1, mode="edge")
    rows, cols = labels.shape
    junction = np.zeros(labels.shape, dtype=bool)
    for dy in range(3):
        for dx in range(3):
            value = padded[dy : dy + rows, dx : dx + cols]
            junction |= (value != high) & (value != low)  # a third label besides the extremes
    return ndi.maximum_filter(junction, size=3, mode="constant")


def boundary_strengths(
    labels: np.ndarray, ridge: np.ndarray, exclude: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every boundary between two adjacent cells and its strength ``c_ij`` (module docstring).

    Args:
        labels: (Y, X) labels, 0 = background (boundaries with the background are not listed).
        ridge: (Y, X) the image whose crest is averaged (``R``).
        exclude: (Y, X) bool, optional: the neighbour pairs with a pixel in it are left out of the
            mean, unless that leaves a boundary none (then all of its pairs count); with
            :func:`junction_zone` this is the core strength ``c'_ij``.

    Returns:
        ``(i, j, c, n)``: (P,) int64 labels ``i < j`` of each adjacent pair, (P,) float64 mean of
        ``max(R(x), R(y))`` over its neighbour pairs, (P,) int64 number of pairs averaged (with
        ``exclude``: those away from it, 0 where none is and all of them were averaged).
    """
    labels = np.asarray(labels, dtype=np.int64)
    n = int(labels.max(initial=0)) + 1
    away_all = np.ones(labels.shape, dtype=bool) if exclude is None else ~np.asarray(exclude, dtype=bool)
    keys, values, away = [], [], []
    for a, b, ra, rb, fa, fb in (
        (labels[:-1], labels[1:], ridge[:-1], ridge[1:], away_all[:-1], away_all[1:]),
        (labels[:, :-1], labels[:, 1:], ridge[:, :-1], ridge[:, 1:], away_all[:, :-1], away_all[:, 1:]),
    ):
        cross = (a != b) & (a > 0) & (b > 0)
        low, high = np.minimum(a[cross], b[cross]), np.maximum(a[cross], b[cross])
        keys.append(low * n + high)
        values.append(np.maximum(ra[cross], rb[cross]))
        away.append(fa[cross] & fb[cross])
    key = np.concatenate(keys)
    if key.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0), empty
    value, kept = np.concatenate(values), np.concatenate(away).astype(np.float64)
    pairs, inverse = np.unique(key, return_inverse=True)
    count = np.bincount(inverse)
    strength = np.bincount(inverse, weights=value) / count
    n_kept = np.bincount(inverse, weights=kept)
    core = np.bincount(inverse, weights=value * kept) / np.maximum(n_kept, 1.0)
    strength = np.where(n_kept > 0, core, strength)
    i, j = np.divmod(pairs, n)
    return i, j, strength, count if exclude is None else n_kept.astype(np.int64)


def _noise_floor(membrane: np.ndarray) -> float:
    """``k sigma_R`` (module docstring): :data:`MERGE_NOISE_FLOOR` noise standard deviations of ``m_1``."""
    return MERGE_NOISE_FLOOR * noise_sd(membrane) / _NOISE_STRETCH_PX


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cumulative, cumulative[-1] / 2.0)])


def _typical_strength(c: np.ndarray, count: np.ndarray, floor: float) -> float:
    """``C*`` (module docstring): the length-weighted median of the strengths ``c`` (P,) at or above
    ``max(f C*, floor)``, iterated from their 90th percentile."""
    typical = float(np.percentile(c, 90))
    for _ in range(_ITERATIONS):
        strong = c >= max(MERGE_FRACTION * typical, floor)
        if not strong.any():
            break
        typical = _weighted_median(c[strong], count[strong].astype(np.float64))
    return typical


def _root(parent: np.ndarray, i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = int(parent[i])
    return i


def merge_weak_boundaries(
    labels: np.ndarray, membrane: np.ndarray, ridge: tuple[np.ndarray, np.ndarray] | None = None
) -> tuple[np.ndarray, dict[str, InfoValue]]:
    """Remove the boundaries that are not membranes (module docstring, step 1) and relabel 1..N.

    Args:
        labels: (Y, X) int labels 1..N (0 = background, kept).
        membrane: (Y, X) membrane image ``m`` (membranes high), unsmoothed.
        ridge: ``ridge_image(membrane)`` when the caller already has it.

    Returns:
        The merged (Y, X) int32 labels and the record: ``merge_threshold`` (``t``),
        ``membrane_strength`` (``C*``), ``membrane_core_strength`` (``C'*``), ``boundaries_removed``,
        ``boundaries_kept_apart`` (weak boundaries left because a membrane separates the two merged
        regions elsewhere), ``cells_before_merge``.
    """
    labels = np.asarray(labels)
    n = int(labels.max(initial=0)) + 1
    _, strength_image = ridge_image(membrane) if ridge is None else ridge
    i, j, c, count = boundary_strengths(labels, strength_image)
    _, _, core, core_count = boundary_strengths(labels, strength_image, exclude=junction_zone(labels))
    before = int(np.count_nonzero(np.bincount(labels.ravel())[1:]))
    record: dict[str, InfoValue] = {"cells_before_merge": before}
    if c.size == 0:
        return labels.astype(np.int32), {**record, "boundaries_removed": 0, "boundaries_kept_apart": 0}
    floor = _noise_floor(membrane)
    typical = _typical_strength(c, count, floor)
    typical_core = _typical_strength(core, count, floor)
    threshold = max(MERGE_FRACTION * typical_core, floor)
    free = max(MERGE_FREE_FRACTION * typical, floor)
    # the core's standard error: sigma_R over its independent stretches; a boundary with no pair away from
    # a junction has no core to judge
    core_se = floor / MERGE_NOISE_FLOOR * np.sqrt(_NOISE_STRETCH_PX / np.maximum(core_count, 1))
    faint_core = (core_count > 0) & (core + MERGE_FREE_CORE_Z * core_se < MERGE_FREE_FRACTION * typical_core)
    very_weak = (c < free) | faint_core
    is_weak = (core < threshold) | very_weak
    weak = np.flatnonzero(is_weak)
    area = np.bincount(labels.ravel(), minlength=n).astype(np.float64)
    graph = sparse.coo_matrix((np.ones(weak.size), (i[weak], j[weak])), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    merged_area = np.bincount(component[1:], weights=area[1:])
    cell_area = float(np.median(merged_area[merged_area > 0]))
    parent = np.arange(n)
    size = area.copy()
    # cannot-link: the regions each merged region is separated from by a membrane (a boundary that is
    # not weak, judged on its core); two merged regions with a membrane between them somewhere stay apart
    apart: list[set[int]] = [set() for _ in range(n)]
    for e in np.flatnonzero(~is_weak & (core_count > 0)):
        apart[i[e]].add(int(j[e]))
        apart[j[e]].add(int(i[e]))
    removed = kept_apart = 0
    for e in weak[np.argsort(core[weak], kind="stable")]:
        a, b = _root(parent, int(i[e])), _root(parent, int(j[e]))
        if a == b or not (very_weak[e] or size[a] + size[b] <= MERGE_AREA_FACTOR * cell_area):
            continue
        if any(_root(parent, other) == b for other in apart[a]):
            kept_apart += 1
            continue
        parent[b] = a
        size[a] += size[b]
        apart[a] |= apart[b]
        removed += 1
    roots = np.array([_root(parent, k) for k in range(n)])
    roots[0] = 0
    _, relabel = np.unique(roots, return_inverse=True)  # 0 stays 0: the smallest root
    record.update(merge_threshold=threshold, membrane_strength=typical, membrane_core_strength=typical_core,
                  boundaries_removed=removed, boundaries_kept_apart=kept_apart)
    return relabel[labels].astype(np.int32), record


def split_lost_membranes(
    labels: np.ndarray,
    finer_labels: np.ndarray,
    membrane: np.ndarray,
    core_typical: float,
    ridge: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, dict[str, InfoValue]]:
    """Split regions along the membranes that the smoother seeds lost (module docstring, step 1b), and
    relabel 1..N.

    The *fragments* are the intersections of a region of ``labels`` with the regions of
    ``finer_labels``. Fragments of one region joined by a boundary of core strength
    ``c' < t_s = max(f_s C'*, k sigma_R)`` are one part; the region is split into its parts when it
    has two or more and each covers at least ``a_s A`` (``A`` the median area of ``labels``).

    Args:
        labels: (Y, X) int labels after :func:`merge_weak_boundaries` (0 = background, kept).
        finer_labels: (Y, X) int labels of the same watershed with less smoothing.
        membrane: (Y, X) membrane image ``m`` (membranes high), unsmoothed.
        core_typical: ``C'*``, the merge's ``membrane_core_strength``.
        ridge: ``ridge_image(membrane)`` when the caller already has it.

    Returns:
        The (Y, X) int32 labels and the record: ``split_threshold`` (``t_s``), ``boundaries_split``
        (regions added).
    """
    labels = np.asarray(labels, dtype=np.int64)
    n = int(labels.max(initial=0)) + 1
    _, strength_image = ridge_image(membrane) if ridge is None else ridge
    threshold = max(SPLIT_FRACTION * core_typical, _noise_floor(membrane))
    record: dict[str, InfoValue] = {"split_threshold": threshold, "boundaries_split": 0}
    keys, fragments = np.unique(np.asarray(finer_labels, dtype=np.int64) * n + labels, return_inverse=True)
    fragments = (fragments.reshape(labels.shape) + 1) * (labels > 0)  # 1..F, background 0
    region = np.concatenate([[0], keys % n])  # the region of each fragment
    i, j, core, _ = boundary_strengths(fragments, strength_image, exclude=junction_zone(fragments))
    joined = (region[i] == region[j]) & (core < threshold)
    graph = sparse.coo_matrix((np.ones(int(joined.sum())), (i[joined], j[joined])), shape=(region.size,) * 2)
    _, part = connected_components(graph, directed=False)
    part_area = np.bincount(part[fragments.ravel()], minlength=part.max() + 1).astype(np.float64)
    present = np.unique(part[1:])  # every part of every region (part of a background fragment: 0 area)
    owner = np.zeros(part.max() + 1, dtype=np.int64)
    owner[part[1:]] = region[1:]
    present = present[owner[present] > 0]
    region_area = np.bincount(labels.ravel(), minlength=n)[1:]
    cell_area = float(np.median(region_area[region_area > 0])) if (region_area > 0).any() else 0.0
    n_parts = np.bincount(owner[present], minlength=n)
    smallest = np.full(n, np.inf)
    np.minimum.at(smallest, owner[present], part_area[present])
    split = (n_parts >= 2) & (smallest >= SPLIT_AREA_FRACTION * cell_area)
    split[0] = False
    if not split.any():
        return labels.astype(np.int32), record
    # a split region's parts get new labels n + part; the others keep theirs
    new_label = np.where(split[region], n + part, region)
    new_label[0] = 0
    _, relabel = np.unique(new_label, return_inverse=True)  # 0 stays 0: the smallest
    record["boundaries_split"] = int((n_parts[split] - 1).sum())
    return relabel[fragments].astype(np.int32), record


def carve_membranes(labels: np.ndarray, smooth_membrane: np.ndarray) -> np.ndarray:
    """The membrane line (module docstring, step 2): the crest pixel of every boundary between two
    cells becomes background (of two 4-neighbours in different cells, the one where
    ``smooth_membrane`` is higher, the first one on a tie), and so does the pixel across the boundary
    from it where the membrane covers it too, ``m_1(q) >= (m_1(p) + M_b) / 2`` (``p`` the crest, ``q``
    its neighbour in cell ``b``, ``M_b`` the median of ``m_1`` over ``b`` once the crests are out: at
    or above the membrane's half maximum). A line of 1 or 2 px, which the graph's default
    ``max_gap`` (2 px) bridges.

    Args:
        labels: (Y, X) labels, 0 = background.
        smooth_membrane: (Y, X) membrane image (membranes high), e.g. ``m_1``.

    Returns:
        A new (Y, X) label image of the same dtype; no cell disappears unless it is at most 2 px wide.
    """
    labels = np.asarray(labels)
    smooth_membrane = np.asarray(smooth_membrane, dtype=np.float64)
    pairs = []  # (first, second, cross): 4-neighbours along each axis and where they are in two cells
    for axis in (0, 1):
        first = [slice(None)] * 2
        second = [slice(None)] * 2
        first[axis], second[axis] = slice(None, -1), slice(1, None)
        a, b = labels[tuple(first)], labels[tuple(second)]
        pairs.append((tuple(first), tuple(second), (a != b) & (a > 0) & (b > 0)))
    crest = np.zeros(labels.shape, dtype=bool)
    for first, second, cross in pairs:
        higher = smooth_membrane[first] >= smooth_membrane[second]
        crest[first] |= cross & higher
        crest[second] |= cross & ~higher
    out = labels.copy()
    out[crest] = 0
    n = int(labels.max(initial=0)) + 1
    level = np.zeros(n)
    present = np.unique(out[out > 0])
    if present.size:
        level[present] = ndi.median(smooth_membrane, out, present)
    covered = np.zeros(labels.shape, dtype=bool)
    for first, second, cross in pairs:
        a, b = labels[first], labels[second]
        m_a, m_b = smooth_membrane[first], smooth_membrane[second]
        crest_a, crest_b = crest[first], crest[second]
        covered[second] |= cross & crest_a & ~crest_b & (2.0 * m_b >= m_a + level[b])
        covered[first] |= cross & crest_b & ~crest_a & (2.0 * m_a >= m_b + level[a])
    out[covered] = 0
    return out
