"""The hostile-input table: one bad input per row, the public entry point it goes through, and the
one error it must give.

Each :class:`Case` builds its bad input under a fresh folder and returns a thunk (the user's call:
``read_movie``, ``movie_to_graph``, ``load_graph``, ``resolve_setup``, ``fit_least_squares``,
``evaluate_fit``, ``train`` through a composed config...) and the culprit string (a path or a config
key) that the error message must name. ``tests/integration/test_hostile_inputs.py`` runs the table.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict
from torch_geometric.data import Data

from calcium_gnn.data.synthetic import SyntheticCulture, make_culture, truth_graph
from calcium_gnn.errors import (
    CalciumGNNError,
    ConfigError,
    GraphError,
    InputFileError,
    MasksError,
    MovieError,
    OutputError,
)
from calcium_gnn.train import CONFIG_DIR

Thunk = Callable[[], Any]

#: the small culture every case draws on (20 cells of ~1000 px, 40 frames)
CULTURE = {"n_cells": 20, "size": 160, "n_frames": 40, "seed": 3}
#: the pipeline options that suit it (its cells are ~1000 px; watershed fragments may be smaller)
BUILD = {"min_area": 100}
#: a train config small enough for sub-second runs
SMALL_DATA = [f"data.synthetic.{k}={v}" for k, v in CULTURE.items()]


@functools.cache
def culture() -> SyntheticCulture:
    """The shared culture (rendered movie, labels, ground truth); treat as read-only."""
    return make_culture(**CULTURE, render=True)


@functools.cache
def graph() -> Data:
    """Its true cell graph."""
    return truth_graph(culture())


def offset_subtracted() -> np.ndarray:
    """The first 10 frames with their median subtracted (as offset-subtracting cameras record them):
    about half the values are negative, far below -1."""
    frames = culture().movie[:10].astype(np.float32)
    return frames - np.median(frames)


def write_movie(tmp: Path, frames: np.ndarray | None = None, name: str = "movie.tif") -> Path:
    """A movie file in ``tmp`` (default: the culture's uint16 movie)."""
    path = tmp / name
    tifffile.imwrite(path, culture().movie if frames is None else frames)
    return path


def unwritable(tmp: Path, name: str = "out") -> Path:
    """A folder path that cannot be created, even by root: below a regular file."""
    blocker = tmp / "somefile"
    blocker.write_text("a file, not a folder")
    return blocker / name


def compose_train(tmp: Path, *overrides: str) -> DictConfig:
    """The real ``configs/train.yaml`` on the small culture, writing into ``tmp`` (CSV logger)."""
    small = [] if any(o.startswith("data=") for o in overrides) else SMALL_DATA
    base = [f"paths.root_dir={tmp}", f"paths.cache_dir={tmp / 'cache'}", "logger=csv", *small]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train.yaml", overrides=base + list(overrides), return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp / "run")
    return cfg


def train_with(tmp: Path, *overrides: str) -> Thunk:
    from calcium_gnn.train import train

    cfg = compose_train(tmp, *overrides)
    return lambda: train(cfg)


def with_graph(**changes: Any) -> Data:
    """A copy of the true graph with some fields replaced (``None`` deletes one)."""
    data = graph().clone()
    for key, value in changes.items():
        if value is None:
            del data[key]
        else:
            data[key] = value
    return data


def without_edges_of(data: Data, node: int) -> Data:
    """``data`` with every edge at ``node`` removed: the cell is isolated."""
    keep = (data.edge_index[0] != node) & (data.edge_index[1] != node)
    return with_graph(edge_index=data.edge_index[:, keep], edge_attr=data.edge_attr[keep], u=data.u[keep],
                      l=data.l[keep])


def interior_node() -> int:
    """An interior (modelled under setup I) cell of the true graph."""
    return int((~graph().touches_edge).nonzero()[0])


def separated_cells_masks(shape: tuple[int, int], side: int = 20, gap: int = 8) -> np.ndarray:
    """Square cells of ``side`` px on a grid, ``gap`` px of background apart: no two cells touch."""
    labels = np.zeros(shape, dtype=np.uint16)
    cell = 0
    for r in range(gap, shape[0] - side, side + gap):
        for c in range(gap, shape[1] - side, side + gap):
            cell += 1
            labels[r : r + side, c : c + side] = cell
    return labels


@dataclass(frozen=True)
class Case:
    """One row: ``build(tmp) -> (thunk, culprit)`` must raise exactly ``error`` naming ``culprit``
    and containing ``keyword`` (case-insensitive)."""

    id: str
    error: type[CalciumGNNError]
    keyword: str
    build: Callable[[Path], tuple[Thunk, str]]


def _read(path: Path, **kwargs: Any) -> Thunk:
    from calcium_gnn.io.movie import read_movie

    return lambda: read_movie(path, **kwargs)


def _m2g(path: Path, **options: Any) -> Thunk:
    from calcium_gnn.pipeline import movie_to_graph

    return lambda: movie_to_graph(path, **{**BUILD, **options})


# ----------------------------------------------------------------------------------------- movies
def truncated_tiff(tmp: Path) -> tuple[Thunk, str]:
    path = write_movie(tmp)
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])
    return _read(path), str(path)


