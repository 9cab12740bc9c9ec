"""Figures of a cell graph: outlines on the reference image, polygons coloured by intensity (paper
Fig. 6), and the graph drawn over the image (paper Fig. 7).

Every function draws on a fresh ``matplotlib.figure.Figure`` with the Agg canvas (no pyplot state,
no display needed) and writes one image file. Coordinates are pixels, ``(x, y)`` = (column, row),
with y pointing down as in the image.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import shapely
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection, PatchCollection
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.patches import Polygon as PolygonPatch
from skimage.segmentation import find_boundaries
from torch_geometric.data import Data

from calcium_gnn.io.figure_files import save_figure as _save

__all__ = ["plot_outlines", "plot_polygons_intensity", "plot_graph_over_image"]


def _figure(shape: tuple[int, int], inches: float) -> tuple[Figure, object]:
    y, x = shape
    fig = Figure(figsize=(inches, inches * y / max(x, 1) + 0.4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.set_xlim(-0.5, x - 0.5)
    ax.set_ylim(y - 0.5, -0.5)
    ax.set_aspect("equal")
    return fig, ax


def plot_outlines(
    reference: np.ndarray,
    labels: np.ndarray,
    path: str | Path,
    *,
    outline_color: str = "yellow",
    inches: float = 7.0,
    dpi: int = 120,
) -> Path:
    """The reference image (Y, X) in grey with the outline of every cell of ``labels`` (Y, X)."""
    fig, ax = _figure(labels.shape, inches)
    ax.imshow(reference, cmap="gray", interpolation="nearest")
    edges = find_boundaries(labels, mode="inner") & (labels > 0)
    overlay = np.zeros((*labels.shape, 4))
    overlay[edges] = (*to_rgb(outline_color), 1.0)
    ax.imshow(overlay, interpolation="nearest")
    ax.set_title(f"{int(np.unique(labels[labels > 0]).size)} cells")
    ax.set_axis_off()
    return _save(fig, path, dpi)


def _patches(geom: shapely.Geometry) -> list[PolygonPatch]:
    parts = geom.geoms if hasattr(geom, "geoms") else [geom]
    return [PolygonPatch(np.asarray(p.exterior.coords), closed=True) for p in parts if not p.is_empty]


def plot_polygons_intensity(
    data: Data,
    polygons: Sequence[shapely.Geometry],
    path: str | Path,
    *,
    frame: int = 10,
    shape: tuple[int, int] | None = None,
    cmap: str = "viridis",
    inches: float = 7.0,
    dpi: int = 120,
) -> Path:
    """The cell polygons coloured by their mean intensity ``x[:, frame]`` (paper Fig. 6).

    Args:
        data: the cell graph (``x`` (N, T)).
        polygons: N geometries, row ``i`` = node ``i``.
        path: image file to write.
        frame: the time step shown (paper: 10); clipped to the last frame.
        shape: (Y, X) of the image (default: the polygons' extent).
    """
    frame = int(min(max(frame, 0), data.x.shape[1] - 1))
    values = data.x[:, frame].numpy()
    if shape is None:
        bounds = shapely.total_bounds(np.asarray(polygons, dtype=object))
        shape = (int(np.ceil(bounds[3] + 0.5)), int(np.ceil(bounds[2] + 0.5)))
    fig, ax = _figure(shape, inches)
    patches, colours = [], []
    for geom, value in zip(polygons, values, strict=True):
        pieces = _patches(geom)
        patches.extend(pieces)
        colours.extend([value] * len(pieces))
    collection = PatchCollection(patches, cmap=cmap, edgecolor="black", linewidth=0.4)
    collection.set_array(np.asarray(colours))
    ax.add_collection(collection)
    fig.colorbar(collection, ax=ax, label="mean intensity", shrink=0.8)
    ax.set_title(f"cells coloured by intensity, frame {frame} (t = {float(data.t[frame]):g} s)")
    return _save(fig, path, dpi)


def plot_graph_over_image(
    data: Data,
    reference: np.ndarray,
    path: str | Path,
    *,
    frame: int = 10,
    cmap: str = "viridis",
    edge_color: str = "white",
    inches: float = 7.0,
    dpi: int = 120,
) -> Path:
    """The graph over the reference image (paper Fig. 7): nodes at the centroids coloured by
    ``x[:, frame]``, edges drawn with width proportional to ``u_ij * l_ij``."""
    frame = int(min(max(frame, 0), data.x.shape[1] - 1))
    fig, ax = _figure(reference.shape, inches)
    ax.imshow(reference, cmap="gray", interpolation="nearest")
    pos = data.pos.numpy()
    ei = data.edge_index.numpy()
    once = ei[0] < ei[1]
    if once.any():
        weight = data.edge_attr[:, 0].numpy()[once]
        width = 0.5 + 2.0 * weight / max(float(weight.max()), 1e-12)
        segments = np.stack([pos[ei[0, once]], pos[ei[1, once]]], axis=1)
        ax.add_collection(LineCollection(segments, colors=edge_color, linewidths=width, alpha=0.8))
    points = ax.scatter(pos[:, 0], pos[:, 1], c=data.x[:, frame].numpy(), cmap=cmap, s=25,
                        edgecolors="black", linewidths=0.4, zorder=3)
    fig.colorbar(points, ax=ax, label="mean intensity", shrink=0.8)
    ax.set_title(f"{pos.shape[0]} cells, {int(once.sum())} edges, frame {frame}")
    ax.set_axis_off()
    return _save(fig, path, dpi)
