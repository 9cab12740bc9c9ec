"""CaImAn results (the HDF5 file of ``cnm.save("results.hdf5")``) as a label image and cell traces.

Layout read (with h5py only; CaImAn's ``save_dict_to_hdf5`` writes dicts as groups, sparse matrices
as a group ``data, indices, indptr, shape`` in CSC form, and ``None`` as the string ``"NoneType"``):

=============================  =========================  ======================================
path                           content                    used for
=============================  =========================  ======================================
``estimates/A``                (P, K) CSC (or dense)      spatial footprints, ``P = d1 * d2``
``estimates/C``                (K, T)                     the traces
``estimates/dims``             (d1, d2)                   image shape (else ``dims``, else
                                                          ``params/data/dims``)
``estimates/idx_components``   (M,) int, optional         the accepted components (CaImAn's
                                                          ``evaluate_components``); all when absent
``params/data/fr``             float, optional            frame rate (Hz)
=============================  =========================  ======================================

Pixel ``p`` of a footprint is ``(row, column) = (p mod d1, p div d1)`` (CaImAn flattens images in
Fortran order). Footprint ``k`` covers the pixels where ``A[p, k] >= threshold * max_p A[p, k]``;
``threshold = 0.2`` by default keeps the body of a footprint and drops its faint tails, which
spread over the neighbours and would make cells that do not touch look adjacent. A pixel covered
by several components goes to the one with the largest ``A[p, k]`` (CaImAn's footprints have unit
norm, so these are comparable). Component ``k`` (0-based) has label ``k + 1``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from calcium_gnn.errors import InputFileError

__all__ = ["DEFAULT_FOOTPRINT_THRESHOLD", "CaimanResult", "read_caiman"]

#: share of a footprint's maximum above which a pixel belongs to it
DEFAULT_FOOTPRINT_THRESHOLD = 0.2


@dataclass(frozen=True)
class CaimanResult:
    """The cells of a CaImAn result.

    Attributes:
        labels: (d1, d2) int32 label image, component k has label ``k + 1``, 0 = none.
        traces: (N, T) float64 rows of ``estimates/C``, ascending component index.
        component_index: (N,) int64 CaImAn indices of the components used; label ids are these + 1.
        fr: frame rate in Hz from ``params/data/fr``, or None.
        path: the file.
    """

    labels: np.ndarray
    traces: np.ndarray
    component_index: np.ndarray
    fr: float | None
    path: Path


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:200]}" if lines else type(exc).__name__


def _is_none(node: Any) -> bool:
    """A CaImAn ``None``: a scalar string dataset ``"NoneType"``."""
    if not isinstance(node, h5py.Dataset) or node.shape != ():
        return False
    value = node[()]
    return (
        isinstance(value, (bytes, str))
        and (value.decode() if isinstance(value, bytes) else value) == "NoneType"
    )


def _dataset(f: h5py.File, key: str, path: Path, required: bool = True) -> np.ndarray | None:
    node = f.get(key)
    if node is None or _is_none(node):
        if required:
            raise InputFileError(path, f"missing {key} (not a CaImAn results file, or saved before the fit?)")
        return None
    if not isinstance(node, h5py.Dataset):
        raise InputFileError(path, f"{key} is a group, expected an array")
    return np.asarray(node[()])


def read_caiman(
    path: str | Path, *, footprint_threshold: float = DEFAULT_FOOTPRINT_THRESHOLD
) -> CaimanResult:
    """Read a CaImAn HDF5 results file (module docstring).

    Args:
        path: the ``.hdf5`` / ``.h5`` file. Never modified.
        footprint_threshold: in (0, 1]: a pixel belongs to a footprint when its weight is at least
            this share of the footprint's maximum.

    Returns:
        A :class:`CaimanResult`.

    Raises:
        InputFileError: naming the file: not HDF5, a missing key (``estimates/A``, ``estimates/C``,
            the dims), mismatched sizes, 3-D data, NaN / Inf values, or a component left without a
            pixel.
        ValueError: ``footprint_threshold`` outside (0, 1].
    """
    threshold = float(footprint_threshold)
    if not (0 < threshold <= 1):
        raise ValueError(f"footprint_threshold must be in (0, 1], got {footprint_threshold!r}")
    path = Path(path)
    if not path.is_file():
        raise InputFileError(path, "file not found" if not path.exists() else "is not a file")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise InputFileError(path, f"not a readable HDF5 file ({_one_line(exc)})") from None
    with f:
        dims = _dims(f, path)
        a_data, a_indices, a_indptr, n_pixels, n_components = _footprints(f, path)
        c = _dataset(f, "estimates/C", path)
        accepted = _dataset(f, "estimates/idx_components", path, required=False)
        fr = _dataset(f, "params/data/fr", path, required=False)
    if n_pixels != dims[0] * dims[1]:
        raise InputFileError(path, f"estimates/A has {n_pixels} pixels, dims {dims} have {dims[0] * dims[1]}")
    if c.ndim != 2 or c.shape[0] != n_components:
        raise InputFileError(
            path,
            f"estimates/C has shape {c.shape}: expected ({n_components}, T), one row per "
            "component of estimates/A",
        )
    if c.dtype.kind not in "uif" or c.shape[1] < 2:
        raise InputFileError(
            path, f"estimates/C must hold numbers over at least 2 frames, got {c.dtype} {c.shape}"
        )
    index = _accepted(accepted, n_components, path)
    traces = c[index].astype(np.float64)
    bad = ~np.isfinite(traces).all(axis=1)
    if bad.any():
        raise InputFileError(path, f"estimates/C: component {int(index[bad][0])} has NaN or Inf values")
    labels = _label_image(a_data, a_indices, a_indptr, index, dims, threshold, path)
    return CaimanResult(labels, traces, index, _frame_rate(fr, path), path)


def _dims(f: h5py.File, path: Path) -> tuple[int, int]:
    for key in ("estimates/dims", "dims", "params/data/dims"):
        value = _dataset(f, key, path, required=False)
        if value is None:
            continue
        dims = tuple(int(v) for v in np.ravel(value))
        if len(dims) != 2:
            raise InputFileError(path, f"{key} = {dims}: only 2-D (d1, d2) recordings are supported")
        if min(dims) < 1:
            raise InputFileError(path, f"{key} = {dims}: must be positive")
        return dims  # type: ignore[return-value]
    raise InputFileError(
        path, "missing estimates/dims (and dims, params/data/dims): the image shape is unknown"
    )


def _footprints(f: h5py.File, path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """``estimates/A`` as CSC arrays ``(data, indices, indptr)`` and its shape ``(P, K)``."""
    node = f.get("estimates/A")
    if node is None or _is_none(node):
        raise InputFileError(
            path, "missing estimates/A (not a CaImAn results file, or saved before the fit?)"
        )
    if isinstance(node, h5py.Dataset):  # a dense (P, K) array
        dense = np.asarray(node[()])
        if dense.ndim != 2:
            raise InputFileError(path, f"estimates/A has shape {dense.shape}: expected (pixels, components)")
        rows, cols = np.nonzero(dense.T)  # column-major walk: CSC order
        indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=dense.shape[1]))])
        return dense.T[rows, cols].astype(np.float64), cols.astype(np.int64), indptr, *dense.shape
    missing = [key for key in ("data", "indices", "indptr", "shape") if key not in node]
    if missing:
        raise InputFileError(path, f"estimates/A lacks {', '.join(missing)} (expected a CSC sparse matrix)")
    data = np.asarray(node["data"][()], dtype=np.float64)
    indices = np.asarray(node["indices"][()]).astype(np.int64)
    indptr = np.asarray(node["indptr"][()]).astype(np.int64)
    shape = tuple(int(v) for v in np.ravel(node["shape"][()]))
    if len(shape) != 2:
        raise InputFileError(path, f"estimates/A/shape = {shape}: expected (pixels, components)")
    n_pixels, n_components = shape
    ok = (
        indptr.shape == (n_components + 1,)
        and indptr[0] == 0
        and indptr[-1] == data.size == indices.size
        and (np.diff(indptr) >= 0).all()
        and (indices.size == 0 or (indices.min() >= 0 and indices.max() < n_pixels))
    )
    if not ok:
        raise InputFileError(path, "estimates/A: data, indices, indptr and shape do not form a CSC matrix")
    if not np.isfinite(data).all():
        raise InputFileError(path, "estimates/A holds NaN or Inf values")
    return data, indices, indptr, n_pixels, n_components


def _accepted(value: np.ndarray | None, n_components: int, path: Path) -> np.ndarray:
    """Ascending indices of the components to use: ``idx_components`` when present, else all."""
    if value is None:
        return np.arange(n_components, dtype=np.int64)
    index = np.ravel(value)
    if index.dtype.kind not in "ui" or (index.size and (index.min() < 0 or index.max() >= n_components)):
        raise InputFileError(
            path, f"estimates/idx_components must hold component indices 0..{n_components - 1}"
        )
    index = np.unique(index.astype(np.int64))
    if index.size == 0:
        raise InputFileError(path, "estimates/idx_components is empty: CaImAn accepted no component")
    return index


def _frame_rate(value: np.ndarray | None, path: Path) -> float | None:
    if value is None:
        return None
    try:
        fr = float(np.ravel(value)[0])
    except (TypeError, ValueError, IndexError):
        raise InputFileError(path, f"params/data/fr must be a frame rate in Hz, got {value!r}") from None
    if not (math.isfinite(fr) and fr > 0):
        raise InputFileError(path, f"params/data/fr must be a positive frame rate in Hz, got {fr}")
    return fr


def _label_image(
    data: np.ndarray,
    indices: np.ndarray,
    indptr: np.ndarray,
    index: np.ndarray,
    dims: tuple[int, int],
    threshold: float,
    path: Path,
) -> np.ndarray:
    """(d1, d2) int32: each pixel to the thresholded footprint with the largest weight there."""
    counts = np.diff(indptr)
    component = np.repeat(np.arange(counts.size, dtype=np.int64), counts)
    chosen = np.isin(component, index)
    data, pixel, component = data[chosen], indices[chosen], component[chosen]
    peak = np.zeros(counts.size)
    np.maximum.at(peak, component, data)
    inside = (data > 0) & (data >= threshold * peak[component])
    data, pixel, component = data[inside], pixel[inside], component[inside]
    order = np.lexsort((component, -data, pixel))  # per pixel: largest weight first, then lowest index
    pixel, component = pixel[order], component[order]
    first = np.ones(pixel.size, dtype=bool)
    first[1:] = pixel[1:] != pixel[:-1]
    flat = np.zeros(dims[0] * dims[1], dtype=np.int32)
    flat[pixel[first]] = component[first] + 1
    labels = flat.reshape(dims, order="F")
    lost = np.setdiff1d(index + 1, np.unique(labels))
    if lost.size:
        raise InputFileError(
            path,
            f"component {int(lost[0]) - 1} has no pixel of its own (an empty footprint, "
            "or one covered by stronger neighbours)",
        )
    return labels
