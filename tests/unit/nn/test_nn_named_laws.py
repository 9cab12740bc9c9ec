"""Named nonlinear laws: the zoo's fluxes in level units, a positive conductance, the linear start."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from calcium_gnn.data.zoo_laws import message
from calcium_gnn.errors import GraphError
from calcium_gnn.nn.consensus import ConsensusConv
from calcium_gnn.nn.coupling import CouplingConv, normalised_edge_features
from calcium_gnn.nn.named_laws import NAMED_LAWS, NamedConductance

# the levels' standardisation of a culture: centre c_0 and scale s (level units)
CENTER, SCALE = 0.8, 0.05
#: zoo-like constants in level units (calcium_gnn.data.zoo_laws)
CONSTANTS = {
    "saturating": {"sigma": 0.012},
    "threshold": {"a": 3.5, "theta": 0.86, "epsilon": 0.006},
    "rectifying": {"r": 0.2},
}


def _levels(n: int = 400, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Receiving and sending levels around the culture's centre (level units)."""
    g = torch.Generator().manual_seed(seed)
    y = CENTER + 2 * SCALE * torch.randn(n, generator=g, dtype=torch.float64)
    z = CENTER + 2 * SCALE * torch.randn(n, generator=g, dtype=torch.float64)
    return y, z


