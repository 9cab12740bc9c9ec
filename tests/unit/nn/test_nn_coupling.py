"""CouplingConv: the linear law at initialisation, zero flux between equal levels, dense reference."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

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


def _conductance_layer(**options) -> CouplingConv:
    return CouplingConv(4, normalised_edge_features(U, LEN), k_init=0.02, gamma_init=1e-3, source_level=True,
                        message_form="conductance", **options).double()


def _randomise(layer: CouplingConv, seed: int, scale: float = 3.0) -> None:
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in layer.phi.parameters():
            p.normal_(0.0, scale)


def test_the_conductance_form_starts_at_the_linear_law() -> None:
    y = torch.tensor([[0.1, 0.5], [0.4, 0.2], [0.9, 0.3], [0.2, 0.8]], dtype=torch.float64)
    lin = ConsensusConv(4, k_init=0.02, gamma_init=1e-3).double()
    layer = _conductance_layer(level_center=0.4, level_scale=0.3, conductance_gain=30.0)
    assert torch.allclose(layer(y, y, EDGE_INDEX, W), lin(y, y, EDGE_INDEX, W), atol=1e-15)
    assert torch.allclose(layer.conductance(y[EDGE_INDEX[0]] - y[EDGE_INDEX[1]], y[EDGE_INDEX[0]]),
                          torch.ones(6, 2, dtype=torch.float64), atol=1e-15)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_learned_conductance_is_positive_so_calcium_flows_down_its_gradient(seed: int) -> None:
    """Whatever the weights: c > 0, the flux per weight has the sign of Delta (zero at Delta = 0), and
    flux_per_weight is the message divided by its weight."""
    layer = _conductance_layer(conductance_gain=30.0)
    _randomise(layer, seed)
    gen = torch.Generator().manual_seed(seed)
    y = torch.rand(4, 50, generator=gen, dtype=torch.float64) * 4 - 2
    src, dst = EDGE_INDEX
    delta, source = y[src] - y[dst], y[src]
    c = layer.conductance(delta, source)
    assert bool((c > 0).all()) and float(c.max() / c.min()) > 10  # positive, and far from constant
    edges = torch.arange(6).repeat_interleave(50)
    q = layer.flux_per_weight(delta.reshape(-1), source.reshape(-1), edges, W[edges])
    assert bool((q * delta.reshape(-1) >= 0).all())
    message = layer.message(y[dst], y[src], W)
    assert torch.allclose(q, layer.k * (message / W.unsqueeze(-1)).reshape(-1), rtol=1e-12, atol=1e-18)
    equal = torch.full((4, 3), 0.7, dtype=torch.float64)
    assert torch.allclose(layer(equal, equal, EDGE_INDEX, W), torch.full((4, 3), 1e-3, dtype=torch.float64),
                          atol=1e-15)


def _driven_path(form: str, seed: int) -> Tensor:
    """Levels (2, T) of the inner cells of the path driven at both ends (drivers in [-1, 1], start
    +-0.9, no feeds) under a random network of the given message form, RK4 at h rho <= 1."""
    from calcium_gnn.physics.simulate import integrate

    layer = CouplingConv(4, normalised_edge_features(U, LEN), k_bounds=(1e-3, 10.0), k_init=1.0,
                         gamma_init=0.0, source_level=True, message_form=form, conductance_gain=3.0).double()
    _randomise(layer, seed, scale=1.0)
    t = torch.arange(40, dtype=torch.float64)
    x = torch.zeros(4, 40, dtype=torch.float64)
    x[0] = torch.sin(t / 3)
    x[3] = 0.5 * torch.cos(t / 5)
    modelled = torch.tensor([False, True, True, False])
    y0 = torch.tensor([0.0, 0.9, -0.9, 0.0], dtype=torch.float64)
    grid = torch.linspace(-2, 2, 41, dtype=torch.float64)
    with torch.no_grad():
        c = layer.conductance(grid.reshape(1, -1).expand(6, -1), grid[:6].reshape(-1, 1).expand(-1, 41))
        assert float(c.max() / c.min()) > 5  # strongly level-dependent
        substeps = int(float(layer.k) * float(c.max()) * float(W.max())) + 10  # h rho <= 1 (Gershgorin)
        sim = integrate(layer, x, t, EDGE_INDEX, W, modelled, layer.k, layer.gamma, y0=y0, substeps=substeps)
    return sim[1:3]


@pytest.mark.parametrize("seed", [0, 2, 4])
def test_no_learned_conductance_lets_the_levels_leave_the_drivers_range(seed: int) -> None:
    """The maximum principle of the ODE: without feeds, the modelled cells of a path driven at both ends
    stay within the range of the drivers and the start for any conductance network; the same networks as
    a correction of the flux (the default form) push them out of it."""
    inner = _driven_path("conductance", seed)
    assert bool(torch.isfinite(inner).all())
    assert float(inner.max()) <= 1.0 + 1e-9 and float(inner.min()) >= -1.0 - 1e-9
    corrected = _driven_path("correction", seed)
    assert float(corrected.abs().max()) > 1.1


def test_the_conductance_network_sees_standardised_levels() -> None:
    """Levels scaled and shifted together with the layer's centre and scale give the same conductance."""
    a = _conductance_layer()
    b = _conductance_layer(level_center=2.0, level_scale=5.0)
    b.load_state_dict({**a.state_dict(), "level_center": b.level_center, "level_scale": b.level_scale})
    _randomise(a, 3)
    b.phi.load_state_dict(a.phi.state_dict())
    y = torch.rand(4, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    src, dst = EDGE_INDEX
    ca = a.conductance(y[src] - y[dst], y[src])
    z = 2.0 + 5.0 * y
    assert torch.allclose(b.conductance(z[src] - z[dst], z[src]), ca, atol=1e-12)


def test_bad_conductance_options_are_graph_errors() -> None:
    with pytest.raises(GraphError, match="message_form"):
        CouplingConv(4, normalised_edge_features(U, LEN), message_form="quadratic")
    with pytest.raises(GraphError, match="level_scale"):
        _conductance_layer(level_scale=0.0)
    with pytest.raises(GraphError, match="conductance_gain"):
        _conductance_layer(conductance_gain=-1.0)
    layer = _conductance_layer()
    with pytest.raises(GraphError, match="source"):
        layer.conductance(torch.zeros(6, 1, dtype=torch.float64))


def _node_layer(**options) -> CouplingConv:
    return CouplingConv(4, normalised_edge_features(U, LEN), k_init=0.02, gamma_init=1e-3, source_level=True,
                        message_form="conductance", level_center=0.4, level_scale=0.3, conductance_gain=30.0,
                        node_term=True, **options).double()


def _set_linear_node(layer: CouplingConv, slope: float) -> None:
    """``h(y^) = slope y^`` exactly: one hidden unit passed through, the output layer picking it (a
    tanh unit is linear to 1e-9 only near zero, so its input is scaled down and its output scaled up)."""
    tiny = 1e-4
    with torch.no_grad():
        for p in layer.node.parameters():
            p.zero_()
        layer.node.hidden[0].weight[0, 0] = tiny
        for i in range(1, len(layer.node.hidden)):
            if isinstance(layer.node.hidden[i], torch.nn.Linear):
                layer.node.hidden[i].weight[0, 0] = 1.0
        layer.node.output.weight[0, 0] = slope / tiny


def test_the_node_term_starts_at_zero_and_vanishes_at_the_centre_level() -> None:
    y = torch.tensor([[0.1, 0.5], [0.4, 0.2], [0.9, 0.3], [0.2, 0.8]], dtype=torch.float64)
    plain = CouplingConv(4, normalised_edge_features(U, LEN), k_init=0.02, gamma_init=1e-3, source_level=True,
                         message_form="conductance", level_center=0.4, level_scale=0.3,
                         conductance_gain=30.0).double()
    layer = _node_layer()
    assert torch.allclose(layer(y, y, EDGE_INDEX, W), plain(y, y, EDGE_INDEX, W), atol=1e-15)
    _randomise(layer, 0)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in layer.node.parameters():
            p.normal_(0.0, 2.0)
    centre = torch.full((3,), 0.4, dtype=torch.float64)
    assert torch.allclose(layer.node_flux(centre), torch.zeros(3, dtype=torch.float64), atol=1e-15)
    assert float(layer.node_flux(torch.tensor([1.5], dtype=torch.float64)).abs()) > 1e-4


def test_a_linear_node_term_is_a_leak_of_the_modelled_cells_toward_the_centre() -> None:
    """``h(y^) = a y^`` gives ``- r G a (y - c)``, the leak rate ``delta`` adds ``- delta y``; both act on
    the modelled cells' own levels (a border cell's row is evaluated on its data, as for the rest of the
    law)."""
    layer = _node_layer()
    layer.set_node_rate(0.02)
    _set_linear_node(layer, -0.01)  # - r G a = 0.02 x 30 x 0.01 = 0.006 / s
    plain = _node_layer()
    y = torch.tensor([[0.1, 0.5], [0.4, 0.2], [0.9, 0.3], [0.2, 0.8]], dtype=torch.float64)
    x = y + 0.05
    modelled = torch.tensor([False, True, True, False])
    diff = layer(y, x, EDGE_INDEX, W, modelled) - plain(y, x, EDGE_INDEX, W, modelled)
    z = torch.where(modelled.reshape(-1, 1), y, x)
    assert torch.allclose(diff, -0.006 * (z - 0.4), rtol=1e-6, atol=1e-12)
    with torch.no_grad():
        layer.node_leak.fill_(0.003)
    diff = layer(y, x, EDGE_INDEX, W, modelled) - plain(y, x, EDGE_INDEX, W, modelled)
    assert torch.allclose(diff, -0.006 * (z - 0.4) - 0.003 * z, rtol=1e-6, atol=1e-12)
    grad_layer = _node_layer()
    grad_layer(y, x, EDGE_INDEX, W, modelled).sum().backward()
    assert float(grad_layer.node.output.weight.grad.abs().sum()) > 0  # the fit can move it from zero


def test_bad_node_rates_are_graph_errors() -> None:
    layer = _node_layer()
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(GraphError, match="node_rate"):
            layer.set_node_rate(bad)
    assert float(_layer().node_flux(torch.ones(3, dtype=torch.float64)).abs().sum()) == 0.0
