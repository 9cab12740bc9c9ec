"""OutputErrorProblem and the Levenberg-Marquardt solver: the problem as a module, on every device."""

from __future__ import annotations

import pytest
import torch

from calcium_gnn.data.synthetic import make_culture, truth_graph
from calcium_gnn.nn.consensus import ConsensusConv
from calcium_gnn.physics.edge_weights import edge_weights
from calcium_gnn.physics.levenberg_marquardt import LevenbergMarquardt, LMSettings, profile_fit
from calcium_gnn.physics.output_error import OutputErrorProblem
from calcium_gnn.physics.setups import resolve_setup
from calcium_gnn.utils.device_audit import stray_tensors


@pytest.fixture(scope="module")
def graph():
    culture = make_culture(seed=4, n_cells=25, size=180, n_frames=41, render=False)
    return truth_graph(culture, noise=0.01, seed=3, dtype=torch.float64)


def _problem(graph, **kwargs) -> OutputErrorProblem:
    setup = resolve_setup(graph)
    w, _ = edge_weights(graph.edge_attr)
    conv = ConsensusConv(graph.num_nodes, setup.gamma_mode, k_init=0.01, gamma_init=1e-4).double()
    return OutputErrorProblem(
        conv, graph.x, graph.t, graph.edge_index, w, setup.modelled, setup.gamma_mode, **kwargs
    )


def test_theta_roundtrip_and_bounds(graph) -> None:
    problem = _problem(graph)
    theta = problem.theta().clone()
    assert theta.shape == (problem.n_parameters,)
    theta[0] = 0.03
    theta[problem.feed_positions] += 1e-4
    problem.set_theta(theta)
    assert torch.allclose(problem.theta(), theta, rtol=1e-9, atol=1e-12)
    lo, hi = problem.theta_bounds()
    assert float(lo[0]) == problem.conv.k_bounds[0] and float(hi[0]) == problem.conv.k_bounds[1]
    assert torch.isinf(lo[1 + problem.n_gamma :]).all()  # y0 is unbounded


def test_a_device_move_clears_the_derived_cache(graph) -> None:
    problem = _problem(graph)
    problem.normal_equations(problem.theta())
    assert set(problem._derived) == {"basis", "normal"}
    assert stray_tensors(problem) == []  # the cache is the allowed, cleared kind
    problem.to(torch.float64)
    assert problem._derived == {}


def test_normal_equations_and_the_fit_agree_on_every_device(graph, device) -> None:
    reference = _problem(graph)
    moved = _problem(graph).to(device)
    theta = reference.theta()
    jtj_ref, jtr_ref, _ = reference.normal_equations(theta)
    jtj, jtr, _ = moved.normal_equations(theta.to(device))
    assert jtj.device.type == device.type
    assert torch.allclose(jtj.cpu(), jtj_ref, rtol=1e-10, atol=1e-14)
    assert torch.allclose(jtr.cpu(), jtr_ref, rtol=1e-10, atol=1e-14)
    for problem in (reference, moved):
        solver = LevenbergMarquardt(1e-3, LMSettings()).to(problem.x_train.device)
        assert solver.fit(problem, 30) < 30 and bool(solver.converged)
    assert float(moved.conv.k) == pytest.approx(float(reference.conv.k), rel=1e-9)
    assert float(reference.conv.k) == pytest.approx(graph.truth_k, rel=0.05)


def test_profile_fit_holds_k_and_lowers_the_loss(graph) -> None:
    problem = _problem(graph)
    theta = problem.theta()
    before = problem.loss_theta(theta)
    fitted, free = profile_fit(problem, theta)
    assert float(fitted[0]) == float(theta[0]) and not bool(free[0])
    assert problem.loss_theta(fitted) < before


def test_a_feed_stored_at_its_bound_is_held_there(graph) -> None:
    """ConsensusConv stores a clipped feed a hair inside the box (its logit stays finite); the active
    set must still see it on the bound, or projected steps keep pushing it out (slow convergence)."""
    problem = _problem(graph)
    theta = problem.theta().clone()
    feed = problem.feed_positions.start
    theta[feed] = -1.0  # far below gamma's lower bound: clipped when stored
    problem.set_theta(theta)
    stored = problem.theta()
    lo, _ = problem.theta_bounds()
    assert float(stored[feed]) > float(lo[feed])  # not exactly on it ...
    outward = torch.zeros_like(stored)
    outward[feed] = 1.0  # a gradient pushing it further down
    held = problem.held_at_bounds(stored, outward)
    assert bool(held[feed]) and int(held.sum()) == 1  # ... but held there, and nothing else is
