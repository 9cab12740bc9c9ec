"""The cell-graph schema: what every ``torch_geometric.data.Data`` cell graph carries.

Other tools (and every model here) rely on these fields; :func:`validate_graph` checks them. It is
also the contract of the ``graph.pt`` file (:mod:`calcium_gnn.io.graph_files` checks every graph it
saves or loads), so it lives in ``io``, the bottom layer, where the graph builder
(:mod:`calcium_gnn.graphs.build`), the synthetic cultures and the evaluation can all import it.

================  ============  =========================================================
field             shape/type    meaning
================  ============  =========================================================
``x``             (N, T) float  calcium level of each cell at each frame (mean intensity)
``t``             (T,) float    frame times in seconds, strictly increasing
``pos``           (N, 2) float  cell centroids (x, y) in pixels
``edge_index``    (2, E) long   adjacency, both directions, no self loops, no duplicates
``edge_attr``     (E, 1) float  ``u * l``, the paper's edge weight before normalisation
``u``             (E,) float    centroid distance u_ij (in ``unit``)
``l``             (E,) float    shared border length l_ij (in ``unit``)
``area``          (N,) float    cell area (in ``unit``**2)
``touches_edge``  (N,) bool     the cell touches the image border
``cell_id``       (N,) long     the cell's value in the label image (>= 1)
``dt``            float         frame interval in seconds
``pixel_size``    float         micrometres per pixel, or NaN when unknown
``unit``          str           ``"px"`` or ``"um"``: the unit of ``u``, ``l``, ``area``
================  ============  =========================================================

Optional: ``image_shape`` (height, width) of the label image in pixels (setups II and III place
their disc / rectangle in it; without it they use the centroids' bounding box).

Optional ground-truth fields (synthetic cultures): ``truth_k`` (float), ``truth_gamma`` (N,)
(NaN for driver cells), ``truth_edge_weight_scale`` (float), ``truth_x`` (N, T) clean traces,
``is_driver`` (N,) bool (cells with prescribed levels; ``setup.drivers=is_driver`` keeps them out
of the modelled group); zoo members (:mod:`calcium_gnn.data.zoo`) add ``truth_driver_kind`` (N,)
long, ``truth_law`` (``"linear"`` / ``"leak"`` / a nonlinear law of
:mod:`calcium_gnn.data.zoo_laws`), ``truth_law_constants`` (dict, that law's constants),
``truth_leak``, ``truth_leak_baseline``, ``truth_noise`` and ``zoo_id``, ``zoo_family``,
``zoo_signal``.

``segmentation`` (dict of plain values, graphs built from a movie): how the label image was made
(backend, options, what ``preset="auto"`` decided, ``min_area``; :mod:`calcium_gnn.pipeline`).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch_geometric.data import Data

from calcium_gnn.errors import GraphError

REQUIRED_TENSORS: dict[str, int] = {
    "x": 2,
    "t": 1,
    "pos": 2,
    "edge_index": 2,
    "edge_attr": 2,
    "u": 1,
    "l": 1,
    "area": 1,
    "touches_edge": 1,
    "cell_id": 1,
}
REQUIRED_SCALARS: tuple[str, ...] = ("dt", "pixel_size", "unit")


def validate_graph(data: Data, source: str | Path | None = None) -> Data:
    """Check that ``data`` follows the cell-graph schema; return it unchanged.

    Args:
        data: the graph to check.
        source: where it came from (a file path), named in the error message.

    Raises:
        GraphError: naming ``source`` and the first field that breaks the schema.
    """
    where = source if source is not None else "graph"
    if not isinstance(data, Data):
        raise GraphError(where, f"expected a torch_geometric Data cell graph, got {type(data).__name__}")
    for name, ndim in REQUIRED_TENSORS.items():
        value = getattr(data, name, None)
        if value is None:
            raise GraphError(where, f"missing schema field '{name}'")
        if not torch.is_tensor(value) or value.dim() != ndim:
            raise GraphError(where, f"field '{name}' must be a {ndim}-D tensor")
    for name in REQUIRED_SCALARS:
        if getattr(data, name, None) is None:
            raise GraphError(where, f"missing schema field '{name}'")
    n, t = data.x.shape
    e = data.edge_index.shape[1]
    checks = [
        (data.t.shape == (t,), f"'t' must have shape ({t},) to match x (N, T) = {tuple(data.x.shape)}"),
        (data.pos.shape == (n, 2), f"'pos' must have shape ({n}, 2)"),
        (data.edge_index.shape[0] == 2, "'edge_index' must have shape (2, E)"),
        (data.edge_attr.shape == (e, 1), f"'edge_attr' must have shape ({e}, 1)"),
        (data.u.shape == (e,) and data.l.shape == (e,), f"'u' and 'l' must have shape ({e},)"),
        (data.area.shape == (n,), f"'area' must have shape ({n},)"),
        (data.touches_edge.shape == (n,), f"'touches_edge' must have shape ({n},)"),
        (data.cell_id.shape == (n,), f"'cell_id' must have shape ({n},)"),
        (bool(torch.isfinite(data.x).all()), "'x' holds NaN or Inf values"),
        (t < 2 or bool((data.t[1:] > data.t[:-1]).all()), "'t' must be strictly increasing"),
        (float(data.dt) > 0 and math.isfinite(float(data.dt)), "'dt' must be a positive number"),
        (data.unit in ("px", "um"), "'unit' must be 'px' or 'um'"),
    ]
    for ok, problem in checks:
        if not ok:
            raise GraphError(where, problem)
    if e:
        ei = data.edge_index
        if int(ei.min()) < 0 or int(ei.max()) >= n:
            raise GraphError(where, f"'edge_index' refers to nodes outside 0..{n - 1}")
        if bool((ei[0] == ei[1]).any()):
            raise GraphError(where, "'edge_index' has self loops")
        key = ei[0] * n + ei[1]
        if key.unique().numel() != e:
            raise GraphError(where, "'edge_index' has duplicate edges")
        rev = ei[1] * n + ei[0]
        if not bool(torch.isin(rev, key).all()):
            raise GraphError(where, "'edge_index' is not symmetric (every edge needs both directions)")
    return data