def corrupt_tiff(tmp: Path) -> tuple[Thunk, str]:
    path = tmp / "movie.tif"
    path.write_bytes(b"II*\x00" + np.random.default_rng(0).bytes(4000))
    return _read(path), str(path)


def zero_bytes(tmp: Path) -> tuple[Thunk, str]:
    path = tmp / "movie.tif"
    path.touch()
    return _read(path), str(path)


def wrong_extension(tmp: Path) -> tuple[Thunk, str]:
    path = write_movie(tmp, name="movie.avi")
    return _read(path), str(path)


def missing_movie(tmp: Path) -> tuple[Thunk, str]:
    return _read(tmp / "nowhere.tif"), str(tmp / "nowhere.tif")


def image_2d(tmp: Path) -> tuple[Thunk, str]:
    path = write_movie(tmp, culture().movie[0])
    return _read(path), str(path)


def stack_4d(tmp: Path) -> tuple[Thunk, str]:
    frames = np.stack([culture().movie[:8]] * 3, axis=1)  # (T, Z, Y, X)
    path = tmp / "tzyx.tif"
    tifffile.imwrite(path, frames, imagej=True, metadata={"axes": "TZYX"})
    return _read(path), str(path)


def constant_movie(tmp: Path) -> tuple[Thunk, str]:
    path = write_movie(tmp, np.full((10, 32, 32), 700, dtype=np.uint16))
    return _read(path), str(path)


def nan_frame(tmp: Path) -> tuple[Thunk, str]:
    frames = culture().movie[:10].astype(np.float32)
    frames[6, 3, 4] = np.nan
    path = write_movie(tmp, frames)
    return _read(path), str(path)


def inf_frame(tmp: Path) -> tuple[Thunk, str]:
    frames = culture().movie[:10].astype(np.float32)
    frames[2] = np.inf
    path = write_movie(tmp, frames)
    return _read(path), str(path)


def huge_values(tmp: Path) -> tuple[Thunk, str]:
    path = write_movie(tmp, culture().movie[:10].astype(np.float64) * 1e300)
    return _m2g(path), str(path)


def single_frame(tmp: Path) -> tuple[Thunk, str]:
    path = tmp / "one.npy"
    np.save(path, culture().movie[:1])
    return _read(path), str(path)


def pickled_npy(tmp: Path) -> tuple[Thunk, str]:
    path = tmp / "movie.npy"
    np.save(path, np.array([{"frames": 1}], dtype=object), allow_pickle=True)
    return _read(path), str(path)


def negative_values_log(tmp: Path) -> tuple[Thunk, str]:
    frames = offset_subtracted()
    path = write_movie(tmp, frames)
    return _m2g(path), str(path)


# ------------------------------------------------------------------------------------------ masks
def masks_wrong_shape(tmp: Path) -> tuple[Thunk, str]:
    movie = write_movie(tmp)
    masks = tmp / "masks.tif"
    tifffile.imwrite(masks, culture().labels[:100].astype(np.uint16))
    return _m2g(movie, segmentation="masks", masks=str(masks)), str(masks)


