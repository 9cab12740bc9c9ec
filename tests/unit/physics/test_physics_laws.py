"""The model family (leak, switched feed): one layer, one simulator, one output-error problem."""

from __future__ import annotations

import pytest
import torch

from calcium_gnn.data import zoo
from calcium_gnn.data.synthetic import make_culture, truth_graph
from calcium_gnn.errors import ConfigError
from calcium_gnn.models.neural_ode import OutputErrorODE
from calcium_gnn.nn.consensus import ConsensusConv
from calcium_gnn.physics.edge_weights import edge_weights
from calcium_gnn.physics.laws import feed_series, law_terms, stimulus_switch
from calcium_gnn.physics.output_error import OutputErrorProblem
from calcium_gnn.physics.parameters import identifiable_truth_feed
from calcium_gnn.physics.setups import resolve_setup
from calcium_gnn.physics.simulate import integrate, simulate_consensus


@pytest.fixture(scope="module")
def graph():
    culture = make_culture(seed=4, n_cells=25, size=180, n_frames=41, render=False)
    return truth_graph(culture, noise=0.01, seed=3, dtype=torch.float64)


@pytest.fixture(scope="module")
def leak_member():
    """A small stimulus member generated with the leak law, 0.04% noise (custom: not the test split)."""
    member = zoo.custom_member("stimulus", 95)
    assert member.law == "leak" and member.noise < 1e-3
    return zoo.member_graph(member, dtype=torch.float64)


def _inputs(graph):
    setup = resolve_setup(graph)
    w, _ = edge_weights(graph.edge_attr)
    gamma = torch.where(setup.modelled, torch.full((graph.num_nodes,), 2e-3, dtype=torch.float64), 0.0)
    return setup, w, gamma


@pytest.mark.parametrize("method", ["rk4", "euler"])
def test_leak_and_switched_feed_agree_on_every_simulation_path(graph, method) -> None:
    """Stepping the scheme, the dense interval propagators and the modal path give one trajectory."""
    setup, w, gamma = _inputs(graph)
    switch = stimulus_switch(graph.t.double(), float(graph.t[15]))
    feeds = feed_series(gamma, torch.where(setup.modelled, 5e-3, 0.0).double(), switch)
    conv = ConsensusConv(graph.num_nodes, leak_mode="shared").double()
    args = (graph.x, graph.t, graph.edge_index, w, setup.modelled, 0.02, feeds)
    stepped = integrate(conv, *args, substeps=3, method=method, leak=0.01, dt_rtol=1e-4)
    from calcium_gnn.physics.simulate import _integrate_affine  # the exact propagators, forced

    dense = _integrate_affine(conv, *args, None, 3, method, 1e-4, None, 0.01)
    problem = OutputErrorProblem(conv, graph.x, graph.t, graph.edge_index, w, setup.modelled, "per_cell",
                                 substeps=3, method=method)
    modal = integrate(conv, *args, substeps=3, method=method, leak=0.01, basis=problem.modal_basis())
    for other in (dense, modal):
        assert torch.allclose(other, stepped, rtol=1e-9, atol=1e-11)
    # the leak pulls towards lower levels than the paper's law with the same feeds
    linear = integrate(conv, *args, substeps=3, method=method, leak=0.0)
    assert float((stepped - linear)[setup.modelled].mean()) < 0


def test_a_leak_member_of_the_zoo_is_reproduced_by_the_leak_law(leak_member) -> None:
    """The simulator with the member's true k, leak and identifiable feeds reproduces its clean traces."""
    data = leak_member
    w = data.edge_attr[:, 0] / data.truth_edge_weight_scale
    modelled = ~data.is_driver
    sim = simulate_consensus(
        data.truth_x, data.t, data.edge_index, w, modelled, data.truth_k,
        torch.nan_to_num(identifiable_truth_feed(data)), y0=data.truth_x[:, 0], substeps=20,
    )
    leaky = integrate(None, data.truth_x, data.t, data.edge_index, w, modelled, data.truth_k,
                      torch.nan_to_num(identifiable_truth_feed(data)), y0=data.truth_x[:, 0], substeps=20,
                      leak=data.truth_leak)
    scale = float(data.truth_x.max() - data.truth_x.min())
    assert float((leaky - data.truth_x)[modelled].abs().max()) < 1e-7 * scale
    assert float((sim - data.truth_x)[modelled].abs().max()) > 1e-2 * scale  # the paper's law cannot


@pytest.mark.parametrize("gamma_mode,stimulus_feed", [("per_cell", "per_cell"), ("per_cell", "shared"),
                                                      ("shared", "per_cell"), ("shared", "shared")])
