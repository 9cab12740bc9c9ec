"""Saving and loading a synthetic culture, and the cache of generated cultures.

:func:`save_culture` turns a :class:`~calcium_gnn.data.synthetic.SyntheticCulture` into the arrays
and JSON of a culture directory and :func:`load_culture` turns them back; the files themselves
(format, atomic writes, consistency checks) are :mod:`calcium_gnn.io.culture_files`.
:func:`load_or_make_culture` is :func:`~calcium_gnn.data.synthetic.make_culture` cached on disk,
keyed by every generation parameter (:func:`culture_key`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from calcium_gnn.data.synthetic import SyntheticCulture, culture_params, make_culture
from calcium_gnn.errors import InputFileError
from calcium_gnn.io.atomic import atomic_folder
from calcium_gnn.io.culture_files import (
    CENTROID_DEFINITION,
    FORMAT,
    VERSION,
    read_culture_files,
    write_culture_files,
)

__all__ = ["save_culture", "load_culture", "culture_key", "load_or_make_culture"]


def save_culture(culture: SyntheticCulture, out_dir: str | Path, overwrite: bool = False) -> Path:
    """Write ``culture`` to ``out_dir`` (movie.tif, labels.tif, truth.npz, truth.json); return the dir.

    The movie is rendered first if it was not yet. ``culture.path`` is set to ``out_dir``.

    Raises:
        OutputError: ``out_dir`` is a file, or a non-empty directory and ``overwrite`` is False, or
            cannot be written.
    """
    out = write_culture_files(
        out_dir,
        movie=culture.movie,
        labels=culture.labels,
        dt=culture.dt,
        arrays=_arrays(culture),
        meta=_meta(culture),
        overwrite=overwrite,
    )
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
    files = read_culture_files(directory, read_movie=read_movie)
    arrays, meta = files.arrays, files.meta
    culture = SyntheticCulture(
        labels=files.labels,
        traces=arrays["traces"].astype(float),
        t=arrays["t"].astype(float),
        dt=float(meta["dt"]),
        k=float(meta["k"]),
        gamma=arrays["gamma"].astype(float),
        is_driver=arrays["is_driver"].astype(bool),
        touches_edge=arrays["touches_edge"].astype(bool),
        edge_index=np.vstack([arrays["edge_src"], arrays["edge_dst"]]).astype(np.int64),
        l=arrays["l"].astype(float),
        u=arrays["u"].astype(float),
        centroids=arrays["centroids"].astype(float),
        areas=arrays["areas"].astype(float),
        cell_ids=arrays["cell_ids"].astype(np.int64),
        edge_weight_scale=float(meta["edge_weight_scale"]),
        seed=int(meta["seed"]),
        params=dict(meta["params"]),
        hot_pixels=arrays["hot_pixels"].astype(np.int64).reshape(-1, 3),
        path=files.directory,
    )
    culture._movie = files.movie
    return culture


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


def _arrays(c: SyntheticCulture) -> dict[str, np.ndarray]:
    """The arrays of ``truth.npz`` (:data:`calcium_gnn.io.culture_files.NPZ_FIELDS`)."""
    return {
        "traces": c.traces,
        "t": c.t,
        "gamma": c.gamma,
        "is_driver": c.is_driver,
        "touches_edge": c.touches_edge,
        "edge_src": c.edge_index[0],
        "edge_dst": c.edge_index[1],
        "l": c.l,
        "u": c.u,
        "centroids": c.centroids,
        "areas": c.areas,
        "cell_ids": c.cell_ids,
        "hot_pixels": c.hot_pixels,
    }


def _meta(c: SyntheticCulture) -> dict[str, Any]:
    """The culture's keys of ``truth.json`` (:data:`calcium_gnn.io.culture_files.JSON_DESCRIPTION`)."""
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
    }
