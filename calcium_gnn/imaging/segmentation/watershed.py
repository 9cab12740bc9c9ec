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
5. watershed of the membrane image smoothed by ``min(sigma, 2 px)`` from the seeds
   (``compactness`` > 0 gives the compact watershed), relabelled 1..N;
6. ``merge``: the boundaries that are not thin membranes (across a nucleus, along noise) are
   removed (:func:`.boundaries.merge_weak_boundaries`), and the regions are split along the strong
   membranes that a watershed one ladder step less smooth draws inside them
   (:func:`.boundaries.split_lost_membranes`: a dim cell beside a dark membrane);
7. ``membrane_line``: the crest pixel of every boundary between two cells becomes background, and
   the pixel across from it where the membrane covers it too: a 1-2 px membrane line
   (:func:`.boundaries.carve_membranes`).

Presets: ``"auto"`` (the default) reads the membrane polarity, the smoothing and the cell diameter
off the image (:mod:`.auto`: polarity by the thin-line score of the image, smoothing by the
stability of the cell count over a ladder of smoothings, diameter from the median cell area) with
``seeds="hminima", h=0.05, merge=True, membrane_line=True``; :data:`PRESETS` holds fixed option
sets, ``"calcium"`` and ``"epitools"`` (without steps 6 and 7, as before them). Explicit options
always win over a preset and over the automatic decision.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
from scipy import ndimage as ndi
from skimage import feature, filters, morphology, segmentation

from calcium_gnn.errors import ConfigError, SegmentationError
from calcium_gnn.imaging.segmentation.auto import choose_watershed
from calcium_gnn.imaging.segmentation.boundaries import (
    SPLIT_SIGMA_RATIO,
    carve_membranes,
    merge_weak_boundaries,
    ridge_image,
    split_lost_membranes,
)
from calcium_gnn.imaging.segmentation.result import (
    Segmentation,
    describe_labels,
    equivalent_diameter,
    median_cell_area,
    plain_info,
)

PRESETS: dict[str, dict[str, Any]] = {
    # temporal mean of a calcium movie: bright cytoplasm, dim membranes, blur and noise
    "calcium": {"membranes": "dark", "diameter": 30.0, "smoothing": 0.05, "seeds": "hminima", "h": 0.05,
                "merge": False, "membrane_line": False},
    # EpiTools projected epithelium (tests/data/epitools): bright membranes, cells ~22 px across;
    # matches 92 of EpiTools' 94 cells (97.9%) at IoU >= 0.7 (tests/unit/imaging/test_imaging_watershed.py)
    "epitools": {"membranes": "bright", "diameter": 22.0, "smoothing": 0.05, "seeds": "hminima", "h": 0.05,
                 "merge": False, "membrane_line": False},
}
#: The preset that decides membranes, diameter and smoothing from the image (:mod:`.auto`).
AUTO = "auto"
#: Every accepted ``preset`` name.
PRESET_NAMES: tuple[str, ...] = (AUTO, *PRESETS)
#: Largest smoothing (px) of the image the watershed floods (the seeds may come from a smoother one).
#: Measured on the reference images of the zoo's dev-0..119 and of tests/unit/imaging: 138 of 143
#: at >= 95% of their cells recovered with it, 136 without.
FLOOD_SIGMA_MAX_PX: float = 2.0
#: What ``preset="auto"`` does not decide; ``smoothing`` is used only when the caller gives
#: ``diameter`` (else the smoothing is chosen from the image).
AUTO_DEFAULTS: dict[str, Any] = {"smoothing": 0.05, "seeds": "hminima", "h": 0.05, "merge": True,
                                 "membrane_line": True}


def segment_watershed(
    image: np.ndarray,
    *,
    preset: str = AUTO,
    membranes: Literal["dark", "bright"] | None = None,
    diameter: float | None = None,
    smoothing: float | None = None,
    seeds: Literal["hminima", "distance"] | None = None,
    h: float | None = None,
    seed_spacing: float = 0.5,
    foreground: Literal["all", "otsu"] = "all",
    compactness: float = 0.0,
    percentiles: tuple[float, float] = (1.0, 99.0),
    merge: bool | None = None,
    membrane_line: bool | None = None,
) -> np.ndarray:
    """Segment cells in a reference image (Y, X) by seeded watershed; the labels of
    :func:`watershed_segmentation` (same arguments), without its record."""
    return watershed_segmentation(
        image, preset=preset, membranes=membranes, diameter=diameter, smoothing=smoothing, seeds=seeds,
        h=h, seed_spacing=seed_spacing, foreground=foreground, compactness=compactness,
        percentiles=percentiles, merge=merge, membrane_line=membrane_line,
    ).labels


