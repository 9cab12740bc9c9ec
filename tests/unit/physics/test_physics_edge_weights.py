"""Edge-weight normalisation w = u*l / s and the coupling rate c_i."""

from __future__ import annotations

import pytest
import torch

from calcium_gnn.errors import ConfigError, GraphError
from calcium_gnn.physics.edge_weights import coupling_rate, edge_weights

# path 0-1-2 with u*l = 2 (0-1) and 6 (1-2), both directions
EDGE_INDEX = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])
UL = torch.tensor([[2.0], [2.0], [6.0], [6.0]])


def test_edge_weights_mean_scale():
    w, s = edge_weights(UL)
    assert s == pytest.approx(4.0)
    torch.testing.assert_close(w, torch.tensor([0.5, 0.5, 1.5, 1.5]))
    assert float(w.mean()) == pytest.approx(1.0)


def test_edge_weights_given_scale_and_flat_input():
    w, s = edge_weights(UL.reshape(-1), scale=2.0)
    assert s == 2.0
    torch.testing.assert_close(w, torch.tensor([1.0, 1.0, 3.0, 3.0]))


@pytest.mark.parametrize("scale", [0.0, -1.0, float("nan"), "median", "abc"])
def test_edge_weights_rejects_bad_scale(scale):
    with pytest.raises(ConfigError, match="edge_weight_scale"):
        edge_weights(UL, scale=scale)


def test_edge_weights_rejects_bad_graphs():
    with pytest.raises(GraphError):
        edge_weights(torch.zeros(0, 1))
    with pytest.raises(GraphError):
        edge_weights(torch.tensor([[1.0], [-1.0]]))
    with pytest.raises(GraphError):
        edge_weights(torch.zeros(3, 1))


def test_coupling_rate_by_hand_and_scale_invariance():
    w, _ = edge_weights(UL)
    c = coupling_rate(0.1, w, EDGE_INDEX, 3)
    # node 0: 0.1 * 0.5 / 1; node 1: 0.1 * (0.5 + 1.5) / 2; node 2: 0.1 * 1.5 / 1
    torch.testing.assert_close(c, torch.tensor([0.05, 0.1, 0.15]))
    w2, s2 = edge_weights(UL, scale=1.0)
    # the same physics (k/s fixed) gives the same coupling rate under another scale
    torch.testing.assert_close(coupling_rate(0.1 * s2 / 4.0, w2, EDGE_INDEX, 3), c)
    isolated = coupling_rate(0.1, w, EDGE_INDEX, 4)
    assert float(isolated[3]) == 0.0
