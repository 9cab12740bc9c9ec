"""reference_image: temporal mean / max / std / one frame, chunked."""

from __future__ import annotations

import numpy as np
import pytest

from calcium_gnn.errors import ConfigError
from calcium_gnn.imaging.reference import reference_image


def test_by_hand():
    frames = np.array([[[1, 2]], [[3, 6]], [[5, 1]]], dtype=np.uint16)  # (T=3, Y=1, X=2)
    np.testing.assert_allclose(reference_image(frames, "mean", chunk_frames=2), [[3.0, 3.0]])
    np.testing.assert_array_equal(reference_image(frames, "max", chunk_frames=2), [[5.0, 6.0]])
    # population std: sqrt(((1-3)^2 + 0 + (5-3)^2) / 3) = sqrt(8/3); sqrt(((2-3)^2 + 9 + 4) / 3) = sqrt(14/3)
    std = reference_image(frames, "std", chunk_frames=2)
    np.testing.assert_allclose(std, [[np.sqrt(8 / 3), np.sqrt(14 / 3)]], rtol=1e-6)
    np.testing.assert_array_equal(reference_image(frames, "frame", frame=-1), [[5.0, 1.0]])


@pytest.mark.parametrize("method", ["mean", "max", "std"])
def test_chunking_does_not_change_result(method):
    x = np.random.default_rng(0).normal(100, 10, (13, 8, 9))
    want = {"mean": x.mean(0), "max": x.max(0), "std": x.std(0)}[method]
    for chunk in (1, 4, 13, 50):
        got = reference_image(x, method, chunk_frames=chunk)
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=1e-5)


def test_errors():
    x = np.zeros((3, 4, 4))
    with pytest.raises(ConfigError, match="reference.method"):
        reference_image(x, "median")
    with pytest.raises(ConfigError, match="reference.frame"):
        reference_image(x, "frame", frame=3)


@pytest.mark.parametrize("method", ["mean", "std"])
@pytest.mark.parametrize("chunk", [1, 3, 16])
def test_frame_by_frame_sums_equal_whole_chunk_sums_bit_for_bit(method, chunk):
    # the chunk statistics in float64 over a copy of each whole chunk (Chan's merge), as written
    # before the sums went frame by frame
    x = np.random.default_rng(1).normal(0.5, 0.2, (37, 21, 17)).astype(np.float32)
    count, mean, m2 = 0, np.zeros((21, 17)), np.zeros((21, 17))
    for start in range(0, 37, chunk):
        block = x[start : start + chunk].astype(np.float64)
        nb = block.shape[0]
        block_mean = block.mean(axis=0)
        delta = block_mean - mean
        total = count + nb
        mean += delta * (nb / total)
        m2 += ((block - block_mean) ** 2).sum(axis=0) + delta**2 * (count * nb / total)
        count = total
    want = mean if method == "mean" else np.sqrt(m2 / count)
    np.testing.assert_array_equal(reference_image(x, method, chunk_frames=chunk), want.astype(np.float32))


def test_mean_does_not_depend_on_the_chunks_read():
    x = np.random.default_rng(2).normal(0.5, 0.2, (37, 21, 17)).astype(np.float32)
    want = reference_image(x, "mean", chunk_frames=16)
    for chunk in (1, 3, 5, 16, 40):
        np.testing.assert_array_equal(reference_image(x, "mean", chunk_frames=chunk, merge_frames=16), want)
    with pytest.raises(ConfigError, match="merge_frames"):
        reference_image(x, "mean", merge_frames=0)
