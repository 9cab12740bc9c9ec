"""Per-cell mean intensity traces by one sparse product per chunk of frames."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from calcium_gnn.errors import MasksError, MovieError
from calcium_gnn.graphs.traces import averaging_matrix, extract_traces


def _labels() -> np.ndarray:
    labels = np.zeros((6, 8), dtype=np.int32)
    labels[:, :3] = 4  # columns 0, 1, 2
    labels[1:3, 5:8] = 9  # columns 5, 6, 7
    return labels


def test_averaging_matrix_rows_sum_to_one() -> None:
    cell_id, m = averaging_matrix(_labels())
    assert cell_id.tolist() == [4, 9]
    assert m.shape == (2, 48)
    np.testing.assert_allclose(np.asarray(m.sum(axis=1)).ravel(), [1.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(m.data[:18], 1.0 / 18.0, rtol=1e-6)


def test_means_worked_out_by_hand() -> None:
    # frame k holds value (column index + 10 k): cell 4 averages columns 0..2 -> 1 + 10 k;
    # cell 9 averages columns 5..7 -> 6 + 10 k
    t = 5
    frames = (np.arange(8)[None, None, :] + 10.0 * np.arange(t)[:, None, None]) * np.ones((t, 6, 8))
    traces = extract_traces(frames.astype(np.uint16), _labels(), chunk_frames=2)
    assert traces.dtype == np.float32 and traces.shape == (2, t)
    np.testing.assert_allclose(traces[0], 1 + 10.0 * np.arange(t), rtol=1e-6)
    np.testing.assert_allclose(traces[1], 6 + 10.0 * np.arange(t), rtol=1e-6)


@pytest.mark.parametrize("chunk", [1, 3, 16, 100])
def test_matches_scipy_ndimage_mean_for_any_chunk(chunk: int) -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 6, size=(20, 30))
    frames = rng.normal(size=(7, 20, 30)).astype(np.float32)
    ids = np.unique(labels[labels > 0])
    expected = np.stack([ndimage.mean(f, labels, ids) for f in frames], axis=1)
    traces = extract_traces(frames, labels, chunk_frames=chunk)
    np.testing.assert_allclose(traces, expected, rtol=1e-5, atol=1e-6)


def test_shape_mismatch_names_the_masks_file() -> None:
    with pytest.raises(MasksError, match=r"^cells\.tif: label image shape \(6, 8\) differs"):
        extract_traces(np.zeros((3, 6, 9)), _labels(), source="movie.tif", labels_source="cells.tif")


def test_movie_must_be_three_dimensional() -> None:
    with pytest.raises(MovieError, match=r"^movie\.tif: "):
        extract_traces(np.zeros((6, 8)), _labels(), source="movie.tif")
