"""The three figures are written as real PNG images of the expected size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.image import imread

from calcium_gnn.graphs.build import build_graph
from calcium_gnn.graphs.geometry import cell_polygons
from calcium_gnn.graphs.plots import plot_graph_over_image, plot_outlines, plot_polygons_intensity


def test_figures_are_written(tmp_path: Path) -> None:
    labels = np.zeros((40, 60), dtype=np.int32)
    labels[:, :20] = 1
    labels[:, 21:40] = 2
    labels[5:35, 41:] = 3
    traces = np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]])
    data = build_graph(labels, traces, dt=1.0)
    reference = np.random.default_rng(0).random((40, 60))
    out = [
        plot_outlines(reference, labels, tmp_path / "outlines.png"),
        plot_polygons_intensity(data, cell_polygons(labels), tmp_path / "cells.png", frame=1),
        plot_graph_over_image(data, reference, tmp_path / "graph.png", frame=99),
    ]
    for path in out:
        image = imread(path)
        assert image.ndim == 3 and image.shape[0] > 50 and image.shape[1] > 50
        assert image[..., :3].std() > 0.01  # not a blank canvas
