"""The files of a synthetic culture: arrays and JSON in, arrays and JSON out.

This module knows the file format and checks it; it does not know the culture object. Turning a
:class:`~calcium_gnn.data.synthetic.SyntheticCulture` into these arrays and back, and the cache of
generated cultures, are :mod:`calcium_gnn.data.synthetic_files` (``io`` imports no upper layer).

A culture directory holds four files:

``movie.tif``
    (T, Y, X) uint16 ImageJ hyperstack; the frame interval ``dt`` (s) is ImageJ's ``finterval``.
``labels.tif``
    (Y, X) label image (uint16 when the ids fit, else int32), 0 = membrane, 1..N = cell ids.
``truth.npz``
    arrays, see :data:`NPZ_FIELDS`.
``truth.json``
    scalars, every generation parameter, the seed, the hot pixels, the edge-weight normalisation,
    the list of cells, and a description of every field (see :data:`JSON_DESCRIPTION`). Written
    last: a directory without it is incomplete. The writer adds ``format``, ``version``, ``files``,
    ``arrays`` and ``description``; the rest is the culture's (``meta`` of :func:`write_culture_files`).

Every file is written to a temporary name in the same directory, then moved into place with
``os.replace``, so a reader never sees half a file. Existing culture directories are never
overwritten unless asked to.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from calcium_gnn.errors import InputFileError, MovieError, OutputError
from calcium_gnn.io.atomic import atomic_path

FORMAT = "calcium_gnn.synthetic_culture"
VERSION = 1
FILES = ("movie.tif", "labels.tif", "truth.npz", "truth.json")
#: Keys ``truth.json`` must hold (besides the ones the writer adds) for a reader to use it.
REQUIRED_META: tuple[str, ...] = (
    "n_cells", "n_frames", "image_shape", "dt", "k", "edge_weight_scale", "seed", "params",
)
CENTROID_DEFINITION = "centroid of the cell's Voronoi polygon (membrane half-widths included), (x, y) px"
AREA_DEFINITION = "area of the cell's Voronoi polygon in px**2 (membrane half-widths included)"

NPZ_FIELDS: dict[str, str] = {
    "traces": "(N, T) float64 clean calcium levels, row i = cell_ids[i]",
    "t": "(T,) float64 frame times in s",
    "gamma": "(N,) float64 true feed gamma_i in 1/s (NaN for drivers)",
    "is_driver": "(N,) bool, cell with prescribed transients (touches the image edge)",
    "touches_edge": "(N,) bool, the cell's polygon shares a segment with the image border",
    "edge_src": "(E,) int64 node index i of each undirected adjacent pair (i < j)",
    "edge_dst": "(E,) int64 node index j of each undirected adjacent pair",
    "l": "(E,) float64 shared border length l_ij in px (Voronoi edge = membrane midline)",
    "u": "(E,) float64 centroid distance u_ij in px",
    "centroids": f"(N, 2) float64 {CENTROID_DEFINITION}",
    "areas": f"(N,) float64 {AREA_DEFINITION}",
    "cell_ids": "(N,) int64 label of each node in labels.tif (node i has label i + 1)",
    "hot_pixels": "(H, 3) int64 rows (frame, y, x) of the hot pixels in movie.tif",
}

JSON_DESCRIPTION: dict[str, str] = {
    "format": f"always '{FORMAT}'",
    "version": "file-format version",
    "seed": "seed of every random draw (numpy SeedSequence)",
    "params": "every generation parameter of calcium_gnn.data.synthetic.make_culture",
    "n_cells": "N, number of cells (nodes)",
    "n_frames": "T, number of frames",
    "image_shape": "[Y, X] in px",
    "dt": "frame interval in s",
    "k": "true coupling constant of the consensus ODE (eq. 3), 1/s",
    "edge_weight_scale": "s = mean(u * l) over the edges; the ODE uses w_ij = u_ij * l_ij / s",
    "edge_weight_definition": "how w and s are defined",
    "ode": "the ground-truth equation",
    "n_edges": "E, number of undirected adjacent pairs (l_ij >= params.min_shared_border)",
    "n_drivers": "number of driver cells",
    "centroid_definition": "what the centroids (and so u_ij) are",
    "hot_pixels": "list of [frame, y, x] of the hot pixels in movie.tif",
    "cells": "per cell: cell_id, is_driver, touches_edge, gamma (null for drivers), centroid [x, y], area",
    "files": "what each file of the directory holds",
    "arrays": "the arrays of truth.npz",
}


@dataclass
class CultureFiles:
    """The content of a culture directory, checked (:func:`read_culture_files`).

    Attributes:
        directory: the culture directory.
        labels: (Y, X) int32 label image, 0 = membrane, 1..N = cell ids.
        arrays: the arrays of ``truth.npz`` (:data:`NPZ_FIELDS`), as stored.
        meta: the content of ``truth.json``.
        movie: (T, Y, X) uint16 movie, or None when not read (only its header was checked).
    """

    directory: Path
    labels: np.ndarray
    arrays: dict[str, np.ndarray]
    meta: dict[str, Any]
    movie: np.ndarray | None = None


def write_culture_files(
    out_dir: str | Path,
    *,
    movie: np.ndarray,
    labels: np.ndarray,
    dt: float,
    arrays: Mapping[str, np.ndarray],
    meta: Mapping[str, Any],
    overwrite: bool = False,
) -> Path:
    """Write a culture directory (movie.tif, labels.tif, truth.npz, then truth.json); return it.

    Args:
        out_dir: the directory (created if missing).
        movie: (T, Y, X) uint16 movie; ``dt`` (s) is written as ImageJ's ``finterval``.
        labels: (Y, X) label image; stored as uint16 when its highest id fits, else int32.
        dt: frame interval in s.
        arrays: exactly the arrays of :data:`NPZ_FIELDS`.
        meta: the culture's ``truth.json`` keys (at least :data:`REQUIRED_META`); JSON values only.
        overwrite: replace the files of a non-empty directory (other files there are kept).

    Raises:
        OutputError: ``out_dir`` is a file, or a non-empty directory and ``overwrite`` is False, or
            cannot be written.
        ValueError: ``arrays`` or ``meta`` miss a field of the format (a programming error).
    """
    missing = sorted(set(NPZ_FIELDS) ^ set(arrays)) + [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise ValueError(f"culture files: missing or unknown fields {missing}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OutputError(out, "exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise OutputError(out, "directory exists and is not empty; pass overwrite=True to replace it")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(out, f"cannot create the directory ({err.strerror})") from None
    label_dtype = np.uint16 if int(labels.max(initial=0)) <= np.iinfo(np.uint16).max else np.int32
    _atomic(
        out / "movie.tif",
        lambda p: tifffile.imwrite(
            p, movie, imagej=True, metadata={"axes": "TYX", "finterval": dt, "unit": "pixel"}
        ),
    )
    _atomic(out / "labels.tif", lambda p: tifffile.imwrite(p, labels.astype(label_dtype)))
    _atomic(out / "truth.npz", lambda p: _write_npz(p, arrays))
    text = json.dumps(_truth_json(meta), indent=1, allow_nan=False)
    _atomic(out / "truth.json", lambda p: p.write_text(text, encoding="utf-8"))
    return out


def read_culture_files(directory: str | Path, read_movie: bool = True) -> CultureFiles:
    """Read a culture directory written by :func:`write_culture_files`, checking its files agree.

    Args:
        directory: the culture directory.
        read_movie: read ``movie.tif`` now; otherwise only its header is checked.

    Raises:
        InputFileError: naming the file that is missing, unreadable or inconsistent.
        MovieError: when ``movie.tif`` is unreadable or does not fit the labels and traces.
    """
    root = Path(directory)
    if not root.is_dir():
        raise InputFileError(root, "culture directory not found")
    for name in FILES:
        if not (root / name).is_file():
            raise InputFileError(root / name, "missing file of the synthetic culture")
    meta = _read_json(root / "truth.json")
    arrays = _read_npz(root / "truth.npz")
    labels = _read_labels(root / "labels.tif")
    n, t = meta["n_cells"], meta["n_frames"]
    npz = root / "truth.npz"
    _check(npz, arrays["traces"].shape == (n, t), f"traces must be ({n}, {t}) as in truth.json")
    for name in ("gamma", "is_driver", "touches_edge", "areas", "cell_ids"):
        _check(npz, arrays[name].shape == (n,), f"'{name}' must have shape ({n},)")
    _check(npz, arrays["centroids"].shape == (n, 2), f"'centroids' must have shape ({n}, 2)")
    _check(npz, arrays["t"].shape == (t,), f"'t' must have shape ({t},)")
    e = arrays["edge_src"].shape
    _check(
        npz,
        all(arrays[k].shape == e for k in ("edge_dst", "l", "u")),
        "'edge_src', 'edge_dst', 'l', 'u' must have the same shape",
    )
    edge_index = np.vstack([arrays["edge_src"], arrays["edge_dst"]])
    _check(
        npz,
        edge_index.size == 0 or (edge_index.min() >= 0 and edge_index.max() < n),
        f"edges refer to nodes outside 0..{n - 1}",
    )
    _check(
        root / "labels.tif",
        list(labels.shape) == meta["image_shape"],
        f"shape {labels.shape} differs from image_shape {meta['image_shape']} in truth.json",
    )
    _check(
        root / "labels.tif",
        int(labels.max()) == n,
        f"highest label {labels.max()} but truth.json has {n} cells",
    )
    _check_movie_header(root / "movie.tif", (t,) + labels.shape)
    movie = read_culture_movie(root / "movie.tif", (t,) + labels.shape) if read_movie else None
    return CultureFiles(directory=root, labels=labels, arrays=arrays, meta=meta, movie=movie)


def read_culture_movie(path: str | Path, shape: tuple[int, ...]) -> np.ndarray:
    """Read a culture's ``movie.tif`` and check it is uint16 of ``shape`` (T, Y, X).

    Raises:
        MovieError: unreadable, or the wrong shape / dtype.
    """
    try:
        movie = tifffile.imread(path)
    except (OSError, ValueError, tifffile.TiffFileError) as err:
        raise MovieError(path, f"cannot read the movie ({err})") from None
    if movie.shape != tuple(shape) or movie.dtype != np.uint16:
        raise MovieError(path, f"expected a {tuple(shape)} uint16 movie, got {movie.shape} {movie.dtype}")
    return movie


def _atomic(path: Path, write: Callable[[Path], Any]) -> None:
    """Call ``write`` on a temporary name next to ``path`` (same suffix), then ``os.replace`` it
    (:func:`calcium_gnn.io.atomic.atomic_path`)."""
    with atomic_path(path) as tmp:
        write(tmp)


def _write_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    with open(path, "wb") as handle:
        np.savez(handle, **{name: arrays[name] for name in NPZ_FIELDS})


def _truth_json(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The content of ``truth.json``: the format's own keys around the culture's ``meta``."""
    return {
        "format": FORMAT,
        "version": VERSION,
        **meta,
        "files": {
            "movie.tif": "(T, Y, X) uint16 ImageJ stack, finterval = dt",
            "labels.tif": "(Y, X) label image, 0 = membrane, 1..N = cell ids",
            "truth.npz": "arrays, see 'arrays'",
            "truth.json": "this file",
        },
        "arrays": NPZ_FIELDS,
        "description": JSON_DESCRIPTION,
    }


