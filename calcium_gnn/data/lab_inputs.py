"""Cell graphs from what a lab already has, instead of a movie (``data=lab``).

Five routes, each ending in :func:`calcium_gnn.graphs.build.build_graph`, so every graph follows the
schema of :mod:`calcium_gnn.io.graph_schema`:

===============  ==================================================  ====================================
route            inputs (``data.<key>``)                             cells (label ids)
===============  ==================================================  ====================================
``labels``       a label image (TIFF, ``.npy``, Cellpose             the image's ids
                 ``*_seg.npy``) + ``traces``
``rois``         an ImageJ ``RoiSet.zip`` / ``.roi`` + ``traces``    ROI k -> k + 1 (ROI Manager order)
``centroids``    a centroids CSV (``x, y``, optional id) +           the id column, else row + 1
                 ``traces``; cells = a bounded Voronoi tessellation
``suite2p``      a suite2p plane folder (``F - c Fneu``)             suite2p ROI index + 1 (iscell only)
``caiman``       a CaImAn results HDF5 (``estimates/A``, ``C``)      component index + 1
===============  ==================================================  ====================================

Readers: :mod:`calcium_gnn.io.masks`, :mod:`~calcium_gnn.io.imagej_rois`,
:mod:`~calcium_gnn.io.centroids_table` and :mod:`~calcium_gnn.graphs.voronoi`,
:mod:`~calcium_gnn.io.suite2p`, :mod:`~calcium_gnn.io.caiman`; traces tables:
:mod:`~calcium_gnn.io.traces_table` (orientation, header, id column, ImageJ Multi-Measure).

**Traces and cells.** Without an id column the table's traces are the cells in ascending label id
(ROI order, centroid order) and their number must equal the number of cells; with one, every cell
needs exactly one row and every row a cell. Anything else is an error naming the file, never a graph
with shifted traces.

**Frame interval and pixel size.** suite2p (``ops["fs"]``) and CaImAn (``params/data/fr``) carry the
frame rate: ``dt = 1 / rate``, and ``data.dt`` is only used when the file has none (a different
``data.dt`` is reported in the log). A traces table carries none: ``data.dt`` is required. No route
carries the pixel size: ``data.pixel_size`` (um per px), else lengths stay in pixels.

**Centroids.** The graph's ``pos`` and ``u_ij`` use the given centroids (a clipped outer cell's pixel
centroid would move inwards), and every cell the tessellation clips is flagged ``touches_edge``
(setup I models only the cells whose whole region is known).

``graph.min_area`` is not applied: the cells are the lab's, and dropping one would leave its trace
without a cell. The graph records its origin (``data.origin``, a one-line string, also
:attr:`CellGraphSource.origin`) and ``data.segmentation`` (how its label image was made).

Python::

    from calcium_gnn.data.lab_inputs import graph_from_centroids, load_lab_inputs
    source = graph_from_centroids("centroids.csv", "traces.csv", dt=2.0)
    source = load_lab_inputs(suite2p="suite2p/plane0")        # the same keys as configs/data/lab.yaml
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch_geometric.data import Data

from calcium_gnn.data.graph_source import CellGraphSource
from calcium_gnn.errors import ConfigError, InputFileError
from calcium_gnn.io.graph_schema import validate_graph
from calcium_gnn.io.traces_table import TracesTable, read_traces_table

log = logging.getLogger(__name__)

__all__ = [
    "LAB_INPUT_KEYS",
    "LAB_OPTION_KEYS",
    "GraphOptions",
    "graph_from_labels",
    "graph_from_rois",
    "graph_from_centroids",
    "graph_from_suite2p",
    "graph_from_caiman",
    "load_lab_inputs",
]

#: the ``data`` keys naming lab files (configs/data/lab.yaml)
LAB_INPUT_KEYS: tuple[str, ...] = ("traces", "labels", "rois", "centroids", "suite2p", "caiman")
#: the ``data`` keys tuning the lab routes; None = the documented default
LAB_OPTION_KEYS: tuple[str, ...] = (
    "traces_orientation",
    "traces_header",
    "image_shape",
    "voronoi_clip",
    "neuropil_coefficient",
    "footprint_threshold",
)
#: the routes (one geometry key each) and the options each uses
_ROUTE_OPTIONS: dict[str, tuple[str, ...]] = {
    "labels": ("traces_orientation", "traces_header"),
    "rois": ("traces_orientation", "traces_header", "image_shape"),
    "centroids": ("traces_orientation", "traces_header", "image_shape", "voronoi_clip"),
    "suite2p": ("neuropil_coefficient",),
    "caiman": ("footprint_threshold",),
}


@dataclass(frozen=True)
class GraphOptions:
    """How a label image becomes a graph (the ``graph`` config group; see :func:`build_graph`).

    Attributes:
        min_shared_border: shortest shared border (px) for two cells to be adjacent (paper: 5).
        max_gap: widest membrane (px) of background bridged between touching cells.
        edge_margin: a cell within this many px of the image border is flagged ``touches_edge``.
    """

    min_shared_border: float = 5.0
    max_gap: float = 2
    edge_margin: int = 0

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any] | None) -> GraphOptions:
        """The fields present in ``options`` (e.g. the movie build options); defaults elsewhere."""
        options = options or {}
        return cls(**{k: options[k] for k in ("min_shared_border", "max_gap", "edge_margin") if k in options})


def _check_dt(dt: float | None) -> float | None:
    if dt is None:
        return None
    try:
        value = float(dt)
    except (TypeError, ValueError):
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ConfigError("data.dt", f"must be a positive number of seconds, got {dt!r}")
    return value


def _pixel_size(pixel_size: float | None) -> float:
    if pixel_size is None:
        return math.nan
    try:
        value = float(pixel_size)
    except (TypeError, ValueError):
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(
            "data.pixel_size", f"must be a positive number of micrometres per pixel, got {pixel_size!r}"
        )
    return value


def _table_dt(dt: float | None, traces: Path) -> float:
    value = _check_dt(dt)
    if value is None:
        raise ConfigError(
            "data.dt", f"the traces table {traces} carries no frame interval: set data.dt (seconds)"
        )
    return value


def _file_dt(rate: float | None, dt: float | None, where: str, key: str) -> tuple[float, str]:
    """``1 / rate`` when the file has a frame rate, else ``dt``; and where it came from."""
    given = _check_dt(dt)
    if rate is not None:
        file_dt = 1.0 / rate
        if given is not None and not math.isclose(given, file_dt, rel_tol=1e-6):
            log.warning(
                "data.dt=%g ignored: %s gives a frame rate of %g Hz (dt = %g s)", given, where, rate, file_dt
            )
        return file_dt, f"{key} in {where}"
    if given is None:
        raise ConfigError("data.dt", f"{where} has no frame rate ({key}): set data.dt (seconds)")
    return given, "data.dt"


def _read_traces(path: Path, orientation: str | None, header: bool | None) -> TracesTable:
    return read_traces_table(path, orientation=orientation, header=header)


def _aligned_traces(table: TracesTable, cell_ids: np.ndarray, geometry: str) -> np.ndarray:
    """The table's traces (N, T) in the order of ``cell_ids`` (ascending label ids).

    Raises:
        InputFileError: naming the traces file: a count that differs from the cells' (with the
            orientation that would fit, when one does), or ids without a cell / cells without a row.
    """
    n = cell_ids.size
    if table.cell_ids is None:
        if table.n_cells == n:
            return table.traces
        layout = "rows" if table.orientation == "cells_x_frames" else "columns"
        hint = ""
        if table.other_axis == n and not table.imagej:
            other = "frames_x_cells" if table.orientation == "cells_x_frames" else "cells_x_frames"
            hint = f"; the table fits {other}: set data.traces_orientation={other}"
        raise InputFileError(
            table.path,
            f"{table.n_cells} traces ({layout}, {table.orientation}) but {geometry} has {n} cells{hint}",
        )
    position = {int(c): i for i, c in enumerate(table.cell_ids)}
    missing = [int(c) for c in cell_ids if int(c) not in position]
    if missing:
        shown = ", ".join(str(c) for c in missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise InputFileError(
            table.path, f"no trace for {len(missing)} of the {n} cells of {geometry} (ids {shown})"
        )
    extra = sorted(set(position) - {int(c) for c in cell_ids})
    if extra:
        shown = ", ".join(str(c) for c in extra[:5]) + (", ..." if len(extra) > 5 else "")
        raise InputFileError(
            table.path, f"{len(extra)} traces have ids that are not cells of {geometry} (ids {shown})"
        )
    return table.traces[[position[int(c)] for c in cell_ids]]


def _finish(
    labels: np.ndarray,
    traces: np.ndarray,
    *,
    dt: float,
    pixel_size: float | None,
    options: GraphOptions | None,
    source: Path,
    traces_source: Path,
    record: dict[str, Any],
    origin: str,
) -> CellGraphSource:
    """:func:`build_graph` with the route's record and origin stored in the graph."""
    from calcium_gnn.graphs.build import build_graph

    options = options or GraphOptions()
    data = build_graph(
        labels,
        traces,
        dt=dt,
        pixel_size=_pixel_size(pixel_size),
        min_shared_border=options.min_shared_border,
        max_gap=options.max_gap,
        edge_margin=options.edge_margin,
        source=source,
        traces_source=traces_source,
        segmentation=record,
    )
    data.origin = origin
    return CellGraphSource(data, np.asarray(labels), origin)


