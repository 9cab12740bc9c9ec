"""Matrix-free variable projection: the operator is J^T J, the solves are exact, the fit is LM's."""

from __future__ import annotations

import pytest
import torch

from calcium_gnn.data.synthetic import make_culture, truth_graph
from calcium_gnn.inference.output_error import laplace, nonlinear_laplace
from calcium_gnn.models.neural_ode import OutputErrorODE
from calcium_gnn.physics.setups import resolve_setup
from calcium_gnn.physics.variable_projection import (
    LinearNormalOperator,
    ProjectionSettings,
    conjugate_gradients,
    profile_solve,
)


@pytest.fixture(scope="module")
def data():
    culture = make_culture(seed=3, n_cells=40, size=220, n_frames=121, render=False)
    return truth_graph(culture, noise=0.03, seed=0)


def _model(data, **kwargs) -> OutputErrorODE:
    model = OutputErrorODE(data=data, setup=resolve_setup(data), **kwargs)
    model.initialise()
    return model


def _dense_linear_normal(problem, theta, weights=None) -> torch.Tensor:
    flat = lambda th: problem.residuals_theta(th).reshape(-1)  # noqa: E731
    jac = torch.func.jacfwd(flat)(theta)[:, problem.n_nonlinear :]
    w = torch.ones(problem.n_residuals, dtype=torch.float64) if weights is None else (
        weights.reshape(-1, 1).expand(-1, problem.x_train.shape[1]).reshape(-1))
    return jac.T @ (w.reshape(-1, 1) * jac)