@pytest.mark.parametrize("law", list(NAMED_LAWS))
def test_the_flux_in_level_units_is_the_zoo_law_that_generated_the_members(law) -> None:
    """``Delta c(Delta / s, (z - c_0) / s)`` with the parameters set in level units is the zoo's
    ``f(Delta, z_j)``: the standardisation and the parameters' units agree with the generator."""
    named = NamedConductance(law, gain=30.0)
    named.set_parameters_in_levels(CONSTANTS[law], CENTER, SCALE)
    assert named.parameters_in_levels(CENTER, SCALE) == pytest.approx(CONSTANTS[law], rel=1e-12)
    y, z = _levels()
    delta = z - y
    with torch.no_grad():
        ours = delta * named(delta / SCALE, (z - CENTER) / SCALE)
    truth = message(law, CONSTANTS[law], delta.numpy(), z.numpy())
    np.testing.assert_allclose(ours.numpy(), truth, rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("law", list(NAMED_LAWS))
def test_any_parameters_give_a_positive_conductance(law) -> None:
    """The maximum principle of every named law: ``c > 0`` whatever the fit does to the raw values."""
    named = NamedConductance(law, gain=30.0)
    y, z = _levels(seed=1)
    for seed in range(5):
        with torch.no_grad():
            named.raw.copy_(torch.randn(named.raw.shape, generator=torch.Generator().manual_seed(seed),
                                        dtype=torch.float64))
            c = named((z - y) / SCALE, (z - CENTER) / SCALE)
        assert bool(torch.isfinite(c).all()) and float(c.min()) > 0


def test_the_starts_are_at_or_near_the_linear_law() -> None:
    """Rectifying starts at ``r = 1`` (the linear law exactly); saturating at ``c(0) = 1`` with a
    finite, smooth value through ``Delta = 0`` (its series, no 0 / 0); threshold at ``1 + 0.1 S``."""
    d = torch.tensor([-2.0, -1e-6, 0.0, 1e-6, 2.0], dtype=torch.float64, requires_grad=True)
    rect = NamedConductance("rectifying")(d)
    assert torch.equal(rect, torch.ones_like(rect))
    sat = NamedConductance("saturating")
    c = sat(d)
    assert float(c.detach()[2]) == 1.0 and float(c.detach()[1]) == pytest.approx(1.0, abs=1e-12)
    assert float(c.detach()[4]) == pytest.approx(math.tanh(1.0) / 1.0)  # b = 0.5: tanh(0.5 * 2) / 1
    c.sum().backward()
    assert bool(torch.isfinite(d.grad).all()) and bool(torch.isfinite(sat.raw.grad).all())
    # at the start the gradient in b is not zero (b = 0 would be a stationary point the fit never leaves)
    assert float(sat.raw.grad.abs().sum()) > 0
    thr = NamedConductance("threshold")
    with torch.no_grad():
        gate = thr(d.detach(), torch.tensor([-5.0, 0.0, 1.0, 2.0, 9.0], dtype=torch.float64))
    assert float(gate[0]) == pytest.approx(1.0, abs=1e-9) and float(gate[2]) == pytest.approx(1.05)
    assert float(gate[4]) == pytest.approx(1.1)


def test_bad_laws_and_parameters_are_graph_errors() -> None:
    with pytest.raises(GraphError, match="unknown named law 'quadratic'"):
        NamedConductance("quadratic")
    with pytest.raises(GraphError, match="conductance_gain"):
        NamedConductance("saturating", gain=0.0)
    with pytest.raises(GraphError, match="sending cells' levels"):
        NamedConductance("threshold")(torch.zeros(3, dtype=torch.float64))
    named = NamedConductance("threshold")
    with pytest.raises(GraphError, match="missing parameter 'epsilon'"):
        named.set_parameters_in_levels({"a": 1.0, "theta": 0.5}, CENTER, SCALE)
    with pytest.raises(GraphError, match="'a' = -1.0 is outside"):
        named.set_parameters_in_levels({"a": -1.0, "theta": 0.5, "epsilon": 0.01}, CENTER, SCALE)
    with pytest.raises(GraphError, match="'epsilon'"):  # a gate sharper than the floor cannot be represented
        named.set_parameters_in_levels({"a": 1.0, "theta": 0.5, "epsilon": 1e-6}, CENTER, SCALE)
    assert torch.equal(named.raw, torch.zeros(3, dtype=torch.float64))  # a refused setting changes nothing


def test_the_formula_reports_the_fitted_values_in_level_units() -> None:
    named = NamedConductance("rectifying")
    named.set_parameters_in_levels({"r": 0.25}, CENTER, SCALE)
    assert named.formula(0.0213, CENTER, SCALE) == "q = 0.0213 (max(Delta, 0) + r min(Delta, 0)), r = 0.25"
    sat = NamedConductance("saturating")
    sat.set_parameters_in_levels({"sigma": 0.012}, CENTER, SCALE)
    assert sat.formula(0.02, CENTER, SCALE).endswith("sigma = 0.012")


# 4-node path 0-1-2-3, both directions
EDGE_INDEX = torch.tensor([[0, 1, 1, 2, 2, 3], [1, 0, 2, 1, 3, 2]])
W = torch.tensor([1.0, 1.0, 2.0, 2.0, 0.5, 0.5], dtype=torch.float64)
U = torch.tensor([10.0, 10.0, 20.0, 20.0, 30.0, 30.0])
LEN = torch.tensor([5.0, 5.0, 5.0, 5.0, 10.0, 10.0])


def test_a_coupling_layer_with_a_named_law_has_no_network_and_matches_a_dense_reference() -> None:
    """``message_form="rectifying"``: the message ``k w (max(D, 0) + r min(D, 0))``; at ``r = 1`` the
    layer is the paper's law (ConsensusConv)."""
    layer = CouplingConv(4, normalised_edge_features(U, LEN), k_init=0.02, gamma_init=1e-3,
                         message_form="rectifying", level_center=CENTER, level_scale=SCALE).double()
    assert layer.phi is None and layer.named is not None
    y = torch.tensor([[0.81], [0.75], [0.90], [0.70]], dtype=torch.float64)
    linear = ConsensusConv(4, k_init=0.02, gamma_init=1e-3).double()
    assert torch.allclose(layer(y, y, EDGE_INDEX, W), linear(y, y, EDGE_INDEX, W), atol=1e-15)
    layer.named.set_parameters_in_levels({"r": 0.2}, CENTER, SCALE)
    out, k, feed = layer(y, y, EDGE_INDEX, W), float(layer.k), float(layer.gamma.detach()[1])
    # node 1 (0.75), neighbours 0 (0.81, w 1: inflow) and 2 (0.90, w 2: inflow); node 2 (0.90), neighbours
    # 1 (w 2: outflow, times r) and 3 (w 0.5: outflow, times r)
    assert float(out[1, 0]) == pytest.approx(k / 2 * (1 * 0.06 + 2 * 0.15) + feed)
    assert float(out[2, 0]) == pytest.approx(k / 2 * 0.2 * (2 * -0.15 + 0.5 * -0.20) + feed)
    layer.reset_parameters()  # back to r = 1
    assert torch.allclose(layer(y, y, EDGE_INDEX, W), linear(y, y, EDGE_INDEX, W), atol=1e-15)


def test_parameters_the_visited_levels_cannot_pin_down_are_reported() -> None:
    """A saturation far beyond every visited difference (a nearly linear flux) and a release threshold
    outside the visited sending levels (only the gate's tail is seen) are named; in-range fits are not."""
    y, z = _levels(seed=2)
    delta = z - y  # |Delta| up to about 0.35
    saturating = NamedConductance("saturating")
    saturating.set_parameters_in_levels({"sigma": 0.05}, CENTER, SCALE)
    assert saturating.unidentified(delta, z, CENTER, SCALE) == []
    saturating.set_parameters_in_levels({"sigma": 2.0}, CENTER, SCALE)
    (why,) = saturating.unidentified(delta, z, CENTER, SCALE)
    assert why.startswith("sigma = 2 is more than 2x the level differences") and "not identified" in why
    threshold = NamedConductance("threshold")
    threshold.set_parameters_in_levels({"a": 3.0, "theta": 0.86, "epsilon": 0.01}, CENTER, SCALE)
    assert threshold.unidentified(delta, z, CENTER, SCALE) == []
    threshold.set_parameters_in_levels({"a": 3.0e4, "theta": 17.7, "epsilon": 1.9}, CENTER, SCALE)
    (why,) = threshold.unidentified(delta, z, CENTER, SCALE)
    assert why.startswith("theta = 17.7 lies outside the sending levels the data visit")
    rectifying = NamedConductance("rectifying")
    rectifying.set_parameters_in_levels({"r": 1e-4}, CENTER, SCALE)
    assert rectifying.unidentified(delta, z, CENTER, SCALE) == []


def test_visited_starts_sit_where_the_data_are() -> None:
    """Saturation at the median and 90th percentile of the visited |Delta|, release thresholds at the
    quartiles of the visited sending levels, rectification on both sides of 1; each is a valid start
    (``set_parameters_in_levels`` takes it)."""
    from calcium_gnn.nn.named_laws import visited_starts

    delta = torch.linspace(-2.0, 2.0, 401, dtype=torch.float64).reshape(1, -1)
    source = torch.linspace(10.0, 20.0, 401, dtype=torch.float64).reshape(1, -1)
    sat = visited_starts("saturating", delta, source, scale=1.0)
    assert [s["sigma"] for s in sat] == [pytest.approx(1.0), pytest.approx(1.8)]
    thr = visited_starts("threshold", delta, source, scale=2.0)
    assert [s["theta"] for s in thr] == [pytest.approx(12.5), pytest.approx(15.0), pytest.approx(17.5)]
    assert all(s["a"] == 1.0 and s["epsilon"] == pytest.approx(0.5) for s in thr)
    assert visited_starts("rectifying", delta, source, scale=1.0) == [{"r": 0.3}, {"r": 3.0}]
    for law, starts in (("saturating", sat), ("threshold", thr)):
        for start in starts:
            NamedConductance(law, 30.0).set_parameters_in_levels(start, 15.0, 2.0)
    with pytest.raises(GraphError, match="no visited"):
        visited_starts("saturating", delta[:, :0], source[:, :0], scale=1.0)


def test_quantiles_of_more_values_than_torch_takes_come_from_a_strided_sample() -> None:
    from calcium_gnn.nn.named_laws import QUANTILE_SAMPLE, visited_quantiles

    values = torch.arange(3 * QUANTILE_SAMPLE + 7, dtype=torch.float64)
    low, mid = visited_quantiles(values, (0.01, 0.5))
    assert mid == pytest.approx(float(values.median()), rel=1e-5)
    assert low == pytest.approx(0.01 * float(values[-1]), rel=1e-3)
