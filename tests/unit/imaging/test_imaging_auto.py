"""``preset="auto"`` of the watershed (calcium_gnn.imaging.segmentation.auto): the rules by hand, the
decision on the EpiTools epithelium and on synthetic cultures, and explicit options winning."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import tifffile
from scipy import ndimage as ndi

from calcium_gnn.errors import ConfigError
from calcium_gnn.imaging.segmentation import (
    MIN_AREA_FRACTION,
    auto_min_area,
    matched_fraction,
    segment,
    segment_with_info,
    watershed_segmentation,
)
from calcium_gnn.imaging.segmentation.auto import (
    LINE_SCORE_MIN,
    LINE_SIGMAS_PX,
    NOISE_SEED_FACTOR,
    SIGMA_LADDER_PX,
    SINGLE_BASIN_MIN,
    boundary_contrast,
    choose_polarity,
    choose_watershed,
    deep_minima,
    line_score,
    line_score_across_scales,
    most_stable_index,
    noise_min_sigma,
)
from calcium_gnn.imaging.segmentation.result import equivalent_diameter, plain_info

EPITOOLS = Path(__file__).resolve().parents[2] / "data" / "epitools"


@pytest.fixture(scope="module")
def epitools() -> tuple[np.ndarray, np.ndarray]:
    image = tifffile.imread(EPITOOLS / "test_image-projected.tif")
    truth = tifffile.imread(EPITOOLS / "test_image-projected-segmented.tif").astype(np.int32)
    return image, truth


# ----------------------------------------------------------------------------------- rules by hand
def test_boundary_contrast_by_hand() -> None:
    # two 6 x 3 cells side by side; their inner boundaries are columns 2 and 3
    labels = np.zeros((6, 6), dtype=np.int32)
    labels[:, :3], labels[:, 3:] = 1, 2
    membrane = np.zeros((6, 6))
    membrane[:, 2:4] = 1.0  # membranes high exactly on the boundary
    assert boundary_contrast(membrane, labels) == 1.0  # median 1 on the boundary - median 0 inside
    assert boundary_contrast(1.0 - membrane, labels) == -1.0  # the other polarity
    assert boundary_contrast(membrane, np.ones((6, 6), dtype=np.int32)) == -math.inf  # no boundary


def test_most_stable_index_by_hand() -> None:
    # steps of ln 2: s_k = |ln N_{k+1} - ln N_{k-1}| / (2 ln 2) for the inner k = 1, 2, 3
    sigmas = (0.5, 1.0, 2.0, 4.0, 8.0)
    # a flat count: s = 0 everywhere, the plateau runs to the last inner sigma
    assert most_stable_index([10, 10, 10, 10, 10], sigmas) == 3
    # noise splits at small sigma, merges at large: s = [0.53, 0.060, 0.63] -> k = 2 alone
    assert most_stable_index([100, 50, 48, 46, 20], sigmas) == 2
    # s = [0.53, 0.045, 0.063]: the minimum at k = 2, and k = 3 is within the tolerance 0.08
    assert most_stable_index([100, 50, 48, 47, 44], sigmas) == 3
    assert most_stable_index([100, 50, 48, 47, 44], sigmas, tolerance=0.0) == 2
    # a failed segmentation (0 cells) breaks every window it is in: s = [inf, 0, 0] and [0, 0, inf]
    assert most_stable_index([0, 10, 10, 10, 10], sigmas) == 3
    assert most_stable_index([10, 10, 10, 10, 0], sigmas) == 2
    assert most_stable_index([0, 5, 0, 0, 0], sigmas) == 1  # every window broken: the most cells
    with pytest.raises(ValueError, match="K >= 3"):
        most_stable_index([10, 10], (1.0, 2.0))


def test_the_ladder_skips_the_smoothings_that_leave_noise_minima() -> None:
    """The counts of dev-212 (175 cells of 54 px, dark membranes): in the noise regime the count
    falls as a power of sigma with a slope (1.5) below the cells' (1.7), so the most stable point was
    sigma = 0.7-1 px (11,462 -> 3,997 minima: 18% of the cells). Its noise needs sigma >= 1.16 px."""
    counts = [11462, 6434, 3997, 2223, 989, 385, 180, 120, 46]
    assert SIGMA_LADDER_PX[most_stable_index(counts, SIGMA_LADDER_PX)] == 1.0
    assert SIGMA_LADDER_PX[most_stable_index(counts, SIGMA_LADDER_PX, min_sigma=1.16)] == 4.0
    # no eligible window (every sigma below the floor is one, the largest inner one is not finite)
    assert most_stable_index([10, 10, 10, 10, 0], (0.5, 1.0, 2.0, 4.0, 8.0), min_sigma=4.0) == 2
    # white noise of sd 0.1 and seeds 0.05 deep: 2 x 0.1 / (2 sqrt(pi) 0.05) = 1.13 px
    noise = np.random.default_rng(0).normal(0.5, 0.1, (300, 300))
    expected = NOISE_SEED_FACTOR * 0.1 / (2.0 * math.sqrt(math.pi) * 0.05)
    assert noise_min_sigma(noise, 0.05) == pytest.approx(expected, rel=0.03)
    assert noise_min_sigma(np.zeros((8, 8)), 0.05) == 0.0


def test_auto_min_area_by_hand() -> None:
    labels = np.zeros((10, 10), dtype=np.int32)
    labels.flat[:10], labels.flat[10:30], labels.flat[30:60] = 1, 2, 3  # areas 10, 20, 30
    assert auto_min_area(labels) == MIN_AREA_FRACTION * 20 == 2.0
    assert auto_min_area(labels, fraction=0.5) == 10.0
    assert auto_min_area(np.zeros((4, 4), dtype=np.int32)) == 0.0


def test_equivalent_diameter_and_plain_info() -> None:
    assert equivalent_diameter(math.pi * 11**2) == pytest.approx(22.0)
    info = plain_info({"a": np.float64(1.5), "b": np.int32(3), "c": np.array([1, 2]), "d": Path("x"),
                       "e": (np.bool_(True), None)})
    assert info == {"a": 1.5, "b": 3, "c": [1, 2], "d": "x", "e": [True, None]}
    assert [type(v) for v in info.values()] == [float, int, list, str, list]


# ---------------------------------------------------------------------------------- the decision
def test_auto_reads_bright_membranes_and_the_cell_size_off_epitools(epitools) -> None:
    image, truth = epitools
    result = segment_with_info(image)  # every default: preset="auto"
    info = result.info
    assert info["preset"] == "auto" and info["auto_decided"] == ["membranes", "diameter", "smoothing"]
    assert info["membranes"] == "bright"
    assert info["polarity_rule"] == "thin lines" and info["line_score"] > LINE_SCORE_MIN
    # the true cells' median area is 395 px: a disc of 22.4 px
    assert 20.0 <= info["diameter"] <= 25.0
    assert info["sigma"] == pytest.approx(info["smoothing"] * info["diameter"])
    assert info["sigma"] in SIGMA_LADDER_PX and len(info["trial_cells"]) == len(SIGMA_LADDER_PX)
    n_true = len(np.unique(truth)) - 1
    # 90 of 93: a merge that judged the "core" of a 3 px contact lying wholly in junctions took 89
    assert round(matched_fraction(truth, result.labels, iou_threshold=0.7) * n_true) >= 90


def test_auto_reads_dark_membranes_off_the_inverted_epitools(epitools) -> None:
    image, truth = epitools
    result = segment_with_info(image.max() - image)
    assert result.info["membranes"] == "dark"
    assert matched_fraction(truth, result.labels, iou_threshold=0.7) >= 0.95


@pytest.mark.parametrize("bright", [False, True])
@pytest.mark.parametrize(("n_cells", "size", "membrane_width"), [(52, 96, 1.5), (13, 256, 2.0)])
def test_auto_on_synthetic_cultures_of_both_polarities(bright, n_cells, size, membrane_width) -> None:
    """~15 px and ~80 px cells (a disc of the tile's area), dark or bright membranes."""
    from calcium_gnn.data.synthetic import make_culture
    from calcium_gnn.imaging.reference import reference_image

    brightness = {"f_membrane": 6000.0} if bright else {}  # cytoplasm 300-3000 (f_min..f_max)
    culture = make_culture(n_cells=n_cells, size=size, n_frames=8, membrane_width=membrane_width,
                           **brightness)
    result = segment_with_info(reference_image(culture.movie, "mean"))
    assert result.info["membranes"] == ("bright" if bright else "dark")
    tile_diameter = equivalent_diameter(size**2 / n_cells)
    assert 0.75 * tile_diameter <= result.info["diameter"] <= 1.1 * tile_diameter
    assert matched_fraction(culture.labels, result.labels, iou_threshold=0.7) >= 0.95


def test_line_score_and_polarity_by_hand() -> None:
    # a grid of 1 px lines 12 px apart: thin bright lines around dark squares, and the inverse
    grid = np.zeros((48, 48))
    grid[::12, :] = grid[:, ::12] = 1.0
    assert line_score(grid) > LINE_SCORE_MIN and line_score(1.0 - grid) < -LINE_SCORE_MIN
    assert line_score(np.zeros((16, 16))) == 0.0
    # the squares are 16 basins of the bright-membrane image; the dark one has the squares as
    # plateaus and no basin: the single-basin rule
    assert deep_minima(grid, "bright") == 16 and deep_minima(grid, "dark") <= 1
    membranes, evidence = choose_polarity(grid)
    assert membranes == "bright" and evidence["polarity_rule"] == "single basin"
    assert choose_polarity(1.0 - grid)[0] == "dark"
    # the same grid with a faint second grid of dark lines in the squares: both polarities have
    # basins, the thin lines decide
    both = grid.copy()
    both[6::12, :] = both[:, 6::12] = -0.6
    membranes, evidence = choose_polarity(both)
    assert min(evidence["deep_minima_dark"], evidence["deep_minima_bright"]) > 1
    assert evidence["polarity_rule"] == "thin lines" and membranes == "bright"
    # blurred bright discs (nuclei) and no membrane at all: the top-hat sees their caps as bright
    # structures, but only the dark polarity has basins (one per nucleus)
    yy, xx = np.mgrid[:64, :64]
    discs = ndi.gaussian_filter((np.hypot((yy % 16) - 8, (xx % 16) - 8) <= 4).astype(float), 1.5)
    membranes, evidence = choose_polarity(discs)
    assert evidence["line_score"] > LINE_SCORE_MIN  # the caps
    assert membranes == "dark" and evidence["polarity_rule"] == "single basin"
    assert evidence["deep_minima_dark"] == 16


def test_line_score_scale_climbs_while_the_lines_read_clearer() -> None:
    # 1 px bright lines 12 px apart: |L| grows from 1 to 1.41 px, falls at 2 px: the first maximum
    grid = np.zeros((48, 48))
    grid[::12, :] = grid[:, ::12] = 1.0
    scores = [line_score(grid, sigma=s) for s in LINE_SIGMAS_PX]
    assert abs(scores[1]) > abs(scores[0]) and abs(scores[2]) < abs(scores[1])
    assert line_score_across_scales(grid) == (scores[1], LINE_SIGMAS_PX[1])
    # 8 px apart: |L| falls at once and stops at 1 px, although it grows again at 2.83 px (the
    # top-hat then sees whole cells): only the first maximum counts
    fine = np.zeros((48, 48))
    fine[::8, :] = fine[:, ::8] = 1.0
    scores = [line_score(fine, sigma=s) for s in LINE_SIGMAS_PX]
    assert abs(scores[1]) < abs(scores[0]) < abs(scores[3])
    assert line_score_across_scales(fine) == (scores[0], LINE_SIGMAS_PX[0])
    with pytest.raises(ValueError, match="at least one smoothing"):
        line_score_across_scales(grid, sigmas=())


def _noisy_dark_grid(noise: float, seed: int) -> np.ndarray:
    """Dark 2 px membranes around 36 cells of 40 px (240 x 240), white noise of ``noise`` times their
    contrast, then the watershed's robust contrast (1st and 99th percentiles to 0 and 1)."""
    grid = np.ones((240, 240))
    for start in (0, 1):
        grid[start::40, :] = grid[:, start::40] = 0.0
    noisy = grid + np.random.default_rng(seed).normal(0.0, noise, grid.shape)
    low, high = np.percentile(noisy, (1.0, 99.0))
    return np.clip((noisy - low) / (high - low), 0.0, 1.0)


def test_noise_that_hides_the_lines_at_1_px_is_smoothed_away() -> None:
    # dark 2 px membranes around 40 px cells under white noise 1.5x the membranes' contrast: at 1 px
    # the noise fills both top-hats alike (|L| < LINE_SCORE_MIN); at 2.83 px the membranes read dark
    noisy = _noisy_dark_grid(1.5, seed=0)
    assert abs(line_score(noisy)) < LINE_SCORE_MIN
    membranes, evidence = choose_polarity(noisy)
    assert membranes == "dark" and evidence["polarity_rule"] == "thin lines"
    assert evidence["line_sigma"] == LINE_SIGMAS_PX[-1] and evidence["line_score"] < -LINE_SCORE_MIN


@pytest.mark.parametrize("seed", [0, 2, 5])
def test_a_few_noise_basins_do_not_overrule_clear_dark_lines(seed: int) -> None:
    # dark 2 px membranes around 36 cells of 40 px under white noise 0.9x their contrast: the inverted
    # image keeps a few deep noise minima (2-5) and the dark one none, but the lines read clearly dark
    noisy = _noisy_dark_grid(0.9, seed)
    membranes, evidence = choose_polarity(noisy)
    assert evidence["deep_minima_dark"] <= 1 < evidence["deep_minima_bright"] < SINGLE_BASIN_MIN
    assert evidence["line_score"] < -LINE_SCORE_MIN
    assert membranes == "dark" and evidence["polarity_rule"] == "thin lines"


def test_choose_watershed_asks_only_what_is_open() -> None:
    calls: list[tuple[str, float]] = []
    labels = np.repeat(np.arange(1, 5, dtype=np.int32), 4)[None, :].repeat(4, axis=0)  # 4 strips

    def trial(p: str, s: float) -> np.ndarray:
        calls.append((p, s))
        return labels

    image = np.zeros((4, 16))
    choice = choose_watershed(image, trial, membranes="dark", sigma=1.0)
    assert calls == [("dark", 1.0)] and choice.evidence == {}
    calls.clear()
    # a flat count: the plateau ends at the last inner sigma, run again (only the last labels are kept)
    choice = choose_watershed(image, trial, membranes="bright")
    assert calls == [("bright", s) for s in SIGMA_LADDER_PX] + [("bright", SIGMA_LADDER_PX[-2])]
    n = len(SIGMA_LADDER_PX)
    assert choice.sigma == SIGMA_LADDER_PX[-2] and choice.evidence["trial_cells"] == [4] * n
    calls.clear()
    # the polarity is read off the image (no trial): a flat image shows no lines and no deep
    # minima, and dark wins the tie
    choice = choose_watershed(image, trial, sigma=2.0)
    assert calls == [("dark", 2.0)] and choice.membranes == "dark"
    assert choice.evidence["polarity_rule"] == "deep minima" and choice.evidence["line_score"] == 0.0
    assert choice.diameter == pytest.approx(2 * math.sqrt(16 / math.pi))  # four 16 px strips


# ----------------------------------------------------------------------------- explicit options win
def test_explicit_options_win_over_auto(epitools) -> None:
    image, _ = epitools
    dark = watershed_segmentation(image, membranes="dark").info
    assert dark["membranes"] == "dark" and "membranes" not in dark["auto_decided"]
    assert "line_score" not in dark
    sized = watershed_segmentation(image, diameter=40.0).info
    assert sized["diameter"] == 40.0 and sized["smoothing"] == 0.05 and sized["sigma"] == pytest.approx(2.0)
    assert sized["auto_decided"] == ["membranes"] and "trial_cells" not in sized
    smooth = watershed_segmentation(image, smoothing=0.1).info
    assert smooth["smoothing"] == 0.1 and smooth["auto_decided"] == ["membranes", "diameter"]
    assert smooth["sigma"] == pytest.approx(0.1 * smooth["diameter"])
    assert watershed_segmentation(image, seeds="distance").info["seeds"] == "distance"


def test_named_presets_stay_available(epitools) -> None:
    image, truth = epitools
    calcium = watershed_segmentation(image, preset="calcium").info
    assert (calcium["membranes"], calcium["diameter"], calcium["auto_decided"]) == ("dark", 30.0, [])
    labels = segment(image, preset="epitools")
    assert matched_fraction(truth, labels, iou_threshold=0.7) >= 0.95


def test_bad_preset_and_options_name_their_key() -> None:
    image = np.random.default_rng(0).random((20, 20))
    with pytest.raises(ConfigError, match=r"^segmentation\.preset: unknown preset 'Auto'.*'auto'"):
        segment(image, preset="Auto")
    with pytest.raises(ConfigError, match=r"^segmentation\.diameter: must be > 0"):
        segment(image, diameter=-3.0)  # checked before any automatic work
    with pytest.raises(ConfigError, match=r"^segmentation\.smoothing"):
        segment(image, smoothing="a lot")