def graph_from_labels(
    labels: str | Path,
    traces: str | Path,
    *,
    dt: float | None,
    pixel_size: float | None = None,
    traces_orientation: str | None = None,
    traces_header: bool | None = None,
    options: GraphOptions | None = None,
) -> CellGraphSource:
    """A label image (TIFF, ``.npy``, Cellpose ``*_seg.npy``) and a traces table.

    Args:
        labels: the label image file (0 = background, cell ids >= 1).
        traces: the traces table; rows (or its id column) follow the ascending label ids.
        dt: frame interval in seconds (required: a table carries none).
        pixel_size: micrometres per pixel, None when unknown.
        traces_orientation: ``cells_x_frames`` / ``frames_x_cells`` / None
            (:mod:`~calcium_gnn.io.traces_table`).
        traces_header: None detects a header row; True / False force it.
        options: graph building options.

    Returns:
        The cell graph (N cells of the image, T frames of the table) and its origin.

    Raises:
        MasksError, InputFileError, ConfigError: naming the file or key at fault.
    """
    from calcium_gnn.graphs.geometry import dense_index
    from calcium_gnn.io.masks import read_labels

    labels, traces = Path(labels), Path(traces)
    image = read_labels(labels)
    table = _read_traces(traces, traces_orientation, traces_header)
    step = _table_dt(dt, traces)
    cell_ids, _ = dense_index(image)
    x = _aligned_traces(table, cell_ids, str(labels))
    kind = "Cellpose _seg.npy" if labels.name.endswith("_seg.npy") else "label image"
    origin = f"{kind} {labels} + traces {traces} ({table.orientation})"
    record = {
        "backend": "lab",
        "route": "labels",
        "labels": str(labels),
        "traces": str(traces),
        "traces_orientation": table.orientation,
        "dt_source": "data.dt",
    }
    return _finish(
        image,
        x,
        dt=step,
        pixel_size=pixel_size,
        options=options,
        source=labels,
        traces_source=traces,
        record=record,
        origin=origin,
    )


