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
