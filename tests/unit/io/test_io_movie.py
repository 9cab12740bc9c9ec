"""read_movie: formats, memory mapping, calibration sources, axes, and one-line errors."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import tifffile

from calcium_gnn.errors import ConfigError, MovieError
from calcium_gnn.io.movie import DEFAULT_DT, Movie, read_movie


@pytest.fixture
def movie_array() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 4000, size=(5, 12, 10), dtype=np.uint16)


def _one_line_naming(exc: pytest.ExceptionInfo, path) -> None:
    message = str(exc.value)
    assert "\n" not in message
    assert str(path) in message


def test_plain_tiff_is_memory_mapped_read_only_with_default_dt(tmp_path, movie_array):
    path = tmp_path / "m.tif"
    tifffile.imwrite(path, movie_array)
    before = path.read_bytes()
    movie = read_movie(path)
    assert isinstance(movie, Movie)
    assert isinstance(movie.frames, np.memmap) and not movie.frames.flags.writeable
    np.testing.assert_array_equal(movie.frames, movie_array)
    assert (movie.dt, movie.dt_source) == (DEFAULT_DT, "default")
    assert math.isnan(movie.pixel_size) and movie.pixel_size_source == "default"
    assert movie.path == path and movie.n_frames == 5 and movie.frame_shape == (12, 10)
    np.testing.assert_allclose(movie.times, [0, 10, 20, 30, 40])
    assert path.read_bytes() == before


def test_compressed_tiff_falls_back_to_reading(tmp_path, movie_array):
    path = tmp_path / "c.tif"
    tifffile.imwrite(path, movie_array, compression="zlib")
    movie = read_movie(path)
    assert not isinstance(movie.frames, np.memmap)
    np.testing.assert_array_equal(movie.frames, movie_array)


def test_imagej_metadata_gives_dt_and_pixel_size(tmp_path, movie_array):
    path = tmp_path / "ij.tif"
    tifffile.imwrite(path, movie_array, imagej=True, resolution=(1 / 0.5, 1 / 0.5),
                     metadata={"axes": "TYX", "finterval": 2.5, "unit": "micron"})
    movie = read_movie(path, dt=7.0, pixel_size=3.0)
    assert (movie.dt, movie.dt_source) == (2.5, "metadata")
    assert movie.pixel_size == pytest.approx(0.5) and movie.pixel_size_source == "metadata"


def test_imagej_finterval_in_milliseconds(tmp_path, movie_array):
    path = tmp_path / "ms.tif"
    metadata = {"axes": "TYX", "finterval": 250, "tunit": "ms"}
    tifffile.imwrite(path, movie_array, imagej=True, metadata=metadata)
    assert read_movie(path).dt == pytest.approx(0.25)


def test_ome_metadata_gives_dt_and_pixel_size(tmp_path, movie_array):
    path = tmp_path / "m.ome.tif"
    tifffile.imwrite(path, movie_array, ome=True,
                     metadata={"axes": "TYX", "TimeIncrement": 4.0, "TimeIncrementUnit": "s",
                               "PhysicalSizeX": 0.65, "PhysicalSizeXUnit": "µm"})
    movie = read_movie(path)
    assert (movie.dt, movie.dt_source) == (4.0, "metadata")
    assert (movie.pixel_size, movie.pixel_size_source) == (pytest.approx(0.65), "metadata")


def test_config_values_used_when_metadata_has_none(tmp_path, movie_array):
    path = tmp_path / "m.tif"
    tifffile.imwrite(path, movie_array, resolution=(72, 72))  # a print DPI: ignored
    movie = read_movie(path, dt=3.0, pixel_size=0.8)
    assert (movie.dt, movie.dt_source) == (3.0, "config")
    assert (movie.pixel_size, movie.pixel_size_source) == (0.8, "config")


def test_npy_is_memory_mapped(tmp_path, movie_array):
    path = tmp_path / "m.npy"
    np.save(path, movie_array)
    movie = read_movie(path)
    assert isinstance(movie.frames, np.memmap) and not movie.frames.flags.writeable
    np.testing.assert_array_equal(movie.frames, movie_array)
    assert not isinstance(read_movie(path, mmap=False).frames, np.memmap)


def test_folder_of_frames_sorted_naturally(tmp_path, movie_array):
    for i, frame in enumerate(movie_array):
        tifffile.imwrite(tmp_path / f"frame{i * 5}.tif", frame)  # frame0, frame5, frame10, ...
    movie = read_movie(tmp_path)
    np.testing.assert_array_equal(movie.frames, movie_array)


def test_ndarray_source_is_not_copied(movie_array):
    movie = read_movie(movie_array, dt=2.0)
    assert movie.frames is movie_array and movie.path is None and movie.dt_source == "config"


def test_4d_stack_needs_z_projection_and_projects(tmp_path):
    rng = np.random.default_rng(1)
    stack = rng.integers(0, 255, size=(3, 4, 8, 9), dtype=np.uint8)
    path = tmp_path / "tz.tif"
    tifffile.imwrite(path, stack, imagej=True, metadata={"axes": "TZYX"})
    with pytest.raises(MovieError, match="z_projection='max' or 'mean'") as exc:
        read_movie(path)
    _one_line_naming(exc, path)
    projected = read_movie(path, z_projection="max", chunk_frames=2).frames
    np.testing.assert_array_equal(projected, stack.max(axis=1))
    np.testing.assert_allclose(read_movie(path, z_projection="mean").frames, stack.mean(axis=1), rtol=1e-6)


def test_z_axis_first_is_reordered(tmp_path):
    rng = np.random.default_rng(2)
    stack = rng.integers(0, 255, size=(4, 3, 8, 9), dtype=np.uint8)  # Z, T, Y, X
    path = tmp_path / "zt.ome.tif"
    tifffile.imwrite(path, stack, ome=True, metadata={"axes": "ZTYX"})
    frames = read_movie(path, z_projection="max").frames
    np.testing.assert_array_equal(frames, stack.max(axis=0))


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda p: None, "file not found"),
        (lambda p: p.write_bytes(b""), "empty"),
        (lambda p: p.write_bytes(b"this is not a tiff at all, just text" * 10), "not a readable TIFF"),
    ],
    ids=["missing", "zero-byte", "not-a-tiff"],
)
def test_bad_files_raise_one_line_movie_error(tmp_path, make, match):
    path = tmp_path / "bad.tif"
    make(path)
    with pytest.raises(MovieError, match=match) as exc:
        read_movie(path)
    _one_line_naming(exc, path)


def test_truncated_tiff(tmp_path, movie_array):
    path = tmp_path / "t.tif"
    tifffile.imwrite(path, movie_array, compression="zlib")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(MovieError) as exc:
        read_movie(path)
    _one_line_naming(exc, path)


def test_wrong_extension(tmp_path):
    path = tmp_path / "movie.png"
    path.write_bytes(b"\x89PNG....")
    with pytest.raises(MovieError, match="unsupported file type '.png'") as exc:
        read_movie(path)
    _one_line_naming(exc, path)


def test_pickled_npy_refused(tmp_path):
    path = tmp_path / "obj.npy"
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(MovieError, match="pickled") as exc:
        read_movie(path)
    _one_line_naming(exc, path)


@pytest.mark.parametrize(
    ("array", "match"),
    [
        (np.ones((12, 10), np.uint16), "single 2-D image"),
        (np.arange(120, dtype=np.uint16).reshape(1, 12, 10), "at least 2 frames"),
        (np.full((4, 6, 6), 7, np.uint16), "constant"),
    ],
    ids=["2d", "one-frame", "constant"],
)
def test_bad_contents(tmp_path, array, match):
    path = tmp_path / "bad.npy"
    np.save(path, array)
    with pytest.raises(MovieError, match=match) as exc:
        read_movie(path)
    _one_line_naming(exc, path)


def test_nan_frame_is_named(tmp_path):
    movie = np.random.default_rng(3).random((40, 6, 6)).astype(np.float32)
    movie[33, 2, 2] = np.inf
    movie[35, 1, 1] = np.nan
    path = tmp_path / "nan.tif"
    tifffile.imwrite(path, movie)
    with pytest.raises(MovieError, match="frame 33 holds NaN or Inf") as exc:
        read_movie(path, chunk_frames=8)
    _one_line_naming(exc, path)


def test_z_stack_without_time_axis(tmp_path):
    path = tmp_path / "z.tif"
    tifffile.imwrite(path, np.random.default_rng(4).integers(0, 9, (5, 8, 8), dtype=np.uint8), imagej=True,
                     metadata={"axes": "ZYX"})
    with pytest.raises(MovieError, match="no time axis"):
        read_movie(path)


def test_folder_errors(tmp_path):
    with pytest.raises(MovieError, match="no .tif/.tiff frames"):
        read_movie(tmp_path)
    tifffile.imwrite(tmp_path / "a1.tif", np.zeros((4, 4), np.uint8))
    tifffile.imwrite(tmp_path / "a2.tif", np.zeros((5, 4), np.uint8))
    with pytest.raises(MovieError, match="differs") as exc:
        read_movie(tmp_path)
    _one_line_naming(exc, tmp_path / "a2.tif")


def test_bad_config_values(movie_array):
    with pytest.raises(ConfigError, match="dt"):
        read_movie(movie_array, dt=0.0)
    with pytest.raises(ConfigError, match="pixel_size"):
        read_movie(movie_array, pixel_size=-1.0)
    with pytest.raises(ConfigError, match="z_projection"):
        read_movie(movie_array, z_projection="median")


def _resident_bytes() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) * 1024


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmRSS from /proc (Linux)")
def test_chunks_of_a_mapped_movie_leave_no_pages_resident(tmp_path):
    from calcium_gnn.io.movie import iter_frame_chunks

    movie = np.arange(40 * 256 * 256, dtype=np.uint32).reshape(40, 256, 256) % 65521  # 10 MB
    tifffile.imwrite(tmp_path / "m.tif", movie.astype(np.uint16))
    frames = read_movie(tmp_path / "m.tif").frames
    assert isinstance(frames, np.memmap)
    before = _resident_bytes()
    total = 0
    for start, stop, block in iter_frame_chunks(frames, 8):
        assert block.shape == (stop - start, 256, 256)
        total += int(block.sum(dtype=np.int64))
    assert total == int(movie.astype(np.uint16).sum(dtype=np.int64))
    assert _resident_bytes() - before < 3 * 8 * 256 * 256 * 2  # not the 5 MB a plain pass leaves
    plain = sum(int(np.asarray(frames[a : a + 8]).sum(dtype=np.int64)) for a in range(0, 40, 8))
    assert plain == total and _resident_bytes() - before > 4 * 2**20  # the pages a plain pass keeps


def test_released_pages_read_back_the_same_values(tmp_path, movie_array):
    from calcium_gnn.io.movie import release_pages

    path = tmp_path / "m.npy"
    np.save(path, movie_array)
    frames = read_movie(path).frames
    view = frames[1:4]
    first = np.array(view)
    release_pages(view)
    np.testing.assert_array_equal(view, first)
    np.testing.assert_array_equal(frames, movie_array)
    release_pages(movie_array)  # an in-memory array: nothing happens
    release_pages(frames[::-1, :, ::2])  # any strides
    np.testing.assert_array_equal(frames, movie_array)
