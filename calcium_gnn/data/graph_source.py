"""A run's cell graph and what it came from (:class:`CellGraphSource`), shared by every route of
:mod:`calcium_gnn.data.sources` and :mod:`calcium_gnn.data.lab_inputs`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch_geometric.data import Data

__all__ = ["CellGraphSource"]


@dataclass
class CellGraphSource:
    """A run's cell graph and what it came from.

    Attributes:
        data: the cell graph (schema: ``calcium_gnn.io.graph_schema``).
        labels: the label image (Y, X) the graph was built from, when known (for maps).
        origin: a one-line description (a path, or the synthetic culture's parameters).
    """

    data: Data
    labels: np.ndarray | None
    origin: str
