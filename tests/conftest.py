"""Shared fixtures: a small rendered synthetic culture and its true cell graph (cheap, session-wide).

``small_culture``: 24 cells in 160 x 160 px, 80 frames of 10 s, rendered movie (seed 7).
``small_truth_graph``: ``truth_graph(small_culture, noise=0.0)`` (schema of ``calcium_gnn.io.graph_schema``).
``device``: ``cpu`` and, where present, ``cuda``.
Treat both as read-only: they are shared by every test of the session.
"""

from __future__ import annotations

import pytest
import torch

from calcium_gnn.data.synthetic import SyntheticCulture, make_culture, truth_graph

SMALL_CULTURE = {"seed": 7, "n_cells": 24, "size": 160, "n_frames": 80}
#: every device the suite runs the solver, layer, simulator and model tests on (CI: the CPU only)
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request) -> torch.device:
    """Each available device in turn (PyG's way of running a layer's tests everywhere)."""
    return torch.device(request.param)


@pytest.fixture(scope="session")
def small_culture() -> SyntheticCulture:
    return make_culture(**SMALL_CULTURE, render=True)


@pytest.fixture(scope="session")
def small_truth_graph(small_culture):
    return truth_graph(small_culture, noise=0.0)