def watershed_segmentation(
    image: np.ndarray,
    *,
    preset: str = AUTO,
    membranes: Literal["dark", "bright"] | None = None,
    diameter: float | None = None,
    smoothing: float | None = None,
    seeds: Literal["hminima", "distance"] | None = None,
    h: float | None = None,
    seed_spacing: float = 0.5,
    foreground: Literal["all", "otsu"] = "all",
    compactness: float = 0.0,
    percentiles: tuple[float, float] = (1.0, 99.0),
    merge: bool | None = None,
    membrane_line: bool | None = None,
) -> Segmentation:
    """Segment cells in a reference image (Y, X) by seeded watershed, and record how.

    Options left as ``None`` take their value from the ``preset``. With ``preset="auto"`` (the
    default) ``seeds="hminima", h=0.05, merge=True, membrane_line=True`` and, from the image
    (:mod:`.auto`):

    - ``membranes``: the polarity of the image's thin lines (or, when it shows none, of its deep
      basins: the nuclei of a nuclear dye);
    - the smoothing ``sigma = smoothing * diameter`` (px): the most stable of a ladder of
      smoothings (0.5 to 8 px); fixed to ``smoothing * diameter`` (``smoothing`` 0.05 unless
      given) when ``diameter`` is given;
    - ``diameter``: ``2 sqrt(A / pi)``, ``A`` the median cell area of the chosen (merged)
      segmentation; ``smoothing = sigma / diameter`` unless given (then ``sigma = smoothing *
      diameter``).

    The named presets (:data:`PRESETS`) fix every option: ``"calcium"`` is ``membranes="dark",
    diameter=30, smoothing=0.05, seeds="hminima", h=0.05, merge=False, membrane_line=False``;
    ``"epitools"`` the same with bright membranes and ``diameter=22``. Explicit keywords win over
    the preset and over the automatic decision.

    Args:
        image: (Y, X) reference image (e.g. the temporal mean of the movie).
        preset: ``"auto"`` or a name in :data:`PRESETS` (``"calcium"``, ``"epitools"``).
        membranes: ``"dark"`` (calcium movies) or ``"bright"`` (membrane stains).
        diameter: typical cell diameter in pixels; sets the smoothing and the seed spacing.
        smoothing: Gaussian sigma as a fraction of ``diameter``.
        seeds: ``"hminima"`` or ``"distance"`` (see the module docstring).
        h: depth of the h-minima, as a fraction of the normalised contrast (0..1).
        seed_spacing: minimum distance between distance-transform seeds, fraction of ``diameter``.
        foreground: ``"all"`` (confluent) or ``"otsu"`` (leave dark background unlabelled).
        compactness: compact-watershed weight (0 = classical watershed).
        percentiles: (low, high) percentiles mapped to 0 and 1 for the contrast.
        merge: remove the boundaries that are not thin membranes (:mod:`.boundaries`).
        membrane_line: leave the membrane line (1-2 px) between two cells as background.

    Returns:
        A :class:`~.result.Segmentation`: (Y, X) int32 labels (0 = background, cells 1..N) and
        ``info``: ``backend="watershed"``, ``preset``, every option used (``membranes``,
        ``diameter``, ``smoothing``, ``sigma`` = smoothing x diameter in px, ``seeds``, ``h``,
        ``seed_spacing``, ``foreground``, ``compactness``, ``percentiles``, ``merge``,
        ``membrane_line``), ``auto_decided`` (the options the image decided, ``[]`` for a named
        preset or when every one was given), the evidence of the decision (``line_score``,
        ``polarity_rule``, ``trial_sigmas``, ``trial_cells``; :func:`.auto.choose_polarity`), the
        merge's record (``cells_before_merge``, ``boundaries_removed``, ``boundaries_kept_apart``,
        ``merge_threshold``, ``membrane_strength``, ``membrane_core_strength``), the split's
        (``split_threshold``, ``boundaries_split``) and ``n_cells``, ``median_area``,
        ``median_diameter`` of the labels.

    Raises:
        SegmentationError: the image is not 2-D, not finite, constant, or no cell was found.
        ConfigError: an unknown preset or an option out of range (key ``segmentation.<option>``).
    """
    if preset not in PRESET_NAMES:
        raise ConfigError("segmentation.preset", f"unknown preset {preset!r}; known: {list(PRESET_NAMES)}")
    given = {"membranes": membranes, "diameter": diameter, "smoothing": smoothing, "seeds": seeds, "h": h,
             "merge": merge, "membrane_line": membrane_line}
    given = {k: v for k, v in given.items() if v is not None}
    base = AUTO_DEFAULTS if preset == AUTO else PRESETS[preset]
    opts: dict[str, Any] = {"membranes": None, "diameter": None, **base, **given}
    opts.update(seed_spacing=seed_spacing, foreground=foreground, compactness=compactness,
                percentiles=tuple(percentiles))
    _check_options(opts)
    normalised = _normalise(image, opts["percentiles"])

    decided: list[str] = []
    evidence: dict[str, Any] = {}
    labels: np.ndarray | None = None
    sigma: float | None = None
    ridge: tuple[np.ndarray, np.ndarray] | None = None
    if preset == AUTO and (opts["membranes"] is None or opts["diameter"] is None):
        fixed_sigma = float(opts["smoothing"]) * float(opts["diameter"]) if "diameter" in given else None

        def trial(p: str, s: float) -> np.ndarray | None:
            try:
                return _watershed(_membrane_image(normalised, p), sigma=s, seeds="hminima",
                                  h=float(opts["h"]), compactness=compactness)
            except SegmentationError:
                return None

        def count(p: str, s: float) -> int:  # the watershed keeps one cell per h-minimum
            smooth = filters.gaussian(_membrane_image(normalised, p), sigma=s, preserve_range=True)
            return int(ndi.label(morphology.h_minima(smooth, float(opts["h"])))[1])

        choice = choose_watershed(normalised, trial, membranes=opts["membranes"], sigma=fixed_sigma,
                                  count=count, h=float(opts["h"]))
        evidence = choice.evidence
        if opts["membranes"] is None:
            opts["membranes"] = choice.membranes
            decided.append("membranes")
        chosen = choice.labels
        if opts["merge"]:
            chosen_membrane = _membrane_image(normalised, opts["membranes"])
            ridge = ridge_image(chosen_membrane)
            chosen, record = _revise_boundaries(chosen, chosen_membrane, ridge, sigma=choice.sigma,
                                                h=float(opts["h"]), compactness=compactness)
            evidence.update(record)
        if opts["diameter"] is None:
            opts["diameter"] = equivalent_diameter(median_cell_area(chosen))
            decided.append("diameter")
            if "smoothing" not in given:
                opts["smoothing"] = choice.sigma / opts["diameter"]
                decided.append("smoothing")
                sigma = choice.sigma
        if sigma is None:
            sigma = float(opts["smoothing"]) * float(opts["diameter"])
        if math.isclose(sigma, choice.sigma) and opts["seeds"] == "hminima" and foreground == "all":
            labels = chosen  # the final options are the chosen trial's
    if sigma is None:
        sigma = float(opts["smoothing"]) * float(opts["diameter"])
    membrane = _membrane_image(normalised, opts["membranes"])
    if labels is None:
        labels = _watershed(membrane, sigma=sigma, seeds=opts["seeds"], h=float(opts["h"]),
                            diameter=float(opts["diameter"]), seed_spacing=seed_spacing,
                            foreground=foreground, compactness=compactness)
        if opts["merge"]:
            ridge = ridge_image(membrane) if ridge is None else ridge
            labels, record = _revise_boundaries(labels, membrane, ridge, sigma=sigma, h=float(opts["h"]),
                                                compactness=compactness)
            evidence.update(record)
    if opts["membrane_line"]:
        smooth = (ridge_image(membrane) if ridge is None else ridge)[0]
        labels = carve_membranes(labels, smooth)
    info = plain_info({"backend": "watershed", "preset": preset, **opts, "sigma": sigma,
                       "auto_decided": decided, **evidence, **describe_labels(labels)})
    return Segmentation(labels=labels, info=info)


