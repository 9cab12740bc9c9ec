"""Figures are written as non-empty PNGs; the label painting is exact."""

from __future__ import annotations

import numpy as np
import pytest

from calcium_gnn.errors import MasksError
from calcium_gnn.evaluation.figures import _paint_labels, plot_error_map, plot_parameters, plot_traces

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _is_png(path) -> bool:
    return path.exists() and path.stat().st_size > 1000 and path.read_bytes()[:8] == PNG_MAGIC


def test_paint_labels_by_hand():
    labels = np.array([[0, 3, 3], [1, 1, 0]])
    painted = _paint_labels(labels, np.array([1, 3]), np.array([0.5, 2.0]))
    expected = np.array([[np.nan, 2.0, 2.0], [0.5, 0.5, np.nan]])
    np.testing.assert_array_equal(painted, expected)
    with pytest.raises(MasksError, match="^labels:"):
        _paint_labels(labels.astype(float), np.array([1, 3]), np.array([0.5, 2.0]))


@pytest.mark.parametrize("with_labels", [True, False])
def test_error_map(grid_graph, grid_label_image, tmp_path, with_labels):
    mod = ~grid_graph.touches_edge.numpy()
    path = plot_error_map(
        tmp_path / "map.png", np.linspace(0, 1, 16), grid_graph.pos.numpy(), grid_graph.cell_id.numpy(), mod,
        ~mod, labels=grid_label_image if with_labels else None, resolution=80,
    )
    assert _is_png(path)


def test_traces_and_parameters(grid_graph, tmp_path):
    x = grid_graph.x.numpy()
    traces = plot_traces(tmp_path / "sub" / "traces.png", grid_graph.t.numpy(), x, x + 0.01, [5, 6],
                         grid_graph.cell_id.numpy(), slice(0, 30), slice(30, 61),
                         mse={5: {"train": 1e-4, "test": None}}, truth=grid_graph.truth_x.numpy())
    assert _is_png(traces)
    mod = ~grid_graph.touches_edge.numpy()
    params = plot_parameters(tmp_path / "params.png", np.linspace(0, 0.01, 16), mod, 0.05, truth_k=0.05,
                             truth_gamma=grid_graph.truth_gamma.numpy())
    assert _is_png(params)


def test_the_learned_message_figure_gains_a_node_term_panel(tmp_path):
    """With a node term the figure has a third panel (nu against the level, its line and the true leak's)
    and the title names what the node term learned; without one it keeps two panels."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    from calcium_gnn.evaluation.model_figures import plot_learned_message
    from calcium_gnn.inference.learned_law import LearnedLaw, MessageSamples, node_term_summary

    rng = np.random.default_rng(0)
    delta, source = rng.normal(0.0, 0.3, 500), rng.uniform(0.2, 1.5, 500)
    samples = MessageSamples(delta, source, 0.02 * delta, 0.02 * delta, "leak", 0.021)
    level = rng.uniform(0.0, 2.0, 500)
    node = node_term_summary(level, 0.001 - 0.005 * level, 1.0, effective_k=0.02, true_leak_rate=0.006)
    created = []
    original = plt.subplots

    def spy(*args, **kwargs):
        created.append(args)
        return original(*args, **kwargs)

    plt.subplots = spy
    try:
        with_node = plot_learned_message(LearnedLaw.from_samples(samples, node), tmp_path / "node.png")
        without = plot_learned_message(LearnedLaw.from_samples(samples), tmp_path / "plain.png")
    finally:
        plt.subplots = original
    assert _is_png(with_node) and _is_png(without)
    assert created == [(1, 3), (1, 2)]
    assert node.law == "leak" and node.leak_rate == pytest.approx(0.005)
