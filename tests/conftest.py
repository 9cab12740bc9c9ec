"""Shared fixtures: a small rendered synthetic culture and its true cell graph (cheap, session-wide).

``small_culture``: 24 cells in 160 x 160 px, 80 frames of 10 s, rendered movie (seed 7).
``small_truth_graph``: ``truth_graph(small_culture, noise=0.0)`` (schema of ``calcium_gnn.io.graph_schema``).
``device``: ``cpu`` and, where present, ``cuda``.
``load_script``: ``load_script("name")`` imports ``scripts/name.py`` (the scripts are not a package).
Treat the culture and graph as read-only: they are shared by every test of the session.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
import torch

from calcium_gnn.data.synthetic import SyntheticCulture, make_culture, truth_graph

SMALL_CULTURE = {"seed": 7, "n_cells": 24, "size": 160, "n_frames": 80}
#: every device the suite runs the solver, layer, simulator and model tests on (CI: the CPU only)
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


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


@pytest.fixture(scope="session")
def load_script() -> Callable[[str], ModuleType]:
    """``load_script(name)``: ``scripts/<name>.py`` imported as a module named ``<name>_script``."""

    def load(name: str) -> ModuleType:
        spec = importlib.util.spec_from_file_location(f"{name}_script", SCRIPTS / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