def masks_empty(tmp: Path) -> tuple[Thunk, str]:
    movie = write_movie(tmp)
    masks = tmp / "masks.tif"
    tifffile.imwrite(masks, np.zeros(culture().labels.shape, dtype=np.uint16))
    return _m2g(movie, segmentation="masks", masks=str(masks)), str(masks)


def masks_float(tmp: Path) -> tuple[Thunk, str]:
    movie = write_movie(tmp)
    masks = tmp / "masks.npy"
    np.save(masks, culture().labels.astype(np.float32) + 0.5)
    return _m2g(movie, segmentation="masks", masks=str(masks)), str(masks)


def no_adjacent_cells(tmp: Path) -> tuple[Thunk, str]:
    from calcium_gnn.physics.setups import resolve_setup
    from calcium_gnn.pipeline import movie_to_graph

    movie = write_movie(tmp)
    masks = tmp / "masks.tif"
    tifffile.imwrite(masks, separated_cells_masks(culture().labels.shape))

    def thunk() -> Any:
        data = movie_to_graph(movie, segmentation="masks", masks=str(masks), min_area=0)
        assert data.edge_index.shape[1] == 0  # the graph itself is fine: cells without neighbours
        return resolve_setup(data, "interior")

    return thunk, "setup.group"


# ------------------------------------------------------------------------------------------ setups
def isolated_cell_in_group(tmp: Path) -> tuple[Thunk, str]:
    from calcium_gnn.physics.setups import resolve_setup

    data = without_edges_of(graph(), interior_node())
    return (lambda: resolve_setup(data, "interior")), "setup.group"


def setup_selects_nothing(tmp: Path) -> tuple[Thunk, str]:
    from calcium_gnn.physics.setups import resolve_setup

    return (lambda: resolve_setup(graph(), "rectangle", rect=(0.0, 0.0, 0.001, 0.001))), "setup.rect"


def setup_unknown_cell_ids(tmp: Path) -> tuple[Thunk, str]:
    from calcium_gnn.physics.setups import resolve_setup

    return (lambda: resolve_setup(graph(), "cells", cell_ids=[1, 9999])), "setup.cell_ids"


def too_few_frames(tmp: Path) -> tuple[Thunk, str]:
    from calcium_gnn.physics.least_squares import fit_least_squares
    from calcium_gnn.physics.setups import resolve_setup

    data = with_graph(x=graph().x[:, :2].contiguous(), t=graph().t[:2].contiguous())
    setup = resolve_setup(data)
    return (lambda: fit_least_squares(data, setup)), "model.train_fraction"


# ------------------------------------------------------------------------------------------ graphs
def pt_not_a_graph(tmp: Path) -> tuple[Thunk, str]:
    from calcium_gnn.io.graph_files import load_graph

    path = tmp / "graph.pt"
    torch.save({"x": torch.zeros(3, 4)}, path)
    return (lambda: load_graph(path)), str(path)


def pt_garbage(tmp: Path) -> tuple[Thunk, str]:
    from calcium_gnn.io.graph_files import load_graph

    path = tmp / "graph.pt"
    path.write_bytes(b"this is not a torch file\n" * 20)
    return (lambda: load_graph(path)), str(path)


def graph_missing_field(tmp: Path) -> tuple[Thunk, str]:
    from calcium_gnn.io.graph_files import load_graph

    path = tmp / "graph.pt"
    torch.save(with_graph(l=None), path)
    return (lambda: load_graph(path)), str(path)


# ------------------------------------------------------------------------------------------ config
def options_unknown_key(tmp: Path) -> tuple[Thunk, str]:
    from calcium_gnn.pipeline import options_from_config

    graph_group = {"min_area": 100, "foo": 1}
    return (lambda: options_from_config({"backend": "watershed"}, {}, graph_group)), "graph.foo"


def lsq_bounds_reversed(tmp: Path) -> tuple[Thunk, str]:
    from calcium_gnn.physics.least_squares import fit_least_squares
    from calcium_gnn.physics.setups import resolve_setup

    setup = resolve_setup(graph())
    return (lambda: fit_least_squares(graph(), setup, k_bounds=(0.1, 0.001))), "model.k_bounds"


