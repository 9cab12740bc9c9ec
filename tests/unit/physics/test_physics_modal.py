"""Modal normal equations: equal to the dense Jacobian's J^T J and J^T r, and the scalar propagators."""

from __future__ import annotations

import itertools

import pytest
import torch

from calcium_gnn.data.synthetic import make_culture, truth_graph
from calcium_gnn.errors import ConfigError
from calcium_gnn.models.neural_ode import OutputErrorODE
from calcium_gnn.physics.modal import input_response, interval_coefficients, modal_basis
from calcium_gnn.physics.setups import Setup, resolve_setup
from calcium_gnn.physics.simulate import integrate, interval_groups, interval_propagator, simulate_consensus


@pytest.fixture(scope="module")
def graph():
    culture = make_culture(seed=3, n_cells=40, size=220, n_frames=61, render=False)
    return truth_graph(culture, noise=0.02, seed=5)


@pytest.mark.parametrize(
    ("gamma_mode", "fit_initial_state", "method", "substeps"),
    list(itertools.product(["per_cell", "shared", "none"], [True, False], ["rk4", "euler"], [1, 3])),
)
def test_modal_normal_equations_equal_the_dense_jacobian(
    graph, gamma_mode, fit_initial_state, method, substeps
) -> None:
    base = resolve_setup(graph)
    setup = Setup(name="t", modelled=base.modelled, border=base.border, gamma_mode=gamma_mode)
    kwargs = dict(
        data=graph,
        setup=setup,
        fit_initial_state=fit_initial_state,
        method=method,
        substeps=substeps,
        init="constant",
        k_init=0.015,
        gamma_init=3e-4,
    )
    modal = OutputErrorODE(jacobian="modal", **kwargs)
    dense = OutputErrorODE(jacobian="dense", **kwargs)
    theta = modal.problem.theta().clone()
    theta[0] = 0.017
    jtj_m, jtr_m, r_m = modal.problem.normal_equations(theta)
    jtj_d, jtr_d, r_d = dense.problem.normal_equations(theta)
    assert jtj_m.shape == (modal.problem.n_parameters, modal.problem.n_parameters)
    # the modal problem simulates per mode, the dense one by the (G, G) propagators: equal to rounding
    assert float((r_m - r_d).abs().max()) < 1e-12 * float(r_d.abs().max())
    assert float((jtj_m - jtj_d).abs().max()) < 1e-11 * float(jtj_d.abs().max())
    assert float((jtr_m - jtr_d).abs().max()) < 1e-11 * float(jtr_d.abs().max())


def test_scalar_interval_coefficients_match_the_matrix_propagator() -> None:
    rate = torch.tensor([-0.3, -0.05, -0.01, 0.0], dtype=torch.float64)
    delta = torch.tensor(10.0, dtype=torch.float64)
    for method, substeps in (("rk4", 2), ("euler", 5)):
        phi, psi0, psi1 = interval_coefficients(rate, delta, substeps, method)
        big_phi, big_psi0, big_psi1 = interval_propagator(torch.diag(rate), delta, substeps, method)
        assert torch.allclose(phi, big_phi.diagonal(), rtol=1e-13, atol=1e-15)
        assert torch.allclose(psi0, big_psi0.diagonal(), rtol=1e-13, atol=1e-15)
        assert torch.allclose(psi1, big_psi1.diagonal(), rtol=1e-13, atol=1e-15)
    # a zero rate integrates a constant forcing exactly: psi = delta
    assert float(interval_coefficients(rate, delta, 2)[1][-1]) == pytest.approx(10.0)


def test_basis_diagonalises_the_operator_and_refuses_asymmetric_weights() -> None:
    s = torch.tensor([[-3.0, 1.0, 2.0], [1.0, -1.0, 0.0], [2.0, 0.0, -2.5]], dtype=torch.float64)
    degree = torch.tensor([2.0, 1.0, 3.0], dtype=torch.float64)
    a1 = s / degree.reshape(-1, 1)
    basis = modal_basis(a1, degree)
    assert basis is not None
    assert torch.allclose(basis.v @ torch.diag(basis.lam) @ basis.v_inv, a1, atol=1e-13)
    assert torch.allclose(basis.v @ basis.v_inv, torch.eye(3, dtype=torch.float64), atol=1e-13)
    skew = s.clone()
    skew[0, 1] = 1.5
    assert modal_basis(skew / degree.reshape(-1, 1), degree) is None


def test_modal_is_refused_for_asymmetric_weights(graph) -> None:
    data = graph.clone()
    data.edge_attr = data.edge_attr * (
        1.0 + 0.5 * torch.rand(data.edge_attr.shape, generator=torch.Generator().manual_seed(0))
    )
    auto = OutputErrorODE(data=data)
    assert auto.problem.modal_basis() is None  # falls back to the dense Jacobian
    with pytest.raises(ConfigError, match="model.jacobian"):
        OutputErrorODE(data=data, jacobian="modal").problem.modal_basis()


def test_input_response_is_the_simulation_of_the_border_drive(graph) -> None:
    model = OutputErrorODE(data=graph).problem
    basis = model.modal_basis()
    gen = torch.Generator().manual_seed(1)
    inputs = torch.randn(3, *model.drive_train.shape, generator=gen, dtype=torch.float64)
    inputs = inputs * (~model.modelled).reshape(1, -1, 1)
    k = torch.tensor(0.018, dtype=torch.float64)
    zero = torch.zeros(model.modelled.shape[0], dtype=torch.float64)
    lengths, which = interval_groups(model.t_train)
    drive = torch.stack(
        [
            model.conv(
                torch.zeros_like(z), z, model.edge_index, model.edge_weight, model.modelled, k=k, gamma=zero
            )[model.index]
            for z in inputs
        ],
        dim=2,
    )
    ours = input_response(basis, float(k), lengths, which, model.substeps, drive)
    for p, z in enumerate(inputs):
        ref = simulate_consensus(
            z,
            model.t_train,
            model.edge_index,
            model.edge_weight,
            model.modelled,
            k,
            zero,
            y0=zero,
            substeps=model.substeps,
        )[model.index]
        assert torch.allclose(ours[:, :, p], ref, atol=1e-12 * float(ref.abs().max()))


@pytest.mark.parametrize(("method", "substeps"), [("rk4", 2), ("rk4", 10), ("euler", 3)])
def test_modal_trajectory_is_the_dense_propagator_simulation(graph, method: str, substeps: int) -> None:
    """The one simulator's modal path (a basis given) and its dense propagators agree to rounding."""
    setup = resolve_setup(graph)
    problem = OutputErrorODE(data=graph, setup=setup).problem
    basis = problem.modal_basis()
    gamma = torch.nan_to_num(graph.truth_gamma).double()
    y0 = graph.x[:, 0].double() + 0.01
    x, t = graph.x.double(), graph.t.double()
    args = (x, t, graph.edge_index, problem.edge_weight, setup.modelled, 0.021, gamma)
    modal = integrate(None, *args, y0=y0, substeps=substeps, method=method, basis=basis)
    dense = integrate(None, *args, y0=y0, substeps=substeps, method=method)
    assert float((modal - dense).abs().max()) < 1e-12 * float(dense.abs().max())