def graph_from_rois(
    rois: str | Path,
    traces: str | Path,
    *,
    dt: float | None,
    pixel_size: float | None = None,
    image_shape: Sequence[int] | None = None,
    traces_orientation: str | None = None,
    traces_header: bool | None = None,
    options: GraphOptions | None = None,
) -> CellGraphSource:
    """An ImageJ ROI set (``RoiSet.zip`` or ``.roi``) and a traces table (ImageJ Multi-Measure or other).

    Args:
        rois: the ROI file; ROI k (set order) is cell k, label ``k + 1``.
        traces: the traces table, columns / rows in ROI order (or an id column of ROI numbers 1..N).
        dt: frame interval in seconds (required).
        pixel_size: micrometres per pixel, None when unknown.
        image_shape: ``(height, width)`` of the image the ROIs were drawn on; None: their bounding box.
        traces_orientation, traces_header, options: as for :func:`graph_from_labels`.

    Returns:
        The cell graph and its origin.

    Raises:
        MasksError, InputFileError, ConfigError: naming the file or key at fault.
    """
    from calcium_gnn.io.imagej_rois import read_imagej_rois

    rois, traces = Path(rois), Path(traces)
    roi_labels = read_imagej_rois(rois, image_shape=image_shape)
    table = _read_traces(traces, traces_orientation, traces_header)
    step = _table_dt(dt, traces)
    n = len(roi_labels.names)
    x = _aligned_traces(table, np.arange(1, n + 1, dtype=np.int64), f"{rois} ({n} ROIs)")
    kind = "ImageJ Multi-Measure" if table.imagej else table.orientation
    origin = f"ImageJ ROIs {rois} + traces {traces} ({kind})"
    record = {
        "backend": "lab",
        "route": "rois",
        "rois": str(rois),
        "traces": str(traces),
        "traces_orientation": table.orientation,
        "image_shape": list(roi_labels.labels.shape),
        "image_shape_source": "data.image_shape" if image_shape is not None else "ROI bounds",
        "dt_source": "data.dt",
    }
    return _finish(
        roi_labels.labels,
        x,
        dt=step,
        pixel_size=pixel_size,
        options=options,
        source=rois,
        traces_source=traces,
        record=record,
        origin=origin,
    )