def lsq_negative_lambda(tmp: Path) -> tuple[Thunk, str]:
    from calcium_gnn.physics.least_squares import fit_least_squares
    from calcium_gnn.physics.setups import resolve_setup

    setup = resolve_setup(graph())
    return (lambda: fit_least_squares(graph(), setup, lam=-1e-3)), "model.lam"


def crlsm_module_bounds(tmp: Path) -> tuple[Thunk, str]:
    from calcium_gnn.models.crlsm import CRLSMModule

    return (lambda: CRLSMModule(graph(), gamma_bounds=(0.1, -0.1))), "model.gamma_bounds"


# ------------------------------------------------------------------------------------ train(cfg)
def train_unknown_graph_key(tmp: Path) -> tuple[Thunk, str]:
    return train_with(tmp, "+graph.foo=1"), "graph.foo"


def train_unknown_data_key(tmp: Path) -> tuple[Thunk, str]:
    return train_with(tmp, "+data.moive=x.tif"), "data.moive"


def train_unknown_setup_key(tmp: Path) -> tuple[Thunk, str]:
    return train_with(tmp, "+setup.foo=1"), "setup.foo"


def train_unknown_model_key(tmp: Path) -> tuple[Thunk, str]:
    return train_with(tmp, "+model.foo=1"), "model.foo"


def train_bounds_reversed(tmp: Path) -> tuple[Thunk, str]:
    return train_with(tmp, "model.k_bounds=[0.1,0.001]"), "model.k_bounds"


def train_negative_lambda(tmp: Path) -> tuple[Thunk, str]:
    return train_with(tmp, "model.lam=-0.5"), "model.lam"


def train_missing_movie(tmp: Path) -> tuple[Thunk, str]:
    return train_with(tmp, f"data.movie={tmp / 'missing.tif'}"), str(tmp / "missing.tif")


def train_graph_and_movie(tmp: Path) -> tuple[Thunk, str]:
    return train_with(tmp, "data.movie=m.tif", "data.graph=g.pt"), "data.graph"


def train_missing_checkpoint(tmp: Path) -> tuple[Thunk, str]:
    return train_with(tmp, f"ckpt_path={tmp / 'nothing.ckpt'}"), str(tmp / "nothing.ckpt")


def train_unwritable_output(tmp: Path) -> tuple[Thunk, str]:
    from calcium_gnn.train import train

    cfg = compose_train(tmp)
    out = unwritable(tmp)
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
    return (lambda: train(cfg)), str(out)


# ------------------------------------------------------------------------------------------ outputs
def evaluate_unwritable(tmp: Path) -> tuple[Thunk, str]:
    from calcium_gnn.evaluation.report import evaluate_fit
    from calcium_gnn.physics.least_squares import fit_least_squares
    from calcium_gnn.physics.setups import resolve_setup

    setup = resolve_setup(graph())
    fitted = fit_least_squares(graph(), setup)
    out = unwritable(tmp)
    return (lambda: evaluate_fit(graph(), setup, fitted, method_name="crlsm", fit_seconds=0.0,
                                 out_dir=out)), str(out)


def cache_unwritable(tmp: Path) -> tuple[Thunk, str]:
    from calcium_gnn.pipeline import cached_movie_to_graph

    movie = write_movie(tmp)
    cache = unwritable(tmp, "cache")
    return (lambda: cached_movie_to_graph(movie, cache, **BUILD)), str(cache)


def outputs_into_a_file(tmp: Path) -> tuple[Thunk, str]:
    from calcium_gnn.pipeline import movie_to_graph_full, write_outputs

    build = movie_to_graph_full(culture().movie, **BUILD)
    target = tmp / "graph_out"
    target.write_text("a file")
    return (lambda: write_outputs(build, target)), str(target)


def culture_folder_missing(tmp: Path) -> tuple[Thunk, str]:
    from calcium_gnn.batch import fit_cultures
    from calcium_gnn.train import train

    cfg = compose_train(tmp, "data=culture_folder", f"data.folder={tmp / 'no_such_folder'}")
    return (lambda: fit_cultures(cfg, train)), "data.folder"


def design_table_missing_dish(tmp: Path) -> tuple[Thunk, str]:
    from calcium_gnn.batch import fit_cultures
    from calcium_gnn.train import train

    table = tmp / "design.csv"
    table.write_text("path,condition\nno_such_dish.tif,control\n")
    cfg = compose_train(tmp, "data=culture_folder", f"data.table={table}")
    return (lambda: fit_cultures(cfg, train)), str(table)


