"""Writing and reading a synthetic culture's files, and the cache of generated cultures.

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
    last: a directory without it is incomplete.

Every file is written to a temporary name in the same directory, then moved into place with
``os.replace``, so a reader never sees half a file. Existing culture directories are never
overwritten unless asked to.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from calcium_gnn.data.synthetic import (
    AREA_DEFINITION,
    CENTROID_DEFINITION,
    SyntheticCulture,
    culture_params,
    make_culture,
)
from calcium_gnn.errors import InputFileError, MovieError, OutputError
from calcium_gnn.io.atomic import atomic_folder, atomic_path

FORMAT = "calcium_gnn.synthetic_culture"
VERSION = 1
FILES = ("movie.tif", "labels.tif", "truth.npz", "truth.json")

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


def save_culture(culture: SyntheticCulture, out_dir: str | Path, overwrite: bool = False) -> Path:
    """Write ``culture`` to ``out_dir`` (movie.tif, labels.tif, truth.npz, truth.json); return the dir.

    The movie is rendered first if it was not yet. ``culture.path`` is set to ``out_dir``.

    Raises:
        OutputError: ``out_dir`` is a file, or a non-empty directory and ``overwrite`` is False, or
            cannot be written.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OutputError(out, "exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise OutputError(out, "directory exists and is not empty; pass overwrite=True to replace it")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(out, f"cannot create the directory ({err.strerror})") from None
    movie = culture.movie
    label_dtype = np.uint16 if culture.n_cells <= np.iinfo(np.uint16).max else np.int32
    _atomic(
        out / "movie.tif",
        lambda p: tifffile.imwrite(
            p, movie, imagej=True, metadata={"axes": "TYX", "finterval": culture.dt, "unit": "pixel"}
        ),
    )
    _atomic(out / "labels.tif", lambda p: tifffile.imwrite(p, culture.labels.astype(label_dtype)))
    _atomic(out / "truth.npz", lambda p: _write_npz(p, culture))
    text = json.dumps(_truth_json(culture), indent=1, allow_nan=False)
    _atomic(out / "truth.json", lambda p: p.write_text(text, encoding="utf-8"))
    culture.path = out
    return out


def load_culture(directory: str | Path, read_movie: bool = True) -> SyntheticCulture:
    """Read a culture written by :func:`save_culture`, checking its files agree with each other.

    Args:
        directory: the culture directory.
        read_movie: read ``movie.tif`` now; otherwise it is read on first access of ``culture.movie``.

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
        _check(root / "truth.npz", arrays[name].shape == (n,), f"'{name}' must have shape ({n},)")
    _check(root / "truth.npz", arrays["centroids"].shape == (n, 2), f"'centroids' must have shape ({n}, 2)")
    _check(root / "truth.npz", arrays["t"].shape == (t,), f"'t' must have shape ({t},)")
    e = arrays["edge_src"].shape
    _check(
        root / "truth.npz",
        all(arrays[k].shape == e for k in ("edge_dst", "l", "u")),
        "'edge_src', 'edge_dst', 'l', 'u' must have the same shape",
    )
    edge_index = np.vstack([arrays["edge_src"], arrays["edge_dst"]]).astype(np.int64)
    _check(
        root / "truth.npz",
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
    culture = SyntheticCulture(
        labels=labels,
        traces=arrays["traces"].astype(float),
        t=arrays["t"].astype(float),
        dt=float(meta["dt"]),
        k=float(meta["k"]),
        gamma=arrays["gamma"].astype(float),
        is_driver=arrays["is_driver"].astype(bool),
        touches_edge=arrays["touches_edge"].astype(bool),
        edge_index=edge_index,
        l=arrays["l"].astype(float),
        u=arrays["u"].astype(float),
        centroids=arrays["centroids"].astype(float),
        areas=arrays["areas"].astype(float),
        cell_ids=arrays["cell_ids"].astype(np.int64),
        edge_weight_scale=float(meta["edge_weight_scale"]),
        seed=int(meta["seed"]),
        params=dict(meta["params"]),
        hot_pixels=arrays["hot_pixels"].astype(np.int64).reshape(-1, 3),
        path=root,
    )
    _check_movie_header(root / "movie.tif", (t,) + labels.shape)
    if read_movie:
        culture._movie = read_culture_movie(root / "movie.tif", (t,) + labels.shape)
    return culture


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


def culture_key(**params: Any) -> str:
    """A 16-hex-digit hash of all generation parameters (defaults filled in) and the file version."""
    full = culture_params(**params)
    text = json.dumps({"format": FORMAT, "version": VERSION, "params": full}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_or_make_culture(cache_dir: str | Path, **params: Any) -> SyntheticCulture:
    """The culture of ``params`` from ``cache_dir/culture-<hash>``, generated and saved on first use.

    Generation writes into a temporary directory next to the final one and renames it into place,
    so concurrent callers never see a half-written culture (the loser of a race uses the winner's).

    Args:
        cache_dir: the cache root (created if missing).
        **params: keyword arguments of :func:`calcium_gnn.data.synthetic.make_culture` (not ``render``).

    Raises:
        ConfigError: for an unknown parameter name or an invalid value.
        OutputError: when the cache cannot be written.
    """
    full = culture_params(**params)
    root = Path(cache_dir)
    target = root / f"culture-{culture_key(**params)}"
    if (target / "truth.json").is_file():
        with contextlib.suppress(InputFileError):
            return load_culture(target, read_movie=False)
    culture = make_culture(**full, render=True)
    with atomic_folder(target) as staging:  # keeps a complete entry another process moved in first
        save_culture(culture, staging)
        if target.exists() and not (target / "truth.json").is_file():
            shutil.rmtree(target, ignore_errors=True)  # an incomplete cache entry of ours
    culture.path = target
    return culture


def _atomic(path: Path, write: Callable[[Path], Any]) -> None:
    """Call ``write`` on a temporary name next to ``path`` (same suffix), then ``os.replace`` it
    (:func:`calcium_gnn.io.atomic.atomic_path`)."""
    with atomic_path(path) as tmp:
        write(tmp)


def _write_npz(path: Path, c: SyntheticCulture) -> None:
    with open(path, "wb") as handle:
        np.savez(
            handle,
            traces=c.traces,
            t=c.t,
            gamma=c.gamma,
            is_driver=c.is_driver,
            touches_edge=c.touches_edge,
            edge_src=c.edge_index[0],
            edge_dst=c.edge_index[1],
            l=c.l,
            u=c.u,
            centroids=c.centroids,
            areas=c.areas,
            cell_ids=c.cell_ids,
            hot_pixels=c.hot_pixels,
        )


def _truth_json(c: SyntheticCulture) -> dict[str, Any]:
    cells = [
        {
            "cell_id": int(c.cell_ids[i]),
            "is_driver": bool(c.is_driver[i]),
            "touches_edge": bool(c.touches_edge[i]),
            "gamma": None if c.is_driver[i] else float(c.gamma[i]),
            "centroid": [float(v) for v in c.centroids[i]],
            "area": float(c.areas[i]),
        }
        for i in range(c.n_cells)
    ]
    return {
        "format": FORMAT,
        "version": VERSION,
        "seed": c.seed,
        "params": c.params,
        "n_cells": c.n_cells,
        "n_frames": c.n_frames,
        "image_shape": list(c.labels.shape),
        "dt": c.dt,
        "k": c.k,
        "edge_weight_scale": c.edge_weight_scale,
        "edge_weight_definition": "w_ij = u_ij * l_ij / s, s = mean(u * l) over the edges of the true graph",
        "ode": "dy_i/dt = k/|N_i| * sum_j w_ij (z_j - y_i) + gamma_i (eq. 3), z_j = y_j for ODE cells, "
        "the prescribed level for drivers; |N_i| = number of neighbours",
        "n_edges": int(c.edge_index.shape[1]),
        "n_drivers": int(c.is_driver.sum()),
        "centroid_definition": CENTROID_DEFINITION,
        "hot_pixels": c.hot_pixels.tolist(),
        "cells": cells,
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
    for key in ("n_cells", "n_frames", "image_shape", "dt", "k", "edge_weight_scale", "seed", "params"):
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