def _normalise(image: np.ndarray, percentiles: tuple[float, float]) -> np.ndarray:
    """Step 1: the robust contrast ``clip((I - p_lo) / (p_hi - p_lo), 0, 1)`` (bright = 1), float64."""
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
    return np.clip((img - p_lo) / (p_hi - p_lo), 0.0, 1.0)


def _membrane_image(normalised: np.ndarray, membranes: str) -> np.ndarray:
    """Step 1, polarity: membranes high (``1 - m`` for dark membranes)."""
    return 1.0 - normalised if membranes == "dark" else normalised


def _watershed(
    membrane: np.ndarray,
    *,
    sigma: float,
    seeds: str,
    h: float,
    diameter: float = math.nan,
    seed_spacing: float = 0.5,
    foreground: str = "all",
    compactness: float = 0.0,
) -> np.ndarray:
    """Steps 2-5 on the membrane image (membranes high, in [0, 1]); ``diameter`` is used by the
    distance seeds and the Otsu foreground only. Returns int32 labels 1..N.

    The seeds and the foreground come from the image smoothed by ``sigma``; the flooding uses it
    smoothed by at most :data:`FLOOD_SIGMA_MAX_PX`, so that a large ``sigma`` (noisy images of
    large cells) suppresses the noise minima without moving the lines off the membranes.

    Raises:
        SegmentationError: no seed was found.
    """
    m = filters.gaussian(membrane, sigma=sigma, preserve_range=True)
    mask = None
    if foreground == "otsu":
        cyto = filters.gaussian(1.0 - m, sigma=diameter / 4, preserve_range=True)
        mask = cyto > filters.threshold_otsu(cyto)

    if seeds == "hminima":
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
    if sigma > FLOOD_SIGMA_MAX_PX:  # seeds from the smooth image, lines from a sharper one
        m = filters.gaussian(membrane, sigma=FLOOD_SIGMA_MAX_PX, preserve_range=True)
    labels = segmentation.watershed(m, markers, mask=mask, compactness=compactness)
    labels, _, _ = segmentation.relabel_sequential(labels)
    return labels.astype(np.int32)


