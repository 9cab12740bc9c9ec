"""ConsensusConv against hand-computed numbers and a dense reference (eqs. 1-3)."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call

from calcium_gnn.errors import ConfigError
from calcium_gnn.nn.consensus import ConsensusConv

# Hand-written 5-node graph: undirected edges with w = u*l (scale 1):
# 0-1: 1, 0-3: 3, 1-2: 2, 1-3: 4, 2-4: 5
PAIRS = [(0, 1, 1.0), (0, 3, 3.0), (1, 2, 2.0), (1, 3, 4.0), (2, 4, 5.0)]


def _graph(dtype=torch.float32):
    src = [a for a, b, _ in PAIRS] + [b for a, b, _ in PAIRS]
    dst = [b for a, b, _ in PAIRS] + [a for a, b, _ in PAIRS]
    w = [c for _, _, c in PAIRS] * 2
    return torch.tensor([src, dst]), torch.tensor(w, dtype=dtype)


def _dense_reference(z, edge_index, w, k, gamma):
    """dy = k * (D^-1 W z - D^-1 W 1 * z) + gamma with the dense weight matrix W and degree D."""
    n = z.shape[0]
    W = torch.zeros(n, n, dtype=z.dtype)
    W[edge_index[1], edge_index[0]] = w
    deg = (W != 0).sum(1, keepdim=True).to(z.dtype)
    return k * (W @ z - W.sum(1, keepdim=True) * z) / deg + gamma.reshape(-1, 1)


def test_consensus_hand_computed_all_modelled():
    edge_index, w = _graph()
    conv = ConsensusConv(5, gamma_mode="per_cell")
    y = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    gamma = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5])
    out = conv(y, y, edge_index, w, k=torch.tensor(0.5), gamma=gamma)
    # node 0: (1*(2-1) + 3*(4-1))/2 = 5 -> 0.5*5 + 0.1; node 1: (-1 + 2 + 8)/3 = 3; node 2: (-2 + 10)/2 = 4;
    # node 3: (-9 - 8)/2 = -8.5; node 4: 5*(3-5) = -10
    expected = torch.tensor([2.6, 1.7, 2.3, -3.85, -4.5])
    torch.testing.assert_close(out, expected)


def test_consensus_hand_computed_border_cells_follow_data():
    edge_index, w = _graph()
    conv = ConsensusConv(5)
    y = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    x = torch.tensor([10.0, 20.0, 30.0, 40.0, 50.0])
    modelled = torch.tensor([True, True, False, True, False])
    gamma = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5])
    out = conv(y, x, edge_index, w, modelled=modelled, k=torch.tensor(0.5), gamma=gamma)
    # z = [1, 2, 30, 4, 50]; node 1: (-1 + 2*28 + 8)/3 = 21; node 2: (2*(2-30) + 5*20)/2 = 22; node 4: -100
    expected = torch.tensor([2.6, 10.7, 11.3, -3.85, -49.5])
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("gamma_mode", ["none", "shared", "per_cell"])
def test_consensus_matches_dense_reference_over_time(gamma_mode):
    torch.manual_seed(0)
    edge_index, w = _graph(torch.float64)
    conv = ConsensusConv(5, gamma_mode=gamma_mode).double()
    conv.set_parameters(0.03, torch.tensor([0.01, 0.02, 0.03, 0.04, 0.05], dtype=torch.float64))
    y, x = torch.rand(5, 7, dtype=torch.float64), torch.rand(5, 7, dtype=torch.float64)
    modelled = torch.tensor([True, False, True, True, False])
    out = conv(y, x, edge_index, w, modelled=modelled)
    z = torch.where(modelled.reshape(-1, 1), y, x)
    ref = _dense_reference(z, edge_index, w, conv.k, conv.gamma)
    torch.testing.assert_close(out, ref)
    if gamma_mode == "none":
        assert torch.equal(conv.gamma, torch.zeros(5, dtype=torch.float64))
    if gamma_mode == "shared":
        torch.testing.assert_close(conv.gamma, torch.full((5,), 0.03, dtype=torch.float64))


def test_consensus_gradcheck_float64():
    edge_index, w = _graph(torch.float64)
    conv = ConsensusConv(5).double()
    modelled = torch.tensor([True, True, False, True, False])
    x = torch.rand(5, 3, dtype=torch.float64)
    y = torch.rand(5, 3, dtype=torch.float64, requires_grad=True)
    k = torch.tensor(0.04, dtype=torch.float64, requires_grad=True)
    gamma = torch.rand(5, dtype=torch.float64, requires_grad=True)

    def f(y, k, gamma):
        return conv(y, x, edge_index, w, modelled=modelled, k=k, gamma=gamma)

    assert torch.autograd.gradcheck(f, (y, k, gamma))

    def g(raw_k, raw_gamma):
        return functional_call(conv, {"raw_k": raw_k, "raw_gamma": raw_gamma}, (y.detach(), x, edge_index, w))

    raw_k = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    raw_gamma = torch.randn(5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(g, (raw_k, raw_gamma))


def test_consensus_bounds_hold_for_extreme_raw_values():
    conv = ConsensusConv(3, k_bounds=(1e-3, 0.1), gamma_bounds=(-3e-5, 0.1))
    with torch.no_grad():
        for value in (-1e6, -50.0, 0.0, 50.0, 1e6):
            conv.raw_k.fill_(value)
            conv.raw_gamma.fill_(value)
            lo, hi = torch.tensor(1e-3), torch.tensor(0.1)  # the bounds as float32, like the module
            assert lo <= conv.k <= hi
            assert bool(((conv.gamma >= torch.tensor(-3e-5)) & (conv.gamma <= hi)).all())
        conv.raw_k.fill_(1e6)
        assert conv.k.item() == pytest.approx(0.1)
        conv.raw_k.fill_(-1e6)
        assert conv.k.item() == pytest.approx(1e-3)


def test_consensus_set_parameters_round_trip_and_clamp():
    conv = ConsensusConv(4).double()
    gamma = torch.tensor([-1e-5, 0.0, 0.02, 0.09], dtype=torch.float64)
    conv.set_parameters(0.0123, gamma)
    assert conv.k.item() == pytest.approx(0.0123, rel=1e-10)
    torch.testing.assert_close(conv.gamma, gamma, rtol=1e-9, atol=1e-12)
    conv.set_parameters(5.0, torch.tensor([-1.0, 1.0, 0.0, 0.0]))
    assert conv.k.item() == pytest.approx(0.1, rel=1e-9)
    assert conv.gamma[0].item() == pytest.approx(-3e-5, rel=1e-6)
    assert conv.gamma[1].item() == pytest.approx(0.1, rel=1e-9)


def test_consensus_defaults_and_init():
    conv = ConsensusConv(3, k_init=0.02, gamma_init=0.001)
    assert conv.k.item() == pytest.approx(0.02, rel=1e-5)
    torch.testing.assert_close(conv.gamma, torch.full((3,), 0.001), rtol=1e-4, atol=0)
    edge_index, w = _graph()
    y = torch.rand(5, 2)
    conv5 = ConsensusConv(5, gamma_mode="none")
    out = conv5(y, y, edge_index, w)
    torch.testing.assert_close(out, _dense_reference(y, edge_index, w, conv5.k, torch.zeros(5)))


@pytest.mark.parametrize(
    "kwargs",
    [{"gamma_mode": "bogus"}, {"k_bounds": (0.1, 0.01)}, {"gamma_bounds": (0.0, float("inf"))}],
)
def test_consensus_rejects_bad_config(kwargs):
    with pytest.raises(ConfigError):
        ConsensusConv(3, **kwargs)


def test_consensus_on_every_device_matches_the_dense_reference(device) -> None:
    edge_index, w = _graph(torch.float64)
    conv = ConsensusConv(5, gamma_mode="per_cell").double().to(device)
    conv.set_parameters(0.03, torch.linspace(0.0, 0.01, 5, dtype=torch.float64))
    z = torch.randn(5, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    out = conv(z.to(device), z.to(device), edge_index.to(device), w.to(device))
    assert out.device.type == device.type
    ref = _dense_reference(z, edge_index, w, conv.k.detach().cpu(), conv.gamma.detach().cpu())
    assert torch.allclose(out.cpu(), ref, atol=1e-12)
