"""Tests of the MLPs over time and the Fourier features (calcium_gnn.nn.mlp)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from calcium_gnn.errors import ConfigError
from calcium_gnn.nn.mlp import MLP, FourierFeatures, TimeMLP, TraceNet, fourier_frequencies, make_activation


def test_geometric_frequencies_by_hand() -> None:
    f = fourier_frequencies(3, 16.0, "geometric", min_frequency=1.0)
    assert torch.allclose(f, torch.tensor([1.0, 4.0, 16.0]))


def test_linear_frequencies_by_hand() -> None:
    f = fourier_frequencies(4, 4.0, "linear", min_frequency=1.0)
    assert torch.allclose(f, torch.tensor([1.0, 2.0, 3.0, 4.0]))


def test_random_frequencies_are_seeded_and_sorted() -> None:
    a = fourier_frequencies(8, 10.0, "random", seed=3)
    b = fourier_frequencies(8, 10.0, "random", seed=3)
    c = fourier_frequencies(8, 10.0, "random", seed=4)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert bool((a[1:] >= a[:-1]).all()) and bool((a >= 0).all())


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"n_frequencies": 0, "max_frequency": 4.0}, "model.net.fourier.n_frequencies"),
        ({"n_frequencies": 2, "max_frequency": -1.0}, "model.net.fourier.max_frequency"),
        ({"n_frequencies": 2, "max_frequency": 4.0, "mode": "chebyshev"}, "model.net.fourier.mode"),
    ],
)
def test_bad_frequencies_name_the_config_key(kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        fourier_frequencies(**kwargs)
    assert err.value.culprit == key


def test_fourier_features_values_by_hand() -> None:
    emb = FourierFeatures(n_frequencies=2, max_frequency=2.0, mode="linear", min_frequency=1.0)
    t = torch.tensor([0.0, 0.5])
    out = emb(t)
    assert out.shape == (2, emb.out_features) == (2, 5)
    # [t, sin(pi t), sin(2 pi t), cos(pi t), cos(2 pi t)]
    expected = torch.tensor([[0.0, 0.0, 0.0, 1.0, 1.0], [0.5, 1.0, 0.0, 0.0, -1.0]])
    assert torch.allclose(out, expected, atol=1e-6)


def test_fourier_features_derivative_by_forward_mode_ad() -> None:
    emb = FourierFeatures(n_frequencies=3, max_frequency=4.0, include_input=False).double()
    t = torch.linspace(-1, 1, 7, dtype=torch.float64)
    _, d = torch.func.jvp(emb, (t,), (torch.ones_like(t),))
    w = emb.angular.double()
    expected = torch.cat([w * torch.cos(t[:, None] * w), -w * torch.sin(t[:, None] * w)], dim=1)
    assert torch.allclose(d, expected)


def test_mlp_shape_and_layer_count() -> None:
    net = MLP(3, 5, hidden_features=8, num_layers=4, activation="tanh")
    assert sum(isinstance(m, nn.Linear) for m in net.modules()) == 5
    assert sum(isinstance(m, nn.Tanh) for m in net.modules()) == 4
    assert net(torch.zeros(6, 3)).shape == (6, 5)


def test_mlp_output_gain_zero_gives_zero_output_at_start() -> None:
    net = MLP(1, 4, hidden_features=8, num_layers=2, output_gain=0.0)
    assert torch.equal(net(torch.randn(5, 1)), torch.zeros(5, 4))


def test_mlp_rejects_bad_sizes_and_activation() -> None:
    with pytest.raises(ConfigError) as err:
        MLP(1, 0)
    assert err.value.culprit == "model.net.out_features"
    with pytest.raises(ConfigError) as err:
        make_activation("relu6")
    assert err.value.culprit == "model.net.activation"


@pytest.mark.parametrize("fourier", [None, {"n_frequencies": 4, "max_frequency": 8.0}])
def test_time_mlp_jvp_matches_finite_differences(fourier: dict | None) -> None:
    torch.manual_seed(0)
    net = TimeMLP(3, hidden_features=16, num_layers=2, activation="sin", fourier=fourier).double()
    t = torch.linspace(-0.9, 0.9, 5, dtype=torch.float64)
    y, dy = torch.func.jvp(net, (t,), (torch.ones_like(t),))
    assert y.shape == dy.shape == (5, 3)
    h = 1e-6
    fd = (net(t + h) - net(t - h)) / (2 * h)
    assert torch.allclose(dy, fd, atol=1e-6)


def test_time_mlp_gradcheck_float64() -> None:
    torch.manual_seed(1)
    net = TimeMLP(2, hidden_features=6, num_layers=2, fourier={"n_frequencies": 2, "max_frequency": 2.0})
    net = net.double()
    t = torch.tensor([-0.3, 0.4], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda s: net(s), (t,))


def test_time_mlp_can_fit_a_fast_transient_with_fourier_features() -> None:
    """A few hundred Adam steps: Fourier features fit a narrow bump far better than plain t."""
    t = torch.linspace(-1, 1, 120)
    target = torch.exp(-((t - 0.1) / 0.04) ** 2).reshape(-1, 1)

    def fit(fourier: dict | None) -> float:
        torch.manual_seed(0)
        net = TimeMLP(1, hidden_features=32, num_layers=2, fourier=fourier)
        opt = torch.optim.Adam(net.parameters(), lr=3e-3)
        for _ in range(200):
            opt.zero_grad()
            loss = ((net(t) - target) ** 2).mean()
            loss.backward()
            opt.step()
        return float(loss.detach())

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matmuls: one thread is much faster on a shared CPU
    try:
        plain = fit(None)
        fourier = fit({"n_frequencies": 16, "max_frequency": 32.0})
    finally:
        torch.set_num_threads(threads)
    assert fourier < 0.2 * plain
    assert math.isfinite(plain)


def test_trace_net_moves_whole_and_matches_the_cpu(device: torch.device) -> None:
    torch.manual_seed(2)
    kwargs = {"hidden_features": 8, "num_layers": 2, "fourier": {"n_frequencies": 3, "max_frequency": 4.0}}
    mean, std = torch.tensor([1.0, 2.0]), torch.tensor([0.5, 3.0])
    net = TraceNet(2, (100.0, 300.0), mean=mean, std=std, **kwargs)
    t = torch.tensor([120.0, 200.0, 290.0])
    y_cpu, dy_cpu = net.value_and_rate(t)
    net = net.to(device)
    assert {b.device.type for b in net.buffers()} == {device.type}
    y, dy = net.value_and_rate(t.to(device))
    assert y.device.type == dy.device.type == device.type
    torch.testing.assert_close(y.cpu(), y_cpu, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(dy.cpu(), dy_cpu, rtol=1e-4, atol=1e-7)
    # statistics given on the device: the new buffers are made there too
    built = TraceNet(2, (100.0, 300.0), mean=mean.to(device), std=std.to(device), **kwargs)
    assert {built.mean.device.type, built.std.device.type, built.centre.device.type} == {device.type}
