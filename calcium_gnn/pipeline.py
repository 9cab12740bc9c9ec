"""Movie -> cell graph: the paper's pipeline (sec. 3.1) as one function.

Steps (each configurable by a keyword argument of :func:`movie_to_graph_full`):

1. read the movie ``(T, Y, X)`` (:func:`calcium_gnn.io.movie.read_movie`: ``dt``, ``pixel_size``,
   ``z_projection``);
2. preprocess it: hot pixels (median filter of size 3), ``log(x + 1)``, IQR normalisation eq. (23)
   (:func:`calcium_gnn.imaging.preprocess.preprocess_lazy`, options ``preprocessing``);
3. project it to a reference image (``reference``: ``"mean"``, ``"max"``, ``"std"``, ``"frame"``);
4. segment the reference image (``segmentation``: ``"watershed"`` offline default, whose default
   ``preset="auto"`` reads the membrane polarity and the cell scale off the image; ``"cellpose"``;
   or ``"masks"`` to read a user's label image from ``masks``) and drop cells smaller than
   ``min_area`` pixels: ``"auto"`` (default) is a tenth of the median segmented cell area
   (:func:`calcium_gnn.imaging.segmentation.auto_min_area`), a number is pixels (paper: 500);
   what was decided is kept in the graph's ``segmentation`` record (:func:`movie_to_graph_full`)
   and logged;
5. per-cell mean intensity traces (:mod:`calcium_gnn.graphs.traces`), from the preprocessed movie
   (``traces="preprocessed"``, as in the paper) or the raw one (``"raw"``);
6. the graph (:func:`calcium_gnn.graphs.build.build_graph`: ``min_shared_border``, ``max_gap``).

Memory (streaming): the preprocessed movie is never held. Step 2 is a statistics pass (the
quartiles of eq. 23), and steps 3 and 5 each recompute the preprocessed frames chunk by chunk
(:class:`calcium_gnn.imaging.preprocess.PreprocessedMovie`, bit for bit what ``preprocess`` writes)
from the read-only memory-mapped movie, whose pages are handed back after each chunk. A chunk is
``chunk_frames`` frames, fewer when their working arrays would exceed ``memory_budget_mb``
(:func:`chunk_frames_for_budget`), so the peak memory is the budget plus a few frame-sized images
(reference, labels, segmentation), whatever the number of frames. Measured
(``benchmarks/bench_movie_memory.py``, 2 cores): see the README.

:func:`cached_movie_to_graph` memoises step 1-6 on disk, keyed by a fingerprint of the movie file
(size, mtime, SHA-256 of its first, middle and last MiB) and of every option, so changing a
threshold never reuses a stale graph.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import shapely
from torch_geometric.data import Data

from calcium_gnn.errors import CalciumGNNError, ConfigError, SegmentationError
from calcium_gnn.graphs.build import build_graph
from calcium_gnn.graphs.geometry import cell_polygons, validate_labels
from calcium_gnn.graphs.traces import extract_traces
from calcium_gnn.io.atomic import atomic_folder, atomic_write_text

if TYPE_CHECKING:  # imaging is imported where it is used, so importing the pipeline stays light
    from calcium_gnn.imaging.segmentation import Segmentation

__all__ = [
    "GraphBuild",
    "PIPELINE_VERSION",
    "DEFAULT_OPTIONS",
    "resolve_options",
    "movie_to_graph",
    "movie_to_graph_full",
    "cached_movie_to_graph",
    "chunk_frames_for_budget",
    "options_fingerprint",
    "file_fingerprint",
    "OUTPUT_FILES",
    "check_output_folder",
    "write_outputs",
    "options_from_config",
]

#: Bumped whenever the pipeline's output for the same inputs changes (invalidates caches).
PIPELINE_VERSION = 3

log = logging.getLogger(__name__)

#: Every option of :func:`movie_to_graph_full` and its default.
DEFAULT_OPTIONS: dict[str, Any] = {
    "dt": None,
    "pixel_size": None,
    "z_projection": None,
    "preprocessing": {},
    "reference": "mean",
    "reference_frame": 0,
    "segmentation": "watershed",
    "segmentation_options": {},
    "masks": None,
    "min_area": "auto",
    "min_shared_border": 5.0,
    "max_gap": 2,
    "edge_margin": 0,
    "traces": "preprocessed",
    "chunk_frames": 16,
    "memory_budget_mb": 1024,
}

#: Bytes per pixel of one frame in flight besides the input's own ``2 * itemsize`` (the raw frame and
#: its median-filtered copy): its float32 preprocessed copy and the float32 copy the sparse trace
#: product reads. The photobleaching correction adds a float64 copy (8 more).
_BYTES_PER_PIXEL = 8

_RUNTIME_ONLY = ("progress",)  # options that never change the graph (left out of the cache key)
_SEGMENTATION_BACKENDS = ("watershed", "cellpose", "masks")
#: ``min_area`` value meaning "a fraction of the median segmented cell area".
AUTO_MIN_AREA = "auto"
_HASH_BLOCK = 1 << 20


@dataclass
class GraphBuild:
    """Everything :func:`movie_to_graph_full` made.

    Attributes:
        data: the cell graph (schema :mod:`calcium_gnn.io.graph_schema`).
        labels: (Y, X) int32 final label image (0 = background, values = ``data.cell_id``).
        polygons: N shapely polygons, row ``i`` = node ``i`` (pixel coordinates).
        reference: (Y, X) float32 reference image the cells were segmented on.
        timings: seconds spent in each step (``read``, ``preprocess``, ``reference``, ``segment``,
            ``traces``, ``graph``, ``polygons``); empty when loaded from the cache. ``preprocess``
            is the statistics pass; ``reference`` and ``traces`` include recomputing the
            preprocessed chunks they read.
    """

    data: Data
    labels: np.ndarray
    polygons: list[shapely.Geometry]
    reference: np.ndarray
    timings: dict[str, float] = field(default_factory=dict)


def resolve_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Fill defaults and check the options of :func:`movie_to_graph_full`; unknown keys are refused.

    Raises:
        ConfigError: naming the key of an unknown or invalid option.
    """
    unknown = sorted(set(options) - set(DEFAULT_OPTIONS) - set(_RUNTIME_ONLY))
    if unknown:
        known = ", ".join(DEFAULT_OPTIONS)
        raise ConfigError(unknown[0], f"unknown option of movie_to_graph (known: {known})")
    out = {**DEFAULT_OPTIONS, **{k: v for k, v in options.items() if k in DEFAULT_OPTIONS}}
    out["preprocessing"] = _as_dict(out["preprocessing"], "preprocessing")
    out["segmentation_options"] = _as_dict(out["segmentation_options"], "segmentation_options")
    if out["segmentation"] not in _SEGMENTATION_BACKENDS:
        raise ConfigError("segmentation", f"unknown backend {out['segmentation']!r}: use one of "
                          f"{', '.join(_SEGMENTATION_BACKENDS)}")
    if out["segmentation"] == "masks" and not out["masks"]:
        raise ConfigError("masks", "segmentation 'masks' needs the path of a label image in 'masks'")
    if out["traces"] not in ("preprocessed", "raw"):
        raise ConfigError("traces", f"must be 'preprocessed' or 'raw', got {out['traces']!r}")
    _check_min_area(out["min_area"], "min_area")
    if out["segmentation"] == "watershed":
        _check_preset(out["segmentation_options"].get("preset"), "segmentation.preset")
    if int(out["chunk_frames"]) < 1:
        raise ConfigError("chunk_frames", f"must be >= 1, got {out['chunk_frames']!r}")
    budget = out["memory_budget_mb"]
    if budget is not None and not (isinstance(budget, int | float) and not isinstance(budget, bool)
                                   and math.isfinite(budget) and budget > 0):
        raise ConfigError("memory_budget_mb", f"must be a positive number of MB or null, got {budget!r}")
    return out