def graph_from_centroids(
    centroids: str | Path,
    traces: str | Path,
    *,
    dt: float | None,
    pixel_size: float | None = None,
    image_shape: Sequence[int] | None = None,
    voronoi_clip: float | None = None,
    traces_orientation: str | None = None,
    traces_header: bool | None = None,
    options: GraphOptions | None = None,
) -> CellGraphSource:
    """Cell centroids (the cells: their bounded Voronoi tessellation) and a traces table.

    Args:
        centroids: the centroids table (``x, y`` in px, optional id column).
        traces: the traces table (rows in centroid order, or an id column of the centroids' ids).
        dt: frame interval in seconds (required).
        pixel_size: micrometres per pixel, None when unknown.
        image_shape: ``(height, width)`` of the image; None: up to the furthest centroid plus the clip.
        voronoi_clip: px; None: 1.5 x the median nearest-neighbour distance
            (:mod:`calcium_gnn.graphs.voronoi`).
        traces_orientation, traces_header, options: as for :func:`graph_from_labels`.

    Returns:
        The cell graph: ``pos`` = the given centroids, ``u_ij`` their distances, clipped cells flagged
        ``touches_edge``; and its origin.

    Raises:
        MasksError, InputFileError, ConfigError: naming the file or key at fault.
    """
    from calcium_gnn.graphs.voronoi import voronoi_labels
    from calcium_gnn.io.centroids_table import read_centroids

    centroids, traces = Path(centroids), Path(traces)
    cells = read_centroids(centroids)
    tessellation = voronoi_labels(
        cells.xy, image_shape, clip=voronoi_clip, ids=cells.cell_ids, source=centroids
    )
    table = _read_traces(traces, traces_orientation, traces_header)
    step = _table_dt(dt, traces)
    order = np.argsort(cells.cell_ids)
    x = _aligned_traces(table, cells.cell_ids[order], f"{centroids} ({cells.cell_ids.size} centroids)")
    origin = f"Voronoi cells of centroids {centroids} + traces {traces} ({table.orientation})"
    record = {
        "backend": "voronoi",
        "route": "centroids",
        "centroids": str(centroids),
        "traces": str(traces),
        "traces_orientation": table.orientation,
        "voronoi_clip": float(tessellation.clip),
        "clip_rule": tessellation.clip_rule,
        "clipped_cells": int(tessellation.clipped.sum()),
        "image_shape": list(tessellation.labels.shape),
        "image_shape_source": "data.image_shape" if image_shape is not None else "centroid bounds + clip",
        "dt_source": "data.dt",
    }
    source = _finish(
        tessellation.labels,
        x,
        dt=step,
        pixel_size=pixel_size,
        options=options,
        source=centroids,
        traces_source=traces,
        record=record,
        origin=origin,
    )
    _use_given_centroids(source.data, cells.xy[order], tessellation.clipped[order])
    return source


def _use_given_centroids(data: Data, xy: np.ndarray, clipped: np.ndarray) -> None:
    """Set ``pos`` to the given centroids (N, 2), ``u`` and ``edge_attr`` to match, and flag the clipped
    cells (N,) ``touches_edge``; rows in ascending ``cell_id``, as the graph's."""
    scale = 1.0 if data.unit == "px" else float(data.pixel_size)
    pos = torch.as_tensor(xy, dtype=torch.float32)
    src, dst = data.edge_index
    u = torch.as_tensor(
        np.linalg.norm(xy[src.numpy()] - xy[dst.numpy()], axis=1) * scale, dtype=torch.float32
    )
    data.pos = pos
    data.u = u
    data.edge_attr = (u * data.l)[:, None]
    data.touches_edge = data.touches_edge | torch.as_tensor(clipped, dtype=torch.bool)
    validate_graph(data, "centroids graph")


