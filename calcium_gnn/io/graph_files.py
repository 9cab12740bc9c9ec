"""Saving and loading cell graphs, and exporting them for other tools.

* ``graph.pt``: the PyG ``Data`` (schema :mod:`calcium_gnn.io.graph_schema`) written with
  ``torch.save`` and read back with ``torch.load(weights_only=True)`` (only tensors, numbers,
  strings and PyG's own storage classes are unpickled, so a crafted file cannot run code);
* ``labels.tif``: the final label image (uint16 or uint32, 0 = background, values = ``cell_id``);
* ``cells.geojson``: one Feature per cell, its polygon in pixel coordinates ``(x, y)`` (y pointing
  down the image) with properties ``cell_id``, ``area``, ``centroid``, ``touches_edge``,
  ``mean_intensity``;
* ``traces.csv``: cells x frames, a header ``cell_id, t_0, t_1, ...`` (times in seconds) and the
  cell id in the first column;
* ``graph.graphml``: a networkx graph, node attributes ``cell_id, x, y, area, touches_edge,
  mean_intensity`` and edge attributes ``u, l, ul`` (= ``u * l``).

Every file is written atomically (:mod:`calcium_gnn.io.atomic`): to a temporary file in the same
folder, then ``os.replace``.
"""

from __future__ import annotations

import csv
import json
import math
import pickle
from collections.abc import Callable, Sequence
from pathlib import Path

import networkx as nx
import numpy as np
import shapely
import tifffile
import torch
from shapely.geometry import mapping
from torch_geometric.data import Data
from torch_geometric.data.data import DataEdgeAttr, DataTensorAttr
from torch_geometric.data.storage import BaseStorage, EdgeStorage, GlobalStorage, NodeStorage

from calcium_gnn.errors import GraphError, OutputError
from calcium_gnn.io.atomic import atomic_path
from calcium_gnn.io.graph_schema import validate_graph

__all__ = [
    "GRAPH_SAFE_GLOBALS",
    "save_graph",
    "load_graph",
    "save_labels",
    "export_geojson",
    "export_traces_csv",
    "graph_to_networkx",
    "export_graphml",
]

#: The PyG classes a pickled ``Data`` refers to, allowed by ``torch.load(weights_only=True)``.
GRAPH_SAFE_GLOBALS: tuple[type, ...] = (
    Data,
    DataEdgeAttr,
    DataTensorAttr,
    BaseStorage,
    GlobalStorage,
    NodeStorage,
    EdgeStorage,
)


def _atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file next to ``path``, then move it onto ``path``
    (:func:`calcium_gnn.io.atomic.atomic_path`; the file gets the usual permissions of a new file)."""
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


def save_graph(data: Data, path: str | Path) -> Path:
    """Check ``data`` against the schema and write it with ``torch.save``, atomically.

    Args:
        data: a cell graph (:func:`calcium_gnn.io.graph_schema.validate_graph` must pass).
        path: the ``.pt`` file to write (replaced if it exists).

    Returns:
        The path written.
    """
    validate_graph(data, path)
    return _atomic_write(path, lambda tmp: torch.save(data, tmp))


def load_graph(path: str | Path) -> Data:
    """Read a cell graph written by :func:`save_graph` with ``torch.load(weights_only=True)``.

    Args:
        path: the ``.pt`` file.

    Returns:
        The validated ``Data``.

    Raises:
        GraphError: naming the file when it is missing, not a torch file, refused by the safe
            unpickler, not a PyG ``Data``, or when the graph breaks the schema.
    """
    path = Path(path)
    if not path.exists():
        raise GraphError(path, "file not found")
    if path.is_dir():
        raise GraphError(path, "is a folder, expected a graph file (.pt)")
    if path.stat().st_size == 0:
        raise GraphError(path, "file is empty (0 bytes)")
    try:
        with torch.serialization.safe_globals(list(GRAPH_SAFE_GLOBALS)):
            data = torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        if "Weights only load failed" in str(exc) or "Unsupported global" in str(exc):
            raise GraphError(path, "not a cell graph file: it holds objects outside the safe list") from None
        raise GraphError(path, f"not a torch file ({first})") from None
    except Exception as exc:  # noqa: BLE001 - a damaged file breaks the unpickler in many ways
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise GraphError(path, f"not a readable torch file ({message})") from None
    if not isinstance(data, Data):
        raise GraphError(path, f"holds a {type(data).__name__}, not a cell graph (torch_geometric Data)")
    return validate_graph(data, path)


def save_labels(labels: np.ndarray, path: str | Path) -> Path:
    """Write a label image (Y, X) as a TIFF (uint16 when the ids fit, else uint32), atomically."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise OutputError(path, f"a label image must be 2-D, got shape {labels.shape}")
    dtype = np.uint16 if labels.size == 0 or int(labels.max()) <= np.iinfo(np.uint16).max else np.uint32
    out = labels.astype(dtype)
    return _atomic_write(path, lambda tmp: tifffile.imwrite(tmp, out, photometric="minisblack"))