def chunk_frames_for_budget(
    frame_shape: tuple[int, ...],
    dtype: np.dtype | type,
    memory_budget_mb: float | None,
    *,
    max_frames: int = 16,
    bleach_correction: bool = False,
) -> int:
    """Frames per chunk of the streaming passes: the most (at most ``max_frames``, at least 1) whose
    working arrays fit ``memory_budget_mb``.

    One frame of ``P = Y * X`` pixels in flight costs ``P * (2 * itemsize + 8)`` bytes (the raw
    frame, its median-filtered copy, its float32 preprocessed copy and the float32 copy the trace
    product reads), ``8 P`` more with the photobleaching correction (a float64 copy).

    Args:
        frame_shape: (Y, X) of one frame.
        dtype: the movie's dtype.
        memory_budget_mb: the budget in MB (1e6 bytes); None: ``max_frames``.
        max_frames: the largest chunk (the ``chunk_frames`` option).
        bleach_correction: the photobleaching correction is on.

    Returns:
        The chunk size in frames, in ``[1, max_frames]``.
    """
    if memory_budget_mb is None:
        return max(int(max_frames), 1)
    pixels = math.prod(int(v) for v in frame_shape)
    per_frame = pixels * (2 * np.dtype(dtype).itemsize + _BYTES_PER_PIXEL + (8 if bleach_correction else 0))
    fits = int(memory_budget_mb * 1e6 // max(per_frame, 1))
    return max(1, min(int(max_frames), fits))


def _check_min_area(value: Any, key: str) -> None:
    """``min_area`` is ``"auto"`` or a finite number of pixels >= 0; else a ConfigError naming ``key``."""
    if isinstance(value, str) and value == AUTO_MIN_AREA:
        return
    if not (isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
            and value >= 0):
        raise ConfigError(key, f"must be '{AUTO_MIN_AREA}' (a tenth of the median cell area) or a number "
                          f"of pixels >= 0 (paper: 500), got {value!r}")


def _check_preset(preset: Any, key: str) -> None:
    """A watershed ``preset`` is checked before the movie is read (None: the backend's default)."""
    from calcium_gnn.imaging.segmentation import PRESET_NAMES

    if preset is not None and preset not in PRESET_NAMES:
        raise ConfigError(key, f"unknown preset {preset!r}; known: {list(PRESET_NAMES)}")


def _as_dict(value: Any, key: str) -> dict[str, Any]:
    if value is None or value is True:
        return {}
    if value is False:
        return {"hot_pixels": False, "log": False, "normalise": False}
    if isinstance(value, Mapping):
        return dict(value)
    raise ConfigError(key, f"must be a mapping of options, got {type(value).__name__}")


def _segment(reference: np.ndarray, opts: dict[str, Any], source: str) -> Segmentation:
    """Label image of the reference image by the chosen backend, or the user's masks file, with
    the record of how it was made (:func:`calcium_gnn.imaging.segmentation.segment_with_info`).

    A backend that finds no cell raises a :class:`SegmentationError` naming the movie file.
    """
    from calcium_gnn.imaging.segmentation import segment_with_info

    if opts["segmentation"] == "masks":
        return segment_with_info(reference, backend="masks", path=opts["masks"])
    try:
        return segment_with_info(reference, backend=opts["segmentation"], **opts["segmentation_options"])
    except SegmentationError as exc:
        raise SegmentationError(source, f"{exc.problem} ({exc.culprit})") from None


def _min_area(labels: np.ndarray, setting: float | str, info: dict[str, Any]) -> float:
    """The ``min_area`` threshold in px for these labels (``"auto"``: a tenth of their median cell
    area), recorded in ``info`` as ``min_area``, ``min_area_rule``."""
    from calcium_gnn.imaging.segmentation import MIN_AREA_FRACTION, auto_min_area

    if setting == AUTO_MIN_AREA:
        value = auto_min_area(labels)
        info.update(min_area=value, min_area_rule=f"auto: {MIN_AREA_FRACTION:g} x median cell area")
    else:
        value = float(setting)
        info.update(min_area=value, min_area_rule="option")
    return value


def _describe(info: Mapping[str, Any]) -> str:
    """One log line of the segmentation record."""
    parts = [f"segmentation {info.get('backend')}"]
    if info.get("backend") == "watershed":
        decided = ", ".join(info.get("auto_decided") or []) or "nothing"
        parts.append(f"preset {info.get('preset')} (decided from the image: {decided}) -> "
                     f"{info.get('membranes')} membranes, diameter {info.get('diameter'):.1f} px, "
                     f"smoothing sigma {info.get('sigma'):.2f} px")
    parts.append(f"{info.get('n_cells')} cells (median area {info.get('median_area'):.0f} px)")
    parts.append(f"min_area {info.get('min_area'):.0f} px ({info.get('min_area_rule')}) keeps "
                 f"{info.get('n_cells_kept')}")
    return "; ".join(parts)


def _filter_small(labels: np.ndarray, min_area: float, *, keep_ids: bool) -> np.ndarray:
    """Drop cells under ``min_area`` px; ``keep_ids`` keeps the surviving cells' own ids (a user's
    masks), else they are renumbered 1..N."""
    from calcium_gnn.imaging.segmentation import filter_small_cells

    kept, old_ids = filter_small_cells(labels, min_area=int(math.ceil(min_area)), return_mapping=True)
    if not keep_ids:
        return kept
    lookup = np.concatenate([[0], np.asarray(old_ids, dtype=np.int64)])
    return lookup[kept]


def movie_to_graph_full(movie_or_path: Any, **options: Any) -> GraphBuild:
    """Run the whole pipeline (module docstring) and return the graph with its label image,
    polygons and reference image.

    Args:
        movie_or_path: a movie file / folder path, a ``Movie`` from :func:`read_movie`, or a
            (T, Y, X) array.
        **options: see :data:`DEFAULT_OPTIONS`: ``dt`` (s) and ``pixel_size`` (um) used when the file
            has no metadata, ``z_projection`` (``"max"``/``"mean"`` for 4-D stacks),
            ``preprocessing`` (a mapping of :func:`calcium_gnn.imaging.preprocess.preprocess`
            options, or ``False`` to skip), ``reference`` + ``reference_frame``, ``segmentation`` +
            ``segmentation_options`` (+ ``masks``), ``min_area`` (px), ``min_shared_border`` (px),
            ``max_gap`` (px), ``edge_margin`` (px), ``traces`` (``"preprocessed"``/``"raw"``),
            ``chunk_frames`` (the largest chunk of frames), ``memory_budget_mb`` (MB for the
            frames in flight, default 1024; chunks shrink to fit it, see
            :func:`chunk_frames_for_budget`; None: ``chunk_frames`` whatever the frame size),
            ``progress`` (tqdm bars).

    Returns:
        A :class:`GraphBuild`. Its graph's ``data.segmentation`` records how the cells were found
        (:func:`calcium_gnn.imaging.segmentation.segment_with_info`: the backend, its options and,
        for the watershed's ``preset="auto"``, the membrane polarity, diameter and smoothing it
        decided, with their evidence) and ``min_area`` (px), ``min_area_rule`` (``"option"`` or the
        auto rule), ``n_cells_kept``; the same line is logged (logger ``calcium_gnn.pipeline``).

    Raises:
        MovieError, MasksError: naming the file; SegmentationError: no cell found (naming the movie);
        ConfigError: naming the option.
    """
    from calcium_gnn.imaging.preprocess import preprocess_lazy
    from calcium_gnn.imaging.reference import reference_image
    from calcium_gnn.io.movie import Movie, read_movie

    progress = bool(options.get("progress", False))
    opts = resolve_options(options)
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(step: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[step] = now - clock
        clock = now

    if isinstance(movie_or_path, Movie):
        movie = movie_or_path
    else:
        movie = read_movie(movie_or_path, dt=opts["dt"], pixel_size=opts["pixel_size"],
                           z_projection=opts["z_projection"])
    lap("read")
    source = str(movie.path) if movie.path is not None else "movie"
    bleach = bool(opts["preprocessing"].get("bleach_correction", False))
    chunk = chunk_frames_for_budget(movie.frame_shape, movie.frames.dtype, opts["memory_budget_mb"],
                                    max_frames=int(opts["chunk_frames"]), bleach_correction=bleach)
    prep_opts = {"chunk_frames": chunk, "progress": progress, **opts["preprocessing"]}
    # the statistics pass only: reference and traces recompute the preprocessed chunks as they read them
    frames = preprocess_lazy(movie.frames, source=source, **prep_opts)
    lap("preprocess")
    reference = reference_image(frames, opts["reference"], int(opts["reference_frame"]), chunk_frames=chunk,
                                merge_frames=int(opts["chunk_frames"]))  # the mean: independent of the budget
    lap("reference")
    segmented = _segment(reference, opts, source)
    labels, seg_info = segmented.labels, dict(segmented.info)
    labels_source = str(opts["masks"]) if opts["segmentation"] == "masks" else source
    min_area = _min_area(labels, opts["min_area"], seg_info)
    if min_area > 0:
        labels = _filter_small(labels, min_area, keep_ids=opts["segmentation"] == "masks")
    labels = validate_labels(labels, labels_source)
    labels = labels.astype(np.int32 if int(labels.max(initial=0)) < 2**31 else np.int64, copy=False)
    if not labels.any():
        raise SegmentationError(source, f"no cells found (segmentation '{opts['segmentation']}', "
                                f"min_area {min_area:g} px)")
    seg_info["n_cells_kept"] = int(np.count_nonzero(np.bincount(labels.ravel())[1:]))
    log.info("%s: %s", source, _describe(seg_info))
    lap("segment")
    trace_frames = frames if opts["traces"] == "preprocessed" else movie.frames
    traces = extract_traces(trace_frames, labels, chunk_frames=chunk, source=source,
                            labels_source=labels_source)
    if opts["traces"] == "raw" and frames.trend is not None:
        # a frame's correction is a scalar, so it commutes with the per-cell mean
        dark = float(opts["preprocessing"].get("dark_level", 0.0))
        traces = (dark + (traces - dark) / frames.trend[None, :]).astype(traces.dtype)
    lap("traces")
    pixel_size = movie.pixel_size if movie.pixel_size is not None else math.nan
    data = build_graph(labels, traces, dt=movie.dt, pixel_size=pixel_size,
                       min_shared_border=float(opts["min_shared_border"]), max_gap=float(opts["max_gap"]),
                       edge_margin=int(opts["edge_margin"]), source=labels_source, segmentation=seg_info)
    lap("graph")
    polygons = cell_polygons(labels)
    lap("polygons")
    return GraphBuild(data=data, labels=labels, polygons=polygons, reference=reference, timings=timings)


def movie_to_graph(movie_or_path: Any, **options: Any) -> Data:
    """A movie (path, ``Movie`` or (T, Y, X) array) -> its cell graph; options as
    :func:`movie_to_graph_full`."""
    return movie_to_graph_full(movie_or_path, **options).data


# ------------------------------------------------------------------------------------------- cache
def file_fingerprint(path: str | Path) -> dict[str, Any]:
    """Identify a file's content cheaply: size, mtime (ns) and SHA-256 of its first, middle and
    last MiB (a folder: the fingerprints of its files, sorted by name)."""
    path = Path(path)
    if path.is_dir():
        return {"folder": {p.name: file_fingerprint(p) for p in sorted(path.iterdir()) if p.is_file()}}
    stat = path.stat()
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        middle = max(stat.st_size // 2 - _HASH_BLOCK // 2, 0)
        for offset in sorted({0, middle, max(stat.st_size - _HASH_BLOCK, 0)}):
            fh.seek(offset)
            digest.update(fh.read(_HASH_BLOCK))
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256_sampled": digest.hexdigest()}


def options_fingerprint(path: str | Path, options: Mapping[str, Any]) -> str:
    """The cache key: SHA-256 of the movie's fingerprint, every resolved option (with defaults, so
    an explicit default and an omitted one agree), fingerprints of files named by options (the
    masks file, a Cellpose model...) and :data:`PIPELINE_VERSION`."""
    opts = resolve_options(options)
    files = {}
    for key, value in [("masks", opts["masks"]), *opts["segmentation_options"].items()]:
        if isinstance(value, str | Path) and str(value) and Path(value).exists():
            files[key] = file_fingerprint(value)
    payload = {"version": PIPELINE_VERSION, "movie": file_fingerprint(path), "options": opts, "files": files}
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def cached_movie_to_graph(path: str | Path, cache_dir: str | Path, **options: Any) -> GraphBuild:
    """:func:`movie_to_graph_full` of a movie file, memoised in ``cache_dir/<key>/``.

    The key is :func:`options_fingerprint` (the movie file and every option). Entries are written
    to a temporary folder and renamed into place, so a crash never leaves a half-written entry; an
    unreadable entry is rebuilt.
    """
    from calcium_gnn.io.graph_files import load_graph, save_graph
    from calcium_gnn.io.movie import read_movie

    path = Path(path)
    if not path.exists():
        read_movie(path)  # raises the movie reader's one-line MovieError naming the file
    key = options_fingerprint(path, options)
    cache_dir = Path(cache_dir)
    entry = cache_dir / key
    if entry.is_dir():
        try:
            data = load_graph(entry / "graph.pt")
            labels = np.load(entry / "labels.npy", allow_pickle=False)
            reference = np.load(entry / "reference.npy", allow_pickle=False)
            return GraphBuild(data=data, labels=labels, polygons=cell_polygons(labels), reference=reference)
        except (CalciumGNNError, OSError, ValueError):
            shutil.rmtree(entry, ignore_errors=True)
    build = movie_to_graph_full(path, **options)
    with atomic_folder(entry) as tmp:  # another process may fill the entry first: keep theirs
        save_graph(build.data, tmp / "graph.pt")
        np.save(tmp / "labels.npy", build.labels)
        np.save(tmp / "reference.npy", build.reference)
        atomic_write_text(tmp / "options.json", json.dumps({"movie": str(path), **resolve_options(options)},
                                                           sort_keys=True, default=str, indent=1))
    return build


# ------------------------------------------------------------------------------------------ outputs
#: The files :func:`write_outputs` writes into its folder.
OUTPUT_FILES: dict[str, str] = {
    "graph": "graph.pt",
    "labels": "labels.tif",
    "geojson": "cells.geojson",
    "traces": "traces.csv",
    "graphml": "graph.graphml",
    "outlines": "reference_outlines.png",
    "intensity": "cells_intensity.png",
    "overlay": "graph_overlay.png",
}


def check_output_folder(out: str | Path, *, overwrite: bool = False) -> Path:
    """Make sure ``out`` can receive a graph: create it, or refuse it when it is a file or holds a
    previous graph (any of :data:`OUTPUT_FILES`) and ``overwrite`` is false.

    Raises:
        OutputError: naming ``out``.
    """
    from calcium_gnn.errors import OutputError

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputError(out, "exists and is not a folder")
    if out.is_dir() and not overwrite:
        previous = sorted(name for name in OUTPUT_FILES.values() if (out / name).exists())
        if previous:
            raise OutputError(out, f"already holds a previous graph ({', '.join(previous)}); "
                              "set overwrite=true to replace it")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(out, f"cannot create the folder: {exc.strerror or exc}") from None
    return out


def write_outputs(
    build: GraphBuild, out: str | Path, *, overwrite: bool = False, frame: int = 10, dpi: int = 120
) -> dict[str, Path]:
    """Write a :class:`GraphBuild` into the folder ``out``: the graph, the label image, the
    exports and the three figures (:data:`OUTPUT_FILES`).

    Args:
        build: the pipeline's result.
        out: the folder (created if missing).
        overwrite: replace the files of a previous graph in ``out``; without it such a folder is
            refused.
        frame: time step shown in the intensity figures (paper Figs. 6-7: 10).
        dpi: resolution of the figures.

    Returns:
        The written paths, by kind (keys of :data:`OUTPUT_FILES`).

    Raises:
        OutputError: ``out`` is a file, or holds a previous graph and ``overwrite`` is false.
    """
    from calcium_gnn.graphs.plots import plot_graph_over_image, plot_outlines, plot_polygons_intensity
    from calcium_gnn.io.graph_files import (
        export_geojson,
        export_graphml,
        export_traces_csv,
        save_graph,
        save_labels,
    )

    out = check_output_folder(out, overwrite=overwrite)
    paths = {kind: out / name for kind, name in OUTPUT_FILES.items()}
    data = build.data
    save_graph(data, paths["graph"])
    save_labels(build.labels, paths["labels"])
    export_geojson(data, build.polygons, paths["geojson"], frame=min(frame, data.x.shape[1] - 1))
    export_traces_csv(data, paths["traces"])
    export_graphml(data, paths["graphml"])
    plot_outlines(build.reference, build.labels, paths["outlines"], dpi=dpi)
    plot_polygons_intensity(data, build.polygons, paths["intensity"], frame=frame,
                            shape=build.labels.shape, dpi=dpi)
    plot_graph_over_image(data, build.reference, paths["overlay"], frame=frame, dpi=dpi)
    return paths


def options_from_config(
    segmentation: Mapping[str, Any],
    preprocessing: Mapping[str, Any],
    graph: Mapping[str, Any],
    data: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Flatten the ``segmentation``, ``preprocessing``, ``graph`` config groups (and ``data``'s
    ``dt``, ``pixel_size``, ``z_projection``) into the options of :func:`movie_to_graph_full`.

    ``preprocessing.reference``, ``preprocessing.reference_frame`` and
    ``preprocessing.memory_budget_mb`` become the top-level options of the same names.

    Raises:
        ConfigError: an unknown key in a group (named ``group.key``).
    """
    prep = dict(preprocessing)
    options: dict[str, Any] = {
        "reference": prep.pop("reference", DEFAULT_OPTIONS["reference"]),
        "reference_frame": prep.pop("reference_frame", DEFAULT_OPTIONS["reference_frame"]),
        "memory_budget_mb": prep.pop("memory_budget_mb", DEFAULT_OPTIONS["memory_budget_mb"]),
        "preprocessing": prep,
    }
    seg = dict(segmentation)
    options["segmentation"] = seg.pop("backend", DEFAULT_OPTIONS["segmentation"])
    options["segmentation_options"] = dict(seg.pop("options", None) or {})
    if options["segmentation"] == "masks":
        options["masks"] = seg.pop("path", None)
    if seg:
        raise ConfigError(f"segmentation.{sorted(seg)[0]}", "unknown key (put backend options under "
                          "segmentation.options)")
    for key, value in graph.items():
        if key not in DEFAULT_OPTIONS:
            raise ConfigError(f"graph.{key}", "unknown key")
        options[key] = value
    if "min_area" in options:
        _check_min_area(options["min_area"], "graph.min_area")
    if options["segmentation"] == "watershed":
        _check_preset(options["segmentation_options"].get("preset"), "segmentation.options.preset")
    for key in ("dt", "pixel_size", "z_projection"):
        if data is not None and data.get(key) is not None:
            options[key] = data[key]
    return options
