"""Where a run's cell graph comes from: a saved graph, a movie, lab inputs, or the built-in example.

The ``data`` config group (``configs/data/synthetic.yaml``) sets at most one of ``graph`` (a saved
``graph.pt``) and ``movie`` (a calcium-imaging movie, turned into a graph and cached); with neither,
the built-in example, a synthetic culture with known ground truth, is generated once and cached.
``data=lab`` (``configs/data/lab.yaml``) builds the graph from what a lab already has: a label image,
ImageJ ROIs or centroids with a traces table, a suite2p folder or a CaImAn file
(:mod:`calcium_gnn.data.lab_inputs`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from calcium_gnn.data.graph_source import CellGraphSource
from calcium_gnn.data.lab_inputs import (
    LAB_INPUT_KEYS,
    LAB_OPTION_KEYS,
    GraphOptions,
    lab_route,
    load_lab_inputs,
)
from calcium_gnn.errors import ConfigError

__all__ = ["DATA_KEYS", "CellGraphSource", "load_cell_graph"]

#: The keys of the ``data`` config of a single culture (``configs/data/synthetic.yaml``,
#: ``configs/data/lab.yaml``).
DATA_KEYS: tuple[str, ...] = (
    "graph", "movie", "synthetic", "dt", "pixel_size", "z_projection", "cache_dir", *LAB_INPUT_KEYS,
    *LAB_OPTION_KEYS,
)


def load_cell_graph(
    cfg: Mapping[str, Any], build_options: Mapping[str, Any] | None = None
) -> CellGraphSource:
    """Resolve the ``data`` config into a cell graph.

    Args:
        cfg: the ``data`` config: ``graph``, ``movie``, ``synthetic``, ``cache_dir``; or the lab inputs
            of ``configs/data/lab.yaml`` (``traces``, ``labels``, ``rois``, ``centroids``, ``suite2p``,
            ``caiman`` and their options, see :func:`calcium_gnn.data.lab_inputs.load_lab_inputs`).
        build_options: options of :func:`calcium_gnn.pipeline.movie_to_graph_full` for movies
            (from the ``segmentation``, ``preprocessing`` and ``graph`` config groups, see
            :func:`calcium_gnn.pipeline.options_from_config`); defaults when None. Lab inputs use
            its ``min_shared_border``, ``max_gap`` and ``edge_margin``.

    Raises:
        ConfigError: an unknown key (named ``data.<key>``, e.g. a misspelt ``+data.moive=...``),
            both ``data.graph`` and ``data.movie`` set, lab inputs together with either, or no input
            at all where there is no built-in example (``data=lab``).
    """
    unknown = sorted(set(cfg.keys()) - set(DATA_KEYS))
    if "folder" in unknown:
        raise ConfigError("data.folder", "a culture folder holds many cultures: fit it with "
                          "calcium_gnn.batch.fit_cultures (train(cfg) hands data=culture_folder to it)")
    if unknown:
        raise ConfigError(f"data.{unknown[0]}", f"unknown key (known: {', '.join(DATA_KEYS)})")
    graph_path, movie_path = cfg.get("graph"), cfg.get("movie")
    if graph_path and movie_path:
        raise ConfigError("data.graph", "set either data.graph or data.movie, not both")
    route = lab_route(cfg)
    if route is not None:
        if graph_path or movie_path:
            key = "graph" if graph_path else "movie"
            raise ConfigError(f"data.{key}", f"set either data.{key} or lab inputs (data.{route}), not both")
        return _from_lab(cfg, build_options or {})
    if graph_path:
        from calcium_gnn.io.graph_files import load_graph

        return CellGraphSource(load_graph(Path(graph_path)), None, str(graph_path))
    if movie_path:
        return _from_movie(Path(movie_path), cfg, build_options or {})
    if "synthetic" not in cfg:
        raise ConfigError("data", "no input: set data.graph, data.movie, or with data=lab one of "
                          "data.labels / data.rois / data.centroids (with data.traces), data.suite2p, "
                          "data.caiman")
    return _from_synthetic(cfg, build_options or {})


def _from_lab(cfg: Mapping[str, Any], build_options: Mapping[str, Any]) -> CellGraphSource:
    keys = (*LAB_INPUT_KEYS, *LAB_OPTION_KEYS)
    inputs = {key: _plain(cfg.get(key)) for key in keys}
    return load_lab_inputs(**inputs, dt=cfg.get("dt"), pixel_size=cfg.get("pixel_size"),
                           options=GraphOptions.from_mapping(build_options))


def _plain(value: Any) -> Any:
    """A config value as plain Python (an OmegaConf list -> list)."""
    if value is not None and not isinstance(value, (str, int, float, bool)) and hasattr(value, "__iter__"):
        return list(value)
    return value


def _from_movie(path: Path, cfg: Mapping[str, Any], build_options: Mapping[str, Any]) -> CellGraphSource:
    from calcium_gnn.pipeline import cached_movie_to_graph

    build = cached_movie_to_graph(path, Path(cfg["cache_dir"]) / "graphs", **build_options)
    return CellGraphSource(build.data, build.labels, str(path))


def _from_synthetic(cfg: Mapping[str, Any], build_options: Mapping[str, Any]) -> CellGraphSource:
    from calcium_gnn.data.synthetic import truth_graph
    from calcium_gnn.data.synthetic_files import load_or_make_culture

    syn = dict(cfg["synthetic"])
    observe = syn.pop("observe", "truth")
    noise = float(syn.pop("noise", 0.0))
    noise_seed = int(syn.pop("noise_seed", 0))
    if observe not in ("truth", "movie"):
        raise ConfigError("data.synthetic.observe", f"must be 'truth' or 'movie', got {observe!r}")
    cache = Path(cfg["cache_dir"]) / "synthetic"
    culture = load_or_make_culture(cache, **syn)
    origin = "synthetic culture " + ", ".join(f"{k}={v}" for k, v in sorted(syn.items()))
    if observe == "truth":
        data = truth_graph(culture, noise=noise, seed=noise_seed)
        return CellGraphSource(data, np.asarray(culture.labels), f"{origin} (true graph, noise={noise})")
    movie_path = Path(culture.path) / "movie.tif"
    source = _from_movie(movie_path, cfg, build_options)
    source.origin = f"{origin} (graph built from its movie {movie_path})"
    return source