@pytest.mark.parametrize("law", ["linear", "leak_stimulus"])
@pytest.mark.parametrize("weighted", [False, True])
def test_the_operator_is_the_normal_matrix_of_the_linear_parameters(data, law, weighted) -> None:
    kwargs = {"stimulus_time": float(data.t[20])} if "stimulus" in law else {}
    problem = _model(data, law=law, **kwargs).problem
    theta = problem.theta()
    weights = problem.degrees() if weighted else None
    operator = LinearNormalOperator(problem, theta, weights)
    dense = _dense_linear_normal(problem, theta, weights)
    probe = torch.randn(operator.size, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    scale = float(dense.abs().max())
    assert torch.allclose(operator.apply(probe), dense @ probe, rtol=1e-8, atol=1e-10 * scale)
    if weighted:  # with the degree weights the preconditioner is the exact inverse (cond ~1e6 here)
        assert torch.allclose(operator.precondition(dense @ probe), probe, rtol=1e-5, atol=1e-5)


def test_the_restricted_preconditioner_is_the_inverse_of_the_restricted_weighted_matrix(data) -> None:
    problem = _model(data).problem
    theta = problem.theta()
    operator = LinearNormalOperator(problem, theta, problem.degrees())
    dense = _dense_linear_normal(problem, theta, problem.degrees())
    free = torch.ones(operator.size, dtype=torch.bool)
    free[torch.tensor([0, 3, 7, 12])] = False  # four feeds held at a bound
    apply = operator.restricted_preconditioner(free)
    f = free.nonzero().reshape(-1)
    probe = torch.zeros(operator.size, dtype=torch.float64)
    probe[f] = torch.randn(f.numel(), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    expected = torch.zeros_like(probe)
    expected[f] = torch.linalg.solve(dense[f.reshape(-1, 1), f], probe[f])
    assert torch.allclose(apply(probe), expected, rtol=1e-6, atol=1e-9 * float(expected.abs().max()))


def test_the_held_factor_of_a_changed_set_equals_the_one_formed_afresh(data) -> None:
    """An active-set round that holds a few more and a few fewer feeds reuses the rows of N_HH it kept:
    the factor must be the one formed from scratch (the restricted preconditioner depends on it)."""
    problem = _model(data, law="leak_stimulus", stimulus_time=float(data.t[20])).problem
    theta = problem.theta()
    reused = LinearNormalOperator(problem, theta, problem.degrees())
    g = reused.g  # per-cell blocks of G entries each: feeds, switched feeds, initial states
    first = torch.tensor([0, 3, 7, 12, g + 1, g + 5, 2 * g + 2])
    second = torch.tensor([0, 3, 12, g + 1, g + 5, g + 8, 2 * g + 2, 2 * g + 4])  # 7 released, 2 more held
    reused.held_factor(first)
    fresh = LinearNormalOperator(problem, theta, problem.degrees())
    factor, expected = reused.held_factor(second), fresh.held_factor(second)
    assert torch.allclose(factor, expected, rtol=1e-12, atol=1e-12 * float(expected.abs().max()))
    n_hh = fresh.inverse_entries(second, second)
    assert reused.q == 0  # no shared scalars: P is the weighted normal matrix itself, N its inverse
    dense = torch.linalg.inv(_dense_linear_normal(problem, theta, problem.degrees()))
    blocks = second
    assert torch.allclose(n_hh, dense[blocks.reshape(-1, 1), blocks], rtol=1e-5,
                          atol=1e-8 * float(n_hh.abs().max()))
    assert reused.held_factor(second) is factor  # the same set again: kept, not formed again


def test_a_solve_that_starts_at_its_answer_forms_no_preconditioner(data) -> None:
    problem = _model(data).problem
    operator = LinearNormalOperator(problem, problem.theta())
    free = torch.ones(operator.size, dtype=torch.bool)
    free[torch.tensor([1, 5])] = False
    x, report = conjugate_gradients(operator, torch.zeros(operator.size, dtype=torch.float64), free,
                                    ProjectionSettings())
    assert report.iterations == 0 and report.converged and bool((x == 0).all())
    assert operator._held is None


def test_conjugate_gradients_solve_the_restricted_system(data) -> None:
    problem = _model(data).problem
    theta = problem.theta()
    operator = LinearNormalOperator(problem, theta)
    dense = _dense_linear_normal(problem, theta)
    free = torch.ones(operator.size, dtype=torch.bool)
    free[torch.tensor([1, 5])] = False
    rhs = torch.randn(operator.size, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    x, report = conjugate_gradients(operator, rhs, free, ProjectionSettings(cg_tolerance=1e-12))
    f = free.nonzero().reshape(-1)
    expected = torch.linalg.solve(dense[f.reshape(-1, 1), f], rhs[f])
    assert report.converged and report.iterations < 40
    assert torch.allclose(x[f], expected, rtol=1e-7, atol=1e-9 * float(expected.abs().max()))
    assert bool((x[~free] == 0).all())


def test_a_profile_solve_keeps_the_box_and_is_optimal(data) -> None:
    """At fixed k the linear parameters minimise the loss inside the feeds' box (KKT conditions)."""
    problem = _model(data).problem
    theta = problem.theta()
    theta[0] = 3.0 * theta[0]  # a k too large pushes some feeds onto their lower bound
    solution = profile_solve(problem, theta, ProjectionSettings())
    lo, hi = problem.theta_bounds()
    assert bool((solution.theta >= lo).all() and (solution.theta <= hi).all())
    grad = torch.zeros_like(theta)
    grad[1:] = solution.operator.transpose(solution.residuals)
    held = problem.held_at_bounds(solution.theta, grad)
    held[0] = True
    assert int(held[1:].sum()) > 0, "the case must exercise the box"
    scale = float(solution.operator.transpose(problem.x_train[problem.index]).norm())
    assert float(grad[~held].abs().max()) < 1e-7 * scale


@pytest.mark.parametrize("law", ["linear", "leak"])
def test_variable_projection_reaches_the_levenberg_marquardt_optimum(data, law) -> None:
    lm = _model(data, law=law)
    lm.fit_exact(80)
    vp = _model(data, law=law, optimizer="variable_projection", border_noise_correction=False)
    vp.fit_exact(80)
    theta_lm, theta_vp = lm.problem.theta(), vp.problem.theta()
    _, cov_lm = laplace(lm.problem)
    _, cov_vp = nonlinear_laplace(vp.problem, vp.solver.schur)
    nl = vp.problem.n_nonlinear
    assert bool(vp.solver.converged) and bool(vp.solver.cg_converged)
    # the same optimum: within a hundredth of a standard error (so the loss to ~1e-4 / n_residuals)
    assert bool(((theta_vp[:nl] - theta_lm[:nl]).abs() < 0.02 * cov_lm.se[:nl]).all())
    assert vp.problem.loss_theta(theta_vp) == pytest.approx(lm.problem.loss_theta(theta_lm), rel=1e-7)
    # the Schur complement gives the full covariance's variance of k (and the leak rate)
    assert torch.allclose(cov_vp.se, cov_lm.se[:nl], rtol=1e-3)


def test_variable_projection_starts_far_off_and_still_converges(data) -> None:
    model = _model(data, optimizer="variable_projection", init="constant", k_init=0.002,
                   border_noise_correction=False)
    steps = model.fit_exact(80)
    reference = _model(data)
    reference.fit_exact(80)
    assert steps < 80 and bool(model.solver.converged)
    assert float(model.conv.k) == pytest.approx(float(reference.conv.k), rel=1e-3)