def _revise_boundaries(
    labels: np.ndarray,
    membrane: np.ndarray,
    ridge: tuple[np.ndarray, np.ndarray],
    *,
    sigma: float,
    h: float,
    compactness: float,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Step 6 (:mod:`.boundaries`): merge the boundaries that are not membranes, then split the regions
    along the membranes that a watershed smoothed by ``sigma / SPLIT_SIGMA_RATIO`` draws and the one
    smoothed by ``sigma`` lost. Returns the labels and both records."""
    merged, record = merge_weak_boundaries(labels, membrane, ridge)
    if "membrane_core_strength" not in record:  # no boundary at all: nothing to split either
        return merged, record
    try:
        finer = _watershed(membrane, sigma=sigma / SPLIT_SIGMA_RATIO, seeds="hminima", h=h,
                           compactness=compactness)
    except SegmentationError:  # no h-minimum at all: no finer boundary to restore
        return merged, record
    core_typical = float(record["membrane_core_strength"])
    split, split_record = split_lost_membranes(merged, finer, membrane, core_typical, ridge)
    return split, {**record, **split_record}


def _check_options(opts: dict[str, Any]) -> None:
    """ConfigError naming ``segmentation.<option>`` for the first value out of range; options
    still ``None`` (left to ``preset="auto"``) are not checked."""
    lo_hi = opts["percentiles"]

    def positive(v: Any) -> bool:
        return _is_number(v) and math.isfinite(v) and v > 0

    checks = [
        ("membranes", opts["membranes"] in ("dark", "bright"), "must be 'dark' or 'bright'"),
        ("diameter", positive(opts["diameter"]), "must be > 0 (pixels)"),
        ("smoothing", _is_number(opts["smoothing"]) and math.isfinite(opts["smoothing"])
         and opts["smoothing"] >= 0, "must be >= 0"),
        ("seeds", opts["seeds"] in ("hminima", "distance"), "must be 'hminima' or 'distance'"),
        ("h", _is_number(opts["h"]) and 0 < opts["h"] < 1, "must be in (0, 1)"),
        ("seed_spacing", positive(opts["seed_spacing"]), "must be > 0"),
        ("foreground", opts["foreground"] in ("all", "otsu"), "must be 'all' or 'otsu'"),
        ("compactness", _is_number(opts["compactness"]) and math.isfinite(opts["compactness"])
         and opts["compactness"] >= 0, "must be >= 0"),
        ("percentiles", len(lo_hi) == 2 and 0 <= lo_hi[0] < lo_hi[1] <= 100,
         "must be (low, high) with 0 <= low < high <= 100"),
        ("merge", isinstance(opts["merge"], bool | np.bool_), "must be true or false"),
        ("membrane_line", isinstance(opts["membrane_line"], bool | np.bool_), "must be true or false"),
    ]
    for key, ok, problem in checks:
        if opts[key] is not None and not ok:
            raise ConfigError(f"segmentation.{key}", f"{problem}, got {opts[key]!r}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)