def graph_from_suite2p(
    folder: str | Path,
    *,
    dt: float | None = None,
    pixel_size: float | None = None,
    neuropil_coefficient: float | None = None,
    options: GraphOptions | None = None,
) -> CellGraphSource:
    """A suite2p plane folder (:mod:`calcium_gnn.io.suite2p`): its cells (``iscell``) and ``F - c Fneu``.

    Args:
        folder: ``.../suite2p/plane0`` (or a folder holding one plane).
        dt: frame interval in seconds, used only when ``ops.npy`` has no ``fs``.
        pixel_size: micrometres per pixel, None when unknown.
        neuropil_coefficient: c; None: 0.7 (suite2p's default).
        options: graph building options.

    Returns:
        The cell graph (cell ids = suite2p ROI index + 1) and its origin.

    Raises:
        InputFileError, ConfigError: naming the file or key at fault.
    """
    from calcium_gnn.io.suite2p import DEFAULT_NEUROPIL_COEFFICIENT, read_suite2p

    c = DEFAULT_NEUROPIL_COEFFICIENT if neuropil_coefficient is None else _coefficient(neuropil_coefficient)
    plane = read_suite2p(folder, neuropil_coefficient=c)
    step, dt_source = _file_dt(plane.fs, dt, str(plane.folder / "ops.npy"), "fs")
    origin = f"suite2p {plane.folder} (F - {c:g} Fneu, {plane.roi_index.size} cells, dt from {dt_source})"
    record = {
        "backend": "suite2p",
        "route": "suite2p",
        "folder": str(plane.folder),
        "neuropil_coefficient": c,
        "overlaps": "larger lam",
        "dt_source": dt_source,
    }
    return _finish(
        plane.labels,
        plane.traces,
        dt=step,
        pixel_size=pixel_size,
        options=options,
        source=plane.folder / "stat.npy",
        traces_source=plane.folder / "F.npy",
        record=record,
        origin=origin,
    )


def _coefficient(value: Any) -> float:
    try:
        c = float(value)
    except (TypeError, ValueError):
        c = math.nan
    if not (math.isfinite(c) and c >= 0):
        raise ConfigError("data.neuropil_coefficient", f"must be a number >= 0, got {value!r}")
    return c


def graph_from_caiman(
    path: str | Path,
    *,
    dt: float | None = None,
    pixel_size: float | None = None,
    footprint_threshold: float | None = None,
    options: GraphOptions | None = None,
) -> CellGraphSource:
    """A CaImAn results HDF5 file (:mod:`calcium_gnn.io.caiman`): thresholded footprints and ``C``.

    Args:
        path: the file of ``cnm.save(...)``.
        dt: frame interval in seconds, used only when the file has no ``params/data/fr``.
        pixel_size: micrometres per pixel, None when unknown.
        footprint_threshold: share of each footprint's maximum; None: 0.2.
        options: graph building options.

    Returns:
        The cell graph (cell ids = component index + 1) and its origin.

    Raises:
        InputFileError, ConfigError: naming the file or key at fault.
    """
    from calcium_gnn.io.caiman import DEFAULT_FOOTPRINT_THRESHOLD, read_caiman

    threshold = DEFAULT_FOOTPRINT_THRESHOLD if footprint_threshold is None else footprint_threshold
    try:
        threshold = float(threshold)
    except (TypeError, ValueError):
        threshold = math.nan
    if not (0 < threshold <= 1):
        raise ConfigError("data.footprint_threshold", f"must be in (0, 1], got {footprint_threshold!r}")
    result = read_caiman(path, footprint_threshold=threshold)
    step, dt_source = _file_dt(result.fr, dt, str(result.path), "params/data/fr")
    origin = (
        f"CaImAn {result.path} (footprints >= {threshold:g} x max, {result.component_index.size} cells, "
        f"dt from {dt_source})"
    )
    record = {
        "backend": "caiman",
        "route": "caiman",
        "path": str(result.path),
        "footprint_threshold": threshold,
        "overlaps": "largest footprint weight",
        "dt_source": dt_source,
    }
    return _finish(
        result.labels,
        result.traces,
        dt=step,
        pixel_size=pixel_size,
        options=options,
        source=result.path,
        traces_source=result.path,
        record=record,
        origin=origin,
    )