def test_modal_and_dense_normal_equations_agree_for_every_law(graph, gamma_mode, stimulus_feed) -> None:
    """The parameter layout (scalars, then per-cell blocks) is the same for the modal and the dense
    Jacobian: J^T J and J^T r agree to rounding, with a leak and a switched feed."""
    setup, w, _ = _inputs(graph)

    def problem(jacobian: str) -> OutputErrorProblem:
        conv = ConsensusConv(graph.num_nodes, gamma_mode, k_init=0.02, gamma_init=1e-3, leak_mode="shared",
                             leak_init=0.01).double()
        return OutputErrorProblem(conv, graph.x, graph.t, graph.edge_index, w, setup.modelled, gamma_mode,
                                  jacobian=jacobian, stimulus_feed=stimulus_feed,
                                  stimulus_time=float(graph.t[12]))

    modal, dense = problem("modal"), problem("dense")
    theta = modal.theta()
    theta[modal.layout()["stimulus"]] = 2e-3
    assert modal.layout() == dense.layout()
    for with_k in (True, False):
        jtj_m, jtr_m, _ = modal.normal_equations(theta, with_k=with_k)
        jtj_d, jtr_d, _ = dense.normal_equations(theta, with_k=with_k)
        assert torch.allclose(jtj_m, jtj_d, rtol=1e-7, atol=1e-10 * float(jtj_d.abs().max()))
        assert torch.allclose(jtr_m, jtr_d, rtol=1e-7, atol=1e-10 * float(jtr_d.abs().max()))
    modal.set_theta(theta)
    assert torch.allclose(modal.theta(), theta, rtol=1e-9, atol=1e-13)


def test_the_leak_law_recovers_k_and_the_leak_where_the_paper_law_cannot(leak_member) -> None:
    data = leak_member
    setup = resolve_setup(data, drivers="is_driver")
    fits = {}
    for law in ("linear", "leak"):
        model = OutputErrorODE(data, setup, law=law, gamma_bounds=(-0.1, 0.1))
        model.fit_exact(60)
        model.finish_fit()
        fits[law] = model
    leak = fits["leak"].fitted_parameters()
    assert leak.law == "leak" and leak.leak == pytest.approx(data.truth_leak, rel=0.05)
    assert leak.k == pytest.approx(data.truth_k, rel=0.05)
    assert abs(fits["linear"].fitted_parameters().k / data.truth_k - 1) > 0.2
    block = fits["leak"].law_results()
    lo, hi = block["leak_interval"]
    assert lo <= data.truth_leak <= hi and block["n_parameters"] == fits["linear"].problem.n_parameters + 1


def test_law_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="model.law"):
        law_terms("quadratic", None)
    with pytest.raises(ConfigError, match="model.stimulus_time"):
        law_terms("stimulus", None)
    assert law_terms("leak_stimulus", 12.0, "shared") == ("shared", "shared")
    assert law_terms("leak", None) == ("shared", "none")
    with pytest.raises(ConfigError, match="model.leak_bounds"):
        ConsensusConv(3, leak_mode="shared", leak_bounds=(-0.1, 0.1))


def test_a_feed_switched_on_at_the_stimulus_is_recovered(graph) -> None:
    """Data simulated with a switched feed s_i H(t - t_s): the stimulus law gets k and s_i back; the
    paper's law, without the switch, cannot."""
    data = graph.clone()
    setup = resolve_setup(data)
    w, _ = edge_weights(data.edge_attr)
    t_s = float(data.t[15])
    gamma = torch.where(setup.modelled, 1e-3, 0.0).double()
    switched = torch.where(setup.modelled, 4e-3, 0.0).double()
    feeds = feed_series(gamma, switched, stimulus_switch(data.t.double(), t_s))
    data.x = simulate_consensus(data.x.double(), data.t, data.edge_index, w, setup.modelled, 0.02, feeds,
                                substeps=20)
    fits = {}
    for law in ("linear", "stimulus"):
        model = OutputErrorODE(data, setup, law=law, gamma_bounds=(-0.1, 0.1), stimulus_time=t_s,
                               gamma_prior="none", border_noise_correction=False, train_fraction=1.0)
        model.fit_exact(60)
        fits[law] = model.fitted_parameters()
    assert fits["stimulus"].k == pytest.approx(0.02, rel=0.02)
    recovered = fits["stimulus"].stimulus_feed[setup.modelled]
    assert torch.allclose(recovered, switched[setup.modelled], rtol=0.05, atol=2e-4)
    assert abs(fits["linear"].k / 0.02 - 1) > 0.05
