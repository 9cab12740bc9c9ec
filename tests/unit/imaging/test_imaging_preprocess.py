"""Preprocessing (paper sec. 3.1, eq. 23): median filter, log, IQR, streaming quantiles."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from calcium_gnn.errors import ConfigError, MovieError
from calcium_gnn.imaging.preprocess import (
    _median3x3_numpy,
    iqr_bounds,
    iqr_normalise,
    log_transform,
    median3x3,
    movie_quantiles,
    preprocess,
    remove_hot_pixels,
)


@pytest.fixture
def movie() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 4000, size=(11, 23, 19), dtype=np.uint16)


@pytest.mark.parametrize("dtype", [np.uint16, np.uint8, np.float32, np.float64, np.int32])
@pytest.mark.parametrize("median", [median3x3, _median3x3_numpy], ids=["dispatch", "numpy"])
def test_median3x3_equals_scipy(movie, dtype, median):
    x = (movie % 200).astype(dtype)
    if x.dtype.kind == "f":
        x += np.random.default_rng(1).random(x.shape).astype(dtype)
    got = median(x)
    assert got.dtype == x.dtype
    np.testing.assert_array_equal(got, ndi.median_filter(x, size=(1, 3, 3), mode="reflect"))


def test_hot_pixel_removed_by_hand():
    frames = np.full((2, 5, 5), 10, dtype=np.uint16)
    frames[1, 2, 2] = 60000  # a hot pixel: all 8 neighbours are 10
    out = remove_hot_pixels(frames)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, np.full((2, 5, 5), 10.0))
    assert frames[1, 2, 2] == 60000  # input untouched


@pytest.mark.parametrize(("footprint", "size", "scipy_size"), [("2d", 5, (1, 5, 5)), ("3d", 3, (3, 3, 3))])
def test_other_footprints_chunked_equal_whole_movie(movie, footprint, size, scipy_size):
    got = remove_hot_pixels(movie, size=size, footprint=footprint, chunk_frames=4)
    want = ndi.median_filter(movie, size=scipy_size, mode="reflect").astype(np.float32)
    np.testing.assert_array_equal(got, want)


def test_log_transform_and_bad_offset():
    x = np.array([[[0.0, np.e - 1]], [[1.0, 3.0]]], dtype=np.float32)
    np.testing.assert_allclose(log_transform(x), [[[0.0, 1.0]], [[np.log(2), np.log(4)]]], rtol=1e-6)
    with pytest.raises(MovieError, match="log"):
        log_transform(x - 5, source="m.tif")


def test_iqr_bounds_by_hand():
    # q1 = 1, q3 = 3, IQR = 2, f = 2: bounds (1 - 4, 3 + 4) = (-3, 7)
    assert iqr_bounds(1.0, 3.0) == (-3.0, 7.0)
    x = np.array([[[-3.0, 7.0, 2.0]], [[1.0, 3.0, 0.0]]], dtype=np.float32)
    np.testing.assert_allclose(iqr_normalise(x, q1=1.0, q3=3.0), [[[0.0, 1.0, 0.5]], [[0.4, 0.6, 0.3]]])


def test_iqr_zero_raises():
    x = np.zeros((2, 4, 4), np.float32)
    x[0, 0, 0] = 1
    with pytest.raises(MovieError, match="IQR is 0"):
        iqr_normalise(x, source="m.tif")


@pytest.mark.parametrize(
    "data",
    [
        np.random.default_rng(2).normal(size=(7, 33, 41)).astype(np.float32),
        np.random.default_rng(3).integers(0, 5, (5, 20, 20)).astype(np.float32),  # many ties
        np.round(np.random.default_rng(4).exponential(size=(9, 30, 30)), 2),
        (1 + 1e-9 * np.random.default_rng(5).integers(0, 3, (4, 10, 10))),  # tiny range
    ],
    ids=["normal", "ties", "exponential", "tiny-range"],
)
@pytest.mark.parametrize("max_collect", [10, 1 << 21])
def test_streaming_quantiles_exact(data, max_collect):
    qs = (0.0, 0.1, 0.25, 0.5, 0.75, 1.0)
    got = movie_quantiles(data, qs, chunk_frames=2, bins=16, max_collect=max_collect)
    np.testing.assert_allclose(got, np.quantile(data.astype(np.float64), qs), rtol=1e-12, atol=0)


def _reference_pipeline(x: np.ndarray, factor: float = 2.0) -> np.ndarray:
    med = ndi.median_filter(x, size=(1, 3, 3), mode="reflect").astype(np.float32)
    lg = np.log(med + np.float32(1)).astype(np.float64)
    q1, q3 = np.quantile(lg, (0.25, 0.75))
    lo, hi = q1 - factor * (q3 - q1), q3 + factor * (q3 - q1)
    return (lg - lo) / (hi - lo)


@pytest.mark.parametrize("dtype", [np.uint16, np.uint8, np.float64])
def test_preprocess_matches_reference_and_keeps_input(movie, dtype):
    x = (movie % 250).astype(dtype) if dtype == np.uint8 else movie.astype(dtype)
    before = x.copy()
    y = preprocess(x, chunk_frames=3, progress=False)
    assert y.dtype == np.float32 and y.shape == x.shape
    xin = x.astype(np.float32) if x.dtype.kind == "f" else x
    np.testing.assert_allclose(y, _reference_pipeline(xin), atol=1e-6)
    np.testing.assert_array_equal(x, before)
    # eq. (23): the whole movie's quartiles land at f / (1 + 2f) = 0.4 and (1 + f) / (1 + 2f) = 0.6
    np.testing.assert_allclose(np.quantile(y, (0.25, 0.75)), (0.4, 0.6), atol=1e-5)


def test_preprocess_signed_integers_without_log():
    x = np.random.default_rng(6).integers(-300, 300, (6, 15, 15)).astype(np.int16)
    y = preprocess(x, log=False, progress=False, chunk_frames=4, iqr_factor=1.0)
    med = ndi.median_filter(x, size=(1, 3, 3)).astype(np.float64)
    q1, q3 = np.quantile(med, (0.25, 0.75))
    np.testing.assert_allclose(y, (med - (q1 - (q3 - q1))) / (3 * (q3 - q1)), atol=1e-6)


def test_preprocess_steps_switch_off(movie):
    y = preprocess(movie, hot_pixels=False, log=False, normalise=False, progress=False)
    np.testing.assert_array_equal(y, movie.astype(np.float32))


def test_preprocess_into_memmap(tmp_path, movie):
    out = np.lib.format.open_memmap(tmp_path / "pre.npy", mode="w+", dtype=np.float32, shape=movie.shape)
    y = preprocess(movie, progress=False, out=out)
    assert y is out
    np.testing.assert_allclose(out, _reference_pipeline(movie), atol=1e-6)


def test_preprocess_config_errors(movie):
    with pytest.raises(ConfigError, match="hot_pixel_size"):
        preprocess(movie, hot_pixel_size=2)
    with pytest.raises(ConfigError, match="out"):
        preprocess(movie.astype(np.float32), out=np.zeros((1, 1, 1), np.float32))
    f = movie.astype(np.float32)
    with pytest.raises(ConfigError, match="share memory"):
        log_transform(f, out=f)


@pytest.mark.parametrize("dtype", [np.uint16, np.uint8, np.int16, np.float32, np.float64])
@pytest.mark.parametrize(
    "options",
    [{}, {"bleach_correction": True}, {"hot_pixel_footprint": "3d"}, {"hot_pixel_size": 5}, {"log": False},
     {"normalise": False}, {"hot_pixels": False}, {"hot_pixels": False, "log": False, "normalise": False}],
    ids=["default", "bleach", "3d", "size5", "nolog", "nonorm", "nohot", "off"],
)
def test_lazy_preprocessing_equals_preprocess_bit_for_bit(movie, dtype, options):
    from calcium_gnn.imaging.preprocess import preprocess_lazy

    x = (movie % 250).astype(dtype) if dtype == np.uint8 else movie.astype(dtype)
    before = x.copy()
    want = preprocess(x, chunk_frames=3, progress=False, **options)
    lazy = preprocess_lazy(x, chunk_frames=4, progress=False, **options)
    assert lazy.shape == x.shape and lazy.dtype == np.float32 and len(lazy) == 11
    np.testing.assert_array_equal(np.asarray(lazy), want)
    np.testing.assert_array_equal(np.concatenate([lazy[a : a + 2] for a in range(0, 11, 2)]), want)
    np.testing.assert_array_equal(lazy[-1], want[-1])
    assert lazy[5:5].shape == (0, 23, 19)
    np.testing.assert_array_equal(x, before)
    if options.get("normalise", True):
        lo, hi = lazy.bounds
        assert lo < hi and lazy.quartiles is not None


def test_lazy_preprocessing_of_a_memmap_and_its_errors(tmp_path, movie):
    from calcium_gnn.imaging.preprocess import preprocess_lazy

    np.save(tmp_path / "m.npy", movie)
    mapped = np.load(tmp_path / "m.npy", mmap_mode="r")
    np.testing.assert_array_equal(np.asarray(preprocess_lazy(mapped, progress=False, chunk_frames=2)),
                                  preprocess(movie, progress=False))
    lazy = preprocess_lazy(mapped, progress=False)
    with pytest.raises(IndexError):
        lazy[::2]
    with pytest.raises(IndexError):
        lazy[11]
    signed = movie.astype(np.int16) - 2000  # x + 1 <= 0 somewhere: found by the statistics pass
    with pytest.raises(MovieError, match=r"^m\.tif: log\(x \+ epsilon\) undefined") as lazy_error:
        preprocess_lazy(signed, progress=False, chunk_frames=3, source="m.tif")
    with pytest.raises(MovieError) as eager_error:
        preprocess(signed, progress=False, chunk_frames=3, source="m.tif")
    assert str(lazy_error.value) == str(eager_error.value)
    flat = np.ones((3, 4, 4), np.uint16)
    flat[0, 0, 0] = 9
    with pytest.raises(MovieError, match="IQR is 0"):
        preprocess_lazy(flat, progress=False, hot_pixels=False)
