"""Calcium traces: the mean intensity of every cell in every frame (paper section 3.1).

With ``P = Y * X`` pixels and ``N`` cells, the averaging operator is the sparse matrix

.. math::

    M \\in \\mathbb{R}^{N \\times P}, \\qquad
    M_{i p} = \\begin{cases} 1 / A_i & p \\in C_i \\\\ 0 & \\text{otherwise} \\end{cases}

(``A_i`` the area of cell ``C_i`` in pixels), and the traces of a chunk of frames
``F`` (P, c) are ``x = M F`` (N, c): one CSR sparse-dense product per chunk, one pass over the movie.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp

from calcium_gnn.errors import MasksError, MovieError
from calcium_gnn.graphs.geometry import dense_index, validate_labels
from calcium_gnn.io.movie import iter_frame_chunks

__all__ = ["averaging_matrix", "extract_traces"]


def averaging_matrix(
    labels: np.ndarray, *, dtype: type = np.float32, source: str | Path = "labels"
) -> tuple[np.ndarray, sp.csr_matrix]:
    """The per-cell averaging operator ``M`` (N, Y*X) in CSR form (module docstring).

    Args:
        labels: (Y, X) label image, 0 = background.
        dtype: dtype of the matrix entries ``1 / A_i``.
        source: named in error messages.

    Returns:
        ``(cell_id, M)``: cell_id (N,) ascending ids; M (N, Y*X) CSR with ``1 / A_i`` on cell i's pixels.
    """
    labels = validate_labels(labels, source)
    cell_id, index = dense_index(labels)
    flat = index.ravel()
    pixels = np.nonzero(flat >= 0)[0]
    owner = flat[pixels]
    area = np.bincount(owner, minlength=cell_id.size)
    order = np.argsort(owner, kind="stable")
    indptr = np.concatenate([[0], np.cumsum(area)]).astype(np.int64)
    data = (1.0 / area[owner[order]]).astype(dtype)
    m = sp.csr_matrix((data, pixels[order], indptr), shape=(cell_id.size, flat.size))
    return cell_id, m


def extract_traces(
    frames: np.ndarray,
    labels: np.ndarray,
    *,
    chunk_frames: int = 16,
    source: str | Path = "movie",
    labels_source: str | Path = "labels",
) -> np.ndarray:
    """Mean intensity of each cell in each frame, ``x = M F`` chunk by chunk.

    Args:
        frames: (T, Y, X) movie, any real dtype: an array, a ``np.memmap`` (read chunk by chunk, its
            pages released after each chunk) or an array-like sliced on axis 0 with ``shape``,
            ``ndim`` and ``dtype`` (e.g. a :class:`calcium_gnn.imaging.preprocess.PreprocessedMovie`,
            whose chunks are computed as they are read). Memory: one chunk and its float32 copy.
        labels: (Y, X) label image, 0 = background.
        chunk_frames: frames per sparse product (small chunks stay in cache; 16 measured fastest).
        source: the movie's name in error messages.
        labels_source: the label image's name in error messages.

    Returns:
        (N, T) float32 traces, rows in ascending ``cell_id``.

    Raises:
        MasksError: the label image's (Y, X) differs from the movie's.
        MovieError: the movie is not (T, Y, X) real numbers.
    """
    if frames.ndim != 3:
        raise MovieError(source, f"a movie must be 3-D (T, Y, X), got shape {tuple(frames.shape)}")
    if not (np.issubdtype(frames.dtype, np.integer) or np.issubdtype(frames.dtype, np.floating)):
        raise MovieError(source, f"a movie must hold real numbers, got dtype {frames.dtype}")
    labels = validate_labels(labels, labels_source)
    if tuple(labels.shape) != tuple(frames.shape[1:]):
        raise MasksError(
            labels_source,
            f"label image shape {tuple(labels.shape)} differs from the movie's frame shape "
            f"{tuple(frames.shape[1:])} ({source})",
        )
    if chunk_frames < 1:
        raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
    _, m = averaging_matrix(labels, dtype=np.float32, source=labels_source)
    t = frames.shape[0]
    p = labels.size
    traces = np.empty((m.shape[0], t), dtype=np.float32)
    for start, stop, block in iter_frame_chunks(frames, chunk_frames):
        block = block.reshape(stop - start, p)
        if block.dtype != np.float32:
            block = block.astype(np.float32)
        traces[:, start:stop] = m @ block.T
    return traces