def _check(path: Path, ok: bool, problem: str) -> None:
    if not ok:
        raise InputFileError(path, problem)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputFileError(path, f"not a readable JSON file ({err})") from None
    _check(path, isinstance(meta, dict) and meta.get("format") == FORMAT, f"not a '{FORMAT}' file")
    _check(path, meta.get("version") == VERSION, f"format version {meta.get('version')}, expected {VERSION}")
    for key in REQUIRED_META:
        _check(path, key in meta, f"missing key '{key}'")
    return meta


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as handle:
            arrays = {name: handle[name] for name in handle.files}
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise InputFileError(path, f"not a readable .npz file ({err})") from None
    missing = sorted(set(NPZ_FIELDS) - set(arrays))
    _check(path, not missing, f"missing arrays {missing}")
    return arrays


def _read_labels(path: Path) -> np.ndarray:
    try:
        labels = tifffile.imread(path)
    except (OSError, ValueError, tifffile.TiffFileError) as err:
        raise InputFileError(path, f"cannot read the label image ({err})") from None
    is_labels = labels.ndim == 2 and np.issubdtype(labels.dtype, np.integer)
    _check(path, is_labels, "expected a 2-D integer label image")
    return labels.astype(np.int32)


def _check_movie_header(path: Path, shape: tuple[int, ...]) -> None:
    """Check the movie's shape and dtype from its header, without reading the pixels."""
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            got_shape, got_dtype = tuple(series.shape), series.dtype
    except (OSError, ValueError, IndexError, tifffile.TiffFileError) as err:
        raise MovieError(path, f"cannot read the movie ({err})") from None
    if got_shape != tuple(shape) or got_dtype != np.uint16:
        raise MovieError(path, f"expected a {tuple(shape)} uint16 movie, got {got_shape} {got_dtype}")
