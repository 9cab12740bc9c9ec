"""suite2p output: a plane folder (``suite2p/plane0/``) as a label image and cell traces.

Files read (numpy only; the pickled ``stat.npy`` and ``ops.npy`` through the safe unpickler of
:mod:`calcium_gnn.io.pickled_npy`, so a crafted file cannot run code):

==============  ======================  ================================================
file            content                 used for
==============  ======================  ================================================
``stat.npy``    (R,) dicts              ``ypix``, ``xpix`` (pixels of ROI r), ``lam`` (weights)
``F.npy``       (R, T) float            ROI fluorescence
``Fneu.npy``    (R, T) float            neuropil fluorescence (not needed when c = 0)
``iscell.npy``  (R, 2) float            column 0: 1 for a cell, 0 for a rejected ROI
``ops.npy``     dict                    ``Ly``, ``Lx`` (image shape), ``fs`` (frame rate, Hz)
==============  ======================  ================================================

Only ROIs with ``iscell[:, 0] == 1`` are kept. The trace of ROI r is the neuropil-corrected

.. math::

    x_r(t) = F_r(t) - c \\, F^{neu}_r(t), \\qquad c = 0.7 \\text{ (suite2p's own default)}.

Label image: ROI r (0-based suite2p index, the number the suite2p GUI shows) has label ``r + 1``;
a pixel claimed by several kept ROIs goes to the one with the larger ``lam`` there (ties: the lower
index). A kept ROI left without a pixel is an error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from calcium_gnn.errors import InputFileError
from calcium_gnn.io.pickled_npy import read_npy, read_pickled_npy

__all__ = ["DEFAULT_NEUROPIL_COEFFICIENT", "Suite2pPlane", "find_plane_folder", "read_suite2p"]

#: suite2p's own neuropil coefficient (``ops["neucoeff"]``)
DEFAULT_NEUROPIL_COEFFICIENT = 0.7


@dataclass(frozen=True)
class Suite2pPlane:
    """The cells of one suite2p plane.

    Attributes:
        labels: (Ly, Lx) int32 label image, ROI r has label ``r + 1``, 0 = no kept ROI.
        traces: (N, T) float64 neuropil-corrected traces, rows in ascending ROI index.
        roi_index: (N,) int64 suite2p indices of the kept ROIs (ascending); ``labels`` ids are these + 1.
        fs: frame rate in Hz from ``ops.npy``, or None when it has none.
        folder: the plane folder read.
    """

    labels: np.ndarray
    traces: np.ndarray
    roi_index: np.ndarray
    fs: float | None
    folder: Path


def find_plane_folder(folder: str | Path) -> Path:
    """The plane folder holding ``stat.npy``: ``folder`` itself, its only ``plane*`` subfolder, or its
    ``suite2p/plane*`` one.

    Raises:
        InputFileError: naming ``folder``: missing, not a folder, no suite2p plane, or several
            planes (give one).
    """
    folder = Path(folder)
    if not folder.exists():
        raise InputFileError(folder, "folder not found")
    if not folder.is_dir():
        raise InputFileError(folder, "is a file: give the suite2p output folder (e.g. suite2p/plane0)")
    if (folder / "stat.npy").is_file():
        return folder
    planes = sorted(
        p.parent for p in [*folder.glob("plane*/stat.npy"), *folder.glob("suite2p/plane*/stat.npy")]
    )
    if not planes:
        raise InputFileError(folder, "no suite2p plane here (no stat.npy, no plane*/stat.npy)")
    if len(planes) > 1:
        names = ", ".join(str(p.relative_to(folder)) for p in planes)
        raise InputFileError(folder, f"several suite2p planes ({names}): give one plane folder")
    return planes[0]


def read_suite2p(
    folder: str | Path, *, neuropil_coefficient: float = DEFAULT_NEUROPIL_COEFFICIENT
) -> Suite2pPlane:
    """Read a suite2p plane (module docstring).

    Args:
        folder: the plane folder (``.../suite2p/plane0``) or a folder holding exactly one plane.
            Never modified.
        neuropil_coefficient: c in ``F - c * Fneu`` (>= 0; 0 uses F alone and needs no Fneu.npy).

    Returns:
        A :class:`Suite2pPlane`.

    Raises:
        InputFileError: naming the file: a missing file or key (``stat.npy`` entries need
            ``ypix``, ``xpix``, ``lam``; ``ops.npy`` needs ``Ly``, ``Lx``), arrays of mismatched
            sizes, pixels outside the image, no cell in ``iscell.npy``, NaN / Inf traces of a kept
            ROI, or a kept ROI left without a pixel.
        ValueError: a negative or non-finite ``neuropil_coefficient``.
    """
    c = float(neuropil_coefficient)
    if not (math.isfinite(c) and c >= 0):
        raise ValueError(f"neuropil_coefficient must be a number >= 0, got {neuropil_coefficient!r}")
    plane = find_plane_folder(folder)
    ops_path = plane / "ops.npy"
    ops = read_pickled_npy(ops_path)
    if not isinstance(ops, dict):
        raise InputFileError(ops_path, f"expected suite2p's ops dict, got {type(ops).__name__}")
    missing = [key for key in ("Ly", "Lx") if key not in ops]
    if missing:
        raise InputFileError(ops_path, f"missing key(s) {', '.join(missing)} (the image height and width)")
    shape = (_positive_int(ops["Ly"], ops_path, "Ly"), _positive_int(ops["Lx"], ops_path, "Lx"))
    fs = _frame_rate(ops.get("fs"), ops_path)

    stat_path = plane / "stat.npy"
    stat = read_pickled_npy(stat_path)
    if not (
        isinstance(stat, (np.ndarray, list)) and len(stat) > 0 and all(isinstance(s, dict) for s in stat)
    ):
        raise InputFileError(stat_path, "expected suite2p's stat: a non-empty array of dicts, one per ROI")
    n_rois = len(stat)
    iscell_path = plane / "iscell.npy"
    iscell = read_npy(iscell_path)
    if iscell.ndim not in (1, 2) or iscell.shape[0] != n_rois:
        raise InputFileError(
            iscell_path, f"shape {iscell.shape}: expected ({n_rois}, 2), one row per ROI of stat.npy"
        )
    flag = iscell if iscell.ndim == 1 else iscell[:, 0]
    keep = np.nonzero(np.asarray(flag) == 1)[0].astype(np.int64)
    if keep.size == 0:
        raise InputFileError(
            iscell_path, f"no ROI is a cell (iscell[:, 0] == 1 for none of the {n_rois} ROIs)"
        )

    traces = _traces(plane, n_rois, c)[keep]
    bad = ~np.isfinite(traces).all(axis=1)
    if bad.any():
        raise InputFileError(plane / "F.npy", f"ROI {int(keep[bad][0])} has NaN or Inf values (in F or Fneu)")
    labels = _label_image([stat[r] for r in keep], keep, shape, stat_path)
    return Suite2pPlane(labels, traces, keep, fs, plane)


def _positive_int(value: Any, path: Path, key: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if number < 1 or number != value:
        raise InputFileError(path, f"{key} must be a positive integer, got {value!r}")
    return number


def _frame_rate(value: Any, path: Path) -> float | None:
    """``ops["fs"]`` in Hz, or None when absent; anything else than a positive number is an error."""
    if value is None:
        return None
    try:
        fs = float(value)
    except (TypeError, ValueError):
        raise InputFileError(
            path, f"fs (frame rate) must be a positive number of Hz, got {value!r}"
        ) from None
    if not (math.isfinite(fs) and fs > 0):
        raise InputFileError(path, f"fs (frame rate) must be a positive number of Hz, got {value!r}")
    return fs


def _traces(plane: Path, n_rois: int, c: float) -> np.ndarray:
    """(R, T) float64 ``F - c * Fneu`` for every ROI."""
    f = _trace_array(plane / "F.npy", n_rois)
    if c == 0:
        return f
    fneu = _trace_array(plane / "Fneu.npy", n_rois)
    if fneu.shape != f.shape:
        raise InputFileError(plane / "Fneu.npy", f"shape {fneu.shape} differs from F.npy's {f.shape}")
    return f - c * fneu


def _trace_array(path: Path, n_rois: int) -> np.ndarray:
    array = read_npy(path)
    if array.ndim != 2 or array.shape[0] != n_rois:
        raise InputFileError(
            path, f"shape {array.shape}: expected ({n_rois}, T), one row per ROI of stat.npy"
        )
    if array.dtype.kind not in "uif":
        raise InputFileError(path, f"{array.dtype} values, expected numbers")
    if array.shape[1] < 2:
        raise InputFileError(path, f"only {array.shape[1]} frame: a trace needs at least 2")
    return array.astype(np.float64)


def _label_image(stats: list[dict], index: np.ndarray, shape: tuple[int, int], path: Path) -> np.ndarray:
    """(Ly, Lx) int32: each pixel to the kept ROI with the largest ``lam`` there."""
    ly, lx = shape
    pixels, weights, owners = [], [], []
    for r, s in zip(index, stats, strict=True):
        missing = [key for key in ("ypix", "xpix", "lam") if key not in s]
        if missing:
            raise InputFileError(path, f"ROI {int(r)} lacks key(s) {', '.join(missing)}")
        y, x, lam = (np.asarray(s[key]).ravel() for key in ("ypix", "xpix", "lam"))
        if not (y.shape == x.shape == lam.shape) or y.size == 0:
            raise InputFileError(
                path, f"ROI {int(r)}: ypix, xpix and lam must be non-empty and of equal length"
            )
        if y.dtype.kind not in "ui" or x.dtype.kind not in "ui":
            raise InputFileError(path, f"ROI {int(r)}: ypix / xpix must be integers")
        if y.min() < 0 or x.min() < 0 or y.max() >= ly or x.max() >= lx:
            raise InputFileError(path, f"ROI {int(r)} has pixels outside the {ly} x {lx} image of ops.npy")
        pixels.append(y.astype(np.int64) * lx + x.astype(np.int64))
        weights.append(lam.astype(np.float64))
        owners.append(np.full(y.size, r + 1, dtype=np.int64))
    pixel, weight, owner = (np.concatenate(a) for a in (pixels, weights, owners))
    if not np.isfinite(weight).all():
        raise InputFileError(path, "lam holds NaN or Inf values")
    order = np.lexsort((owner, -weight, pixel))  # per pixel: largest lam first, then lowest index
    pixel, owner = pixel[order], owner[order]
    first = np.ones(pixel.size, dtype=bool)
    first[1:] = pixel[1:] != pixel[:-1]
    labels = np.zeros(ly * lx, dtype=np.int32)
    labels[pixel[first]] = owner[first]
    labels = labels.reshape(ly, lx)
    lost = np.setdiff1d(index + 1, np.unique(labels))
    if lost.size:
        raise InputFileError(
            path,
            f"ROI {int(lost[0]) - 1} lost every pixel to overlapping ROIs with a larger "
            "lam: remove it from iscell.npy",
        )
    return labels
