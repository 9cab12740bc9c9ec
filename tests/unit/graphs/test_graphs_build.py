"""The cell graph built from a label image and traces follows the schema; values by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from calcium_gnn.errors import ConfigError, MasksError, MovieError
from calcium_gnn.graphs.build import build_graph
from calcium_gnn.io.graph_schema import validate_graph


def _three_in_a_row() -> np.ndarray:
    """12 x 30: cells 1, 2, 5 side by side, 10 columns each (centroids x = 4.5, 14.5, 24.5)."""
    labels = np.zeros((12, 30), dtype=np.int32)
    labels[:, :10] = 1
    labels[:, 10:20] = 2
    labels[:, 20:] = 5
    return labels


def test_path_graph_of_three_cells() -> None:
    traces = np.arange(12, dtype=np.float64).reshape(3, 4)
    data = build_graph(_three_in_a_row(), traces, dt=10.0, max_gap=0)
    assert data.edge_index.tolist() == [[0, 1, 1, 2], [1, 0, 2, 1]]
    assert data.x.dtype == torch.float32 and data.x.tolist() == traces.tolist()
    assert data.t.tolist() == [0.0, 10.0, 20.0, 30.0]
    assert data.cell_id.tolist() == [1, 2, 5]
    assert data.pos.tolist() == [[4.5, 5.5], [14.5, 5.5], [24.5, 5.5]]
    np.testing.assert_allclose(data.u.numpy(), 10.0)
    expected_l = math.pi / 8 * (12 + 2 * 11 / math.sqrt(2))
    np.testing.assert_allclose(data.l.numpy(), expected_l, rtol=1e-6)
    np.testing.assert_allclose(data.edge_attr.numpy()[:, 0], 10.0 * expected_l, rtol=1e-6)
    assert data.area.tolist() == [120.0, 120.0, 120.0]
    assert data.touches_edge.tolist() == [True, True, True]
    assert data.dt == 10.0 and data.unit == "px" and math.isnan(data.pixel_size)


def test_pixel_size_converts_lengths_and_areas_to_micrometres() -> None:
    data = build_graph(_three_in_a_row(), np.zeros((3, 2)), dt=1.0, pixel_size=0.5, max_gap=0)
    assert data.unit == "um" and data.pixel_size == 0.5
    np.testing.assert_allclose(data.u.numpy(), 5.0)
    np.testing.assert_allclose(data.area.numpy(), 30.0)
    assert data.pos.tolist()[0] == [4.5, 5.5]  # positions stay in pixels (schema)


def test_threshold_is_in_pixels_even_with_a_pixel_size() -> None:
    labels = _three_in_a_row()[:4]  # borders of ~3.6 px
    assert build_graph(labels, np.zeros((3, 2)), dt=1.0, max_gap=0).edge_index.shape[1] == 0
    assert build_graph(labels, np.zeros((3, 2)), dt=1.0, max_gap=0, min_shared_border=3.0,
                       pixel_size=10.0).edge_index.shape[1] == 4


def test_errors_name_their_culprit() -> None:
    labels = _three_in_a_row()
    with pytest.raises(MasksError, match="^m.tif: no cells found"):
        build_graph(np.zeros((5, 5), dtype=np.int32), np.zeros((0, 3)), dt=1.0, source="m.tif")
    with pytest.raises(MovieError, match=r"^traces: traces must have shape \(N=3, T\)"):
        build_graph(labels, np.zeros((2, 3)), dt=1.0)
    with pytest.raises(MovieError, match="NaN"):
        build_graph(labels, np.full((3, 3), np.nan), dt=1.0)
    with pytest.raises(ConfigError, match="^dt: "):
        build_graph(labels, np.zeros((3, 3)), dt=0.0)
    with pytest.raises(ConfigError, match="^pixel_size: "):
        build_graph(labels, np.zeros((3, 3)), dt=1.0, pixel_size=-1.0)


def test_segmentation_record_is_kept_and_survives_the_graph_file(tmp_path) -> None:
    from calcium_gnn.io.graph_files import load_graph, save_graph

    record = {"backend": "watershed", "preset": "auto", "membranes": "bright", "diameter": 22.1,
              "auto_decided": ("membranes", "diameter"), "trial_cells": [108, 102], "min_area": 38.5,
              "boundary_contrast_dark": None, "n_cells_kept": 97}
    data = build_graph(_three_in_a_row(), np.zeros((3, 2)), dt=1.0, segmentation=record)
    assert data.segmentation == {**record, "auto_decided": ["membranes", "diameter"]}
    loaded = load_graph(save_graph(data, tmp_path / "graph.pt"))  # torch.load(weights_only=True)
    assert loaded.segmentation == data.segmentation
    assert "segmentation" not in build_graph(_three_in_a_row(), np.zeros((3, 2)), dt=1.0)
    with pytest.raises(ConfigError, match=r"^segmentation\.diameter: record values must be plain"):
        build_graph(_three_in_a_row(), np.zeros((3, 2)), dt=1.0, segmentation={"diameter": np.float32(2)})


label_images = arrays(np.int32, st.tuples(st.integers(3, 14), st.integers(3, 14)), elements=st.integers(0, 6))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(labels=label_images, max_gap=st.sampled_from([0, 1, 2]), threshold=st.sampled_from([0.0, 1.0, 5.0]))
def test_random_label_images_give_symmetric_simple_graphs(labels: np.ndarray, max_gap: int,
                                                           threshold: float) -> None:
    n = np.unique(labels[labels > 0]).size
    if n == 0:
        with pytest.raises(MasksError):
            build_graph(labels, np.zeros((0, 2)), dt=1.0)
        return
    data = build_graph(labels, np.zeros((n, 2)), dt=1.0, max_gap=max_gap, min_shared_border=threshold)
    validate_graph(data)
    ei = data.edge_index
    assert not bool((ei[0] == ei[1]).any())
    pairs = set(map(tuple, ei.t().tolist()))
    assert len(pairs) == ei.shape[1]
    assert all((b, a) in pairs for a, b in pairs)
    # u and l are the same in both directions
    edges = map(tuple, ei.t().tolist())
    lookup = {p: (float(u), float(l)) for p, u, l in zip(edges, data.u, data.l, strict=True)}
    assert all(lookup[(a, b)] == lookup[(b, a)] for a, b in pairs)
    assert bool((data.l >= threshold).all()) and bool((data.u >= 0).all())
