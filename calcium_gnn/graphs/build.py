"""Label image + traces -> the cell graph (a PyG ``Data`` following :mod:`calcium_gnn.io.graph_schema`).

Nodes are cells (ascending ``cell_id``); an undirected edge joins two cells whose shared border
``l_ij`` (membrane midline, :mod:`calcium_gnn.graphs.adjacency`) is at least ``min_shared_border``
pixels. Each edge carries the quantities of the consensus ODE (paper eqs. 1-3)

.. math::

    \\frac{dy_i}{dt} = \\frac{k}{|N_i|} \\sum_{j \\in N_i} u_{ij}\\, l_{ij}\\, (x_j - y_i) + \\gamma_i,

``u_ij = ||c_i - c_j||`` (centroid distance) and ``l_ij``, both stored in ``unit`` (pixels, or
micrometres when ``pixel_size`` is known), and ``edge_attr = u_ij * l_ij``.

A graph built from a movie also carries ``segmentation``: the plain record (str, int, float, bool
and lists of them) of how its label image was made, e.g. the watershed's membrane polarity and cell
diameter decided by ``preset="auto"`` and the ``min_area`` applied
(:func:`calcium_gnn.pipeline.movie_to_graph_full`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch_geometric.data import Data

from calcium_gnn.errors import ConfigError, MasksError, MovieError
from calcium_gnn.graphs.adjacency import adjacent_pairs
from calcium_gnn.graphs.geometry import CellTable, cell_table, validate_labels
from calcium_gnn.io.graph_schema import validate_graph

__all__ = ["build_graph", "graph_unit"]


def graph_unit(pixel_size: float) -> tuple[str, float]:
    """The length unit of a graph and the factor from pixels to it.

    Args:
        pixel_size: micrometres per pixel, or NaN when unknown.

    Returns:
        ``("um", pixel_size)`` when ``pixel_size`` is a positive number, else ``("px", 1.0)``.
    """
    if pixel_size is None or math.isnan(float(pixel_size)):
        return "px", 1.0
    if not math.isfinite(float(pixel_size)) or float(pixel_size) <= 0:
        raise ConfigError(
            "pixel_size", f"must be a positive number of micrometres per pixel or NaN, got {pixel_size}"
        )
    return "um", float(pixel_size)


def build_graph(
    labels: np.ndarray,
    traces: np.ndarray | torch.Tensor,
    *,
    dt: float,
    pixel_size: float = math.nan,
    min_shared_border: float = 5.0,
    max_gap: float = 2,
    edge_margin: int = 0,
    t0: float = 0.0,
    source: str | Path = "labels",
    traces_source: str | Path = "traces",
    segmentation: Mapping[str, Any] | None = None,
) -> Data:
    """Build the cell graph of a label image and its traces.

    Args:
        labels: (Y, X) label image, 0 = background, cell ids >= 1.
        traces: (N, T) mean intensity per cell and frame, rows in ascending ``cell_id`` (as returned by
            :func:`calcium_gnn.graphs.traces.extract_traces`).
        dt: frame interval in seconds (> 0); frame ``k`` is at ``t0 + k * dt``.
        pixel_size: micrometres per pixel, NaN when unknown (then lengths stay in pixels).
        min_shared_border: shortest shared border, in **pixels**, for two cells to be adjacent
            (paper: 5).
        max_gap: widest membrane of background pixels bridged between touching cells (px).
        edge_margin: a cell within this many pixels of the image border is flagged ``touches_edge``.
        t0: time of the first frame in seconds.
        source: the label image's name in error messages.
        traces_source: the traces' name in error messages.
        segmentation: the record of how ``labels`` were made (plain values only: str, int, float,
            bool, None and lists of them, so the graph file loads with ``weights_only=True``),
            stored as ``data.segmentation``; None stores nothing.

    Returns:
        A ``Data`` with ``x`` (N, T) float32, ``t`` (T,), ``pos`` (N, 2) centroids ``(x, y)`` in px,
        ``edge_index`` (2, E) both directions sorted, ``edge_attr`` (E, 1) = ``u * l``, ``u`` (E,),
        ``l`` (E,), ``area`` (N,), ``touches_edge`` (N,), ``cell_id`` (N,), ``dt``, ``pixel_size``,
        ``unit``, and ``segmentation`` (a dict) when given; it passes
        :func:`calcium_gnn.io.graph_schema.validate_graph`.

    Raises:
        MasksError: bad label image, or no cell in it.
        MovieError: traces of the wrong shape or with NaN/Inf.
        ConfigError: bad ``dt``, ``pixel_size``, thresholds, or a ``segmentation`` record holding
            something else than plain values.
    """
    labels = validate_labels(labels, source)
    try:
        dt = float(dt)
    except (TypeError, ValueError):
        raise ConfigError("dt", f"must be a positive number of seconds, got {dt!r}") from None
    if not (math.isfinite(dt) and dt > 0):
        raise ConfigError("dt", f"must be a positive number of seconds, got {dt!r}")
    unit, scale = graph_unit(pixel_size)
    table: CellTable = cell_table(labels, edge_margin=edge_margin, source=source)
    n = len(table)
    if n == 0:
        raise MasksError(source, "no cells found (the label image is all background)")
    if torch.is_tensor(traces):
        x = traces.detach().to(torch.float32)
    else:
        x = torch.as_tensor(np.asarray(traces, dtype=np.float32))
    if x.dim() != 2 or x.shape[0] != n:
        raise MovieError(traces_source, f"traces must have shape (N={n}, T), got {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise MovieError(traces_source, "traces hold NaN or Inf values (check the movie for NaNs)")
    _, pairs, length_px = adjacent_pairs(
        labels, min_shared_border=min_shared_border, max_gap=max_gap, source=source
    )
    centroid = table.centroid
    u_px = np.linalg.norm(centroid[pairs[:, 0]] - centroid[pairs[:, 1]], axis=1)
    # both directions, sorted by (source, target)
    src = np.concatenate([pairs[:, 0], pairs[:, 1]])
    dst = np.concatenate([pairs[:, 1], pairs[:, 0]])
    u = np.concatenate([u_px, u_px]) * scale
    l = np.concatenate([length_px, length_px]) * scale
    order = np.lexsort((dst, src))
    src, dst, u, l = src[order], dst[order], u[order], l[order]
    t_count = x.shape[1]
    data = Data(
        x=x.contiguous(),
        t=torch.as_tensor(t0 + dt * np.arange(t_count), dtype=torch.float32),
        pos=torch.as_tensor(centroid, dtype=torch.float32),
        edge_index=torch.as_tensor(np.stack([src, dst]), dtype=torch.long),
        edge_attr=torch.as_tensor((u * l)[:, None], dtype=torch.float32),
        u=torch.as_tensor(u, dtype=torch.float32),
        l=torch.as_tensor(l, dtype=torch.float32),
        area=torch.as_tensor(table.area * scale**2, dtype=torch.float32),
        touches_edge=torch.as_tensor(table.touches_edge, dtype=torch.bool),
        cell_id=torch.as_tensor(table.cell_id, dtype=torch.long),
        dt=float(dt),
        pixel_size=float(pixel_size) if pixel_size is not None else math.nan,
        unit=unit,
        image_shape=(int(labels.shape[0]), int(labels.shape[1])),
    )
    if segmentation is not None:
        data.segmentation = _plain_record(segmentation)
    return validate_graph(data, source)


def _plain_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``record`` with only plain values (what ``torch.load(weights_only=True)`` reads back).

    Raises:
        ConfigError: naming the first key whose value is not plain (a numpy scalar, an array...).
    """

    def plain(value: Any) -> bool:
        if value is None or type(value) in (str, int, float, bool):
            return True
        return type(value) in (list, tuple) and all(plain(v) for v in value)

    out = {}
    for key, value in record.items():
        if not (isinstance(key, str) and plain(value)):
            raise ConfigError(f"segmentation.{key}", f"record values must be plain str/int/float/bool/None "
                              f"or lists of them, got {type(value).__name__}")
        out[key] = list(value) if isinstance(value, tuple) else value
    return out