def _jsonable(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def export_geojson(
    data: Data, polygons: Sequence[shapely.Geometry], path: str | Path, *, frame: int | None = None
) -> Path:
    """Write the cells as a GeoJSON FeatureCollection (pixel coordinates, y down).

    Args:
        data: the cell graph (its ``cell_id``, ``area``, ``pos``, ``touches_edge``, ``x``).
        polygons: N shapely geometries, row ``i`` = node ``i`` (from
            :func:`calcium_gnn.graphs.geometry.cell_polygons`).
        path: the ``.geojson`` file.
        frame: also record ``intensity`` at this frame (the paper's Fig. 6 colouring); ``None`` skips it.

    Returns:
        The path written.
    """
    n = int(data.x.shape[0])
    if len(polygons) != n:
        raise GraphError(path, f"{len(polygons)} polygons for {n} cells")
    mean = data.x.mean(dim=1)
    features = []
    for i, geom in enumerate(polygons):
        props = {
            "cell_id": int(data.cell_id[i]),
            "area": float(data.area[i]),
            "area_unit": f"{data.unit}^2",
            "centroid": [float(data.pos[i, 0]), float(data.pos[i, 1])],
            "touches_edge": bool(data.touches_edge[i]),
            "mean_intensity": float(mean[i]),
        }
        if frame is not None:
            props["frame"] = int(frame)
            props["intensity"] = float(data.x[i, frame])
        features.append({"type": "Feature", "id": int(data.cell_id[i]), "geometry": mapping(geom),
                         "properties": props})
    collection = {
        "type": "FeatureCollection",
        "properties": {"coordinates": "pixels (x = column, y = row, pixel centres at integers)",
                       "pixel_size_um": _jsonable(data.pixel_size), "unit": data.unit, "dt": float(data.dt)},
        "features": features,
    }

    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(collection, fh, allow_nan=False)

    return _atomic_write(path, write)


def export_traces_csv(data: Data, path: str | Path) -> Path:
    """Write the traces ``x`` (N, T) as CSV: header ``cell_id, t_0, ..., t_{T-1}`` (s), a row per cell."""
    times = data.t.double().numpy()
    x = data.x.double().numpy()
    ids = data.cell_id.numpy()

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["cell_id", *(f"{t:.9g}" for t in times)])
            for cid, row in zip(ids, x, strict=True):
                writer.writerow([int(cid), *(f"{v:.9g}" for v in row)])

    return _atomic_write(path, write)


def export_centroids_csv(data: Data, path: str | Path) -> Path:
    """Write the cell centroids as CSV: header ``cell_id, x, y`` (px), a row per cell (the centroids
    table :func:`calcium_gnn.io.centroids_table.read_centroids` reads)."""
    ids = data.cell_id.numpy()
    pos = data.pos.double().numpy()

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["cell_id", "x", "y"])
            for cid, (x, y) in zip(ids, pos, strict=True):
                writer.writerow([int(cid), f"{x:.6f}", f"{y:.6f}"])

    return _atomic_write(path, write)


def graph_to_networkx(data: Data) -> nx.Graph:
    """The undirected networkx graph of a cell graph; nodes are keyed by ``cell_id``."""
    g = nx.Graph(dt=float(data.dt), pixel_size=float(data.pixel_size), unit=str(data.unit))
    mean = data.x.mean(dim=1)
    ids = data.cell_id.tolist()
    for i, cid in enumerate(ids):
        g.add_node(int(cid), cell_id=int(cid), x=float(data.pos[i, 0]), y=float(data.pos[i, 1]),
                   area=float(data.area[i]), touches_edge=bool(data.touches_edge[i]),
                   mean_intensity=float(mean[i]))
    src, dst = data.edge_index.tolist()
    for e, (a, b) in enumerate(zip(src, dst, strict=True)):
        if a < b:
            u, l = float(data.u[e]), float(data.l[e])
            g.add_edge(ids[a], ids[b], u=u, l=l, ul=float(data.edge_attr[e, 0]))
    return g


def export_graphml(data: Data, path: str | Path) -> Path:
    """Write the graph as GraphML (attributes: module docstring), atomically."""
    g = graph_to_networkx(data)
    return _atomic_write(path, lambda tmp: nx.write_graphml(g, tmp))
