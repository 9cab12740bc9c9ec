"""CouplingConv: the linear law at initialisation, zero flux between equal levels, dense reference."""

from __future__ import annotations

import pytest
import torch

from calcium_gnn.errors import GraphError
from calcium_gnn.nn.consensus import ConsensusConv
from calcium_gnn.nn.coupling import CouplingConv, normalised_edge_features

# 4-node path 0-1-2-3, both directions
EDGE_INDEX = torch.tensor([[0, 1, 1, 2, 2, 3], [1, 0, 2, 1, 3, 2]])
W = torch.tensor([1.0, 1.0, 2.0, 2.0, 0.5, 0.5], dtype=torch.float64)
U = torch.tensor([10.0, 10.0, 20.0, 20.0, 30.0, 30.0])
LEN = torch.tensor([5.0, 5.0, 5.0, 5.0, 10.0, 10.0])


def _layer() -> CouplingConv:
    return CouplingConv(4, normalised_edge_features(U, LEN), k_init=0.02, gamma_init=1e-3).double()


def test_normalised_edge_features_by_hand() -> None:
    f = normalised_edge_features(U, LEN)
    assert torch.allclose(f[:, 0], U.double() / 20.0)
    assert torch.allclose(f[:, 1], LEN.double() / (40.0 / 6.0))


def test_initial_layer_is_the_linear_law() -> None:
    y = torch.tensor([[0.1, 0.5], [0.4, 0.2], [0.9, 0.3], [0.2, 0.8]], dtype=torch.float64)
    lin = ConsensusConv(4, k_init=0.02, gamma_init=1e-3).double()
    out = _layer()(y, y, EDGE_INDEX, W)
    assert torch.allclose(out, lin(y, y, EDGE_INDEX, W), atol=1e-15)
    # dense reference for node 1 (neighbours 0 and 2): k/2 * (1*(0.1-0.4) + 2*(0.9-0.4)) + gamma
    assert float(out[1, 0]) == pytest.approx(0.02 / 2 * (-0.3 + 1.0) + 1e-3)


def test_zero_flux_between_equal_levels_for_any_mlp() -> None:
    layer = _layer()
    torch.manual_seed(0)
    with torch.no_grad():
        for p in layer.phi.parameters():
            p.normal_()
    y = torch.full((4, 3), 0.7, dtype=torch.float64)
    out = layer(y, y, EDGE_INDEX, W)
    assert torch.allclose(out, torch.full_like(out, 1e-3), atol=1e-15)
    # and it is no longer linear away from equal levels
    y2 = y.clone()
    y2[0] = 1.5
    lin = ConsensusConv(4, k_init=0.02, gamma_init=1e-3).double()
    assert not torch.allclose(layer(y2, y2, EDGE_INDEX, W), lin(y2, y2, EDGE_INDEX, W))


def test_gradients_reach_the_mlp_output_layer() -> None:
    layer = _layer()
    y = torch.tensor([[0.1], [0.4], [0.9], [0.2]], dtype=torch.float64)
    layer(y, y, EDGE_INDEX, W).sum().backward()
    assert float(layer.phi.output.weight.grad.abs().sum()) > 0


def test_wrong_edge_features_are_graph_errors() -> None:
    with pytest.raises(GraphError, match="edge_features"):
        CouplingConv(4, torch.zeros(6, 3))
    layer = _layer()
    y = torch.zeros(4, 1, dtype=torch.float64)
    with pytest.raises(GraphError, match="edge_index"):
        layer(y, y, EDGE_INDEX[:, :4], W[:4])


def test_the_simulation_scope_computes_phi_at_zero_once_with_the_same_result_and_gradients() -> None:
    layer = _layer()
    torch.manual_seed(1)
    with torch.no_grad():
        for p in layer.phi.parameters():
            p.normal_()
    y = torch.tensor([[0.1, 0.5], [0.4, 0.2], [0.9, 0.3], [0.2, 0.8]], dtype=torch.float64)
    plain = layer(y, y, EDGE_INDEX, W)
    grad_plain = torch.autograd.grad(plain.pow(2).sum(), list(layer.phi.parameters()))
    with layer.simulation(torch.float64):
        assert layer.phi_at_zero.shape == (6, 1)
        scoped = layer(y, y, EDGE_INDEX, W) + layer(2 * y, 2 * y, EDGE_INDEX, W) * 0  # two stages
        grad_scoped = torch.autograd.grad(scoped.pow(2).sum(), list(layer.phi.parameters()))
    assert layer.phi_at_zero is None  # nothing kept after the simulation (device contract)
    assert torch.allclose(scoped, plain, atol=1e-15)
    assert all(torch.allclose(a, b, atol=1e-13) for a, b in zip(grad_plain, grad_scoped, strict=True))
    with pytest.raises(RuntimeError, match="boom"), layer.simulation(torch.float64):
        raise RuntimeError("boom")
    assert layer.phi_at_zero is None and "phi_at_zero" not in layer.state_dict()


def test_a_source_level_coupling_keeps_zero_flux_and_sees_the_sending_level() -> None:
    layer = CouplingConv(4, normalised_edge_features(U, LEN), k_init=0.02, gamma_init=1e-3,
                         source_level=True).double()
    assert layer.phi.hidden[0].in_features == 4
    torch.manual_seed(2)
    with torch.no_grad():
        for p in layer.phi.parameters():
            p.normal_()
    for level in (0.2, 0.9):  # equal levels: only the feed, whatever the level
        y = torch.full((4, 1), level, dtype=torch.float64)
        assert torch.allclose(layer(y, y, EDGE_INDEX, W), torch.full((4, 1), 1e-3, dtype=torch.float64),
                              atol=1e-15)
    # the same differences at another level: another message (a level-dependent conductance)
    low = torch.tensor([[0.1], [0.3], [0.5], [0.7]], dtype=torch.float64)
    assert not torch.allclose(layer(low, low, EDGE_INDEX, W), layer(low + 0.5, low + 0.5, EDGE_INDEX, W))
    with layer.simulation(torch.float64):
        assert layer.phi_at_zero is None
        inside = layer(low, low, EDGE_INDEX, W)
    assert torch.allclose(inside, layer(low, low, EDGE_INDEX, W), atol=1e-15)
