"""calcium_gnn: calcium-imaging movies of cell cultures to cell graphs, and the physics of calcium
flow between neighbouring cells (the consensus ODE of Poggi et al., 2025, eqs. 1-3).

Main entry points (imported lazily, so ``import calcium_gnn`` stays fast):

- :func:`movie_to_graph`: a movie (path or array) -> a PyG ``Data`` cell graph;
- :func:`fit_crlsm`: the paper's constrained regularised least squares on a cell graph;
- :func:`make_culture`: a synthetic culture with known ground truth.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "movie_to_graph": "calcium_gnn.pipeline",
    "fit_crlsm": "calcium_gnn.physics.least_squares",
    "make_culture": "calcium_gnn.data.synthetic",
    "truth_graph": "calcium_gnn.data.synthetic",
    "load_graph": "calcium_gnn.io.graph_files",
    "save_graph": "calcium_gnn.io.graph_files",
    "validate_graph": "calcium_gnn.io.graph_schema",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'calcium_gnn' has no attribute {name!r}")