CASES: tuple[Case, ...] = (
    Case("movie-truncated-tiff", MovieError, "truncated", truncated_tiff),
    Case("movie-corrupt-tiff", MovieError, "tiff", corrupt_tiff),
    Case("movie-zero-bytes", MovieError, "empty", zero_bytes),
    Case("movie-wrong-extension", MovieError, "unsupported file type", wrong_extension),
    Case("movie-missing-file", MovieError, "not found", missing_movie),
    Case("movie-2d-image", MovieError, "2-D", image_2d),
    Case("movie-4d-without-projection", MovieError, "z_projection", stack_4d),
    Case("movie-all-constant", MovieError, "constant", constant_movie),
    Case("movie-nan-frame", MovieError, "frame 6", nan_frame),
    Case("movie-inf-frame", MovieError, "NaN or Inf", inf_frame),
    Case("movie-huge-values", MovieError, "float32 range", huge_values),
    Case("movie-single-frame", MovieError, "at least 2 frames", single_frame),
    Case("movie-pickled-npy", MovieError, "pickled", pickled_npy),
    Case("movie-negative-values-log", MovieError, "log(x + epsilon) undefined", negative_values_log),
    Case("masks-wrong-shape", MasksError, "differs from the movie", masks_wrong_shape),
    Case("masks-empty-label-image", MasksError, "no cells", masks_empty),
    Case("masks-float-values", MasksError, "integers", masks_float),
    Case("culture-no-two-cells-adjacent", ConfigError, "no neighbours", no_adjacent_cells),
    Case("setup-isolated-cell-in-group", ConfigError, "isolated", isolated_cell_in_group),
    Case("setup-selects-no-cell", ConfigError, "selects no cell", setup_selects_nothing),
    Case("setup-unknown-cell-ids", ConfigError, "9999", setup_unknown_cell_ids),
    Case("fit-fewer-frames-than-split", ConfigError, "training frame", too_few_frames),
    Case("graph-pt-not-a-graph", GraphError, "not a cell graph", pt_not_a_graph),
    Case("graph-pt-garbage", GraphError, "torch file", pt_garbage),
    Case("graph-missing-schema-field", GraphError, "missing schema field 'l'", graph_missing_field),
    Case("options-unknown-graph-key", ConfigError, "unknown key", options_unknown_key),
    Case("fit-bounds-lower-above-upper", ConfigError, "lo < hi", lsq_bounds_reversed),
    Case("fit-negative-lambda", ConfigError, ">= 0", lsq_negative_lambda),
    Case("crlsm-gamma-bounds-reversed", ConfigError, "lo < hi", crlsm_module_bounds),
    Case("train-unknown-graph-key", ConfigError, "unknown key", train_unknown_graph_key),
    Case("train-unknown-data-key", ConfigError, "unknown key", train_unknown_data_key),
    Case("train-unknown-setup-key", ConfigError, "unknown key", train_unknown_setup_key),
    Case("train-unknown-model-key", ConfigError, "unknown key", train_unknown_model_key),
    Case("train-bounds-lower-above-upper", ConfigError, "lo < hi", train_bounds_reversed),
    Case("train-negative-lambda", ConfigError, ">= 0", train_negative_lambda),
    Case("train-missing-movie", MovieError, "not found", train_missing_movie),
    Case("train-graph-and-movie", ConfigError, "not both", train_graph_and_movie),
    Case("train-missing-checkpoint", ConfigError, "does not exist", train_missing_checkpoint),
    Case("train-unwritable-output-dir", OutputError, "cannot", train_unwritable_output),
    Case("evaluate-unwritable-output-dir", OutputError, "cannot", evaluate_unwritable),
    Case("cache-unwritable-dir", OutputError, "cannot write", cache_unwritable),
    Case("outputs-into-a-file", OutputError, "not a folder", outputs_into_a_file),
    Case("culture-folder-missing", ConfigError, "does not exist", culture_folder_missing),
    Case("design-table-missing-dish", InputFileError, "no_such_dish.tif does not exist",
         design_table_missing_dish),
)