def lab_route(inputs: Mapping[str, Any]) -> str | None:
    """The route the set keys of ``inputs`` ask for (``"labels"``, ..., ``"caiman"``), or None when no lab
    key is set.

    Raises:
        ConfigError: two geometry sources, traces without a geometry, or traces with suite2p / CaImAn
            (which carry their own).
    """
    given = [key for key in _ROUTE_OPTIONS if inputs.get(key) not in (None, "")]
    traces = inputs.get("traces") not in (None, "")
    if len(given) > 1:
        raise ConfigError(f"data.{given[1]}", f"set one of data.{given[0]} and data.{given[1]}, not both")
    if not given:
        if traces:
            raise ConfigError(
                "data.traces",
                "a traces table needs the cells it belongs to: set data.labels, data.rois or data.centroids",
            )
        return None
    route = given[0]
    if route in ("suite2p", "caiman") and traces:
        raise ConfigError("data.traces", f"data.{route} carries its own traces: unset data.traces")
    if route in ("labels", "rois", "centroids") and not traces:
        raise ConfigError("data.traces", f"data.{route} needs a traces table: set data.traces")
    return route


def load_lab_inputs(
    *,
    traces: str | Path | None = None,
    labels: str | Path | None = None,
    rois: str | Path | None = None,
    centroids: str | Path | None = None,
    suite2p: str | Path | None = None,
    caiman: str | Path | None = None,
    traces_orientation: str | None = None,
    traces_header: bool | None = None,
    image_shape: Sequence[int] | None = None,
    voronoi_clip: float | None = None,
    neuropil_coefficient: float | None = None,
    footprint_threshold: float | None = None,
    dt: float | None = None,
    pixel_size: float | None = None,
    options: GraphOptions | None = None,
) -> CellGraphSource:
    """The cell graph of lab inputs: the keys of ``configs/data/lab.yaml`` as keyword arguments.

    Exactly one of ``labels``, ``rois``, ``centroids`` (each with ``traces``), ``suite2p``, ``caiman``
    must be given; an option the chosen route does not use must stay None (so a misplaced option is
    an error, not silently ignored).

    Raises:
        ConfigError: no input, two inputs, a missing traces table, an option of another route.
        MasksError, InputFileError: naming the file at fault.
    """
    values = {
        "traces": traces,
        "labels": labels,
        "rois": rois,
        "centroids": centroids,
        "suite2p": suite2p,
        "caiman": caiman,
        "traces_orientation": traces_orientation,
        "traces_header": traces_header,
        "image_shape": image_shape,
        "voronoi_clip": voronoi_clip,
        "neuropil_coefficient": neuropil_coefficient,
        "footprint_threshold": footprint_threshold,
    }
    route = lab_route(values)
    if route is None:
        raise ConfigError(
            "data",
            "no lab input: set one of data.labels, data.rois, data.centroids (each with "
            "data.traces), data.suite2p or data.caiman",
        )
    for key in LAB_OPTION_KEYS:
        if values[key] is not None and key not in _ROUTE_OPTIONS[route]:
            raise ConfigError(
                f"data.{key}",
                f"not used by data.{route} (used with: "
                f"{', '.join('data.' + r for r, keys in _ROUTE_OPTIONS.items() if key in keys)})",
            )
    common = {"dt": dt, "pixel_size": pixel_size, "options": options}
    table = {"traces_orientation": traces_orientation, "traces_header": traces_header}
    if route == "labels":
        return graph_from_labels(labels, traces, **table, **common)
    if route == "rois":
        return graph_from_rois(rois, traces, image_shape=image_shape, **table, **common)
    if route == "centroids":
        return graph_from_centroids(
            centroids, traces, image_shape=image_shape, voronoi_clip=voronoi_clip, **table, **common
        )
    if route == "suite2p":
        return graph_from_suite2p(suite2p, neuropil_coefficient=neuropil_coefficient, **common)
    return graph_from_caiman(caiman, footprint_threshold=footprint_threshold, **common)
